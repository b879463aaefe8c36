"""``imagine-bot download --eval``: the evaluation's real extractors, fetched once.

* the CLIP model of the CLIP score (``[eval] clip_model``, else ``EVAL_CLIP_MODEL``) into the
  Hugging Face cache, where ``CLIPModel.from_pretrained`` finds it (``HF_ENDPOINT``, ``HF_TOKEN``
  and resumed downloads work as for the model weights);
* the FID Inception-v3 weights (torch-fidelity's release file) into torch's hub cache
  (``$TORCH_HOME/hub/checkpoints``), where torch-fidelity looks before downloading.

After it, ``imagine-bot eval`` runs with ``HF_HUB_OFFLINE=1`` and no network. Behind a firewall,
``HF_ENDPOINT`` names a Hub mirror and ``IMAGINE_INCEPTION_URL`` a copy of the Inception file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from generation.core.errors import ImagineError

__all__ = ["INCEPTION_URL", "download_eval", "inception_weights_path"]

log = logging.getLogger(__name__)

# the file torch-fidelity 0.4 (and so torchmetrics' FID Inception) loads, from its GitHub release
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
_CLIP_FILES = ["*.json", "*.txt", "*.safetensors"]  # configs, tokenizer, weights (no .bin, no .msgpack)


def inception_weights_path(url: str = INCEPTION_URL) -> Path:
    """Where torch's hub cache keeps the Inception weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def download_eval(clip_model: str, *, inception_url: str | None = None) -> list[str]:
    """Fetch the CLIP model and the Inception weights (each skipped when already there); one
    line per piece saying where it is. ImagineError saying what failed."""
    inception_url = inception_url or os.environ.get("IMAGINE_INCEPTION_URL") or INCEPTION_URL
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    done = []
    try:
        folder = snapshot_download(clip_model, allow_patterns=_CLIP_FILES)
    except RepositoryNotFoundError:
        raise ImagineError(f"The Hub has no repository {clip_model} (eval.clip_model); name a CLIP model.") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ImagineError(f"Downloading the CLIP model {clip_model} failed: {first}") from None
    done.append(f"CLIP {clip_model}: {folder}")

    import torch.hub

    target = inception_weights_path(INCEPTION_URL)  # the name torch-fidelity looks for, whatever the source
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s into %s", inception_url, target)
        try:
            torch.hub.download_url_to_file(inception_url, str(target), progress=True)
        except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
            raise ImagineError(f"Downloading the Inception weights from {inception_url} failed: {exc}") from None
    done.append(f"Inception-v3 (FID): {target}")
    return done

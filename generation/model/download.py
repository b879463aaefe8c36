"""``imagine-bot download``: exactly the files the loader needs, into one local model folder.

    <to>/model_index.json, scheduler/, tokenizer/, tokenizer_2/     from the base SDXL repo
    <to>/text_encoder/, text_encoder_2/   config + fp16 weights        (the base's fp16 variant)
    <to>/unet/config.json                 the base UNet's weights are never used: Lightning's are
    <to>/vae/                             the fp16-fix VAE (model.vae_repo), or the base's fp16 VAE
    <to>/sdxl_lightning_{N}step_unet.safetensors                      one per step count
    <to>/preview_vae/                     the tiny autoencoder of live previews (preview.vae), when on

That is the layout ``model.path`` expects (generation/model/loader.py ``_load_local``). With
``upscale.model`` naming a Hub file (``owner/repo/file.pth``), :func:`download_upscaler` puts it
at ``models/upscalers/<file>``, where the app looks for it. Files come
through huggingface_hub: progress bars, resumed partial files, ``HF_ENDPOINT`` mirrors and
``HF_TOKEN`` all work. Before anything starts, the endpoint is looked up and connected to, so a
machine without network fails in seconds with the real reason instead of retrying for half a
minute.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from generation.core.errors import ImagineError
from generation.model.hub import hub_endpoint, unreachable
from generation.model.pipeline import lightning_unet_filename
from generation.model.preview import PREVIEW_SUBDIR

__all__ = ["DownloadError", "Fetch", "PIPELINE_PATTERNS", "config_lines", "download", "download_pretrained",
           "download_upscaler", "hub_endpoint", "plan", "unreachable"]

log = logging.getLogger(__name__)

_FP16_COMPONENTS = ("text_encoder", "text_encoder_2")
_WHOLE_COMPONENTS = ("scheduler", "tokenizer", "tokenizer_2")


class DownloadError(ImagineError):
    """The weights could not be fetched; the message says why and what to do."""


@dataclass(frozen=True)
class Fetch:
    """Files of one repository (glob patterns) that go into ``subdir`` of the model folder."""

    repo: str
    patterns: tuple[str, ...]
    subdir: str = ""


def plan(base_repo: str, lightning_repo: str, vae_repo: str | None, steps: tuple[int, ...],
         preview_repo: str | None = None) -> list[Fetch]:
    """What to fetch for these repositories and step counts (and the previews' tiny autoencoder)."""
    base = ["model_index.json", "unet/config.json"]
    base += [f"{c}/*" for c in _WHOLE_COMPONENTS]
    for component in _FP16_COMPONENTS + (() if vae_repo else ("vae",)):
        base += [f"{component}/config.json", f"{component}/*fp16*.safetensors", f"{component}/*.fp16.json"]
    fetches = [Fetch(base_repo, tuple(base))]
    if vae_repo:
        fetches.append(Fetch(vae_repo, ("config.json", "diffusion_pytorch_model.safetensors"), "vae"))
    fetches.append(Fetch(lightning_repo, tuple(lightning_unet_filename(n) for n in sorted(set(steps)))))
    if preview_repo:
        fetches.append(Fetch(preview_repo, ("config.json", "diffusion_pytorch_model.safetensors"), PREVIEW_SUBDIR))
    return fetches


def _check_online() -> str:
    """The endpoint, once it is known to answer; DownloadError saying why not."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it (or set it to 0).")
    endpoint = hub_endpoint()
    reason = unreachable(endpoint)
    if reason:
        raise DownloadError(
            f"Cannot reach {endpoint}: {reason}. Check the network, or set HF_ENDPOINT to a mirror "
            f"you can reach; or download on another machine and copy the folder "
            f"(docs/operator/install.md, 'Getting the model')."
        )
    return endpoint


UPSCALER_SUFFIXES = (".pth", ".safetensors", ".pt")


def download_upscaler(model: str, target: Path) -> Path:
    """Fetch the Hub file ``model`` (``owner/repo/path/to/file.pth``) to ``target`` (the path the
    config gives it, ``models/upscalers/<file>``); nothing is fetched when it is already there."""
    parts = [p for p in model.strip().split("/") if p]
    if len(parts) < 3 or Path(parts[-1]).suffix not in UPSCALER_SUFFIXES:
        raise DownloadError(f"upscale.model = {model!r} is neither a file on this machine nor a Hub file "
                            f"(owner/repo/file.pth or .safetensors); fix the path or the name.")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    endpoint = _check_online()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    folder = Path(target).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s from %s into %s", filename, repo, folder)
        # local_dir keeps the repository's sub-folders; resumes and skips like the model's files
        fetched = Path(hf_hub_download(repo, filename, local_dir=folder))
    except GatedRepoError:
        raise DownloadError(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"{endpoint} has no repository {repo} (upscale.model; or it is private: set HF_TOKEN).") \
            from None
    except EntryNotFoundError:
        raise DownloadError(f"{repo} has no file {filename} (upscale.model); check the name on its Hub page.") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise DownloadError(f"Downloading {filename} from {repo} failed: {text[0] if text else type(exc).__name__}") \
            from None
    target = folder / Path(filename).name
    if fetched.resolve() != target.resolve():  # a file in a sub-folder of its repository: where the app looks
        shutil.copyfile(fetched, target)
    return target


def download(
    to: Path,
    *,
    base_repo: str,
    lightning_repo: str,
    vae_repo: str | None,
    steps: tuple[int, ...],
    preview_repo: str | None = None,
) -> Path:
    """Fetch the plan into ``to`` (resuming what is there); the folder, checked."""
    endpoint = _check_online()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    to = Path(to).expanduser()
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create {str(to)!r}: {exc.strerror or exc}.") from None
    for fetch in plan(base_repo, lightning_repo, vae_repo, steps, preview_repo):
        target = to / fetch.subdir if fetch.subdir else to
        log.info("fetching %s (%s) into %s", fetch.repo, ", ".join(fetch.patterns), target)
        try:
            snapshot_download(fetch.repo, allow_patterns=list(fetch.patterns), local_dir=target)
        except GatedRepoError:
            raise DownloadError(
                f"{fetch.repo} is gated: accept its terms on the Hub and set HF_TOKEN to a token of that account."
            ) from None
        except RepositoryNotFoundError:
            raise DownloadError(
                f"{endpoint} has no repository {fetch.repo} (or it is private: set HF_TOKEN)."
            ) from None
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            text = str(exc).strip().splitlines()
            raise DownloadError(f"Downloading {fetch.repo} failed: {text[0] if text else type(exc).__name__}") from None
    missing = [name for name in ["model_index.json", *(lightning_unet_filename(n) for n in steps)]
               if not (to / name).is_file()]
    if missing:
        raise DownloadError(f"{to} lacks {', '.join(missing)} after the download; do the repositories have them?")
    return to


# a diffusers pipeline folder: the index and every component's files, not the single-file
# checkpoints some repositories keep beside them at the top (FLUX.1-schnell's 23 GB, SDXL-Turbo's)
PIPELINE_PATTERNS = ("model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors")


def download_pretrained(to: Path, repo: str) -> Path:
    """Fetch a diffusers pipeline repository (SDXL-Turbo, FLUX.1-schnell, any SDXL) into ``to``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it (or set it to 0).")
    endpoint = hub_endpoint()
    reason = unreachable(endpoint)
    if reason:
        raise DownloadError(f"Cannot reach {endpoint}: {reason}. Check the network, or set HF_ENDPOINT to a mirror.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    to = Path(to).expanduser()
    try:
        snapshot_download(repo, allow_patterns=list(PIPELINE_PATTERNS), local_dir=to)
    except GatedRepoError:
        raise DownloadError(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"{endpoint} has no repository {repo} (or it is private: set HF_TOKEN).") from None
    except (HfHubHTTPError, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise DownloadError(f"Downloading {repo} failed: {text[0] if text else type(exc).__name__}") from None
    if not (to / "model_index.json").is_file():
        raise DownloadError(f"{to} lacks model_index.json after the download; is {repo} a diffusers pipeline?")
    return to


def config_lines(to: Path, steps: tuple[int, ...]) -> str:
    """The config.toml lines that make the loader use the folder."""
    listed = ", ".join(str(n) for n in sorted(set(steps)))
    return f'[model]\npath = "{Path(to).expanduser().resolve()}"\nsteps = [{listed}]'

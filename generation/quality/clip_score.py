"""CLIP score per image: how well an image matches its prompt, by a CLIP model (``[eval]``).

    ClipScorer(EvalSettings(clip_model="openai/clip-vit-large-patch14"))
    await scorer.score(images, "a red fox in snow") -> [27.4, ...]

The score is torchmetrics' CLIPScore: ``100 * max(cos(image embedding, text embedding), 0)``,
on the prompt's words without weighting syntax (CLIP reads 77 tokens; the rest is cut, which is
fine for a score). It runs on its own thread after the images are stored, never on the GPU
worker's and never before delivery. ``clip_model = "tiny"`` is a random-weight CLIP for offline
tests (its scores mean nothing; the path is the real one).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from generation.core.weighting import plain_text

__all__ = ["EVAL_CLIP_MODEL", "ClipScorer", "EvalSettings", "build_tiny_clip"]

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"
EVAL_CLIP_MODEL = "openai/clip-vit-large-patch14"  # the CLIP score of the literature (torchmetrics' default)


@dataclass(frozen=True)
class EvalSettings:
    """The ``[eval]`` table. ``clip_model`` unset: no CLIP scores per served image (``imagine-bot
    eval`` then uses ``EVAL_CLIP_MODEL``). ``mlflow_uri``: log each ``imagine-bot eval`` run there."""

    clip_model: str | None = None
    device: str = "cpu"
    mlflow_uri: str | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"eval.device must be cpu or cuda, not {self.device!r}")
        if self.mlflow_uri is not None and (not isinstance(self.mlflow_uri, str) or not self.mlflow_uri.strip()):
            raise ValueError("eval.mlflow_uri must be a tracking URI such as 'file:///srv/mlruns' or "
                             f"'http://mlflow:5000', not {self.mlflow_uri!r}")


class ClipScorer:
    """Scores images against a prompt on one background thread (the model loads on first use)."""

    def __init__(self, settings: EvalSettings, *, model: Any = None, processor: Any = None) -> None:
        self.settings = settings
        self.model_name = settings.clip_model or TINY_MODEL
        self._model, self._processor = model, processor
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-score")
        self._lock = threading.Lock()

    async def score(self, images: Sequence[Any], prompt: str) -> list[float]:
        """The CLIP score of each of ``images`` for ``prompt`` (off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.score_now, list(images), prompt)

    def score_now(self, images: Sequence[Any], prompt: str) -> list[float]:
        """Blocking :meth:`score`."""
        import torch

        model, (tokenizer, image_processor) = self._load()
        device = next(model.parameters()).device
        text = tokenizer([plain_text(prompt)], padding=True, truncation=True,
                         max_length=min(77, tokenizer.model_max_length), return_tensors="pt").to(device)
        pixels = image_processor(images=[image.convert("RGB") for image in images],
                                 return_tensors="pt")["pixel_values"].to(device)
        with torch.inference_mode():
            text_features = _features(model.get_text_features(**text))
            image_features = _features(model.get_image_features(pixel_values=pixels))
        text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
        image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
        cosine = (image_features @ text_features.T).squeeze(-1)
        return [round(100.0 * max(float(c), 0.0), 3) for c in cosine]

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> tuple[Any, tuple[Any, Any]]:
        with self._lock:
            if self._model is None:
                if self.model_name == TINY_MODEL:
                    self._model, self._processor = build_tiny_clip()
                else:
                    from transformers import CLIPModel, CLIPTokenizer

                    name = self.model_name
                    self._model = CLIPModel.from_pretrained(name).to(self.settings.device).eval()
                    self._processor = (CLIPTokenizer.from_pretrained(name), _image_processor().from_pretrained(name))
                logger.info("CLIP scorer %s loaded on %s", self.model_name, self.settings.device)
            return self._model, self._processor


def _image_processor() -> Any:
    """CLIP's PIL image processor (the default one wants torchvision, which we do not install)."""
    try:
        from transformers import CLIPImageProcessorPil as processor
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as processor
    return processor


def _features(output: Any) -> Any:
    """transformers 5 returns a model output whose pooler_output is the projection; 4 a tensor."""
    return getattr(output, "pooler_output", output)


def build_tiny_clip(seed: int = 0) -> tuple[Any, tuple[Any, Any]]:
    """A CLIP of random weights over the tiny byte-level vocabulary, 32-pixel images (no download)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from generation.model.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = _image_processor()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, (tokenizer, processor)

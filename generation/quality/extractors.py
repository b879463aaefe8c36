"""Feature extractors for the evaluation metrics, and images turned into their input.

An extractor maps a batch of images (``uint8``, ``N x 3 x S x S``, S = ``image_size``) to
``(features, logits)``: the features feed FID, KID and precision/recall, the logits the Inception
Score. Two exist:

* :class:`InceptionExtractor`: the Inception-v3 of the FID paper (2048-d pool features, 1008
  logits), as torchmetrics ships it (``NoTrainInceptionV3``, whose weights torch-fidelity
  provides and downloads once into the torch hub cache; ``imagine-bot download --eval``);
* :class:`TinyExtractor`: a small convolutional net of seeded random weights, built in-process
  in milliseconds, so tests and ``imagine-bot eval --model tiny`` run offline. Its figures rank
  image sets that differ but mean nothing against published numbers.

Figures are only comparable between runs of the same extractor (the report names it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "Extractor", "InceptionExtractor", "TinyExtractor", "extract", "image_files",
           "load_batch", "to_tensor"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class Extractor(Protocol):
    name: str
    image_size: int

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TinyExtractor(torch.nn.Module):
    """Random conv features (32-d) and logits (10 classes) of 32 x 32 images; seeded, no download."""

    name = "tiny"
    image_size = 32

    def __init__(self, seed: int = 0, features: int = 32, classes: int = 10) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is not disturbed
            torch.manual_seed(seed)
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(16, features, 3, stride=2, padding=1), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            )
            self.head = torch.nn.Linear(features, classes)
        self.num_features = features
        self.eval()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = images.float() / 127.5 - 1.0
        features = self.body(x)
        return features, 20.0 * self.head(features)  # sharper class guesses, so the IS can move


class InceptionExtractor:
    """The FID Inception-v3 (torchmetrics' ``NoTrainInceptionV3``; needs torch-fidelity)."""

    name = "inception"
    image_size = 299

    def __init__(self, device: str = "cpu") -> None:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as exc:  # torchmetrics itself missing
            raise ImportError("the evaluation needs torchmetrics: pip install 'imagine-bot[eval]'") from exc
        try:
            self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"])
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "the Inception extractor needs torch-fidelity (pip install torch-fidelity); "
                "--model tiny runs without it") from exc
        self.model = self.model.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = self.model._torch_fidelity_forward(images.to(self.device))  # both heads, one pass
        return features.reshape(len(images), -1).float().cpu(), logits.float().cpu()


def image_files(folder: Path) -> list[Path]:
    """The images in ``folder`` (not its sub-folders), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """``3 x size x size`` uint8: the image centre-cropped to a square, resized with bicubic."""
    import numpy as np

    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def load_batch(paths: Sequence[Path], size: int) -> torch.Tensor:
    """The images at ``paths`` as one ``N x 3 x size x size`` uint8 tensor (ValueError naming a bad file)."""
    tensors = []
    for path in paths:
        try:
            with Image.open(path) as image:
                tensors.append(to_tensor(image, size))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not an image this evaluation can read ({exc})") from None
    return torch.stack(tensors)


def extract(extractor: Any, batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and logits of every batch, concatenated."""
    features, logits = [], []
    for batch in batches:
        f, lg = extractor(batch)
        features.append(f.detach().float().cpu())
        logits.append(lg.detach().float().cpu())
    return torch.cat(features), torch.cat(logits)

"""Image moderation: an offline nudity detector (NudeNet's bundled ONNX model) and its verdict logic.

    ImageClassifier.classify(image) -> Finding(category | None, labels)
        NudityClassifier     NudeNet detections → "explicit" when an exposed-body label scores
                             at or above the threshold; the model loads lazily, once
        VerdictClassifier    wraps an old-style ImageChecker ("ok" | "blocked" | "spoiler")
    explicit_finding(detections, settings)   the verdict logic alone (tests inject detections here)

Classifiers are synchronous and thread-safe: the caller runs them with ``asyncio.to_thread``.
What a finding means for delivery (block or spoiler) is the scope's policy, in moderation.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "EXPLICIT",
    "EXPLICIT_LABELS",
    "IMAGE_VERDICTS",
    "AllowAllImages",
    "Detection",
    "Finding",
    "ImageChecker",
    "ImageClassifier",
    "ImageSettings",
    "NudityClassifier",
    "VerdictClassifier",
    "explicit_finding",
]

logger = logging.getLogger(__name__)

IMAGE_VERDICTS = ("ok", "blocked", "spoiler")
EXPLICIT = "explicit"
EXPLICIT_LABELS = (
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "BUTTOCKS_EXPOSED",
)


@dataclass(frozen=True)
class ImageSettings:
    """Which detector labels count as explicit, and from which score."""

    explicit_labels: tuple[str, ...] = EXPLICIT_LABELS
    explicit_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.explicit_threshold <= 1.0:
            raise ValueError(f"`explicit_threshold` must be in (0, 1], not {self.explicit_threshold}")
        object.__setattr__(self, "explicit_labels", tuple(self.explicit_labels))


@dataclass(frozen=True)
class Detection:
    """One detector box: label and confidence."""

    label: str
    score: float
    box: tuple[int, ...] = ()


@dataclass(frozen=True)
class Finding:
    """What a classifier saw in one image: a category (None: nothing) and the labels behind it.

    ``forced`` carries an old-style checker's verdict, applied as is.
    """

    category: str | None = None
    labels: tuple[str, ...] = ()
    forced: str | None = None


CLEAN = Finding()


class ImageClassifier(Protocol):
    """Looks at one generated image (a PIL image) and reports what it found."""

    def classify(self, image: Any) -> Finding: ...


class ImageChecker(Protocol):
    """Old-style checker: "ok", "blocked" (never stored or sent) or "spoiler"."""

    def check(self, image: Any) -> str: ...


def explicit_finding(detections: Iterable[Detection | Mapping[str, Any]], settings: ImageSettings) -> Finding:
    """"explicit" when any of ``settings.explicit_labels`` scores at least the threshold."""
    labels = []
    for found in detections:
        label, score = ((found.label, found.score) if isinstance(found, Detection)
                        else (str(found["class"]), float(found["score"])))
        if label in settings.explicit_labels and score >= settings.explicit_threshold and label not in labels:
            labels.append(label)
    return Finding(EXPLICIT, tuple(labels)) if labels else CLEAN


class NudityClassifier:
    """NudeNet's detector, offline (the ONNX weights ship in the package), loaded on first use."""

    def __init__(self, settings: ImageSettings | None = None, *, detector: Any = None) -> None:
        self.settings = settings or ImageSettings()
        self._detector = detector  # anything with NudeNet's detect(ndarray) -> [{"class", "score", "box"}]
        self._lock = threading.Lock()

    def _model(self) -> Any:
        with self._lock:
            if self._detector is None:
                from nudenet import NudeDetector

                self._detector = NudeDetector()
                logger.info("NudeNet detector loaded")
            return self._detector

    def detect(self, image: Any) -> list[Detection]:
        """All of the detector's boxes for a PIL image (or a path, or a BGR array)."""
        import numpy as np

        if hasattr(image, "convert"):
            image = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        elif not isinstance(image, (str, np.ndarray)):
            image = str(image)
        model = self._model()
        with self._lock:  # one onnxruntime session; runs are short (~0.2 s on a CPU)
            found = model.detect(image)
        return [Detection(str(d["class"]), float(d["score"]), tuple(int(v) for v in d.get("box", ()))) for d in found]

    def classify(self, image: Any) -> Finding:
        """"explicit" (with the labels) or nothing."""
        return explicit_finding(self.detect(image), self.settings)


class VerdictClassifier:
    """Adapts an old-style :class:`ImageChecker`: its "blocked"/"spoiler" become forced findings."""

    def __init__(self, checker: ImageChecker) -> None:
        self.checker = checker

    def classify(self, image: Any) -> Finding:
        verdict = self.checker.check(image)
        if verdict not in IMAGE_VERDICTS:
            raise ValueError(f"image checker returned {verdict!r}, not one of {', '.join(IMAGE_VERDICTS)}")
        return CLEAN if verdict == "ok" else Finding("image filter", forced=verdict)


class AllowAllImages:
    """An ImageChecker (and classifier) that finds nothing in any image."""

    def check(self, image: Any) -> str:
        return "ok"

    def classify(self, image: Any) -> Finding:
        return CLEAN

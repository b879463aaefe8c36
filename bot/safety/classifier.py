"""A pluggable second opinion on prompts: an ONNX text classifier on the CPU, off by default.

    OnnxTextClassifier(path).score(text) -> float     probability that ``text`` is not allowed
    SecondOpinion(checker, classifier, threshold)     a PromptChecker: the blocklist first; what it
                                                      allows, the classifier may refuse (low tier)

The model takes one string tensor (shape [N] or [N, 1]: the prompt) and returns a score:
a float tensor [N] or [N, 1], class probabilities [N, 2] (column 1 is "not allowed"), or the
list of {label: probability} maps scikit-learn's ZipMap makes. A scikit-learn pipeline
(TfidfVectorizer + LogisticRegression) converted with skl2onnx has this shape. A classifier's
refusal is always low confidence: it refuses without a strike, so a model's mistake never
punishes anyone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

from bot.safety.blocklist import PromptChecker, Verdict
from bot.safety.lexicon import LOW

__all__ = ["OnnxTextClassifier", "SecondOpinion", "TextClassifier"]

logger = logging.getLogger(__name__)


class TextClassifier(Protocol):
    """Anything that scores a prompt between 0 (fine) and 1 (not allowed)."""

    def score(self, text: str) -> float: ...


class OnnxTextClassifier:
    """An ONNX model at ``path`` run by onnxruntime on the CPU (loaded on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"prompt classifier model {str(self.path)!r} does not exist")
        self._session: Any = None

    def _load(self) -> Any:
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return self._session

    def score(self, text: str) -> float:
        import numpy as np

        session = self._load()
        first = session.get_inputs()[0]
        shape = first.shape or [None]
        feed = np.array([text] if len(shape) == 1 else [[text]], dtype=object)
        outputs = session.run(None, {first.name: feed})
        return _probability(outputs)


def _probability(outputs: list[Any]) -> float:
    """The "not allowed" probability among a model's outputs (see the module docstring)."""
    for output in reversed(outputs):
        if isinstance(output, list) and output and isinstance(output[0], dict):
            row = output[0]
            for key in (1, "1", True, "blocked", "unsafe", "nsfw"):
                if key in row:
                    return float(row[key])
        shape = getattr(output, "shape", None)
        if shape is None or getattr(output, "dtype", None) is None or output.dtype.kind != "f":
            continue
        flat = output.reshape(shape[0], -1)[0]
        return float(flat[1] if flat.size == 2 else flat[0])
    raise ValueError("the prompt classifier returned no float scores")


class SecondOpinion:
    """A PromptChecker: ``checker`` decides; prompts it allows go to ``classifier`` too."""

    def __init__(self, checker: PromptChecker, classifier: TextClassifier, *, threshold: float = 0.8,
                 category: str = "explicit sexual content") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"`threshold` must be in (0, 1], not {threshold}")
        self.checker = checker
        self.classifier = classifier
        self.threshold = threshold
        self.category = category

    @property
    def categories(self) -> tuple[str, ...] | None:
        return getattr(self.checker, "categories", None)

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict:
        verdict = self.checker.check(prompt, negative, allow=allow)
        if not verdict.allowed or self.category in allow:
            return verdict
        try:
            score = self.classifier.score(prompt)
        except Exception:  # a broken model must not take the bot down; the blocklist still ran
            logger.exception("prompt classifier failed; allowing on the blocklist's verdict")
            return verdict
        if score >= self.threshold:
            logger.info("prompt refused by the classifier (%.2f)", score)
            return Verdict(False, self.category, LOW, f"classifier:{score:.2f}")
        return verdict

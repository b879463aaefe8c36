"""Captions for ``/describe``: an image-to-text model (BLIP) says what a picture shows.

    Describer(DescribeSettings(model="Salesforce/blip-image-captioning-base"))
    await describer.caption(image)  ->  "a cat sitting on a street at night"

- ``describe.model`` names a BLIP captioner (``BlipForConditionalGeneration`` and its
  ``BlipProcessor``; a Hub id or a local folder), loaded on first use on ``describe.device``;
  ``"tiny"`` builds one of random weights in-process (tests): its caption is junk, the path is real.
- It runs on its own thread, never on the GPU worker's, with a time limit (``describe.timeout_s``):
  generation stops at the next token once the deadline has passed.
- The caption is raw text: the service cleans it (:mod:`generation.core.suggest`), checks it
  with the prompt filter and builds the four suggestions.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from generation.model.side import SideModel

__all__ = ["DescribeSettings", "Describer", "TINY_MODEL", "build_tiny_blip"]

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"


@dataclass(frozen=True)
class DescribeSettings:
    """The ``[describe]`` table. ``model`` unset: /describe is off (it says so)."""

    model: str | None = None
    device: str = "cpu"
    timeout_s: float = 20.0
    max_new_tokens: int = 40
    per_hour: int = 20  # /describe calls per user per hour (free, but limited)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"describe.device must be cpu or cuda, not {self.device!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"describe.timeout_s must be above 0, not {self.timeout_s!r}")
        if self.max_new_tokens < 1 or self.per_hour < 1:
            raise ValueError("describe.max_new_tokens and describe.per_hour must be at least 1")


class Describer(SideModel):
    """Captions images on one background thread, with a time limit."""

    what, key, thread_name = "describe model", "describe.model", "describer"

    def __init__(self, settings: DescribeSettings, *, model: Any = None, processor: Any = None) -> None:
        super().__init__(settings, settings.model, model=model, processor=processor)

    async def caption(self, image: Any) -> str:
        """What ``image`` (PIL) shows, as the model writes it; GenerationFailed when it fails or is late."""
        deadline = time.monotonic() + self.settings.timeout_s
        return await self._answer(
            self.generate, image, deadline,
            late=f"Describing the image took longer than {self.settings.timeout_s:g} s; try again in a moment.",
            failed="The image could not be described; try again later.")

    def generate(self, image: Any, deadline: float | None = None) -> str:
        """The model's caption (blocking, on the describer's thread; stops at ``deadline``)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model, processor = self._load()
        self.calls += 1
        inputs = processor(images=image.convert("RGB"), return_tensors="pt").to(model.device)

        class Deadline(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return deadline is not None and time.monotonic() > deadline

        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False,
                                    stopping_criteria=StoppingCriteriaList([Deadline()]))
        return str(processor.decode(output[0], skip_special_tokens=True))

    def _build(self, name: str) -> tuple[Any, Any]:
        if name == TINY_MODEL:
            return build_tiny_blip()
        from transformers import BlipForConditionalGeneration, BlipProcessor

        return (BlipForConditionalGeneration.from_pretrained(name).to(self.settings.device).eval(),
                BlipProcessor.from_pretrained(name))


_TINY_WORDS = ("a", "the", "cat", "dog", "on", "in", "with", "red", "blue", "street", "night", "house", "tree",
               "sitting", "standing", "of", "and", "painting", "photo", "city")


def build_tiny_blip(seed: int = 0) -> tuple[Any, Any]:
    """A BLIP captioner of the real classes with small random weights and a small word-piece
    vocabulary written locally (no download): 64 px input."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil
    from transformers import BlipProcessor

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *_TINY_WORDS,
             *"abcdefghijklmnopqrstuvwxyz", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"), ",", "."]
    vocab = list(dict.fromkeys(vocab))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "vocab.txt")
        with open(path, "w", encoding="utf-8") as file:
            file.write("\n".join(vocab))
        tokenizer = BertTokenizer(path, bos_token="[DEC]")
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = BlipConfig(
        text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
                     "encoder_hidden_size": 32, "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
                     "sep_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={**layers, "image_size": 64, "patch_size": 8},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 64, "width": 64}),
                              tokenizer=tokenizer)
    return model, processor

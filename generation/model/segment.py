"""Masks from words: CLIPSeg turns "the cat" into a probability map over an image.

    MaskModel(EditSettings(mask_model="CIDAS/clipseg-rd64-refined"))
    await model.probabilities(image, "the cat")  ->  2-D numpy array, 0..1, at CLIPSeg's size

- ``edit.mask_model`` names a CLIPSeg checkpoint (``CLIPSegForImageSegmentation`` and its
  ``CLIPSegProcessor``; a Hub id or a local folder), loaded on first use on ``edit.device``;
  ``"tiny"`` builds one of random weights in-process (tests, ``make demo``).
- It runs on its own thread, never on the GPU worker's, with a time limit (``edit.timeout_s``):
  the service computes the mask before anything is charged, so a mask that finds nothing is
  refused for free (:mod:`generation.tools.masks` grows, feathers and measures it).
"""

from __future__ import annotations

import logging
from typing import Any

from generation.model.side import SideModel
from generation.tools.masks import EditSettings

__all__ = ["MaskModel", "TINY_MODEL", "build_tiny_clipseg"]

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"


class MaskModel(SideModel):
    """CLIPSeg on one background thread, with a time limit per call."""

    what, key, thread_name = "mask model", "edit.mask_model", "mask-model"

    def __init__(self, settings: EditSettings, *, model: Any = None, processor: Any = None) -> None:
        super().__init__(settings, settings.mask_model, model=model, processor=processor)

    async def probabilities(self, image: Any, words: str) -> Any:
        """Where ``words`` are in ``image`` (PIL): a 2-D array of 0..1; GenerationFailed saying what
        happened when the model fails or runs past the time limit."""
        return await self._answer(
            self.segment, image, words,
            late=f"Finding “{words}” took longer than {self.settings.timeout_s:g} s; nothing was charged. "
                 "Try again in a moment.",
            failed="The mask model failed, so nothing was changed and nothing was charged; try again later.")

    def segment(self, image: Any, words: str) -> Any:
        """The probability map (blocking, on the mask model's thread)."""
        import torch

        model, processor = self._load()
        self.calls += 1
        inputs = processor(text=[words], images=[image.convert("RGB")], padding=True, return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            logits = model(**inputs).logits
        return torch.sigmoid(logits.reshape(logits.shape[-2:]).float()).cpu().numpy()

    def _build(self, name: str) -> tuple[Any, Any]:
        if name == TINY_MODEL:
            return build_tiny_clipseg()
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        return (CLIPSegForImageSegmentation.from_pretrained(name).to(self.settings.device).eval(),
                CLIPSegProcessor.from_pretrained(name))


def build_tiny_clipseg(seed: int = 0) -> tuple[Any, Any]:
    """A CLIPSeg of the real classes with small random weights over the tiny byte-level vocabulary
    (no download): 64 px input, its map is 64x64."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor
    from transformers import ViTImageProcessorPil

    from generation.model.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = CLIPSegConfig(
        text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**layers, "image_size": 64, "patch_size": 8},
        projection_dim=32, reduce_dim=16, extract_layers=[1], decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config).eval()
    processor = CLIPSegProcessor(image_processor=ViTImageProcessorPil(size={"height": 64, "width": 64}),
                                 tokenizer=tokenizer)
    return model, processor

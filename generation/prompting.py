"""Weighted, chunked SDXL prompt encoding: A1111 weights on both text encoders and the pooled
embedding, prompts longer than 77 tokens in chunks, each distinct prompt encoded once per batch.

    encode_prompts(pipe, prompts, negatives) -> {"prompt_embeds", "pooled_prompt_embeds",
                                                "negative_prompt_embeds", "negative_pooled_prompt_embeds"}

The keyword arguments go straight into a diffusers SDXL (txt2img or img2img) call in place of
``prompt=`` / ``negative_prompt=``.

Why compel, and what is done here instead of compel's defaults:

- compel (kept, made for this) does the per-token weighting on the hidden states of each text
  encoder and the 77-token chunking (``truncate_long_prompts=False``: every chunk gets its own
  BOS/EOS, so nothing is cut). It is called at the fragment level
  (``get_embeddings_for_weighted_prompt_fragments``) with the fragments parsed by
  :mod:`generation.weighting`: compel's own prompt language (``word+``, ``(x)1.3``, ``.and()``)
  never sees user text, so "C++" or "a-b" stays literal.
- compel computes the pooled embedding from the raw text, unweighted. SDXL conditions on that
  pooled vector too (with the time ids), so a weight should move it. We interpolate in pooled
  space, per weighted fragment *i*::

      pooled = pooled(P) + sum_i (w_i - 1) * (pooled(P) - pooled(P without fragment i))

  which is exactly ``pooled(P)`` when every weight is 1 (so ``(cat:1.0)`` equals ``cat``),
  grows the fragment's contribution above 1 and removes it at 0. Like A1111 and compel, the
  pooled vector sees the first 77 tokens of the prompt (CLIP's pooled output is one token's).
- The negative prompt is weighted the same way. SDXL-Lightning runs with ``guidance_scale=0``,
  so the UNet does not use it today; it is still encoded and passed so that shapes agree and a
  CFG model would work unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from generation.weighting import Fragment, is_plain, parse_weighted

if TYPE_CHECKING:
    from compel import Compel

__all__ = ["PromptEncoder", "encode_prompts"]

logger = logging.getLogger(__name__)


class PromptEncoder:
    """Encodes prompts with one pipeline's tokenizers and text encoders (compel built once)."""

    def __init__(self, pipe: Any) -> None:
        from compel import Compel, ReturnedEmbeddingsType

        kind = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        self.pipe = pipe
        self._one: Compel = Compel(
            tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
            returned_embeddings_type=kind, truncate_long_prompts=False,
        )
        self._two: Compel = Compel(
            tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2,
            returned_embeddings_type=kind, truncate_long_prompts=False, requires_pooled=True,
        )

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], negatives: Sequence[str]) -> dict[str, torch.Tensor]:
        """Embeddings for each (prompt, negative) pair, padded to one length; each distinct text
        is encoded once."""
        if len(prompts) != len(negatives):
            raise ValueError("one negative prompt per prompt")
        distinct: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        for text, field in [(p, "prompt") for p in prompts] + [(n, "negative_prompt") for n in negatives]:
            if (text, field) not in distinct:
                distinct[(text, field)] = self.encode_one(text, field)
        logger.debug("encoded %d distinct texts for %d images", len(distinct), len(prompts))
        length = max(embeds.shape[1] for embeds, _ in distinct.values())
        padded = {key: (self._pad(embeds, length), pooled) for key, (embeds, pooled) in distinct.items()}
        dtype = self.pipe.unet.dtype

        def stack(texts: Sequence[str], field: str, which: int) -> torch.Tensor:
            return torch.cat([padded[(t, field)][which] for t in texts]).to(dtype)

        return {
            "prompt_embeds": stack(prompts, "prompt", 0),
            "pooled_prompt_embeds": stack(prompts, "prompt", 1),
            "negative_prompt_embeds": stack(negatives, "negative_prompt", 0),
            "negative_pooled_prompt_embeds": stack(negatives, "negative_prompt", 1),
        }

    def encode_one(self, text: str, field: str = "prompt") -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states [1, 77*k, d1+d2], pooled [1, d_pool]) of one weighted text."""
        fragments = _clean(parse_weighted(text, field))
        texts = [f.text for f in fragments]
        weights = [f.weight for f in fragments]
        device = self.pipe.text_encoder.device
        one = self._one.conditioning_provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[texts], fragment_weights_batch=[weights], device=device)
        two = self._two.conditioning_provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[texts], fragment_weights_batch=[weights], device=device)
        length = max(one.shape[1], two.shape[1])
        one, two = self._pad_part(one, length, self._one), self._pad_part(two, length, self._two)
        return torch.cat([one, two], dim=-1), self._pooled(fragments)

    def _pooled(self, fragments: tuple[Fragment, ...]) -> torch.Tensor:
        provider = self._two.conditioning_provider
        device = self.pipe.text_encoder_2.device
        whole = _join(f.text for f in fragments)
        if is_plain(fragments):
            return provider.get_pooled_embeddings([whole], device=device)
        weighted = [i for i, f in enumerate(fragments) if f.weight != 1.0]
        without = [_join(f.text for j, f in enumerate(fragments) if j != i) for i in weighted]
        pooled = provider.get_pooled_embeddings([whole, *without], device=device)
        base = pooled[:1]
        result = base.clone()
        for row, i in enumerate(weighted, start=1):
            result = result + (fragments[i].weight - 1.0) * (base - pooled[row:row + 1])
        return result

    def _pad(self, embeds: torch.Tensor, length: int) -> torch.Tensor:
        if embeds.shape[1] == length:
            return embeds
        one = self._pad_part(embeds[..., : self._width(self._one)], length, self._one)
        two = self._pad_part(embeds[..., self._width(self._one):], length, self._two)
        return torch.cat([one, two], dim=-1)

    @staticmethod
    def _width(compel: Compel) -> int:
        return int(compel.conditioning_provider.text_encoder.config.hidden_size)

    @staticmethod
    def _pad_part(embeds: torch.Tensor, length: int, compel: Compel) -> torch.Tensor:
        """Pad with the empty prompt's chunk, as compel does between prompts of unequal length."""
        if embeds.shape[1] >= length:
            return embeds
        empty = compel.conditioning_provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[[""]], fragment_weights_batch=[[1.0]], device=embeds.device).to(embeds.dtype)
        chunks = [embeds]
        missing = length - embeds.shape[1]
        while missing > 0:
            take = empty[:, : min(missing, empty.shape[1])]
            chunks.append(take)
            missing -= take.shape[1]
        return torch.cat(chunks, dim=1)


def encode_prompts(pipe: Any, prompts: Sequence[str], negatives: Sequence[str]) -> dict[str, torch.Tensor]:
    """Keyword arguments for an SDXL call: weighted, chunked embeddings of ``prompts``/``negatives``.

    The encoder is kept on the pipeline object, so compel is built once per pipeline.
    """
    encoder = getattr(pipe, "_imagine_prompt_encoder", None)
    if encoder is None or encoder.pipe is not pipe:
        encoder = PromptEncoder(pipe)
        pipe._imagine_prompt_encoder = encoder
    return encoder.encode(prompts, negatives)


def _clean(fragments: tuple[Fragment, ...]) -> tuple[Fragment, ...]:
    """Fragments with surrounding whitespace trimmed and empty ones dropped ('' when none)."""
    kept = tuple(Fragment(" ".join(f.text.split()), f.weight) for f in fragments if f.text.strip())
    return kept or (Fragment("", 1.0),)


def _join(texts: Any) -> str:
    return " ".join(t for t in texts if t)

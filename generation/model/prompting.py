"""Weighted, chunked SDXL prompt encoding: A1111 weights on both text encoders and the pooled
embedding, prompts longer than 77 tokens in chunks, each distinct prompt encoded once per batch.

    encode_prompts(pipe, prompts, dedupe=True) -> [(prompt_embeds, pooled_prompt_embeds), ...]

A plain prompt that fits one chunk (no weights; escapes removed) takes diffusers' own batched
``encode_prompt``, so it costs and draws exactly what it did before weighting existed; only
weighted or long prompts go through compel. The pipeline groups items by embedding length
(``77 * chunks``) and runs one call per length: padding a short prompt to a long neighbour's
length would change its image, and a seed must give the same image alone or in any batch.

Why compel, and what is done here instead of compel's defaults:

- compel (kept, made for this) does the per-token weighting on the hidden states of each text
  encoder and the 77-token chunking (``truncate_long_prompts=False``: every chunk gets its own
  BOS/EOS, so nothing is cut). It is called at the fragment level
  (``get_embeddings_for_weighted_prompt_fragments``) with the fragments parsed by
  :mod:`generation.core.weighting`: compel's own prompt language (``word+``, ``(x)1.3``, ``.and()``)
  never sees user text, so "C++" or "a-b" stays literal.
- compel computes the pooled embedding from the raw text, unweighted. SDXL conditions on that
  pooled vector too (with the time ids), so a weight should move it. We interpolate in pooled
  space, per weighted fragment *i*::

      pooled = pooled(P) + sum_i (w_i - 1) * (pooled(P) - pooled(P without fragment i))

  which is exactly ``pooled(P)`` when every weight is 1 (so ``(cat:1.0)`` equals ``cat``),
  grows the fragment's contribution above 1 and removes it at 0. Like A1111 and compel, the
  pooled vector sees the first 77 tokens of the prompt (CLIP's pooled output is one token's).
- The negative prompt (``--no``) accepts the same syntax and is checked the same way, but it
  is not encoded: SDXL-Lightning runs with ``guidance_scale=0``, where diffusers never uses
  negative embeddings (one UNet pass per step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from generation.core.weighting import Fragment, is_plain, parse_weighted

if TYPE_CHECKING:
    from compel import Compel

__all__ = ["Embedding", "PromptEncoder", "encode_prompts"]

Embedding = tuple[torch.Tensor, torch.Tensor]
"""(prompt_embeds [1, 77*k, d1+d2], pooled_prompt_embeds [1, d_pool]) of one prompt."""

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


def encode_prompts(pipe: Any, prompts: Sequence[str], *, dedupe: bool = True) -> list[Embedding]:
    """(prompt_embeds [1, 77*k, d], pooled [1, d_pool]) for each of ``prompts``, in order.

    Prompts without weights that fit one chunk (most of them) go through diffusers' own
    ``encode_prompt`` in one batched call, exactly as before this module existed; weighted or
    long ones through compel (:class:`PromptEncoder`, built once per pipeline). ``dedupe``: each
    distinct prompt is encoded once. Items may come back with different lengths (k chunks):
    the caller runs one pipeline call per length, so padding never changes an image.
    """
    keys = list(dict.fromkeys(prompts)) if dedupe else list(range(len(prompts)))
    texts = {key: prompts[key] if isinstance(key, int) else key for key in keys}
    parsed = {key: parse_weighted(texts[key]) for key in keys}  # each text parsed once
    words = {key: "".join(f.text for f in parsed[key]) for key in keys}  # escapes removed
    plain = [key for key in keys if is_plain(_clean(parsed[key])) and _fits(pipe, words[key])]
    done: dict[Any, Embedding] = {}
    if plain:
        from generation.model.speed import encode_prompts as encode_plain

        embeds, pooled = encode_plain(pipe, [words[key] for key in plain])
        done.update({key: (embeds[i:i + 1], pooled[i:i + 1]) for i, key in enumerate(plain)})
    rest = [key for key in keys if key not in done]
    if rest:
        encoder = getattr(pipe, "_imagine_prompt_encoder", None)
        if encoder is None or encoder.pipe is not pipe:
            encoder = PromptEncoder(pipe)
            pipe._imagine_prompt_encoder = encoder
        dtype = pipe.unet.dtype
        for key in rest:
            embeds, pooled = encoder.encode_one(texts[key])
            done[key] = (embeds.to(dtype), pooled.to(dtype))
        logger.debug("%d of %d prompts weighted or long (compel)", len(rest), len(keys))
    return [done[prompt if dedupe else i] for i, prompt in enumerate(prompts)]


def _fits(pipe: Any, text: str) -> bool:
    """Whether ``text`` fits one 77-token chunk of both tokenizers (BOS and EOS included)."""
    return all(
        len(tokenizer(text, truncation=False).input_ids) <= tokenizer.model_max_length
        for tokenizer in (pipe.tokenizer, pipe.tokenizer_2) if tokenizer is not None
    )


def _clean(fragments: tuple[Fragment, ...]) -> tuple[Fragment, ...]:
    """Fragments with surrounding whitespace trimmed and empty ones dropped ('' when none)."""
    kept = tuple(Fragment(" ".join(f.text.split()), f.weight) for f in fragments if f.text.strip())
    return kept or (Fragment("", 1.0),)


def _join(texts: Any) -> str:
    return " ".join(t for t in texts if t)

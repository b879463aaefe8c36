"""Prompt refinement: a small instruct LLM turns "a cat" into a detailed SDXL prompt.

    PromptRefiner(RefineSettings(model="Qwen/Qwen2.5-0.5B-Instruct", device="cpu"))
    await refiner.refine("a cat") -> Refined(text, refined=True)  or the original with a note

- ``refine.model`` names any transformers causal LM (a Hub id or a local folder); it is loaded on
  first use (or by :meth:`PromptRefiner.warm`), on ``refine.device`` (cpu or cuda).
- It runs on its own thread, never on the GPU worker's: image batches do not wait for it.
- A time limit bounds each call: generation stops at the next token once the deadline has passed,
  and the caller gets the original prompt and a note at the deadline either way.
- Successful results are cached per prompt (LRU); a failure or a timeout is not cached.
- The refined text is cleaned (first line, no quotes or "Prompt:" label, at most
  MAX_PROMPT_CHARS) and its weighting syntax escaped when its weights are out of bounds.
  Safety is the caller's: the service checks the refined text like any prompt.

Offline tests use :func:`build_tiny_causal_lm` (a Qwen2 of random weights over a local byte
vocabulary): its output is nonsense, the path is the real one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from generation.core.errors import InvalidRequest
from generation.core.request import MAX_PROMPT_CHARS, has_visible_text
from generation.core.weighting import parse_weighted
from generation.model.side import SideModel

__all__ = ["PromptRefiner", "RefineSettings", "Refined", "build_tiny_causal_lm", "clean_refined"]

logger = logging.getLogger(__name__)

INSTRUCTION = (
    "You write prompts for the Stable Diffusion XL image model. Rewrite the user's idea as one "
    "detailed prompt: subject, setting, lighting, composition, style and medium, comma-separated, "
    "under 60 words. Reply with the prompt only."
)
TINY_MODEL = "tiny"


@dataclass(frozen=True)
class RefineSettings:
    """The ``[refine]`` table. ``model`` unset: refinement is off (``--refine`` is refused)."""

    model: str | None = None
    device: str = "cpu"
    timeout_s: float = 20.0
    max_new_tokens: int = 96
    cache_size: int = 256

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"refine.device must be cpu or cuda, not {self.device!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"refine.timeout_s must be above 0, not {self.timeout_s!r}")
        if self.max_new_tokens < 1 or self.cache_size < 0:
            raise ValueError("refine.max_new_tokens must be at least 1 and refine.cache_size at least 0")


@dataclass(frozen=True)
class Refined:
    """The prompt to use, whether it is the model's, and what to tell the user (or None)."""

    text: str
    refined: bool
    note: str | None = None


class PromptRefiner(SideModel):
    """Refines prompts on one background thread, with a time limit and a cache."""

    what, key, thread_name = "prompt refiner", "refine.model", "refiner"

    def __init__(self, settings: RefineSettings, *, model: Any = None, tokenizer: Any = None) -> None:
        super().__init__(settings, settings.model, model=model, processor=tokenizer)
        self._cache: OrderedDict[str, str] = OrderedDict()  # ``calls`` counts the cache misses

    async def refine(self, prompt: str) -> Refined:
        """The refined prompt, or ``prompt`` itself with a note when refinement fails or times out."""
        cached = self._cache.get(prompt)
        if cached is not None:
            self._cache.move_to_end(prompt)
            return Refined(cached, True)
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            raw = await self._call(self.generate, prompt, deadline)
            text = clean_refined(raw)
        except asyncio.TimeoutError:
            logger.warning("prompt refinement timed out after %.1f s", self.settings.timeout_s)
            return self._late(prompt)
        except Exception as err:  # a broken model must not break /imagine
            logger.warning("prompt refinement failed: %s", err, exc_info=True)
            return Refined(prompt, False, "Refinement failed; your own prompt was used.")
        if time.monotonic() > deadline:
            return self._late(prompt)
        if self.settings.cache_size:
            self._cache[prompt] = text
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return Refined(text, True)

    def _late(self, prompt: str) -> Refined:
        """The user's own prompt, with the note that the time limit ran out."""
        return Refined(prompt, False, f"Refinement took longer than {self.settings.timeout_s:g} s; "
                                      f"your own prompt was used.")

    # -- the refiner thread -------------------------------------------------------------------

    def generate(self, prompt: str, deadline: float | None = None) -> str:
        """The model's raw answer for ``prompt`` (blocking; stops at ``deadline``)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model, tokenizer = self._load()
        self.calls += 1
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = f"{INSTRUCTION}\nIdea: {prompt}\nPrompt:"
        inputs = tokenizer(text, return_tensors="pt").to(model.device)

        class Deadline(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return deadline is not None and time.monotonic() > deadline

        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=self.settings.max_new_tokens, min_new_tokens=4,
                do_sample=False, stopping_criteria=StoppingCriteriaList([Deadline()]),
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1]:]
        return str(tokenizer.decode(new, skip_special_tokens=True))

    def _build(self, name: str) -> tuple[Any, Any]:
        if name == TINY_MODEL:
            return build_tiny_causal_lm()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return (AutoModelForCausalLM.from_pretrained(name).to(self.settings.device).eval(),
                AutoTokenizer.from_pretrained(name))


def clean_refined(raw: str) -> str:
    """The first usable line of the model's answer as a prompt; ValueError when there is none."""
    lines = [line.strip() for line in raw.replace("\r", "\n").split("\n")]
    text = next((line for line in lines if has_visible_text(line)), "")
    for label in ("prompt:", "refined prompt:", "sdxl prompt:"):
        if text.lower().startswith(label):
            text = text[len(label):].strip()
    text = text.strip().strip('"\u201c\u201d\'`').strip()
    if not has_visible_text(text):
        raise ValueError("the model's answer has no text")
    if len(text) > MAX_PROMPT_CHARS:
        text = text[:MAX_PROMPT_CHARS].rsplit(" ", 1)[0] or text[:MAX_PROMPT_CHARS]
    try:
        parse_weighted(text)
    except InvalidRequest:  # weights out of bounds: keep the words, drop the syntax's meaning
        text = "".join("\\" + c if c in "()[]\\" else c for c in text)
        if len(text) > MAX_PROMPT_CHARS:
            text = text[:MAX_PROMPT_CHARS].rstrip("\\")
    return text


def build_tiny_causal_lm(seed: int = 0) -> tuple[Any, Any]:
    """A Qwen2 causal LM of random weights over the tiny byte-level vocabulary (no download)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from generation.model.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.model_max_length = 2048
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).eval(), tokenizer

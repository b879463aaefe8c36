"""The one request type that travels from the parser to storage, and what a model can do.

``GenerationRequest`` validates what holds for every model in ``__post_init__``;
``ModelCaps.check`` adds what depends on the loaded model (its sizes and step checkpoints).
Both raise :class:`~generation.core.errors.InvalidRequest` naming the field and the allowed values;
nothing is ever clamped silently.
"""

from __future__ import annotations

import difflib
import math
import os
import secrets
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Union

from generation.core.errors import InvalidRequest
from generation.core.sizes import (ASPECT_RATIOS, FLUX_ASPECT_RATIOS, MAX_ASPECT, nearest_bucket, parse_ratio,
                                   sdxl_buckets, snap)
from generation.core.styles import STYLES, apply_style
from generation.core.weighting import parse_weighted

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_STRENGTH",
    "GenerationRequest",
    "GenerationResult",
    "LORA_WEIGHT_BOUNDS",
    "LoraSet",
    "MAX_LORAS",
    "ModelCaps",
    "MAX_COUNT",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "STEP_CHOICES",
    "Shape",
    "ACTIONS",
    "FROM_IMAGE",
    "UPSCALE_MODES",
    "denoising_steps",
    "has_visible_text",
    "nearest_bucket",
    "parse_ratio",
    "random_seed",
    "sdxl_buckets",
]

LoraSet = tuple[tuple[str, float], ...]
"""LoRA adapters of a request: ((name, weight), ...) sorted by name."""

Shape = Union[
    tuple[str, int, int, int],
    tuple[str, int, int, int, float],
    tuple[str, int, int, int, Union[float, None], LoraSet],
    tuple[str, int, int, int, Union[float, None], LoraSet, str],
]
"""(kind, width, height, steps), plus strength for img2img, plus (strength or None, LoRA set)
when the request uses LoRAs, plus the model's name when it names one: what one pipeline call shares."""

MAX_LORAS = 4
LORA_WEIGHT_BOUNDS = (-2.0, 2.0)

MAX_PROMPT_CHARS = 1000
MAX_MODEL_NAME = 64
MAX_COUNT = 4
MAX_SEED = 2**32 - 1
STEP_CHOICES = (1, 2, 4, 8)
# enlarge: the upscaler alone on a picture sent to it (A1111's extra-single-image), no diffusion pass
KINDS = ("txt2img", "img2img", "upscale", "zoom", "pan", "enlarge")
FROM_IMAGE = ("img2img", "upscale", "zoom", "pan", "enlarge")  # kinds that start from an init_image at a strength
ACTIONS = {"upscale": ("subtle", "creative"), "zoom": ("1.5", "2"), "pan": ("left", "right", "up", "down")}
MAX_UPSCALED = 4096  # an upscale is twice a bucket: up to 4096 px on its long side
DEFAULT_STRENGTH = 0.6
UPSCALE_MODES = ("subtle", "creative")

def random_seed() -> int:
    """A fresh seed in 0..MAX_SEED."""
    return secrets.randbelow(MAX_SEED + 1)


def denoising_steps(steps: int, strength: float | None) -> int:
    """Steps an img2img call of ``strength`` really runs out of ``steps`` (diffusers' rule).

    ``None`` (txt2img) runs them all.
    """
    if strength is None:
        return steps
    return min(int(steps * strength), steps)


# Characters that draw nothing: format characters (zero-width space/joiners, BOM, bidi marks),
# controls, separators, variation selectors, and letters that render blank (Hangul fillers,
# the blank Braille pattern, the Mongolian vowel separator).
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")


def has_visible_text(text: str) -> bool:
    """Whether ``text`` has at least one character that draws something."""
    for char in text:
        if char.isspace() or char in _BLANK_LETTERS:
            continue
        category = unicodedata.category(char)
        if category in ("Cf", "Cc", "Zs", "Zl", "Zp") or "\ufe00" <= char <= "\ufe0f":
            continue
        return True
    return False


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate and who asked. ``seed`` is the first image's; image i uses seed + i.

    ``kind="img2img"`` makes variations of ``init_image`` (an absolute path to an image file);
    ``strength`` (0 < s <= 1) is how much of it is re-noised: only ``int(steps * strength)``
    of the ``steps`` run, so it must leave at least one. txt2img ignores ``strength``.
    """

    prompt: str
    width: int = 1024
    height: int = 1024
    negative_prompt: str = ""
    steps: int = 4
    seed: int | None = None
    count: int = 1
    style: str = "none"
    kind: str = "txt2img"
    user_id: str = "local"
    platform: str = "cli"
    init_image: str | None = None
    strength: float = DEFAULT_STRENGTH
    variation_of: str | None = None  # "JOB#N": img2img of image N (from 1) of request JOB
    source: str | None = None  # "JOB#N": the image an upscale (and later zoom, pan) starts from
    mode: str | None = None  # an upscale's mode: "subtle" or "creative"
    # prompt power (issue 14): LoRA adapters and their file hashes (filled by ModelCaps.check),
    # whether the prompt was refined, and the user's own prompt when it was
    loras: LoraSet = ()
    lora_hashes: tuple[str, ...] = ()
    refine: bool = False
    original_prompt: str | None = None
    # issue 25: the catalogue name of the model that makes it; "" = the bot's default model
    model: str = ""

    def __post_init__(self) -> None:
        prompt = self.prompt.strip() if isinstance(self.prompt, str) else self.prompt
        if not isinstance(prompt, str) or not has_visible_text(prompt):
            raise InvalidRequest("prompt", "The prompt is empty: describe the image you want.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(
                "prompt",
                f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.",
            )
        object.__setattr__(self, "prompt", prompt)
        if not isinstance(self.negative_prompt, str):
            raise InvalidRequest("negative_prompt", "The negative prompt must be text.")
        negative = self.negative_prompt.strip()
        if len(negative) > MAX_PROMPT_CHARS:
            raise InvalidRequest(
                "negative_prompt",
                f"The negative prompt is {len(negative)} characters long; "
                f"the limit is {MAX_PROMPT_CHARS}.",
            )
        object.__setattr__(self, "negative_prompt", negative)
        parse_weighted(prompt, "prompt")  # a weight out of bounds is refused here
        parse_weighted(negative, "negative_prompt")
        self._check_loras()
        if not isinstance(self.model, str) or len(self.model) > MAX_MODEL_NAME:
            raise InvalidRequest("model", f"A model is named by a short name (/models lists them), not {self.model!r}.")
        object.__setattr__(self, "model", self.model.strip())
        if not isinstance(self.refine, bool):
            raise InvalidRequest("refine", f"refine must be true or false, not {self.refine!r}.")
        _check_int("count", self.count, 1, MAX_COUNT, "Image count")
        if self.seed is not None:
            _check_int("seed", self.seed, 0, MAX_SEED, "Seed")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps not in STEP_CHOICES:
            raise InvalidRequest(
                "steps", f"Steps must be one of {_join(STEP_CHOICES)}, not {self.steps!r}."
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            _check_int(name, value, 64, MAX_UPSCALED if self.kind in ("upscale", "enlarge") else 2048,
                       name.capitalize())
            if value % 16:
                raise InvalidRequest(name, f"{name.capitalize()} must be a multiple of 16, not {value}.")
        if not isinstance(self.style, str) or self.style not in STYLES:
            raise InvalidRequest(
                "style", f"Unknown style {self.style!r}; choose one of {_join(STYLES)}."
            )
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise InvalidRequest("kind", f"Unknown kind {self.kind!r}; choose one of {_join(KINDS)}.")
        strength = self.strength
        if (isinstance(strength, bool) or not isinstance(strength, (int, float))
                or not math.isfinite(strength) or not 0 < strength <= 1):
            raise InvalidRequest(
                "strength", f"Strength must be a number above 0 and at most 1, not {strength!r}."
            )
        object.__setattr__(self, "strength", float(strength))
        self._check_init_image()

    def _check_loras(self) -> None:
        loras = self.loras
        if not isinstance(loras, (list, tuple)):
            raise InvalidRequest("lora", f"loras must be (name, weight) pairs, not {loras!r}.")
        pairs: list[tuple[str, float]] = []
        low, high = LORA_WEIGHT_BOUNDS
        for entry in loras:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
                raise InvalidRequest("lora", f"A LoRA must be a (name, weight) pair, not {entry!r}.")
            name, weight = entry[0].strip(), entry[1]
            if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                    or not math.isfinite(weight) or not low <= weight <= high):
                raise InvalidRequest(
                    "lora", f"The weight of LoRA {name!r} must be a number from {low:g} to {high:g}, "
                            f"not {weight!r}.")
            if not name:
                raise InvalidRequest("lora", "A LoRA needs a name, e.g. <lora:name:0.8>.")
            pairs.append((name, float(weight)))
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise InvalidRequest("lora", "Each LoRA may be given once; combine the weights into one tag.")
        if len(pairs) > MAX_LORAS:
            raise InvalidRequest("lora", f"At most {MAX_LORAS} LoRAs per prompt, not {len(pairs)}.")
        object.__setattr__(self, "loras", tuple(sorted(pairs)))
        object.__setattr__(self, "lora_hashes", tuple(self.lora_hashes or ()))

    def _check_init_image(self) -> None:
        init = self.init_image
        if isinstance(init, os.PathLike):
            init = os.fspath(init)
            object.__setattr__(self, "init_image", init)
        if self.variation_of is not None and (self.kind != "img2img" or not isinstance(self.variation_of, str)
                                              or "#" not in self.variation_of):
            raise InvalidRequest("variation_of", f"variation_of must be 'JOB#N' on an img2img request, "
                                                 f"not {self.variation_of!r}.")
        if self.kind in ACTIONS and (not isinstance(self.source, str) or "#" not in self.source
                                     or self.mode not in ACTIONS[self.kind] or self.count != 1):
            raise InvalidRequest("source", f"A {self.kind} names one image ('JOB#N'), a mode "
                                           f"({_join(ACTIONS[self.kind])}) and makes one image, not "
                                           f"{self.source!r}, {self.mode!r}, {self.count}.")
        if self.kind not in FROM_IMAGE:
            if init is not None:
                raise InvalidRequest(
                    "init_image", f"An init_image is only used by img2img requests, not {self.kind}."
                )
            return
        if init is None:
            raise InvalidRequest("init_image", f"An {self.kind} request needs an init_image to start from.")
        if not isinstance(init, str) or not os.path.isabs(init):
            raise InvalidRequest(
                "init_image", f"init_image must be the absolute path of an image file, not {init!r}."
            )
        if denoising_steps(self.steps, self.strength) < 1:
            raise InvalidRequest(
                "strength",
                f"Strength {self.strength:g} is too low for {self.steps} steps: no step would run; "
                f"use at least {1 / self.steps:g}.",
            )

    # -- derived views -------------------------------------------------------------------------

    @property
    def seeds(self) -> tuple[int, ...]:
        """One seed per image: seed, seed+1, ... (wrapping at 2**32). Needs a resolved seed."""
        if self.seed is None:
            raise ValueError("seed is not resolved; call with_seed() first")
        return tuple((self.seed + i) % (MAX_SEED + 1) for i in range(self.count))

    @property
    def shape(self) -> Shape:
        """Jobs of the same shape can share one pipeline call (img2img: of the same strength too;
        a named model: of that model only, as the 7th element)."""
        if self.model:  # the queue never mixes models in one batch
            strength = self.strength if self.kind in FROM_IMAGE else None
            return (self.kind, self.width, self.height, self.steps, strength, self.loras, self.model)
        if self.loras:  # the queue never mixes LoRA sets (or weights) in one batch
            strength = self.strength if self.kind in FROM_IMAGE else None
            return (self.kind, self.width, self.height, self.steps, strength, self.loras)
        if self.kind in FROM_IMAGE:
            return (self.kind, self.width, self.height, self.steps, self.strength)
        return (self.kind, self.width, self.height, self.steps)

    @property
    def styled_prompts(self) -> tuple[str, str]:
        """(prompt, negative prompt) as the pipeline sees them, style applied."""
        return apply_style(self.style, self.prompt, self.negative_prompt)

    def with_seed(self, seed: int | None = None) -> GenerationRequest:
        """This request with a concrete seed (``seed`` or a random one if none is set)."""
        if seed is None and self.seed is not None:
            return self
        return replace(self, seed=random_seed() if seed is None else seed)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class ModelCaps:
    """What a model accepts: its base resolution, the step counts it has, and (issue 25) what
    else it can do: which request kinds, a negative prompt, LoRAs; its family's own sizes."""

    name: str = "sdxl-lightning"
    base_resolution: int = 1024
    steps: tuple[int, ...] = (4,)
    loras: tuple[tuple[str, str], ...] = ()  # (name, file sha256) of each usable LoRA
    family: str = "sdxl"  # "sdxl" or "flux": the aspect buckets, LoRA format
    kinds: tuple[str, ...] = KINDS  # the request kinds it runs (Flux: txt2img only)
    negative_prompt: bool = True  # Flux-schnell has no negative prompt (no CFG, no unconditional pass)
    default_step: int = 0  # its default step count; 0: 4 when it has 4, else its first

    @property
    def default_steps(self) -> int:
        if self.default_step in self.steps:
            return self.default_step
        return 4 if 4 in self.steps else self.steps[0]

    def sizes(self) -> dict[str, tuple[int, int]]:
        """Aspect ratio -> (width, height) for this model's base resolution."""
        scale = self.base_resolution / 1024
        table = FLUX_ASPECT_RATIOS if self.family == "flux" else ASPECT_RATIOS
        return {ar: (snap(w * scale), snap(h * scale)) for ar, (w, h) in table.items()}

    def buckets(self) -> tuple[tuple[int, int], ...]:
        """Every size this model makes: the SDXL buckets at its base resolution (4:1 to 1:4)."""
        return tuple(sorted(set(sdxl_buckets(self.base_resolution)) | set(self.sizes().values())))

    def size_for(self, aspect: str) -> tuple[int, int]:
        """The size of a named ratio ("16:9"), or of the bucket nearest any W:H up to 4:1 ("4:5")."""
        sizes = self.sizes()
        if isinstance(aspect, str) and aspect.strip() in sizes:
            return sizes[aspect.strip()]
        width, height = parse_ratio(aspect)
        return nearest_bucket(width, height, self.base_resolution)

    def check(self, request: GenerationRequest) -> GenerationRequest:
        """Raise InvalidRequest unless this model can run ``request``; return it otherwise."""
        self._check_abilities(request)
        if request.steps not in self.steps:
            raise InvalidRequest(
                "steps",
                f"{_owner(self, request)} has {_join(self.steps)}-step checkpoints loaded; "
                f"{request.steps} steps is not available.",
            )
        request = self._check_loras(request)
        size = (request.width, request.height)
        if request.kind == "upscale":  # twice a size this model makes
            size = (request.width // 2, request.height // 2) if not request.width % 2 and not request.height % 2 else size
        if size not in self.buckets() and request.kind != "enlarge":  # enlarge: twice any picture sent
            allowed = ", ".join(f"{ar} ({w}x{h})" for ar, (w, h) in self.sizes().items())
            raise InvalidRequest(
                "size",
                f"{request.width}x{request.height} is not a supported size; use an aspect ratio: "
                f"{allowed}, or any W:H up to {MAX_ASPECT}:1.",
            )
        return request

    def _check_abilities(self, request: GenerationRequest) -> None:
        """What this model cannot do at all, each refusal naming what to change (issue 25)."""
        which = f"The model {self.name}"
        if request.kind not in self.kinds:
            what = {"img2img": "pictures from an image", "upscale": "upscales", "zoom": "zoom-outs",
                    "pan": "pans", "enlarge": "enlargements"}.get(request.kind, request.kind)
            raise InvalidRequest("model", f"{which} makes only {_join(self.kinds)} images, not {what}: "
                                          f"choose another model with --model (/models lists them).")
        if request.negative_prompt and not self.negative_prompt:
            raise InvalidRequest("negative_prompt", f"{which} takes no negative prompt: remove --no "
                                                    f"(or choose another model with --model).")
        if request.loras and self.family == "flux":
            raise InvalidRequest("lora", f"{which} takes no LoRAs (they are made for SDXL): remove the "
                                         f"<lora:…> tags (or choose an SDXL model with --model).")

    def _check_loras(self, request: GenerationRequest) -> GenerationRequest:
        """Refuse unknown LoRA names (naming the closest ones); fill in the file hashes."""
        if not request.loras:
            return request
        known = dict(self.loras)
        for name, _ in request.loras:
            if name in known:
                continue
            if not known:
                raise InvalidRequest("lora", f"Unknown LoRA {name!r}: this bot has no LoRAs installed.")
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.4)
            hint = f"did you mean {_join(close)}?" if close else f"available: {_join(sorted(known)[:10])}."
            raise InvalidRequest("lora", f"Unknown LoRA {name!r}; {hint} (/loras lists them)")
        hashes = tuple(known[name] for name, _ in request.loras)
        return request if hashes == request.lora_hashes else replace(request, lora_hashes=hashes)


@dataclass(frozen=True)
class GenerationResult:
    """The images of one job, in seed order, and how they were made."""

    request: GenerationRequest
    images: tuple[Any, ...]  # PIL.Image.Image, one per seed
    seeds: tuple[int, ...]
    model: str
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


def _owner(caps: ModelCaps, request: GenerationRequest) -> str:
    return f"The model {caps.name}" if request.model else "This bot's model"


def _check_int(name: str, value: object, low: int, high: int, label: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(name, f"{label} must be a whole number from {low} to {high}, not {value!r}.")


def _join(values: Any) -> str:
    items = [str(v) for v in values]
    return ", ".join(items[:-1]) + (" or " if len(items) > 1 else "") + items[-1]

"""Parse what users type after ``/imagine`` into a :class:`GenerationRequest` (pure: no I/O).

Grammar (Midjourney style)::

    text   := (word | flag)*                  words split on whitespace (str.isspace)
    flag   := PREFIX NAME ["=" value]         PREFIX is "--", or an em dash "—" / en dash "–"
                                              (phones autocorrect "--"); NAME starts with an
                                              ASCII letter and is case-insensitive
    value  := the next word                   for --ar/--aspect, --seed, --n/--count, --style,
                                              --steps (the inline "=value" replaces it)
            | words up to the next flag       for --no (the negative prompt: "--no blur, text")
    prompt := every word that is neither a flag nor a flag's value, joined by one space

    --ar W:H (alias --aspect)   any whole-number ratio up to 4:1 either way (16:9, 4:5, 7:4):
                                the nearest SDXL size; with an image, its own ratio by default
    --seed N                    0 .. 2**32-1; image i of the job uses seed + i
    --no TEXT                   negative prompt
    --n N (alias --count)       number of images, 1 .. 4
    --style NAME                a preset from generation.core.styles
    --steps N                   one of the step counts the loaded model has
    --refine                    (no value) a small language model rewrites the prompt first
    --strength S                with an image to start from: how much of it changes, 0.1 .. 1
    --model NAME                one of the bot's models (/models lists them); its sizes and steps apply
    <lora:NAME:W>               in the prompt text: a LoRA adapter at weight W (default 1)

Prompt text may use A1111 weighting: ``(word:1.3)``, ``(word)``, ``[word]``, ``\\(`` escapes
(:mod:`generation.core.weighting`); it is part of the words, so it never swallows a flag: words are
split and flags taken out first, and ``(a --ar 16:9)`` is the text ``(a`` then ``--ar 16:9)``.

Quoting: a quote opens a group only at the start of a word (not after a letter or digit) and
the group ends at the first matching quote that is not followed by a letter or digit. Inside a
group everything is literal (whitespace, other quotes, ``--ar``), and the quotes themselves are
dropped: ``"a sign saying --ar" --ar 1:1``.
Pairs: ``"…"``, ``'…'``, ``“…”``, ``‘…’``.
Quotes inside words are plain text, so apostrophes work: ``a cat's hat``, ``5'11"``; but a
quoted word loses its quotes (``rock 'n' roll`` -> ``rock n roll``). A word that starts with a
quoted part is never a flag (``""--ar`` is text). Unquoted whitespace runs become one space.
A group that is opened and never closed is an error (field ``prompt``) rather than being read
literally, so a forgotten quote never turns flags into prompt text silently.

Prefix characters followed by something other than an ASCII letter are text (``-- ``, ``--5``,
``—Привет``). Every mistake raises :class:`~generation.core.errors.InvalidRequest` (exported here
as ``OptionsError``) whose ``field`` names what to fix and whose message is shown to the user:
``flags`` (unknown option), ``prompt`` (empty, too long, unbalanced quote), or the request field
an option sets (``aspect``, ``seed``, ``negative_prompt``, ``count``, ``style``, ``steps``) for a
missing, malformed, repeated or conflicting value; ``size``/``steps`` also come from
``ModelCaps.check``. Typed (slash-command) options use the same checks; giving one together
with its flag is an error. ``render`` writes the canonical text that parses back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.options.tags import extract_loras, has_lora_tag, lora_tag, parse_lora_option
from bot.options.values import STRENGTH_BOUNDS
from bot.options.values import Setting as _Setting
from bot.options.values import int_value as _int_value
from bot.options.values import refine_value as _refine_value
from bot.options.values import steps_value as _steps_value
from bot.options.values import strength_value as _strength_value
from bot.options.values import text_value as _text_value
from bot.options.words import Word, lex, prefix_len, quote
from generation.core.errors import InvalidRequest
from generation.core.request import (
    DEFAULT_STRENGTH,
    MAX_COUNT,
    MAX_SEED,
    GenerationRequest,
    ModelCaps,
    has_visible_text,
    nearest_bucket,
)
from generation.core.catalogue import Catalogue
from generation.core.styles import STYLES

__all__ = [
    "Defaults",
    "OptionsError",
    "PENDING_UPLOAD",
    "STRENGTH_BOUNDS",
    "aspect_of",
    "help_text",
    "parse_imagine",
    "render",
    "styles_text",
]

OptionsError = InvalidRequest
PENDING_UPLOAD = "/pending-upload"  # init_image of a parsed upload request until the image is stored



@dataclass(frozen=True)
class Defaults:
    """A user's saved defaults; flags and typed options override them."""

    aspect: str = "1:1"
    style: str = "none"
    count: int = 1
    steps: int | None = None  # None: the model's default step count
    refine: bool = False  # the per-user "refine" setting
    model: str | None = None  # the per-user default model (a catalogue name)


@dataclass(frozen=True)
class _Flag:
    """One option: its flag names, the request field it sets and how to describe it."""

    names: tuple[str, ...]
    field: str
    option: str  # typed (slash-command) option name
    label: str  # what it sets, for messages
    metavar: str

    @property
    def flag(self) -> str:
        return "--" + self.names[0]

    @property
    def usage(self) -> str:
        aliases = "".join(f" (or --{alias})" for alias in self.names[1:])
        return f"{self.flag} {self.metavar}{aliases}"


_FLAGS = (
    _Flag(("ar", "aspect"), "aspect", "aspect", "the aspect ratio", "W:H"),
    _Flag(("n", "count"), "count", "count", "the number of images", "N"),
    _Flag(("seed",), "seed", "seed", "the seed", "N"),
    _Flag(("no",), "negative_prompt", "negative", "the negative prompt", "TEXT"),
    _Flag(("style",), "style", "style", "the style", "NAME"),
    _Flag(("steps",), "steps", "steps", "the step count", "N"),
    _Flag(("refine",), "refine", "refine", "prompt refinement", ""),
    _Flag(("strength",), "strength", "strength", "the strength", "S"),
    _Flag(("model",), "model", "model", "the model", "NAME"),
)
_BY_NAME = {name: flag for flag in _FLAGS for name in flag.names}
_BY_OPTION = {flag.option: flag for flag in _FLAGS}


# -- public API ---------------------------------------------------------------------------------


def parse_imagine(
    text: str,
    *,
    caps: ModelCaps,
    defaults: Defaults | None = None,
    user_id: str = "local",
    platform: str = "cli",
    aspect: str | None = None,
    seed: int | str | None = None,
    negative: str | None = None,
    count: int | str | None = None,
    style: str | None = None,
    steps: int | str | None = None,
    lora: str | None = None,
    refine: bool | None = None,
    strength: float | str | None = None,
    image_size: tuple[int, int] | None = None,
    default_strength: float = DEFAULT_STRENGTH,
    model: str | None = None,
    models: Catalogue | None = None,
    rollout: str = "",
) -> GenerationRequest:
    """Parse ``text`` (plus typed slash-command options) into a request ``caps`` can run.

    ``models``: the bot's catalogue, which ``--model NAME`` (or the typed ``model`` option, or the
    user's saved default) picks from; the request is then checked against that model's caps.
    ``rollout``: the model a request that names none goes to ("" = the default, ``caps``).

    ``image_size`` (the size of an image the user sent) makes an img2img request at the bucket
    nearest the image's ratio unless an aspect ratio is given; its ``init_image`` is
    :data:`PENDING_UPLOAD` until the service stores the fitted image and puts its path there.
    """
    image = PENDING_UPLOAD if image_size is not None else None
    if not isinstance(text, str):
        raise InvalidRequest("prompt", "The prompt is empty: describe the image you want.")
    prompt_words, settings, negative_words = _read_flags(lex(text), caps)
    prompt_words, loras = extract_loras(prompt_words)
    if lora is not None:
        loras += parse_lora_option(lora)
    if any(has_lora_tag(word) for word in negative_words):
        raise InvalidRequest("lora", "LoRA tags go in the prompt, not after --no.")
    typed = {"aspect": aspect, "seed": seed, "negative": negative, "count": count,
             "style": style, "steps": steps, "refine": refine, "strength": strength, "model": model}
    for option, value in typed.items():
        if value is None:
            continue
        flag = _BY_OPTION[option]
        if flag.field in settings:
            raise InvalidRequest(
                flag.field,
                f"{flag.label.capitalize()} is set twice: by the `{option}` option and by "
                f"{settings[flag.field].source} in the text; keep one.",
            )
        settings[flag.field] = _Setting(value, f"the `{option}` option", f"The `{option}` option")
    defaults = defaults or Defaults()
    chosen, caps = _model_value(settings, defaults, caps, models, rollout)
    for name in ("aspect", "style", "count", "steps"):
        value = getattr(defaults, name)
        if name == "steps" and chosen and value not in caps.steps:  # saved for another model: this one's default
            continue
        if name not in settings and value is not None:
            label = _BY_OPTION[name].label
            subject = f"Your saved default for {label}"
            settings[name] = _Setting(value, "your saved defaults", subject)

    prompt = " ".join(prompt_words)
    if not has_visible_text(prompt):
        hint = ""
        if negative_words:
            hint = (" Everything after --no up to the next flag is the negative prompt, "
                    "so put --no after the prompt.")
        raise InvalidRequest("prompt", "The prompt is empty: describe the image you want." + hint)

    if image is not None and image_size is not None and (
            "aspect" not in settings or settings["aspect"].source == "your saved defaults"):
        settings["aspect"] = _Setting(f"{image_size[0]}:{image_size[1]}", "your image", "Your image")
    try:
        aspect_text = _text_value(settings, "aspect", "1:1", "an aspect ratio")
        if settings.get("aspect", _Setting("", "", "")).source == "your image":
            width, height = nearest_bucket(*image_size, caps.base_resolution)  # type: ignore[misc]
        else:
            width, height = caps.size_for(aspect_text)
    except InvalidRequest as err:
        if settings.get("aspect", _Setting("", "", "")).source != "your saved defaults":
            raise
        raise InvalidRequest("aspect", f"{err} (This comes from your saved defaults.)") from None
    steps_value = _steps_value(settings, caps)
    image_fields: dict[str, object] = {}
    if image is not None:
        power = _strength_value(settings, default_strength)
        if int(steps_value * power) < 1:  # img2img runs int(steps * strength) steps: take more
            more = [s for s in sorted(caps.steps) if int(s * power) >= 1]
            if not more or "steps" in settings:
                raise InvalidRequest("strength", f"Strength {power:g} is too low for {steps_value} steps: no "
                                                 f"step would run; use at least {1 / steps_value:g}.")
            steps_value = more[0]
        image_fields = {"kind": "img2img", "init_image": image, "strength": power}
    elif "strength" in settings:
        raise InvalidRequest("strength", f"{settings['strength'].subject} needs an image to start from: "
                                         "attach one (or reply to one) with your prompt.")
    request = GenerationRequest(
        prompt=prompt,
        width=width,
        height=height,
        negative_prompt=_text_value(settings, "negative_prompt", "", "text"),
        steps=steps_value,
        seed=_int_value(settings, "seed", None, 0, MAX_SEED),
        count=_int_value(settings, "count", 1, 1, MAX_COUNT),
        style=_text_value(settings, "style", "none", "a style name").strip().lower(),
        user_id=user_id,
        platform=platform,
        loras=tuple(loras),
        refine=_refine_value(settings, defaults),
        model=chosen,
        **image_fields,  # type: ignore[arg-type]
    )
    return caps.check(request)


def _model_value(settings: dict[str, _Setting], defaults: Defaults, caps: ModelCaps, models: Catalogue | None,
                 rollout: str) -> tuple[str, ModelCaps]:
    """(the request's model, its caps): named by --model / the option, else the saved default,
    else ``rollout``; "" and ``caps`` for the default model."""
    setting = settings.get("model")
    if setting is None and defaults.model:
        setting = _Setting(defaults.model, "your saved defaults", "Your saved default model")
    if setting is None:
        return (rollout, models.caps_for(rollout)) if models is not None and rollout else ("", caps)
    name = str(setting.value).strip()
    try:
        if models is None:
            if name.lower() != caps.name.lower():
                raise InvalidRequest("model", f"Unknown model {name!r}; this bot has {caps.name}.")
            return "", caps
        chosen = models.resolve(name)
    except InvalidRequest as err:
        if setting.source == "your saved defaults":
            raise InvalidRequest("model", f"{err} (This comes from your saved defaults: /settings model=default "
                                          f"resets it.)") from None
        raise
    return chosen, (models.caps_for(chosen) if chosen else caps)


def render(request: GenerationRequest, caps: ModelCaps) -> str:
    """Canonical text for ``request``; ``parse_imagine`` (no defaults) reads it back unchanged."""
    parts = [quote(request.prompt), *(lora_tag(n, w) for n, w in request.loras),
             f"--ar {aspect_of(request, caps)}"]
    if request.count > 1:
        parts.append(f"--n {request.count}")
    if request.seed is not None:
        parts.append(f"--seed {request.seed}")
    if request.negative_prompt:
        parts.append(f"--no {quote(request.negative_prompt)}")
    if request.style != "none":
        parts.append(f"--style {request.style}")
    if request.steps != caps.default_steps:
        parts.append(f"--steps {request.steps}")
    if request.model:
        parts.append(f"--model {request.model}")
    if request.refine and request.original_prompt is None:  # a refined prompt is not refined again
        parts.append("--refine")
    if request.kind == "img2img" and request.variation_of is None:  # parses back with its image
        parts.append(f"--strength {request.strength:g}")
    return " ".join(parts)


def aspect_of(request: GenerationRequest, caps: ModelCaps) -> str:
    """The aspect ratio ("16:9", or "14:17" for a bucket without a name) of the request's size."""
    size = (request.width, request.height)
    for ratio, named in caps.sizes().items():
        if named == size:
            return ratio
    if size in caps.buckets():
        common = math.gcd(*size)
        return f"{size[0] // common}:{size[1] // common}"
    allowed = ", ".join(f"{ar} ({w}x{h})" for ar, (w, h) in caps.sizes().items())
    raise InvalidRequest(
        "size",
        f"{request.width}x{request.height} is not a supported size; "
        f"use an aspect ratio: {allowed}.",
    )


def help_text(caps: ModelCaps) -> str:
    """Short usage text: flags, aspect ratios and styles (for /help)."""
    ratios = ", ".join(f"{ar} ({w}x{h})" for ar, (w, h) in caps.sizes().items())
    steps = ", ".join(str(s) for s in caps.steps)
    lines = [
        "Usage: /imagine <prompt> [options]",
        f"  --ar W:H      aspect ratio (also --aspect), default 1:1: {ratios}; or any W:H up to 4:1",
        f"  --n N         number of images, 1 to {MAX_COUNT} (also --count)",
        f"  --seed N      seed from 0 to {MAX_SEED}, to repeat an image",
        "  --no TEXT     what to leave out; runs until the next option",
        f"  --style NAME  {', '.join(STYLES)}",
        f"  --steps N     {steps} (default {caps.default_steps})",
        "  --refine      let a small language model write a detailed prompt from yours",
        "  --strength S  with an attached image: how much of it changes, 0.1 to 1 (default 0.6)",
        "  --model NAME  another of the bot's models (/models lists them)",
        "  <lora:NAME:0.8>  in the prompt: a LoRA adapter (/loras lists them)",
        "  (word:1.3) (word) [word]  weight words up or down; \\( for a literal bracket",
        'Options may come anywhere; "--opt=value" and an em dash (—ar) work too.',
        'Quote text to keep an option in the prompt: "a sign saying --ar".',
        "Example: /imagine a red fox in snow --ar 16:9 --seed 7 --no blur, watermark",
    ]
    return "\n".join(lines)


def styles_text() -> str:
    """One line per style preset: name and description."""
    width = max(len(name) for name in STYLES)
    return "\n".join(f"{name.ljust(width)}  {style.description}" for name, style in STYLES.items())


# -- flags --------------------------------------------------------------------------------------


def _valid_flags() -> str:
    return "Valid options: " + ", ".join(flag.usage for flag in _FLAGS) + "."


def _read_flags(
    words: list[Word], caps: ModelCaps
) -> tuple[list[str], dict[str, _Setting], list[str]]:
    """Separate prompt words from flags; return (prompt words, settings, --no words)."""
    prompt: list[str] = []
    settings: dict[str, _Setting] = {}
    negative_words: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.is_flag:
            prompt.append(word.text)
            continue
        first = word.segments[0][0]
        head, eq, inline_first = first.partition("=")
        if not eq and len(word.segments) > 1:
            head = word.raw  # e.g. --ar"16:9": not a flag name we know
        name = head[prefix_len(head):].lower()
        flag = _BY_NAME.get(name)
        if flag is None:
            raise InvalidRequest("flags", f"Unknown option {head!r}. {_valid_flags()}")
        used = f"--{name}"
        if flag.field in settings:
            raise InvalidRequest(
                flag.field,
                f"{used} sets {flag.label} again (already set by {settings[flag.field].source}); "
                f"give each option once. {_valid_flags()}",
            )
        inline = inline_first + "".join(s for s, _ in word.segments[1:]) if eq else None
        if flag.field == "refine":  # a switch: takes no value
            if eq:
                raise InvalidRequest("refine", f"{used} takes no value; write just {used}.")
            settings[flag.field] = _Setting(True, used, used)
            continue
        if flag.field == "negative_prompt":
            parts = [inline] if inline else []
            while i < len(words) and not words[i].is_flag:
                parts.append(words[i].text)
                i += 1
            if not parts:
                raise _missing(flag, used, caps)
            negative_words.extend(parts)
            value = " ".join(parts)
        elif eq:
            if not inline:
                raise _missing(flag, used, caps)
            value = inline
        else:
            if i >= len(words) or words[i].is_flag:
                raise _missing(flag, used, caps)
            value = words[i].text
            i += 1
        settings[flag.field] = _Setting(value, used, used)
    return prompt, settings, negative_words


def _missing(flag: _Flag, used: str, caps: ModelCaps) -> InvalidRequest:
    """The error for a flag given without its value."""
    what = {
        "aspect": f"an aspect ratio: {', '.join(caps.sizes())}, or any W:H up to 4:1",
        "count": f"a number of images from 1 to {MAX_COUNT}, e.g. --n 2",
        "seed": f"a whole number from 0 to {MAX_SEED}, e.g. --seed 42",
        "negative_prompt": "what to leave out, e.g. --no blur, text",
        "style": f"a style name: {', '.join(STYLES)}",
        "steps": f"a step count: {', '.join(str(s) for s in sorted(caps.steps))}",
        "refine": "nothing",
        "strength": "a number from 0.1 to 1, e.g. --strength 0.4",
        "model": "a model name (/models lists them), e.g. --model " + caps.name,
    }[flag.field]
    return InvalidRequest(flag.field, f"{used} needs {what}.")


# -- rendering ----------------------------------------------------------------------------------



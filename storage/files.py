"""Image encodings: PNG with the generation parameters inside, and re-encoding under a size limit.

A re-encoded JPEG or WebP keeps the parameters in EXIF, where A1111 and Civitai look for them:
the A1111 text in ``UserComment`` (UTF-16, "UNICODE" prefix, as piexif writes it) and our JSON
in ``ImageDescription`` (ASCII-escaped). :func:`read_metadata` reads either container.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from PIL import Image, PngImagePlugin

__all__ = [
    "METADATA_KEY",
    "OWN_KEY",
    "a1111_parameters",
    "exif_metadata",
    "exif_parameters",
    "fit_under",
    "image_params",
    "png_with_metadata",
    "public_png",
    "read_metadata",
    "read_png_metadata",
]

log = logging.getLogger(__name__)

METADATA_KEY = "parameters"  # A1111's text format: what A1111, ComfyUI and Civitai read
OWN_KEY = "imagine"  # our JSON: the same settings plus the canonical /imagine command
_QUALITIES = (90, 82, 74, 66, 58, 50, 42)
_EXIF_IFD, _USER_COMMENT, _IMAGE_DESCRIPTION = 0x8769, 0x9286, 0x010E
_UNICODE = b"UNICODE\x00"
SAMPLER = "Euler"  # SDXL-Lightning: EulerDiscreteScheduler, trailing timesteps, no CFG
# What our JSON may hold; anything else a caller passes (a server path, a user id) is dropped.
_OWN_FIELDS = (
    "command", "prompt", "negative_prompt", "style", "lora", "seed", "steps", "width", "height",
    "model", "model_hash", "kind", "strength", "variation_of", "job_id", "index", "first_seed",
    "sampler", "cfg_scale", "original_prompt", "source", "mode",
)


def image_params(params: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``params`` that travel with an image (no paths, no user ids), with defaults."""
    own = {key: params[key] for key in _OWN_FIELDS if params.get(key) not in (None, "")}
    loras = _loras(params)
    if loras:
        own["loras"] = loras
    own.setdefault("sampler", SAMPLER)
    own.setdefault("cfg_scale", 0)
    if own.get("kind") not in ("img2img", "upscale"):
        own.pop("strength", None)
    if own.get("style") == "none":
        own.pop("style")
    return own


def _loras(params: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's ``loras`` ([name, weight] pairs) and ``lora_hashes`` as name/weight/hash records."""
    pairs = params.get("loras") or ()
    if pairs and isinstance(pairs[0], dict):  # already records
        return list(pairs)
    hashes = list(params.get("lora_hashes") or ())
    hashes += [None] * (len(pairs) - len(hashes))
    return [{"name": str(name), "weight": float(weight), "hash": digest}
            for (name, weight), digest in zip(pairs, hashes)]


def _value(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def a1111_parameters(params: dict[str, Any]) -> str:
    """A1111's "parameters" text: prompt, ``Negative prompt: …``, then ``Key: value, …``."""
    loras = _loras(params)
    tags = "".join(f" <lora:{lora['name']}:{lora['weight']:g}>" for lora in loras)
    lines = [str(params.get("styled_prompt") or params.get("prompt", "")) + tags]
    negative = params.get("styled_negative_prompt") or params.get("negative_prompt")
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields: list[tuple[str, Any]] = [
        ("Steps", params.get("steps")),
        ("Sampler", params.get("sampler", SAMPLER)),
        ("CFG scale", params.get("cfg_scale", 0)),
        ("Seed", params.get("seed")),
        ("Size", f"{params.get('width')}x{params.get('height')}"),
        ("Model hash", str(params["model_hash"])[:10] if params.get("model_hash") else None),  # A1111: 10 hex
        ("Model", params.get("model")),
        ("Denoising strength", params.get("strength") if params.get("kind") == "img2img" else None),
        ("Variation of", _variation_text(params.get("variation_of"))),
        ("Lora", params.get("lora")),
        ("Lora hashes", ", ".join(f"{lora['name']}: {lora['hash']}" for lora in loras) or None),
        ("Style", params.get("style") if params.get("style") not in (None, "none") else None),
    ]
    lines.append(", ".join(f"{key}: {_value(value)}" for key, value in fields if value not in (None, "")))
    return "\n".join(lines)


def _variation_text(variation: Any) -> str | None:
    if not isinstance(variation, dict):
        return None
    return f"image {variation.get('image')} of {variation.get('job')}"


def png_with_metadata(image: Image.Image, params: dict[str, Any]) -> bytes:
    """``image`` as PNG bytes: A1111 text under ``parameters``, our JSON under ``imagine``.

    ``styled_prompt``/``styled_negative_prompt`` in ``params`` (the text the model saw) go into
    the A1111 text; our JSON keeps the user's prompt and style.
    """
    own = image_params(params)
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, a1111_parameters({**params, **own}))
    info.add_text(OWN_KEY, json.dumps(own, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


# what a public copy's A1111 text may say: what its gallery page shows, nothing that names a
# job, a user, a file, or the text the author typed before refinement
_PUBLIC_FIELDS = ("prompt", "negative_prompt", "style", "lora", "loras", "lora_hashes", "seed", "steps",
                  "width", "height", "model", "model_hash", "kind", "strength", "sampler", "cfg_scale")


def public_png(image: Image.Image, params: dict[str, Any]) -> bytes:
    """``image`` as a PNG holding only A1111's "parameters" of the shown request (blocking).

    For the public gallery: no ``imagine`` JSON (job id, original prompt, variation source), no
    EXIF, no other text chunks; ``params`` is filtered to :data:`_PUBLIC_FIELDS` as well.
    """
    shown = {key: params[key] for key in _PUBLIC_FIELDS if params.get(key) not in (None, "")}
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, a1111_parameters(shown))
    clean = image.copy()
    clean.info = {}  # pixels only: none of the source's text chunks, EXIF or ICC travels
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_metadata(data: bytes) -> dict[str, Any]:
    """Our JSON from a PNG written by :func:`png_with_metadata`, or from the EXIF of a JPEG/WebP
    re-encoded by :func:`fit_under` ({} when absent).

    Images written before the ``imagine`` key held JSON under ``parameters``; that is read too.
    """
    with Image.open(io.BytesIO(data)) as image:
        texts = dict(getattr(image, "text", {}) or {})
        description = image.getexif().get(_IMAGE_DESCRIPTION)
    candidates = [texts.get(OWN_KEY), texts.get(METADATA_KEY), description]
    for text in candidates:
        if not text or not isinstance(text, str):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


read_png_metadata = read_metadata  # the older name


def exif_metadata(image: Image.Image) -> bytes | None:
    """EXIF bytes carrying a PNG's parameters into a JPEG/WebP (None when it has none)."""
    texts = dict(getattr(image, "text", {}) or {})
    a1111, own = texts.get(METADATA_KEY), texts.get(OWN_KEY)
    if not a1111 and not own:
        return None
    exif = Image.Exif()
    if own:
        try:  # ASCII-escaped: EXIF text is ASCII
            exif[_IMAGE_DESCRIPTION] = json.dumps(json.loads(own), ensure_ascii=True, sort_keys=True)
        except json.JSONDecodeError:
            pass
    if a1111:
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE + a1111.encode("utf-16-be")
    return exif.tobytes()


def exif_parameters(data: bytes) -> str | None:
    """The A1111 text in a JPEG/WebP's EXIF UserComment, as A1111 reads it back."""
    with Image.open(io.BytesIO(data)) as image:
        comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, bytes) and comment.startswith(_UNICODE):
        return comment[len(_UNICODE):].decode("utf-16-be")
    return None


def fit_under(
    data: bytes, max_bytes: int, formats: tuple[str, ...] = ("webp", "jpeg")
) -> tuple[bytes, str]:
    """``(bytes, ext)`` no larger than ``max_bytes``: the PNG as is, else WebP/JPEG, else smaller.

    Quality goes down first; only if the lowest quality of every format is still too large is
    the image downscaled (keeping its aspect ratio) until it fits.
    """
    if max_bytes <= 0:
        raise ValueError(f"`max_bytes` must be positive, not {max_bytes}")
    if len(data) <= max_bytes:
        return data, "png"
    with Image.open(io.BytesIO(data)) as opened:
        exif = exif_metadata(opened)
        image = _flatten(opened)
    width, height = image.size
    scale = 1.0
    while True:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        candidate = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        smallest = None
        for fmt in formats:
            lowest = _encode(candidate, fmt, _QUALITIES[-1], exif)
            smallest = len(lowest) if smallest is None else min(smallest, len(lowest))
            if len(lowest) > max_bytes:
                continue
            encoded, quality = _best_quality(candidate, fmt, max_bytes, lowest, exif)
            log.debug(
                "fit %d bytes into %d: %s q=%d at %dx%d",
                len(data), max_bytes, fmt, quality, *size,
            )
            return encoded, "jpg" if fmt == "jpeg" else fmt
        if min(size) <= 1 or smallest is None:
            raise ValueError(f"cannot encode the image in {max_bytes} bytes")
        # Bytes grow about with the pixel count: aim a little below the limit.
        step = min(0.9, max(0.25, (max_bytes / smallest) ** 0.5 * 0.95))
        scale *= step


def _best_quality(
    image: Image.Image, fmt: str, max_bytes: int, lowest: bytes, exif: bytes | None = None
) -> tuple[bytes, int]:
    """The highest quality in _QUALITIES that fits (binary search; the lowest is known to fit)."""
    best, best_quality = lowest, _QUALITIES[-1]
    low, high = 0, len(_QUALITIES) - 2  # indexes into _QUALITIES, high quality first
    while low <= high:
        middle = (low + high) // 2
        encoded = _encode(image, fmt, _QUALITIES[middle], exif)
        if len(encoded) <= max_bytes:
            best, best_quality = encoded, _QUALITIES[middle]
            high = middle - 1
        else:
            low = middle + 1
    return best, best_quality


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG/WebP; transparency goes onto white."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image, fmt: str, quality: int, exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": quality}
    if exif:
        options["exif"] = exif
    if fmt == "webp":
        options["method"] = 4
    elif fmt == "jpeg":
        options["optimize"] = True
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()

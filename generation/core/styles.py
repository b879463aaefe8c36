"""Style presets: one table of prompt and negative-prompt templates."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STYLES", "Style", "apply_style"]


@dataclass(frozen=True)
class Style:
    """A named preset; ``{prompt}`` in ``prompt`` is replaced by the user's prompt."""

    name: str
    description: str
    prompt: str
    negative: str


_TABLE = (
    Style("none", "no preset: your prompt as written", "{prompt}", ""),
    Style(
        "photo",
        "photograph, natural light, sharp focus",
        "photograph of {prompt}, 35mm, natural light, sharp focus, highly detailed",
        "drawing, painting, illustration, cartoon, anime, lowres, blurry",
    ),
    Style(
        "anime",
        "anime key visual, clean line art",
        "anime key visual of {prompt}, clean line art, vibrant colors, studio anime",
        "photo, photorealistic, 3d render, lowres, blurry",
    ),
    Style(
        "cinematic",
        "film still, dramatic lighting, shallow depth of field",
        "cinematic film still of {prompt}, dramatic lighting, shallow depth of field, film grain",
        "cartoon, drawing, lowres, oversaturated",
    ),
    Style(
        "watercolor",
        "watercolor painting on paper",
        "watercolor painting of {prompt}, soft washes, paper texture",
        "photo, 3d render, harsh lines, lowres",
    ),
    Style(
        "pixel-art",
        "retro pixel art, limited palette",
        "pixel art of {prompt}, 16-bit, limited palette, crisp pixels",
        "blurry, smooth gradients, photo, 3d render",
    ),
    Style(
        "3d-render",
        "3D render, soft global illumination",
        "3d render of {prompt}, octane render, soft global illumination, high detail",
        "photo, drawing, sketch, lowres",
    ),
    Style(
        "sticker",
        "die-cut sticker on a plain background",
        "die-cut sticker of {prompt}, bold outline, flat colors, white background",
        "photo, realistic, busy background, lowres",
    ),
)

STYLES: dict[str, Style] = {style.name: style for style in _TABLE}


def apply_style(style: str, prompt: str, negative: str) -> tuple[str, str]:
    """Return the (prompt, negative prompt) the pipeline sees for ``style``."""
    preset = STYLES[style]
    styled = preset.prompt.replace("{prompt}", prompt)
    negatives = [part for part in (negative, preset.negative) if part]
    return styled, ", ".join(negatives)

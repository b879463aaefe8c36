"""Render docs/img/edit-mask.png: what 🖌️ Vary (Region) shows beside its result.

A drawn scene stands in for an image (the tiny test model's images are noise), the region of
“the cat” is the drawn cat's shape, grown and feathered by the bot's own code, and the right half
is the overlay the bot sends (generation.tools.masks.overlay)::

    PYTHONPATH=. python docs/edit_picture.py docs/img/edit-mask.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

from generation.tools.masks import EditSettings, overlay, soften


def scene(size: int = 320) -> tuple[Image.Image, Image.Image]:
    """A garden wall with a cat on it, and the cat's own shape (L, 255 = cat)."""
    image = Image.new("RGB", (size, size), (150, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 200, size, size), fill=(90, 150, 70))  # grass
    draw.rectangle((0, 170, size, 215), fill=(170, 120, 90))  # the wall
    for x in range(0, size, 40):
        draw.line((x, 170, x, 215), fill=(140, 95, 70), width=2)
    draw.ellipse((250, 30, 300, 80), fill=(250, 220, 90))  # the sun
    cat = Image.new("L", (size, size), 0)
    shape = ImageDraw.Draw(cat)
    shape.ellipse((110, 110, 190, 175), fill=255)  # body
    shape.ellipse((160, 80, 205, 125), fill=255)  # head
    shape.polygon([(165, 90), (170, 65), (182, 85)], fill=255)  # ears
    shape.polygon([(185, 85), (197, 65), (202, 92)], fill=255)
    shape.line((112, 150, 85, 120), fill=255, width=8)  # tail
    image.paste((60, 60, 66), mask=cat)
    return image, cat


def main(out: Path) -> None:
    image, cat = scene()
    mask = soften(cat, EditSettings())
    shown = overlay(image, mask, max_side=320)
    picture = Image.new("RGB", (660, 340), (255, 255, 255))
    picture.paste(image, (10, 10))
    picture.paste(shown, (330, 10))
    picture.save(out, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/edit-mask.png"))

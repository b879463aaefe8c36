"""Image sizes: SDXL's aspect-ratio buckets (and Flux's own), ratio parsing, the nearest bucket.

Pure Python; :mod:`generation.core.request` re-exports these names.
"""

from __future__ import annotations

import functools
import math
import re

from generation.core.errors import InvalidRequest

__all__ = ["ASPECT_RATIOS", "FLUX_ASPECT_RATIOS", "MAX_ASPECT", "nearest_bucket", "parse_ratio", "sdxl_buckets", "snap"]

# SDXL buckets at a 1024 base resolution (DESIGN.md); other bases scale them.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "21:9": (1536, 640),
}
MAX_ASPECT = 4  # whole-number ratios up to 4:1 either way
_RATIO = re.compile(r"^\s*(\d{1,5})\s*:\s*(\d{1,5})\s*$")


@functools.lru_cache(maxsize=16)  # pure, and asked on every parse
def sdxl_buckets(base: int = 1024) -> tuple[tuple[int, int], ...]:
    """SDXL's resolution buckets at ``base``: for each width a multiple of 64 from 512 to 2048 (at
    1024), the tallest multiple of 64 that keeps the area within 1024², and the transposes; from
    4:1 to 1:4. They include every size of :data:`ASPECT_RATIOS`. Other bases scale them."""
    found: set[tuple[int, int]] = set()
    for width in range(512, 2049, 64):
        height = min(2048, (1024 * 1024 // width) // 64 * 64)
        if height >= 512:
            found.update({(width, height), (height, width)})
    found.update(ASPECT_RATIOS.values())
    scale = base / 1024
    return tuple(sorted({(snap(w * scale), snap(h * scale)) for w, h in found}))


def parse_ratio(text: object) -> tuple[int, int]:
    """``"W:H"`` (whole numbers, at most 4:1 either way) as (W, H); InvalidRequest naming the fix."""
    match = _RATIO.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequest(
            "aspect", f"An aspect ratio is two whole numbers as width:height, like 16:9 or 4:5, not {text!r}."
        )
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0:
        raise InvalidRequest("aspect", f"Aspect ratio {width}:{height} has a zero side; use e.g. 1:1 or 4:5.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidRequest(
            "aspect", f"Aspect ratio {width}:{height} is beyond {MAX_ASPECT}:1; use at most "
                      f"{MAX_ASPECT}:1 (wide) or 1:{MAX_ASPECT} (tall)."
        )
    return width, height


def nearest_bucket(width: float, height: float, base: int = 1024) -> tuple[int, int]:
    """The bucket of :func:`sdxl_buckets` whose ratio is closest to width:height (larger area on a tie)."""
    wanted = math.log(width / height)
    return min(sdxl_buckets(base), key=lambda size: (round(abs(math.log(size[0] / size[1]) - wanted), 9),
                                                     -size[0] * size[1]))



# FLUX.1's own buckets: multiples of 16 (8x VAE, 2x2 packing) near one megapixel, the exact ratio
# where 16 px allow it (16:9 and 21:9 are the nearest multiples of 16 at about 1 MP).
FLUX_ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "21:9": (1568, 672),
}


def snap(value: float) -> int:
    """Round half up to a multiple of 16 px (latents stay even), never below 64."""
    return max(64, int(value / 16 + 0.5) * 16)



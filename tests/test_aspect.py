"""Any aspect ratio (issue 23, item 4): whole-number W:H up to 4:1 either way -> the nearest SDXL bucket."""

from __future__ import annotations

import math

import pytest

from bot.options import aspect_of, parse_imagine, render
from bot.service.accounts_rules import validate_settings
from generation.core.errors import InvalidRequest
from generation.core.request import ASPECT_RATIOS, ModelCaps, nearest_bucket, parse_ratio, sdxl_buckets

CAPS = ModelCaps(steps=(1, 2, 4, 8))
TINY = ModelCaps(name="tiny", base_resolution=256, steps=(1, 2, 4, 8))

# What people type -> the SDXL training bucket it lands on (the SDXL paper's list, 1024 base).
TABLE = [
    ("1:1", (1024, 1024)),
    ("4:5", (896, 1152)),   # 0.778 is nearer 0.8 than 0.824 (896x1088 is not a bucket; 960x1088 is 0.88)
    ("5:4", (1152, 896)),
    ("2:1", (1408, 704)),
    ("1:2", (704, 1408)),
    ("7:4", (1344, 768)),   # exactly 1.75
    ("4:1", (2048, 512)),
    ("1:4", (512, 2048)),
    ("3:1", (1728, 576)),   # exactly 3
    ("2:3", (832, 1216)),   # the named ratio keeps its size
    ("32:18", (1344, 768)),  # 16:9 written otherwise
    ("10:10", (1024, 1024)),
    ("05:04", (1152, 896)),
    ("9:8", (1088, 960)),
]


@pytest.mark.parametrize(("typed", "size"), TABLE)
def test_typed_ratio_maps_to_its_bucket(typed: str, size: tuple[int, int]) -> None:
    request = parse_imagine(f"a fox --ar {typed}", caps=CAPS)
    assert (request.width, request.height) == size
    assert (request.width, request.height) in sdxl_buckets(1024)
    # the canonical text names a ratio that parses back to the same size
    assert parse_imagine(render(request, CAPS), caps=CAPS) == request


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("5:1", ["5:1", "4:1"]), ("1:5", ["1:5", "1:4"]), ("17:4", ["17:4"]),
        ("0:1", ["zero"]), ("1.5:1", ["whole numbers"]), ("16/9", ["width:height"]),
        ("-4:5", ["whole numbers"]), ("4:5:6", ["whole numbers"]), ("123456:1", ["whole numbers"]),
        ("square", ["16:9"]),
    ],
)
def test_bad_ratio_is_named(typed: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_imagine(f"a fox --ar {typed}", caps=CAPS)
    assert info.value.field == "aspect"
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("caps", [CAPS, TINY], ids=["sdxl", "tiny"])
def test_every_bucket_round_trips_and_is_nearest(caps: ModelCaps) -> None:
    buckets = caps.buckets()
    assert set(caps.sizes().values()) <= set(buckets)
    for width, height in buckets:
        assert max(width, height) <= 4 * min(width, height)
        request = parse_imagine(f"a fox --ar {width}:{height}", caps=caps)
        assert (request.width, request.height) == (width, height)
        assert caps.size_for(aspect_of(request, caps)) == (width, height)
    for a in range(1, 13):
        for b in range(1, 13):
            if max(a, b) > 4 * min(a, b):
                continue
            chosen = caps.size_for(f"{a}:{b}")
            best = min(abs(math.log(w / h) - math.log(a / b)) for w, h in buckets)
            assert abs(math.log(chosen[0] / chosen[1]) - math.log(a / b)) <= best + 1e-9


def test_named_ratios_keep_their_sizes_and_buckets_bound_area() -> None:
    for ratio, size in ASPECT_RATIOS.items():
        assert CAPS.size_for(ratio) == size
    for width, height in sdxl_buckets(1024):
        assert width % 64 == 0 and height % 64 == 0 and width * height <= 1024 * 1024


def test_parse_ratio_and_nearest_bucket_direct() -> None:
    assert parse_ratio("4:5") == (4, 5)
    assert nearest_bucket(3000, 4000) == (896, 1152)  # a 3:4 photo
    assert nearest_bucket(4000, 1000, 256) == (512, 128)


def test_saved_default_aspect_takes_any_ratio() -> None:
    assert validate_settings({"aspect": "4:5"}, CAPS)["aspect"] == "4:5"
    with pytest.raises(InvalidRequest) as info:
        validate_settings({"aspect": "9:1"}, CAPS)
    assert info.value.field == "aspect" and "4:1" in str(info.value)


def test_typed_option_takes_spaces_around_the_colon() -> None:
    request = parse_imagine("a fox", caps=CAPS, aspect=" 5 : 4 ")
    assert (request.width, request.height) == (1152, 896)

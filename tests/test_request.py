"""GenerationRequest validation, derived views, ModelCaps sizes and checks, style presets."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.core.errors import ImagineError, InvalidRequest
from generation.core.request import (
    has_visible_text,
    ASPECT_RATIOS,
    MAX_COUNT,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    STEP_CHOICES,
    GenerationRequest,
    ModelCaps,
    random_seed,
)
from generation.core.styles import STYLES, apply_style

# The SDXL table from DESIGN.md, written out independently of request.py.
DESIGN_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "21:9": (1536, 640),
}


def invalid(field: str, **kwargs: object) -> InvalidRequest:
    kwargs.setdefault("prompt", "a fox")
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field, str(info.value)
    assert isinstance(info.value, ImagineError)
    return info.value


# -- validation ---------------------------------------------------------------------------------


def test_defaults_and_stripping() -> None:
    r = GenerationRequest(prompt="  a fox \n", negative_prompt=" blur ")
    assert (r.prompt, r.negative_prompt) == ("a fox", "blur")
    assert (r.width, r.height, r.steps, r.seed, r.count, r.style, r.kind) == (
        1024, 1024, 4, None, 1, "none", "txt2img",
    )


def test_frozen() -> None:
    r = GenerationRequest(prompt="fox")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("prompt", ["", " ", "\n\t", "\u3000", None, 5])
def test_empty_prompt(prompt: object) -> None:
    assert "empty" in str(invalid("prompt", prompt=prompt))


def test_prompt_length_limit() -> None:
    assert GenerationRequest(prompt="x" * MAX_PROMPT_CHARS).prompt == "x" * MAX_PROMPT_CHARS
    assert GenerationRequest(prompt=" " + "x" * MAX_PROMPT_CHARS + " ").prompt == "x" * MAX_PROMPT_CHARS
    err = invalid("prompt", prompt="x" * (MAX_PROMPT_CHARS + 1))
    assert str(MAX_PROMPT_CHARS) in str(err) and str(MAX_PROMPT_CHARS + 1) in str(err)


def test_negative_prompt_length_limit() -> None:
    assert GenerationRequest(prompt="fox", negative_prompt="n" * MAX_PROMPT_CHARS)
    err = invalid("negative_prompt", negative_prompt="n" * (MAX_PROMPT_CHARS + 1))
    assert str(MAX_PROMPT_CHARS) in str(err)


@pytest.mark.parametrize("seed", [None, 0, 1, 12345, MAX_SEED])
def test_valid_seeds(seed: int | None) -> None:
    assert GenerationRequest(prompt="fox", seed=seed).seed == seed


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**64, True, False, 1.0, 1.5, "7", float("nan")])
def test_invalid_seeds(seed: object) -> None:
    err = invalid("seed", seed=seed)
    assert "0" in str(err) and str(MAX_SEED) in str(err)


@pytest.mark.parametrize("count", range(1, MAX_COUNT + 1))
def test_valid_counts(count: int) -> None:
    assert GenerationRequest(prompt="fox", count=count).count == count


@pytest.mark.parametrize("count", [0, -1, MAX_COUNT + 1, True, 2.0, "2", None])
def test_invalid_counts(count: object) -> None:
    assert f"1 to {MAX_COUNT}" in str(invalid("count", count=count))


@pytest.mark.parametrize("steps", STEP_CHOICES)
def test_valid_steps(steps: int) -> None:
    assert GenerationRequest(prompt="fox", steps=steps).steps == steps


@pytest.mark.parametrize("steps", [0, 3, 5, 16, -4, True, "4", None])
def test_invalid_steps(steps: object) -> None:
    assert "1, 2, 4 or 8" in str(invalid("steps", steps=steps))


def test_float_steps_rejected() -> None:
    invalid("steps", steps=4.0)


def test_non_string_negative_prompt_is_invalid_request() -> None:
    invalid("negative_prompt", negative_prompt=None)


@pytest.mark.parametrize("style", list(STYLES))
def test_valid_styles(style: str) -> None:
    assert GenerationRequest(prompt="fox", style=style).style == style


@pytest.mark.parametrize("style", ["", "Anime", "manga", "photo "])
def test_unknown_style(style: str) -> None:
    err = invalid("style", style=style)
    for name in STYLES:
        assert name in str(err)


def test_unknown_kind() -> None:
    message = str(invalid("kind", kind="inpaint"))
    assert "txt2img" in message and "img2img" in message


@pytest.mark.parametrize(("width", "height"), [*DESIGN_SIZES.values(), (64, 64), (2048, 2048), (512, 768)])
def test_valid_sizes(width: int, height: int) -> None:
    r = GenerationRequest(prompt="fox", width=width, height=height)
    assert (r.width, r.height) == (width, height)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("width", 1000, ["multiple of 16"]),
        ("height", 1000, ["multiple of 16"]),
        ("width", 48, ["64", "2048"]),
        ("height", 2064, ["64", "2048"]),
        ("width", 1024.0, ["64", "2048"]),
        ("height", True, ["64", "2048"]),
        ("width", 0, ["64"]),
    ],
)
def test_invalid_sizes(field: str, value: object, words: list[str]) -> None:
    err = invalid(field, **{field: value})
    for word in words:
        assert word in str(err)


# -- derived views ------------------------------------------------------------------------------


def test_seeds_consecutive() -> None:
    assert GenerationRequest(prompt="fox", seed=10, count=4).seeds == (10, 11, 12, 13)
    assert GenerationRequest(prompt="fox", seed=10).seeds == (10,)


def test_seeds_wrap_around() -> None:
    r = GenerationRequest(prompt="fox", seed=MAX_SEED - 1, count=4)
    assert r.seeds == (MAX_SEED - 1, MAX_SEED, 0, 1)


def test_seeds_need_a_seed() -> None:
    with pytest.raises(ValueError, match="with_seed"):
        _ = GenerationRequest(prompt="fox").seeds


def test_with_seed() -> None:
    r = GenerationRequest(prompt="fox", count=2)
    assert r.with_seed(5).seed == 5
    assert r.with_seed(5).with_seed() == r.with_seed(5)  # a set seed is kept
    assert r.with_seed(5).with_seed(6).seed == 6
    fresh = r.with_seed()
    assert fresh.seed is not None and 0 <= fresh.seed <= MAX_SEED
    assert dataclasses.replace(fresh, seed=None) == r
    with pytest.raises(InvalidRequest):
        r.with_seed(-1)
    with pytest.raises(InvalidRequest):
        r.with_seed(MAX_SEED + 1)


def test_random_seed_range() -> None:
    assert all(0 <= random_seed() <= MAX_SEED for _ in range(100))
    assert len({random_seed() for _ in range(20)}) > 1


def test_shape_and_styled_prompts() -> None:
    r = GenerationRequest(prompt="fox", width=1344, height=768, steps=8, style="photo", negative_prompt="text")
    assert r.shape == ("txt2img", 1344, 768, 8)
    assert r.styled_prompts == apply_style("photo", "fox", "text")


def test_to_dict_from_dict_round_trip() -> None:
    r = GenerationRequest(
        prompt="雪の狐 🦊", width=768, height=1344, negative_prompt="blur", steps=2, seed=9,
        count=3, style="anime", user_id="discord:1", platform="discord",
    )
    data = r.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(GenerationRequest)}
    assert GenerationRequest.from_dict(data) == r
    assert GenerationRequest.from_dict({**data, "extra": 1, "created_at": "x"}) == r


def test_from_dict_validates() -> None:
    with pytest.raises(InvalidRequest):
        GenerationRequest.from_dict({"prompt": "fox", "count": 9})


@settings(max_examples=100, deadline=None)
@given(
    prompt=st.text(min_size=1, max_size=50).filter(has_visible_text),
    seed=st.one_of(st.none(), st.integers(0, MAX_SEED)),
    count=st.integers(1, MAX_COUNT),
    size=st.sampled_from(list(DESIGN_SIZES.values())),
)
def test_to_dict_round_trip_property(
    prompt: str, seed: int | None, count: int, size: tuple[int, int]
) -> None:
    r = GenerationRequest(prompt=prompt, seed=seed, count=count, width=size[0], height=size[1])
    assert GenerationRequest.from_dict(r.to_dict()) == r


# -- ModelCaps ----------------------------------------------------------------------------------


def test_sizes_match_design_table_at_1024() -> None:
    assert ASPECT_RATIOS == DESIGN_SIZES
    assert ModelCaps().sizes() == DESIGN_SIZES


def test_sizes_at_256_are_multiples_of_16() -> None:
    sizes = ModelCaps(base_resolution=256).sizes()
    assert set(sizes) == set(DESIGN_SIZES)
    for w, h in sizes.values():
        assert w % 16 == 0 and h % 16 == 0 and w >= 64 and h >= 64
    assert sizes["1:1"] == (256, 256)
    assert sizes["16:9"] == (336, 192)


@pytest.mark.parametrize("base", [256, 512, 768, 1024, 1536])
def test_sizes_scale_exactly_at_even_bases(base: int) -> None:
    expected = {ar: (w * base // 1024, h * base // 1024) for ar, (w, h) in DESIGN_SIZES.items()}
    assert ModelCaps(base_resolution=base).sizes() == expected


@pytest.mark.parametrize("base", [256, 384, 512, 640, 768, 1024])
def test_sizes_are_distinct_multiples_of_16_that_validate(base: int) -> None:
    caps = ModelCaps(base_resolution=base)
    sizes = caps.sizes()
    assert len(set(sizes.values())) == len(sizes)  # each ratio its own size
    for ar, (w, h) in sizes.items():
        assert w % 16 == 0 and h % 16 == 0
        dw, dh = DESIGN_SIZES[ar]
        assert abs(w / h - dw / dh) / (dw / dh) < 0.06
        assert caps.check(GenerationRequest(prompt="fox", width=w, height=h)).width == w


@pytest.mark.parametrize("base", [384, 640])
def test_sizes_keep_aspect_within_2_percent(base: int) -> None:
    for ar, (w, h) in ModelCaps(base_resolution=base).sizes().items():
        dw, dh = DESIGN_SIZES[ar]
        assert abs(w / h - dw / dh) / (dw / dh) < 0.02, ar


def test_size_for() -> None:
    caps = ModelCaps()
    assert caps.size_for("16:9") == (1344, 768)
    assert caps.size_for("5:4") == (1152, 896)  # any W:H up to 4:1: the nearest bucket
    with pytest.raises(InvalidRequest) as info:
        caps.size_for("wide")
    assert info.value.field == "aspect"
    assert "16:9" in str(info.value) and "4:5" in str(info.value)


def test_default_steps() -> None:
    assert ModelCaps().default_steps == 4
    assert ModelCaps(steps=(1, 2, 4, 8)).default_steps == 4
    assert ModelCaps(steps=(8, 2)).default_steps == 8


def test_check_passes_and_returns_request() -> None:
    caps = ModelCaps(steps=(2, 4))
    r = GenerationRequest(prompt="fox", steps=2, width=832, height=1216)
    assert caps.check(r) is r


def test_check_steps_not_loaded() -> None:
    with pytest.raises(InvalidRequest) as info:
        ModelCaps(steps=(4,)).check(GenerationRequest(prompt="fox", steps=8))
    assert info.value.field == "steps"
    assert "4-step" in str(info.value) and "8 steps" in str(info.value)


def test_check_unsupported_size() -> None:
    with pytest.raises(InvalidRequest) as info:
        ModelCaps().check(GenerationRequest(prompt="fox", width=512, height=512))
    assert info.value.field == "size"
    assert "512x512" in str(info.value)
    for ar, (w, h) in DESIGN_SIZES.items():
        assert f"{ar} ({w}x{h})" in str(info.value)


def test_check_size_of_other_base() -> None:
    r = GenerationRequest(prompt="fox", width=1344, height=768)
    with pytest.raises(InvalidRequest):
        ModelCaps(base_resolution=512).check(r)


# -- styles -------------------------------------------------------------------------------------


def test_apply_style_none_is_identity() -> None:
    assert apply_style("none", "a fox", "") == ("a fox", "")
    assert apply_style("none", "a fox", "blur") == ("a fox", "blur")


@pytest.mark.parametrize("name", [n for n in STYLES if n != "none"])
def test_apply_style_presets(name: str) -> None:
    preset = STYLES[name]
    prompt, negative = apply_style(name, "a fox", "")
    assert "a fox" in prompt and "{prompt}" not in prompt
    assert prompt == preset.prompt.replace("{prompt}", "a fox")
    assert negative == preset.negative
    _, both = apply_style(name, "a fox", "text, logo")
    assert both == f"text, logo, {preset.negative}"


def test_apply_style_prompt_with_braces_is_literal() -> None:
    assert apply_style("photo", "{prompt} {x}", "")[0].startswith("photograph of {prompt} {x}")


def test_styles_table() -> None:
    assert "none" in STYLES
    for name, style in STYLES.items():
        assert style.name == name and style.description
        assert style.prompt.count("{prompt}") == 1

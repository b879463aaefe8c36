"""The /imagine text parser: valid and invalid inputs, typed options, defaults, properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot import options
from bot.options import (
    Defaults,
    OptionsError,
    aspect_of,
    help_text,
    parse_imagine,
    render,
    styles_text,
)
from generation.core.errors import InvalidRequest
from generation.core.request import (
    ASPECT_RATIOS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    GenerationRequest,
    ModelCaps,
    has_visible_text,
)
from generation.core.styles import STYLES


# -- prompt power: LoRA tags, weighting, --refine ------------------------------------------------


def test_lora_tags_weighting_and_flags_mix() -> None:
    request = parse("a (red:1.3) fox <lora:ink:0.8> in [snow] --ar 16:9 <lora:neon-2> --seed 5 --no (blur:1.2)",
                    caps=LORA_CAPS)
    assert request.prompt == "a (red:1.3) fox in [snow]"
    assert request.loras == (("ink", 0.8), ("neon-2", 1.0))
    assert request.lora_hashes == ("0123456789ab", "ba9876543210")
    assert (request.width, request.height, request.seed) == (1344, 768, 5)
    assert request.negative_prompt == "(blur:1.2)"


def test_weighting_never_swallows_a_flag() -> None:
    request = parse("(a fox --ar 16:9 --seed 3 sitting:1.2)")
    assert request.prompt == "(a fox sitting:1.2)" and request.seed == 3 and request.width == 1344


@pytest.mark.parametrize(("text", "field", "needle"), [
    ("a fox <lora:inc:0.5>", "lora", "did you mean ink"),
    ("a fox <lora:ink:2.5>", "lora", "from -2 to 2"),
    ("a fox <lora:ink:x>", "lora", "must be a number"),
    ("a fox <lora:ink> <lora:ink:0.2>", "lora", "once"),
    ("a fox --no <lora:ink>", "lora", "not after --no"),
    ("a (fox:3)", "prompt", "out of bounds"),
    ("a fox --no (blur:7)", "negative_prompt", "out of bounds"),
    ("a fox --refine=yes", "refine", "no value"),
])
def test_prompt_power_mistakes_name_the_field(text: str, field: str, needle: str) -> None:
    err = fails(text, caps=LORA_CAPS)
    assert err.field == field and needle in str(err)


def test_typed_lora_and_refine_options() -> None:
    request = parse("a fox", caps=LORA_CAPS, lora="ink:0.5, neon-2", refine=True)
    assert request.loras == (("ink", 0.5), ("neon-2", 1.0)) and request.refine
    assert fails("a fox --refine", caps=LORA_CAPS, refine=True).field == "refine"


def test_refine_flag_and_saved_default() -> None:
    assert parse("a fox --refine").refine
    assert not parse("a fox").refine
    assert parse("a fox", defaults=Defaults(refine=True)).refine
    assert not parse("a fox", defaults=Defaults(refine=True), refine=False).refine


def test_render_writes_tags_and_refine() -> None:
    request = parse("a fox <lora:ink:0.8> --refine", caps=LORA_CAPS)
    text = render(request, LORA_CAPS)
    assert "<lora:ink:0.8>" in text and text.endswith("--refine")
    assert parse_imagine(text, caps=LORA_CAPS) == request

CAPS = ModelCaps(steps=(1, 2, 4, 8))
CAPS_4 = ModelCaps()  # the usual deployment: only the 4-step checkpoint
ALL_RATIOS = list(ASPECT_RATIOS)
VALID_FLAGS = ("--ar", "--aspect", "--seed", "--no", "--n", "--count", "--style", "--steps")


def parse(text: str, caps: ModelCaps = CAPS, **kwargs: object) -> GenerationRequest:
    return parse_imagine(text, caps=caps, **kwargs)


def fails(text: str, caps: ModelCaps = CAPS, **kwargs: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse(text, caps, **kwargs)
    return info.value


# -- valid inputs -------------------------------------------------------------------------------


def test_full_example() -> None:
    r = parse("a red fox in snow --ar 16:9 --seed 7 --no blur, watermark --n 2 --style anime --steps 4")
    assert r == GenerationRequest(
        prompt="a red fox in snow", width=1344, height=768, negative_prompt="blur, watermark",
        steps=4, seed=7, count=2, style="anime",
    )


def test_plain_prompt_gets_defaults() -> None:
    r = parse("a red fox", CAPS_4)
    assert (r.prompt, r.width, r.height, r.negative_prompt) == ("a red fox", 1024, 1024, "")
    assert (r.steps, r.seed, r.count, r.style) == (4, None, 1, "none")
    assert (r.user_id, r.platform) == ("local", "cli")


def test_user_and_platform_pass_through() -> None:
    r = parse("fox", user_id="discord:42", platform="discord")
    assert (r.user_id, r.platform) == ("discord:42", "discord")


@pytest.mark.parametrize("ratio", ALL_RATIOS)
@pytest.mark.parametrize("form", ["--ar {}", "--aspect {}", "--ar={}", "--ASPECT={}", "—ar {}", "—Ar={}"])
def test_every_aspect_ratio_every_spelling(ratio: str, form: str) -> None:
    r = parse("fox " + form.format(ratio))
    assert (r.width, r.height) == CAPS.size_for(ratio)
    assert aspect_of(r, CAPS) == ratio


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("fox --seed 0", "seed", 0),
        ("fox --seed 7", "seed", 7),
        (f"fox --seed {MAX_SEED}", "seed", MAX_SEED),
        ("fox --seed=123", "seed", 123),
        ("fox --SEED 5", "seed", 5),
        ("fox —seed 5", "seed", 5),
        ("fox –seed 5", "seed", 5),  # en dash
        ("fox --seed 007", "seed", 7),
        ("fox --seed ４２", "seed", 42),  # full-width digits from CJK keyboards
        ('fox --seed "9"', "seed", 9),
        ("fox --n 1", "count", 1),
        ("fox --n 4", "count", 4),
        ("fox --count 3", "count", 3),
        ("fox --N=2", "count", 2),
        ("fox --Count=2", "count", 2),
        ("fox —n 2", "count", 2),
        ("fox --steps 1", "steps", 1),
        ("fox --steps 2", "steps", 2),
        ("fox --steps=8", "steps", 8),
        ("fox --STEPS 4", "steps", 4),
        ("fox --style anime", "style", "anime"),
        ("fox --style=photo", "style", "photo"),
        ("fox --style PIXEL-ART", "style", "pixel-art"),
        ("fox --style none", "style", "none"),
        ("fox —style sticker", "style", "sticker"),
        ("fox --no blur", "negative_prompt", "blur"),
        ("fox --no blur, watermark", "negative_prompt", "blur, watermark"),
        ("fox --no=blur, watermark", "negative_prompt", "blur, watermark"),
        ("fox --no= blur", "negative_prompt", "blur"),
        ("fox --NO blur --seed 1", "negative_prompt", "blur"),
        ("fox —no text,   logo", "negative_prompt", "text, logo"),
        ('fox --no "--ar, frames"', "negative_prompt", "--ar, frames"),
        ('fox --no="a  b"', "negative_prompt", "a  b"),
        ("fox --no 模糊, 水印", "negative_prompt", "模糊, 水印"),
    ],
)
def test_each_flag(text: str, field: str, expected: object) -> None:
    r = parse(text)
    assert getattr(r, field) == expected
    assert r.prompt == "fox"


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style(style: str) -> None:
    assert parse(f"fox --style {style}").style == style


@pytest.mark.parametrize(
    "text",
    [
        "--ar 16:9 --seed 3 a red fox",
        "a red --ar 16:9 fox --seed 3",
        "--seed=3 a red fox --ar=16:9",
        "a red fox --seed 3 --ar 16:9",
        "—ar 16:9 a  red\tfox\n--seed 3",
        "   a red fox   --ar   16:9   --seed   3   ",
    ],
)
def test_flags_anywhere(text: str) -> None:
    r = parse(text)
    assert (r.prompt, r.width, r.height, r.seed) == ("a red fox", 1344, 768, 3)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("a cat's hat", "a cat's hat"),
        ("the dogs' bowl", "the dogs' bowl"),
        ("O'Neil's pub at 5'11\"", "O'Neil's pub at 5'11\""),
        ("l'été à Paris", "l'été à Paris"),
        ("a cat’s hat", "a cat’s hat"),  # iOS apostrophe
        ('"a sign saying --ar 16:9" --ar 1:1', "a sign saying --ar 16:9"),
        ("'a sign saying --seed 3'", "a sign saying --seed 3"),
        ("“smart --quotes” too", "smart --quotes too"),
        ("‘single smart --quotes’", "single smart --quotes"),
        ("'the cat's hat --n 2'", "the cat's hat --n 2"),
        ('a sign reading "OPEN", neon', "a sign reading OPEN, neon"),
        ('(\"grouped\") text', "(grouped) text"),
        ("'say \"hi\" now'", 'say "hi" now'),
        ('"keeps   inner   spacing"', "keeps   inner   spacing"),
        ("rock 'n' roll", "rock n roll"),
        ("a  red \n fox", "a red fox"),
        ("-- not a flag", "-- not a flag"),
        ("--5 degrees", "--5 degrees"),
        ("a — b", "a — b"),
        ("wait—what", "wait—what"),
        ("Москва —Привет", "Москва —Привет"),
        ("x=1 --n=2 y", "x=1 y"),
        ("🦊 in ❄️ snow", "🦊 in ❄️ snow"),
        ("雪の中の赤いキツネ", "雪の中の赤いキツネ"),
        ("שועל אדום בשלג", "שועל אדום בשלג"),
        ("ثعلب أحمر في الثلج", "ثعلب أحمر في الثلج"),
        ("a\u3000fox", "a fox"),  # ideographic space separates words
    ],
)
def test_quoting_and_unicode(text: str, prompt: str) -> None:
    assert parse(text).prompt == prompt


def test_quoted_flag_value() -> None:
    r = parse('fox --style "anime" --ar \'16:9\'')
    assert (r.style, r.width) == ("anime", 1344)


def test_em_dash_then_unknown_letters_is_an_error_but_bare_dash_is_text() -> None:
    assert fails("fox —bar").field == "flags"
    assert parse("fox — bar").prompt == "fox — bar"


# -- invalid inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("", "prompt", ["prompt is empty"]),
        ("   \n\t ", "prompt", ["prompt is empty"]),
        ("--ar 16:9", "prompt", ["prompt is empty"]),
        ('""', "prompt", ["prompt is empty"]),
        ("' ' --n 2", "prompt", ["prompt is empty"]),
        ("--no blur a fox", "prompt", ["prompt is empty", "--no"]),
        ("x" * (MAX_PROMPT_CHARS + 1), "prompt", [str(MAX_PROMPT_CHARS)]),
        ("fox --no " + "y" * (MAX_PROMPT_CHARS + 1), "negative_prompt", [str(MAX_PROMPT_CHARS)]),
        ('"unclosed fox', "prompt", ["Unbalanced quote", '"']),
        ("'80s poster", "prompt", ["Unbalanced quote"]),
        ("“curly", "prompt", ["Unbalanced quote", "”"]),
        ('fox "a"b', "prompt", ["Unbalanced quote"]),
        ("fox --foo", "flags", ["Unknown option", "--foo", *VALID_FLAGS]),
        ("fox --foo=1", "flags", ["--foo", *VALID_FLAGS]),
        ("fox —quality 2", "flags", ["—quality", *VALID_FLAGS]),
        ("fox --ar:16:9", "flags", ["--ar:16:9"]),
        ("fox --v 6", "flags", ["Unknown option"]),
        ("fox --ar 1:1 --ar 16:9", "aspect", ["--ar", "once", *VALID_FLAGS]),
        ("fox --ar 1:1 --aspect 16:9", "aspect", ["--aspect", "--ar", "once", *VALID_FLAGS]),
        ("fox --seed 1 --SEED 2", "seed", ["--seed", "once"]),
        ("fox --n 1 --count 2", "count", ["--count", "--n", "once"]),
        ("fox --no a --no b", "negative_prompt", ["--no", "once"]),
        ("fox --style anime —style photo", "style", ["--style", "once"]),
        ("fox --steps 4 --steps=4", "steps", ["--steps", "once"]),
        ("fox --ar", "aspect", ["--ar needs", "aspect ratio", *ALL_RATIOS]),
        ("fox --aspect --seed 1", "aspect", ["--aspect needs"]),
        ("fox --ar=", "aspect", ["--ar needs"]),
        ("fox --seed", "seed", ["--seed needs", "0", str(MAX_SEED)]),
        ("fox --n", "count", ["--n needs", "1", "4"]),
        ("fox --count=", "count", ["--count needs"]),
        ("fox --no", "negative_prompt", ["--no needs"]),
        ("fox --no --seed 1", "negative_prompt", ["--no needs"]),
        ("fox --no=", "negative_prompt", ["--no needs"]),
        ("fox --style", "style", ["--style needs", *STYLES]),
        ("fox --steps", "steps", ["--steps needs", "1, 2, 4, 8"]),
        ("fox --ar 5:1", "aspect", ["5:1", "4:1", "1:4"]),
        ("fox --ar 1:9", "aspect", ["1:9", "4:1", "1:4"]),
        ("fox --ar 16x9", "aspect", ["16x9", "width:height"]),
        ("fox --ar 1.5:1", "aspect", ["1.5:1", "whole numbers"]),
        ("fox --ar 0:3", "aspect", ["0:3", "zero"]),
        ("fox --ar wide", "aspect", ["wide", "16:9"]),
        ("fox --seed abc", "seed", ["--seed", "0", str(MAX_SEED), "abc"]),
        ("fox --seed -1", "seed", ["--seed", "0", str(MAX_SEED)]),
        ("fox --seed 1.5", "seed", ["--seed", "0", str(MAX_SEED)]),
        (f"fox --seed {MAX_SEED + 1}", "seed", ["--seed", str(MAX_SEED)]),
        ("fox --seed " + "9" * 5000, "seed", ["--seed", str(MAX_SEED)]),
        ("fox --seed ²", "seed", ["--seed"]),
        ("fox --n two", "count", ["--n", "1", "4", "two"]),
        ("fox --count 0", "count", ["--count", "1 to 4"]),
        ("fox --n 5", "count", ["--n", "1 to 4"]),
        ("fox --n 2.0", "count", ["--n", "1 to 4"]),
        ("fox --steps four", "steps", ["--steps", "1, 2, 4, 8"]),
        ("fox --steps 3", "steps", ["--steps", "1, 2, 4, 8"]),
        ("fox --steps 0", "steps", ["--steps"]),
        ("fox --style manga", "style", ["manga", *STYLES]),
        ("fox --style", "style", list(STYLES)),
    ],
)
def test_invalid(text: str, field: str, words: list[str]) -> None:
    err = fails(text)
    assert err.field == field, str(err)
    for word in words:
        assert word in str(err), (word, str(err))
    assert isinstance(err, OptionsError)


def test_steps_not_loaded_lists_loaded_steps() -> None:
    err = fails("fox --steps 8", CAPS_4)
    assert err.field == "steps"
    assert "4" in str(err) and "8" in str(err)


def test_small_model_sizes_used() -> None:
    caps = ModelCaps(base_resolution=512, steps=(4,))
    r = parse("fox --ar 16:9", caps)
    assert (r.width, r.height) == (672, 384)
    assert caps.check(r) is r


# -- typed options ------------------------------------------------------------------------------


def test_typed_options_set_everything() -> None:
    r = parse("fox", aspect="9:16", seed=11, negative="blur", count=3, style="photo", steps=2)
    assert r == GenerationRequest(
        prompt="fox", width=768, height=1344, negative_prompt="blur", steps=2, seed=11,
        count=3, style="photo",
    )


def test_typed_string_numbers_are_accepted() -> None:
    r = parse("fox", seed="11", count="2", steps="8")
    assert (r.seed, r.count, r.steps) == (11, 2, 8)


def test_typed_options_mix_with_other_flags() -> None:
    r = parse("fox --seed 5", aspect="16:9", style="ANIME")
    assert (r.seed, r.width, r.style) == (5, 1344, "anime")


@pytest.mark.parametrize(
    ("option", "value", "text", "field", "flag"),
    [
        ("aspect", "1:1", "fox --ar 1:1", "aspect", "--ar"),
        ("aspect", "1:1", "fox --aspect 16:9", "aspect", "--aspect"),
        ("seed", 1, "fox --seed 2", "seed", "--seed"),
        ("negative", "x", "fox --no y", "negative_prompt", "--no"),
        ("count", 2, "fox --count 2", "count", "--count"),
        ("style", "photo", "fox --style anime", "style", "--style"),
        ("steps", 4, "fox --steps 4", "steps", "--steps"),
    ],
)
def test_typed_option_conflicts_with_flag(
    option: str, value: object, text: str, field: str, flag: str
) -> None:
    err = fails(text, **{option: value})
    assert err.field == field
    assert f"`{option}` option" in str(err) and flag in str(err) and "twice" in str(err)


@pytest.mark.parametrize(
    ("option", "value", "field", "words"),
    [
        ("seed", True, "seed", ["seed", str(MAX_SEED)]),
        ("seed", 1.5, "seed", ["seed", str(MAX_SEED)]),
        ("seed", -3, "seed", ["seed", str(MAX_SEED)]),
        ("seed", "x", "seed", ["seed"]),
        ("count", 0, "count", ["count", "1 to 4"]),
        ("count", 2.0, "count", ["count", "1 to 4"]),
        ("steps", 3, "steps", ["steps", "1, 2, 4, 8"]),
        ("steps", False, "steps", ["steps"]),
        ("aspect", "9:2", "aspect", ["9:2", "4:1"]),
        ("aspect", 16, "aspect", ["aspect"]),
        ("style", "nope", "style", list(STYLES)),
        ("style", 3, "style", ["style"]),
        ("negative", ["a"], "negative_prompt", ["negative"]),
    ],
)
def test_bad_typed_options(option: str, value: object, field: str, words: list[str]) -> None:
    err = fails("fox", **{option: value})
    assert err.field == field
    for word in words:
        assert word in str(err), (word, str(err))


def test_unknown_typed_option_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_imagine("fox", caps=CAPS, quality=2)  # type: ignore[call-arg]


def test_non_string_text() -> None:
    assert fails(None).field == "prompt"  # type: ignore[arg-type]


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_dataclass() -> None:
    d = Defaults()
    assert (d.aspect, d.style, d.count, d.steps) == ("1:1", "none", 1, None)
    with pytest.raises(AttributeError):
        d.count = 2  # type: ignore[misc]


def test_defaults_apply() -> None:
    r = parse("fox", defaults=Defaults(aspect="3:2", style="watercolor", count=2, steps=8))
    assert (r.width, r.height, r.style, r.count, r.steps) == (1216, 832, "watercolor", 2, 8)


def test_defaults_steps_none_means_model_default() -> None:
    assert parse("fox", ModelCaps(steps=(2, 8)), defaults=Defaults()).steps == 2
    assert parse("fox", ModelCaps(steps=(8, 4))).steps == 4


def test_flags_and_typed_options_override_defaults() -> None:
    d = Defaults(aspect="3:2", style="watercolor", count=2, steps=8)
    r = parse("fox --ar 1:1 --n 1 --steps 4", defaults=d, style="photo")
    assert (r.width, r.style, r.count, r.steps) == (1024, "photo", 1, 4)


@pytest.mark.parametrize(
    ("defaults", "field"),
    [
        (Defaults(aspect="5:1"), "aspect"),
        (Defaults(steps=8), "steps"),
        (Defaults(count=9), "count"),
        (Defaults(style="gone"), "style"),
    ],
)
def test_bad_saved_defaults_say_so(defaults: Defaults, field: str) -> None:
    err = fails("fox", CAPS_4, defaults=defaults)
    assert err.field == field
    if field != "style":
        assert "saved default" in str(err)


# -- render, aspect_of, help --------------------------------------------------------------------


def test_render_canonical_order() -> None:
    r = parse("--steps 8 --style anime --no blur, text --seed 7 --n 2 --ar 16:9 a red fox")
    assert render(r, CAPS) == (
        "a red fox --ar 16:9 --n 2 --seed 7 --no blur, text --style anime --steps 8"
    )


def test_render_minimal() -> None:
    assert render(parse("fox"), CAPS) == "fox --ar 1:1"


@pytest.mark.parametrize(
    "prompt",
    ["a sign --ar 16:9", "—ar", "x --no y", "'80s", 'say "hi"', "a  b", "line\nbreak",
     "'quoted'", "\"'“‘’”'\"", "--", "x=1 --seed=2"],
)
def test_render_quotes_when_needed(prompt: str) -> None:
    r = GenerationRequest(prompt=prompt, negative_prompt=prompt, seed=1)
    assert parse(render(r, CAPS)) == r


def test_aspect_of_unknown_size() -> None:
    r = GenerationRequest(prompt="fox", width=512, height=512)
    with pytest.raises(InvalidRequest) as info:
        aspect_of(r, CAPS)
    assert info.value.field == "size" and "16:9" in str(info.value)


def test_help_text_lists_flags_ratios_styles() -> None:
    text = help_text(CAPS_4)
    for word in (*VALID_FLAGS, *ALL_RATIOS, *STYLES, "1344x768"):
        assert word in text


def test_styles_text_lists_descriptions() -> None:
    text = styles_text()
    for style in STYLES.values():
        assert style.name in text and style.description in text
    assert len(text.splitlines()) == len(STYLES)


def test_public_api() -> None:
    assert OptionsError is InvalidRequest
    assert set(options.__all__) >= {
        "Defaults", "OptionsError", "aspect_of", "help_text", "parse_imagine", "render", "styles_text",
    }


# -- properties ---------------------------------------------------------------------------------

LORA_CAPS = ModelCaps(steps=(1, 2, 4, 8), loras=(("ink", "0123456789ab"), ("neon-2", "ba9876543210")))
_CAPS_CHOICES = st.sampled_from(
    [CAPS, CAPS_4, ModelCaps(base_resolution=512, steps=(2, 4)), ModelCaps(base_resolution=256, steps=(1,)),
     LORA_CAPS]
)
_PIECES = st.sampled_from(
    [
        *VALID_FLAGS, "--AR", "—ar", "–seed", "--no=", "--seed=", "--ar=16:9", "--n=2", "--foo",
        "—", "--", "-", "=", "16:9", "1:1", "21:9", "5:4", "0", "7", "4", "-1", "4294967296",
        "anime", "none", "photo", '"', "'", "“", "”", "‘", "’", "cat's", '"a b"', "'c d'",
        "🦊", "雪", "שלום", ",", "\n", "\t", " ", "\u3000", "\u200b", "\x00",
        "--refine", "--refine=1", "<lora:ink:0.8>", "<lora:neon-2>", "<lora:ink:9>", "<lora:>", "<lora:x:y>",
        "(red:1.3)", "(", ")", "[", "]", "(a:5)", "\\(", ":1.2)", "[blur]",
    ]
)
_JUNKY = st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=14).map(" ".join)
_SEP = st.sampled_from([" ", "", "  ", "\n"])


def _outcome(text: str, caps: ModelCaps) -> GenerationRequest | None:
    try:
        request = parse_imagine(text, caps=caps)
    except InvalidRequest as err:
        assert str(err)
        assert isinstance(err.field, str) and err.field
        return None
    assert isinstance(request, GenerationRequest)
    return request


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(), _JUNKY), caps=_CAPS_CHOICES)
def test_any_text_parses_or_raises_invalid_request(text: str, caps: ModelCaps) -> None:
    request = _outcome(text, caps)
    if request is not None:
        # whatever parses renders to text that parses back to the same request
        assert parse_imagine(render(request, caps), caps=caps) == request


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.tuples(_PIECES, _SEP), max_size=20),
    caps=_CAPS_CHOICES,
)
def test_flag_soup_parses_or_raises_invalid_request(
    pieces: list[tuple[str, str]], caps: ModelCaps
) -> None:
    _outcome("".join(a + b for a, b in pieces), caps)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[GenerationRequest, ModelCaps]:
    caps = draw(_CAPS_CHOICES)
    prompt = draw(st.text(min_size=1, max_size=120).filter(has_visible_text))
    width, height = caps.size_for(draw(st.sampled_from(list(caps.sizes()))))
    request = GenerationRequest(
        prompt=prompt,
        width=width,
        height=height,
        negative_prompt=draw(st.one_of(st.just(""), st.text(max_size=60))),
        steps=draw(st.sampled_from(caps.steps)),
        seed=draw(st.one_of(st.none(), st.integers(0, MAX_SEED))),
        count=draw(st.integers(1, 4)),
        style=draw(st.sampled_from(list(STYLES))),
        user_id=draw(st.sampled_from(["local", "discord:1", "telegram:2"])),
        platform=draw(st.sampled_from(["cli", "discord", "telegram"])),
        refine=draw(st.booleans()),
    )
    if caps is LORA_CAPS:
        loras = draw(st.lists(st.tuples(st.sampled_from(["ink", "neon-2"]),
                                        st.sampled_from([0.0, 0.5, 1.0, -1.25, 2.0])),
                              max_size=2, unique_by=lambda pair: pair[0]))
        request = caps.check(replace(request, loras=tuple(loras)))
    return request, caps


_FLAGGY_TEXT = st.lists(
    st.sampled_from(["--ar", "—n", "--no", "'", '"', "“", "’", "a", " ", "  ", "\n", "=", "x's"]),
    min_size=1,
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(data=_requests())
def test_round_trip(data: tuple[GenerationRequest, ModelCaps]) -> None:
    request, caps = data
    text = render(request, caps)
    again = parse_imagine(text, caps=caps, user_id=request.user_id, platform=request.platform)
    assert again == request, text


@settings(max_examples=150, deadline=None)
@given(prompt=_FLAGGY_TEXT, negative=_FLAGGY_TEXT)
def test_round_trip_flag_like_text(prompt: str, negative: str) -> None:
    assume(has_visible_text(prompt))
    request = GenerationRequest(prompt=prompt, negative_prompt=negative, seed=3)
    assert parse_imagine(render(request, CAPS), caps=CAPS) == request


@pytest.mark.parametrize("text", [
    "\u200b", "\u200b\u200b\u200b", "\u200c\u200d\ufeff", "\u2060 \u200b --ar 16:9", "\u3164", "\u2800\u2800",
    "\u00a0\u200e\u200f", "\ufe0f", "\u180e --seed 3",
])
def test_a_prompt_of_invisible_characters_is_refused_as_empty(text: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_imagine(text, caps=CAPS)
    assert err.value.field == "prompt" and "empty" in str(err.value)


@pytest.mark.parametrize("text", ["a\u200bfox", "🦊", "\u200b日本の猫", "é"])
def test_visible_text_next_to_invisible_characters_is_a_prompt(text: str) -> None:
    assert parse_imagine(text, caps=CAPS).prompt

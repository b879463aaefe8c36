"""A1111 weighting and long prompts, from the parser's fragments to the tiny pipeline's images."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from generation.core.batch import Batch, BatchItem
from generation.core.errors import InvalidRequest
from generation.model.prompting import PromptEncoder, encode_prompts
from generation.core.request import GenerationRequest
from generation.model.speed import encode_prompts as speed_encode
from generation.core.weighting import Fragment, parse_weighted, plain_text


def image(tiny: Any, prompt: str, negative: str = "", seed: int = 5) -> np.ndarray:
    batch = Batch("txt2img", 128, 128, 1, (BatchItem(prompt, negative, seed),))
    return np.asarray(tiny.generate(batch)[0]).astype(np.int16)


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("a (red:1.3) fox", (("a ", 1.0), ("red", 1.3), (" fox", 1.0))),
    ("(cat)", (("cat", 1.1),)),
    ("((cat))", (("cat", 1.21),)),
    ("[cat]", (("cat", 0.909091),)),
    ("a (cat:1.0) b", (("a cat b", 1.0),)),
    (r"\(x\) \[y\] a\\b", (("(x) [y] a\\b", 1.0),)),
    ("happy :) [WIP (open", (("happy :) [WIP (open", 1.0),)),
    ("C++ a-b word+ x.and() (y)1.3", (("C++ a-b word+ x.and() ", 1.0), ("y", 1.1), ("1.3", 1.0))),
    ("time: 10pm (a:b:0.5)", (("time: 10pm ", 1.0), ("a:b", 0.5))),
    ("((a:1.5))", (("a", 1.65),)),
    ("a [] b", (("a [] b", 1.0),)),
    ("(so cute:...) x:1.2)", (("so cute:...", 1.1), (" x:1.2)", 1.0))),
])
def test_a1111_syntax(text: str, expected: tuple[tuple[str, float], ...]) -> None:
    assert parse_weighted(text) == tuple(Fragment(t, w) for t, w in expected)


@pytest.mark.parametrize("text", ["(a:2.5)", "(a:-1)", "(((((((((a:1.9)))))))))", "[x] (a:9.5)"])
def test_weights_out_of_bounds_are_refused_not_clamped(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_weighted(text, "negative_prompt")
    assert caught.value.field == "negative_prompt"


def test_a_request_refuses_bad_weights_in_either_prompt() -> None:
    with pytest.raises(InvalidRequest, match="out of bounds"):
        GenerationRequest("a (fox:9)")
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest("a fox", negative_prompt="(blur:5)")
    assert caught.value.field == "negative_prompt"


@pytest.mark.parametrize("text", ["a nu(d:1.0)e woman", "a n[u]de woman", "a (nu)de woman", "a ((nude:0.1)) woman"])
def test_weighting_syntax_does_not_smuggle_a_word_past_the_prompt_filter(text: str) -> None:
    from bot.safety import BlocklistChecker

    assert plain_text(text) == "a nude woman"
    assert not BlocklistChecker.default().check(text).allowed


def test_plain_text_drops_the_syntax() -> None:
    assert plain_text("a ((red:1.2)) [fox] \\(yes\\)") == "a red fox (yes)"


# -- encoding -----------------------------------------------------------------------------------


def test_weight_one_encodes_exactly_like_the_plain_prompt(tiny: Any) -> None:
    encoder = PromptEncoder(tiny.pipe)
    plain = encoder.encode_one("a red fox")
    same = encoder.encode_one("a (red:1.0) fox")
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1])


def test_weights_reach_both_encoders_and_the_pooled_embedding(tiny: Any) -> None:
    encoder = PromptEncoder(tiny.pipe)
    plain_embeds, plain_pooled = encoder.encode_one("a red fox")
    embeds, pooled = encoder.encode_one("a (red:1.6) fox")
    width = tiny.pipe.text_encoder.config.hidden_size
    assert not torch.allclose(plain_embeds[..., :width], embeds[..., :width])  # text encoder 1
    assert not torch.allclose(plain_embeds[..., width:], embeds[..., width:])  # text encoder 2
    assert not torch.allclose(plain_pooled, pooled)


def test_long_prompts_are_chunked_not_cut(tiny: Any) -> None:
    encoder = PromptEncoder(tiny.pipe)
    text = "foxes " * 40
    tokens = len(tiny.pipe.tokenizer(text, add_special_tokens=False).input_ids)
    assert 150 < tokens <= 225  # three chunks of 75 tokens (+ BOS and EOS each)
    embeds, _ = encoder.encode_one(text)
    assert embeds.shape[1] == 3 * 77


def test_plain_prompts_take_diffusers_own_path_and_each_text_is_encoded_once(
        tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    encode_prompts(tiny.pipe, ["(warm:1.1)"])  # builds the compel encoder once
    encoder = tiny.pipe._imagine_prompt_encoder
    seen: list[str] = []
    real = encoder.encode_one
    monkeypatch.setattr(encoder, "encode_one", lambda t, f="prompt": seen.append(t) or real(t, f))
    long = "(a cat:1.2) " * 30
    out = encode_prompts(tiny.pipe, ["a fox", "a fox", long, r"a \(fox\)", "a (fox:1.0)", long])
    assert sorted(seen) == [long]  # weighted or long: compel, once
    with torch.inference_mode():
        plain, pooled = speed_encode(tiny.pipe, ["a fox", "a (fox)"])
    assert torch.equal(out[0][0], plain[:1]) and torch.equal(out[0][1], pooled[:1])  # unchanged path
    assert torch.equal(out[3][0], plain[1:])  # escapes removed, then plain
    assert torch.equal(out[4][0], out[0][0])  # (fox:1.0) is fox
    assert out[2][0].shape[1] > 77 and out[2][0].shape[1] % 77 == 0 and out[0][0].shape[1] == 77


def test_encode_prompts_keeps_one_encoder_per_pipeline(tiny: Any) -> None:
    encode_prompts(tiny.pipe, ["(x:1.2)"])
    first = tiny.pipe._imagine_prompt_encoder
    encode_prompts(tiny.pipe, ["(y:1.2)"])
    assert tiny.pipe._imagine_prompt_encoder is first


# -- images -------------------------------------------------------------------------------------


def test_weighted_and_plain_prompts_give_different_images(tiny: Any) -> None:
    assert (image(tiny, "a red fox") != image(tiny, "a (red:1.8) fox")).any()


def test_weight_one_gives_the_same_image(tiny: Any) -> None:
    assert np.array_equal(image(tiny, "a red fox"), image(tiny, "a (red:1.0) fox"))


def test_a_150_token_prompt_differs_from_it_cut_at_77_tokens(tiny: Any) -> None:
    tokenizer = tiny.pipe.tokenizer
    base = "a red fox in deep snow, "  # 18 tokens: the tiny vocabulary has one per character
    long = base * 4 + "owl " + base * 5
    ids = tokenizer(long, add_special_tokens=False).input_ids
    assert 150 <= len(ids) <= 225
    cut = base * 4 + "owl"  # its first 75 tokens: what fits CLIP's 77 with BOS and EOS
    assert tokenizer(cut, add_special_tokens=False).input_ids == ids[:75]
    # diffusers' own path cuts silently: both texts give the same image there
    with torch.inference_mode():
        plain = [np.asarray(tiny.pipe(prompt=p, num_inference_steps=1, guidance_scale=0.0, width=128,
                                      height=128, generator=torch.Generator("cpu").manual_seed(5)
                                      ).images[0]) for p in (long, cut)]
    assert np.array_equal(plain[0], plain[1])
    # ours encodes every chunk
    assert (image(tiny, long) != image(tiny, cut)).any()


def test_a_long_prompt_never_changes_its_batch_neighbours_images(tiny: Any) -> None:
    long = "a red fox in deep snow, " * 8
    items = (BatchItem("a fox", "", 5), BatchItem(long, "", 6), BatchItem("(a cat:1.3)", "", 7))
    together = tiny.generate(Batch("txt2img", 128, 128, 1, items))
    steps: list[tuple[int, int]] = []
    tiny.generate(Batch("txt2img", 128, 128, 1, items), on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 2), (2, 2)]  # two calls: 77 tokens and 2 x 77
    for item, got in zip(items, together):
        alone = tiny.generate(Batch("txt2img", 128, 128, 1, (item,)))[0]
        diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(alone, dtype=np.int16))
        assert diff.max() <= 3  # batched kernels round differently (as in tests/test_pipeline.py)


def test_negative_weighting_is_accepted_and_changes_nothing_at_guidance_0(tiny: Any) -> None:
    """--no takes the same syntax; SDXL-Lightning never encodes it (guidance 0), so the image is
    the one without it (a shape check alone could not fail: Batch never parses the negative)."""
    assert GenerationRequest("a fox", negative_prompt="(blur:1.4), [text]").negative_prompt == "(blur:1.4), [text]"
    assert np.array_equal(image(tiny, "a fox", "(blur:1.4), [text]"), image(tiny, "a fox"))

"""/describe (issue 24, item 2): a captioner (tiny BLIP, random weights, the real classes) on its own
thread; four suggestions, each a valid /imagine prompt; a caption the prompt filter refuses is not
shown; free, but limited per user per hour."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.options import parse_imagine
from bot.safety import BlocklistChecker
from bot.service import DescribeLimited
from generation.core.errors import GenerationFailed, InvalidRequest
from generation.core.request import ModelCaps
from generation.core.suggest import clean_caption, suggestions
from generation.prompts.describe import DescribeSettings, Describer
from tests.fakes import FakePipeline
from storage import privacy, users
from tests.service_support import ADA, BOB, Clock, service_env

CAPS = ModelCaps(name="tiny", base_resolution=256, steps=(1, 2, 4, 8))


def _png(size: tuple[int, int] = (320, 200), colour: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


class ScriptedDescriber(Describer):
    """The real Describer (thread, time limit) with the model's answer scripted: the model seam."""

    def __init__(self, caption: str = "a cat sitting on a wall at night", timeout_s: float = 5.0) -> None:
        super().__init__(DescribeSettings(model="scripted", timeout_s=timeout_s))
        self.text = caption
        self.release = threading.Event()
        self.release.set()

    def generate(self, image: Any, deadline: float | None = None) -> str:
        self.release.wait(10)
        self.calls += 1
        return self.text


@pytest.fixture(scope="module")
def blip() -> Describer:
    return Describer(DescribeSettings(model="tiny", max_new_tokens=12))


@pytest.mark.parametrize("raw, expected", [
    ("arafed cat sitting on a street at night", "cat sitting on a street at night"),
    ("a dog [SEP] ##s the the the house", "a dog s the house"),
    ('a "quoted" --ar 16:9 (word:9.9) <lora:x:1> cat', "a quoted ar 16 9 word 9 lora x 1 cat"),
    ("there is a red house, with a tree.", "a red house, with a tree"),
    ("[PAD] [UNK] ## , . !", None),
    ("", None),
    ("123 456", None),
])
def test_clean_caption(raw: str, expected: str | None) -> None:
    assert clean_caption(raw) == expected


def test_suggestions_always_parse_whatever_the_captioner_emits() -> None:
    """A random-weight captioner emits junk: every cleaned caption makes four valid /imagine prompts."""
    rng = random.Random(7)
    alphabet = "abcxyz ÄÖé漢字 -—–\"'“”‘’()[]{}<>:=,.;!?#@\\/|*_~`\n\t0123456789"
    made = 0
    for _ in range(400):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        caption = clean_caption(raw)
        if caption is None:
            continue
        made += 1
        prompts = suggestions(caption, "16:9")
        assert len(set(prompts)) == 4
        for prompt in prompts:
            request = parse_imagine(prompt, caps=CAPS)
            assert request.prompt.startswith(caption.split()[0]) and (request.width, request.height) == (336, 192)
    assert made > 100


async def test_tiny_blip_describes_through_the_service(tmp_path: Path, blip: Describer) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        env.service.describer = blip
        described = await env.service.describe(ADA, _png())
        assert len(described.suggestions) == 4 and described.aspect == "16:9"
        for prompt in described.suggestions:
            assert parse_imagine(prompt, caps=env.service.caps).prompt
        assert blip.calls >= 1
        assert (await env.service.quota(ADA)).used == 0  # free


async def test_a_scripted_caption_becomes_four_prompts(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        env.service.describer = ScriptedDescriber("arafed cat sitting on a wall at night")
        described = await env.service.describe(ADA, _png((200, 200)))
        assert described.caption == "cat sitting on a wall at night"
        assert described.suggestions[0] == "cat sitting on a wall at night --ar 1:1"
        assert "--style photo" in described.suggestions[1] and "--style cinematic" in described.suggestions[2]
        ticket = await env.service.imagine(ADA, described.suggestions[2])  # what the button does
        assert ticket.request.style == "cinematic" and ticket.request.prompt.startswith("cat sitting on a wall")


async def test_a_blocked_caption_is_not_shown(tmp_path: Path) -> None:
    checker = BlocklistChecker(["forbiddenword"])
    async with service_env(tmp_path, FakePipeline(), prompt_checker=checker) as env:
        env.service.describer = ScriptedDescriber("a forbiddenword on a table")
        with pytest.raises(InvalidRequest, match="did not pass this bot's prompt filter, so it is not shown") as err:
            await env.service.describe(ADA, _png())
        assert "forbiddenword" not in str(err.value)


async def test_describe_is_limited_per_user_per_hour(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline(), describe_per_hour=2) as env:
        describer = ScriptedDescriber()
        env.service.describer = describer
        await env.service.describe(ADA, _png())
        await env.service.describe(ADA, _png())
        with pytest.raises(DescribeLimited, match="2 images an hour; the next one is possible in 60 min"):
            await env.service.describe(ADA, _png())
        await env.service.describe(BOB, _png())  # per user
        with pytest.raises(InvalidRequest, match="PNG, JPEG"):  # a refused upload uses no slot
            await env.service.describe(BOB, b"not an image")
        await env.service.describe(BOB, _png())
        assert describer.calls == 4
        env.clock.advance(minutes=61)
        await env.service.describe(ADA, _png())


async def test_describe_off_or_late_says_so(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        with pytest.raises(InvalidRequest, match="describe.model"):
            await env.service.describe(ADA, _png())
        late = ScriptedDescriber(timeout_s=0.2)
        late.release.clear()
        env.service.describer = late
        try:
            with pytest.raises(GenerationFailed, match="longer than 0.2 s"):
                await env.service.describe(ADA, _png())
        finally:
            late.release.set()
        env.service.describer = ScriptedDescriber("[UNK] ## ,")
        with pytest.raises(GenerationFailed, match="No description"):
            await env.service.describe(ADA, _png())


async def test_the_describe_limit_holds_across_a_restart_and_a_forget(tmp_path: Path) -> None:
    """The hour's calls are rows in the database: a new process (or /forget) does not reset them."""
    clock = Clock()
    async with service_env(tmp_path, FakePipeline(), describe_per_hour=2, clock=clock) as env:
        env.service.describer = ScriptedDescriber("a red kite over hills")
        await env.service.describe(ADA, _png())
        clock.advance(minutes=30)
        await env.service.describe(ADA, _png())
    async with service_env(tmp_path, FakePipeline(), describe_per_hour=2, clock=clock) as env:  # a restart
        env.service.describer = ScriptedDescriber("a red kite over hills")
        with pytest.raises(DescribeLimited, match="next one is possible in 30 min") as limited:
            await env.service.describe(ADA, _png())
        assert 1790 <= limited.value.retry_after <= 1800
        await env.service.forget(ADA)
        with pytest.raises(DescribeLimited):  # /forget keeps the hour's count (as it keeps quota)
            await env.service.describe(ADA, _png())
        clock.advance(minutes=31)
        assert (await env.service.describe(ADA, _png())).caption == "a red kite over hills"


async def test_describes_are_exported_and_forgotten(tmp_path: Path) -> None:
    checker = BlocklistChecker(["forbiddenword"])
    clock = Clock()
    async with service_env(tmp_path, FakePipeline(), prompt_checker=checker, clock=clock) as env:
        env.service.describer = ScriptedDescriber("a lighthouse in fog")
        shown = await env.service.describe(ADA, _png())
        env.service.describer = ScriptedDescriber("a forbiddenword on a table")
        with pytest.raises(InvalidRequest):
            await env.service.describe(ADA, _png((100, 100)))
        user = await users.get_by_platform(env.db, ADA.platform, ADA.user_id)
        data = await privacy.export(env.db, user.id)
        assert [d["caption"] for d in data["describes"]] == ["a lighthouse in fog", None]  # a refused one: nothing shown
        assert data["describes"][0]["suggestions"] == list(shown.suggestions)
        assert all(len(d["image_sha256"]) == 64 for d in data["describes"])
        clock.advance(hours=2)
        await env.service.forget(ADA)
        assert (await privacy.export(env.db, user.id))["describes"] == []

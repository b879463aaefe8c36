"""Live previews in the chats: the real discord.py and python-telegram-bot clients against the
fakes, with their edit limits on, and the tiny pipeline with a tiny TAESD (every step, 4 steps)."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
from tests.fake_discord import FakeDiscord, RecordedRequest, fake_discord_server
from tests.fake_telegram import Call, FakeTelegram, FloodRules, make_chat, make_user
from tests.preview_support import SlowSteps, previewing_pipeline
from tests.service_support import service_env
from tests.telegram_support import running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")]

STEP = 1.0  # seconds per denoising step: a GPU slower than the edit intervals
GEN = 60.0
INTERVAL = 1.5  # the default progress/status edit interval of both front ends


@pytest.fixture(scope="module")
def previewing() -> Any:
    return previewing_pipeline(every_steps=1)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


# -- Discord ---------------------------------------------------------------------------------------


def _original(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    return rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}/messages/@original"


async def _discord_run(root: Path, pipeline: Any, fake: FakeDiscord, prompt: str) -> list[RecordedRequest]:
    """One /imagine through the real client; every edit of its response, the result's last."""
    async with service_env(root, SlowSteps(pipeline, STEP)) as env:
        front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                             progress_edit_interval=INTERVAL))
        await asyncio.wait_for(front.start(timeout=10), 15)
        try:
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": prompt}))
            await fake.wait_for_request("PATCH", _original(fake, inter), GEN,
                                        predicate=lambda r: any(f.filename.endswith(".png") for f in r.files))
            edits = fake.requests_to("PATCH", _original(fake, inter))
            message = fake.original_response(inter["token"])
        finally:
            await asyncio.wait_for(front.close(), 15)
    assert fake.unhandled == []
    assert message is not None and len(message["attachments"]) == 1  # the result only: the preview is gone
    assert message["attachments"][0]["filename"].endswith(".png")
    return edits


async def test_discord_progress_message_shows_the_preview_within_the_edit_limits(tmp_path: Path,
                                                                                 previewing: Any) -> None:
    async with fake_discord_server(edits_per_message=(5, 5.0)) as fake:
        edits = await _discord_run(tmp_path, previewing, fake, "a lighthouse at dusk --steps 4 --seed 5")
    *progress, result = edits
    previews = [e for e in progress if e.files]
    assert previews, [e.json for e in progress]
    for edit in previews:  # the progress text and its preview in one edit: the attachment is the JPEG
        (upload,) = edit.files
        assert upload.filename == "preview.jpg" and _jpeg_size(upload.data) == (256, 256)
        assert "generating" in edit.json["content"]
    assert len({e.files[0].data for e in previews}) == len(previews)  # each a new picture of the forming image
    # paced: progress edits at least the interval apart, none refused by the edit bucket
    stamps = [e.received_at for e in progress]
    assert all(b - a >= INTERVAL * 0.9 for a, b in zip(stamps, stamps[1:])), stamps
    assert fake.edit_refusals == [] and all(e.status == 200 for e in edits)
    assert result.files[0].filename.endswith(".png")


async def test_discord_without_previews_edits_only_text(tmp_path: Path, tiny: Any) -> None:
    async with fake_discord_server(edits_per_message=(5, 5.0)) as fake:
        edits = await _discord_run(tmp_path, tiny, fake, "a lighthouse at dusk --steps 4 --seed 5")
    *progress, _ = edits
    assert len(progress) >= 2 and not any(e.files for e in progress)


async def test_fake_discord_refuses_a_sixth_edit_within_five_seconds() -> None:
    """The bucket bites without pacing (so the test above can fail)."""
    import aiohttp

    async with fake_discord_server(edits_per_message=(5, 5.0)) as fake:
        base = f"{fake.api_base}/channels/{fake.text_channel_id}/messages"
        async with aiohttp.ClientSession(headers={"Authorization": "Bot fake-token"}) as http:
            async with http.post(base, json={"content": "hello"}) as posted:
                message = await posted.json()
            statuses = []
            for n in range(6):
                async with http.patch(f"{base}/{message['id']}", json={"content": f"edit {n}"}) as edited:
                    statuses.append(edited.status)
    assert statuses == [200] * 5 + [429] and len(fake.edit_refusals) == 1


# -- Telegram --------------------------------------------------------------------------------------


def _preview_edits(fake: FakeTelegram, chat: int) -> list[Call]:
    return [c for c in fake.calls("editMessageMedia", ok=True)
            if c.params["chat_id"] == chat and c.file(c.params["media"]["media"]).filename == "preview.jpg"]


LIMITS = dict(overall_per_second=30, group_per_minute=20, private_interval=1.0,
              status_edit_interval_private=INTERVAL, status_edit_interval_group=INTERVAL)


async def test_telegram_placeholder_photo_shows_the_preview_in_a_private_chat(tmp_path: Path,
                                                                              previewing: Any) -> None:
    async with FakeTelegram(flood=FloodRules()) as fake:
        async with running(tmp_path, SlowSteps(previewing, STEP), fake, **LIMITS):
            fake.push(fake.message_update("/imagine a lighthouse at dusk --steps 4 --seed 5"))
            await wait_until(lambda: any(c.file(c.params["media"]["media"]).filename != "preview.jpg"
                                         for c in fake.calls("editMessageMedia", ok=True)), GEN)
            placeholder = fake.calls("sendPhoto")[0].result
            previews = _preview_edits(fake, 1001)
            assert previews
            for edit in previews:  # the placeholder's photo and caption in one edit
                assert edit.params["message_id"] == placeholder["message_id"]
                assert _jpeg_size(edit.file(edit.params["media"]["media"]).data) == (256, 256)
                assert "Generating" in edit.params["media"]["caption"]
            shown = fake.messages[(1001, placeholder["message_id"])]
            assert fake.media_of(shown) != edit.file(edit.params["media"]["media"]).data  # the result took its place
            # within Telegram's limits (the fake refuses what goes over them): 1 message a second here
            assert not fake.flood_refusals


async def test_telegram_group_previews_stay_within_the_groups_budget(tmp_path: Path, previewing: Any) -> None:
    group = make_chat(-100555, "supergroup", "Busy group")
    alice = make_user(1001, "Alice", "alice")
    async with FakeTelegram(flood=FloodRules()) as fake:
        async with running(tmp_path, SlowSteps(previewing, STEP), fake, **LIMITS):
            fake.push(fake.message_update("/imagine a lighthouse at dusk --steps 4 --seed 5", alice, group))
            await wait_until(lambda: any(c.file(c.params["media"]["media"]).filename != "preview.jpg"
                                         for c in fake.calls("editMessageMedia", ok=True)), GEN)
            assert _preview_edits(fake, -100555) and not fake.flood_refusals
    async with FakeTelegram(flood=FloodRules()) as fake:  # turned off for groups: captions only
        async with running(tmp_path / "off", SlowSteps(previewing, STEP), fake, group_previews=False, **LIMITS):
            fake.push(fake.message_update("/imagine a lighthouse at dusk --steps 4 --seed 5", alice, group))
            await wait_until(lambda: fake.calls("editMessageMedia", ok=True), GEN)
            assert not _preview_edits(fake, -100555) and fake.calls("editMessageCaption", ok=True)


# -- the terminal chat -----------------------------------------------------------------------------


async def test_terminal_chat_says_where_the_preview_is(tmp_path: Path, previewing: Any) -> None:
    from bot.frontends.console import run_console
    from bot.service import Who

    out, out_dir = io.StringIO(), tmp_path / "out"
    async with service_env(tmp_path, SlowSteps(previewing, 0.2)) as env:
        await asyncio.wait_for(run_console(env.service, who=Who("console", "me", "me"), output_dir=out_dir,
                                           lines=["a lighthouse at dusk --steps 4", "/quit"], out=out), GEN)
    text = out.getvalue()
    job = re.search(r"^(\w+): done", text, re.M).group(1)  # type: ignore[union-attr]
    preview = out_dir.resolve() / f"{job}-preview.jpg"
    assert text.count(f"{job}: preview saved: {preview}") == 1  # said once, then overwritten quietly
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{job}-1.png"]  # the result took its place


async def test_telegram_cancel_after_a_preview_puts_the_placeholder_back(tmp_path: Path, previewing: Any) -> None:
    from bot.frontends.telegram.delivery import placeholder_png
    from tests.telegram_support import callback_data

    async with FakeTelegram(flood=FloodRules()) as fake:
        async with running(tmp_path, SlowSteps(previewing, STEP), fake, **LIMITS):
            fake.push(fake.message_update("/imagine a lighthouse at dusk --steps 8 --seed 5"))
            await wait_until(lambda: _preview_edits(fake, 1001), GEN)
            placeholder = fake.calls("sendPhoto")[0]
            fake.push(fake.callback_query_update(callback_data(placeholder)[0], placeholder.result))
            told = await fake.wait_for_call("editMessageMedia", lambda c: "🚫" in c.params["media"]["caption"],
                                            timeout=GEN)
            assert told.file(told.params["media"]["media"]).data == placeholder_png()
            shown = fake.messages[(1001, placeholder.result["message_id"])]
            assert fake.media_of(shown) == placeholder_png() and "🚫" in shown["caption"]
            assert not fake.flood_refusals

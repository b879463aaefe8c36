"""/edit as a reply to a result and /describe on Telegram: the real PTB Application against FakeTelegram."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.service import Who
from generation.model.segment import MaskModel
from storage import inputs, jobs
from tests.fake_telegram import FakeTelegram, make_user
from tests.telegram_support import callback_data, job_status, running, wait_until
from tests.test_describe import ScriptedDescriber
from tests.test_edit import PARTIAL
from tests.upload_support import photo

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

BOB = make_user(1002, "Bob", "bob")
GEN = 60.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def _equals(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected


async def _result(fake: FakeTelegram, mark: int, r) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    result = await fake.wait_for_call("editMessageMedia", timeout=GEN, since=mark)
    job = next(d for d in callback_data(result) if d.startswith(("r:", "t:"))).split(":")[1]
    await wait_until(lambda: _equals(job_status(r.env, job), "delivered"), GEN)
    return job, result


async def test_edit_as_a_reply_to_a_result(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake, service={"edit": PARTIAL, "daily_quota": 10}) as r:
        r.env.service.segmenter = MaskModel(PARTIAL)
        mark = fake.mark()
        fake.push(fake.message_update("/imagine a harbour --steps 1 --seed 2"))
        job, result = await _result(fake, mark, r)
        shown = result.result

        mark = fake.mark()
        fake.push(fake.message_update("/edit the boat -> a red sail", reply_to=shown))
        edited, done = await _result(fake, mark, r)
        assert edited != job
        media = done.params["media"]
        assert "vary (region) of image 1 of " + job in media["caption"]
        assert f"t:{edited}:1:vr" in callback_data(done)  # edit it again
        row = await jobs.get(r.env.db, edited)
        assert row.request["kind"] == "edit" and row.request["edit_words"] == "the boat"
        assert row.request["prompt"] == "a red sail" and row.charged == 1
        # the mask that was used, as a small photo under the result
        overlay = await fake.wait_for_call("sendPhoto", timeout=10, since=mark,
                                           predicate=lambda c: "region that was repainted" in
                                           (c.params.get("caption") or ""))
        assert overlay.params["reply_parameters"]["message_id"] == done.result["message_id"]
        assert Image.open(io.BytesIO(overlay.file("photo").data)).format == "JPEG"
        pixels = np.asarray(Image.open(io.BytesIO(done.file(media["media"]).data)).convert("RGB")).astype(int)
        stored = Image.open(r.env.store.path_for((await inputs.for_job(r.env.db, edited)).path)).convert("RGBA")
        keep = np.asarray(stored.getchannel("A")) == 255
        assert np.abs(pixels - np.asarray(stored.convert("RGB")).astype(int))[keep].max() <= 2

        # usage, a reply to nothing of ours, and a mask of nothing: told, nothing charged
        mark = fake.mark()
        fake.push(fake.message_update("/edit the boat", reply_to=shown))
        told = await fake.wait_for_call("sendMessage", timeout=10, since=mark)
        assert "separated by ->" in told.params["text"]
        mark = fake.mark()
        fake.push(fake.message_update("/edit the boat -> a sail"))
        told = await fake.wait_for_call("sendMessage", timeout=10, since=mark)
        assert "Reply to one of my images" in told.params["text"]
        r.env.service.config = replace(r.env.service.config, edit=replace(PARTIAL, threshold=1.0))
        mark = fake.mark()
        fake.push(fake.message_update("/edit a unicorn -> a dragon", reply_to=shown))
        told = await fake.wait_for_call("sendMessage", timeout=10, since=mark)
        assert "Nothing matching “a unicorn” was found" in told.params["text"]
        assert (await r.env.service.quota(Who("telegram", "1001"))).used == 2

        # the 🖌️ button under a single image says how
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"t:{edited}:1:vr", done.result))
        answer = await fake.wait_for_call("answerCallbackQuery", timeout=10, since=mark)
        assert "/edit WHAT -> NEW TEXT" in answer.params["text"] and answer.params["show_alert"] is True


async def test_describe_a_photo_and_imagine_from_a_suggestion(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        r.env.service.describer = ScriptedDescriber("a harbour with boats")
        commands = {c["command"] for c in fake.calls("setMyCommands")[0].params["commands"]}
        assert {"edit", "describe"} <= commands
        mark = fake.mark()
        sent = fake.message_update(None, caption="/describe", photo=fake.user_photo(photo(300, 200)))
        fake.push(sent)
        answer = await fake.wait_for_call("sendMessage", timeout=10, since=mark)
        assert "I see: a harbour with boats" in answer.params["text"]
        assert "2. a harbour with boats, natural light" in answer.params["text"]
        assert callback_data(answer) == [*(f"d:{n}" for n in range(1, 5)), *(f"d:{n}:i" for n in range(1, 5))]
        assert answer.params["reply_parameters"]["message_id"] == sent["message"]["message_id"]

        mark = fake.mark()
        fake.push(fake.callback_query_update("d:3", answer.result))
        job, _ = await _result(fake, mark, r)
        row = await jobs.get(r.env.db, job)
        assert row.request["style"] == "cinematic" and row.request["kind"] == "txt2img"

        mark = fake.mark()
        fake.push(fake.callback_query_update("d:1:i", answer.result, BOB))  # anyone who sees it, as themselves
        job, _ = await _result(fake, mark, r)
        row = await jobs.get(r.env.db, job)
        assert row.request["kind"] == "img2img" and row.request["prompt"] == "a harbour with boats"
        assert (await r.env.service.quota(Who("telegram", "1002"))).used == 1

        # a reply to a photo works too; a /describe with no photo gets the usage
        mark = fake.mark()
        fake.push(fake.message_update("/describe", reply_to=sent["message"]))
        answer = await fake.wait_for_call("sendMessage", timeout=10, since=mark)
        assert "I see:" in answer.params["text"]
        mark = fake.mark()
        fake.push(fake.message_update("/describe"))
        answer = await fake.wait_for_call("sendMessage", timeout=10, since=mark)
        assert "caption of a photo" in answer.params["text"]

"""/imagine from a photo on Telegram: the real PTB Application against FakeTelegram (getFile + download)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.service import Who
from storage import inputs, jobs
from tests.fake_telegram import FakeTelegram, make_user
from tests.telegram_support import callback_data, job_status, running, wait_until
from tests.upload_support import BAD_UPLOADS, photo

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

ALICE = make_user(1001, "Alice", "alice")
ALICE_WHO = Who("telegram", "1001", "Alice")
GEN = 60.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def _equals(value, expected) -> bool:
    return await value == expected


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


async def _result(fake: FakeTelegram, mark: int, r) -> tuple[str, np.ndarray, dict]:
    result = await fake.wait_for_call("editMessageMedia", timeout=GEN, since=mark)
    job = callback_data(result)[0].removeprefix("r:")
    await wait_until(lambda: _equals(job_status(r.env, job), "delivered"), GEN)
    media = result.params["media"]
    return job, _pixels(result.file(media["media"]).data), media


async def test_photo_with_caption_and_reply_to_photo_start_from_it(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        mark = fake.mark()
        fake.push(fake.message_update("/imagine a harbour --seed 9"))
        plain_job, plain, _ = await _result(fake, mark, r)

        # a photo whose caption is the command (getFile, then the file download)
        mark = fake.mark()
        fake.push(fake.message_update(None, caption="/imagine a harbour --seed 9 --strength 0.5",
                                      photo=fake.user_photo(photo(300, 200))))
        job, pixels, media = await _result(fake, mark, r)
        assert fake.calls("getFile", since=mark)
        row = await jobs.get(r.env.db, job)
        assert row.request["kind"] == "img2img" and row.request["strength"] == 0.5
        assert (row.request["width"], row.request["height"]) == (304, 208)
        assert await inputs.for_job(r.env.db, job) is not None
        assert "from your image" in media["caption"]
        assert pixels.shape != plain.shape or np.abs(pixels - plain).mean() > 1

        # /imagine as a reply to a photo (here a picture sent as a file), square by --ar
        mark = fake.mark()
        sent = fake.message_update(None, document=fake.user_document(photo(200, 300, seed=4), "sketch.png"))
        fake.push(fake.message_update("/imagine a harbour --seed 9 --ar 1:1", reply_to=sent["message"]))
        job, pixels, _ = await _result(fake, mark, r)
        row = await jobs.get(r.env.db, job)
        assert row.request["kind"] == "img2img" and (row.request["width"], row.request["height"]) == (256, 256)
        assert np.abs(pixels - plain).mean() > 1
        assert (await r.env.service.quota(ALICE_WHO)).used == 3

        # /history (a text list) names the picture each of the two started from; not the plain one's
        mark = fake.mark()
        fake.push(fake.message_update("/history"))
        page = (await fake.wait_for_call("sendMessage", since=mark)).params["text"]
        entries = page.split("\n\n")[1:]  # newest first: reply-to-photo, caption photo, plain
        assert [("started from a picture you sent" in e) for e in entries] == [True, True, False], page
        assert plain_job in entries[2]


@pytest.mark.parametrize(("name", "make", "words"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
async def test_bad_file_gets_its_message_and_costs_nothing(tmp_path: Path, tiny, fake: FakeTelegram,
                                                           name: str, make, words: list[str]) -> None:
    async with running(tmp_path, tiny, fake) as r:
        mark = fake.mark()
        fake.push(fake.message_update(None, caption="/imagine a harbour",
                                      document=fake.user_document(make(), f"upload-{name}.png")))
        told = await fake.wait_for_call("sendMessage", timeout=GEN, since=mark)
        for word in words:
            assert word in told.params["text"]
        assert (await r.env.service.quota(ALICE_WHO)).used == 0
        assert int(await r.env.db.fetchval("SELECT count(*) FROM jobs")) == 0


async def test_strength_without_a_photo_is_told(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        mark = fake.mark()
        fake.push(fake.message_update("/imagine a harbour --strength 0.4"))
        told = await fake.wait_for_call("sendMessage", timeout=GEN, since=mark)
        assert "needs an image" in told.params["text"]
        assert (await r.env.service.quota(ALICE_WHO)).used == 0


@pytest.mark.slow
async def test_upscale_buttons_under_a_full_size_image(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        mark = fake.mark()
        fake.push(fake.message_update("/imagine a harbour --n 2 --steps 1 --seed 9"))
        result = await fake.wait_for_call("editMessageMedia", timeout=GEN, since=mark)
        job = callback_data(result)[0].removeprefix("r:")
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"u:{job}:2", result.result))
        document = await fake.wait_for_call("sendDocument", since=mark)
        assert callback_data(document) == [f"t:{job}:2:{code}" for code in ("ups", "upc", "z15", "z2", "pl", "pr", "pu", "pd")]
        bob = make_user(2002, "Bob", "bob")
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"t:{job}:2:upc", document.result, bob))
        upscaled = await fake.wait_for_call("editMessageMedia", timeout=4 * GEN, since=mark)
        media = upscaled.params["media"]
        assert media["type"] == "document" and "upscale (creative) of image 2" in media["caption"]
        with Image.open(io.BytesIO(upscaled.file(media["media"]).data)) as image:
            assert image.format == "PNG" and image.size == (512, 512)
        new_job = next(d for d in callback_data(upscaled) if d.startswith("g:")).split(":")[1]
        await wait_until(lambda: _equals(job_status(r.env, new_job), "delivered"), GEN)
        row = await jobs.get(r.env.db, new_job)
        assert row.request["kind"] == "upscale" and row.request["source"] == f"{job}#2"
        assert (await r.env.service.quota(Who("telegram", "2002"))).used == 1  # the clicker pays

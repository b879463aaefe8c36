"""The Telegram front end: the real PTB Application against FakeTelegram, a real service, tiny pipeline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.service import Who
from bot.frontends.telegram import callbacks
from bot.frontends.telegram.delivery import placeholder_png, result_media
from storage import jobs, ratings, users
from tests.fake_telegram import FakeTelegram, make_chat, make_user
from tests.telegram_support import callback_data, job_status, running, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

ALICE = make_user(1001, "Alice", "alice")
BOB = make_user(2002, "Bob", "bob")
CAROL = make_user(3003, "Carol")
GROUP = make_chat(-1001234567890, "supergroup", "Imagine fans")
ALICE_WHO = Who("telegram", "1001", "Alice")
GEN = 30.0  # bound for anything that waits on the pipeline


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def has_button(prefix: str):
    return lambda call: any(d.startswith(prefix) for d in callback_data(call))


async def stars_of(env, image_id: int, telegram_id: int) -> tuple[int, str] | None:
    user = await users.get_by_platform(env.db, "telegram", str(telegram_id))
    row = await ratings.get(env.db, image_id, user.id) if user else None
    return (row.stars, row.source) if row else None


async def test_private_grid_placeholder_buttons_and_reactions(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        commands = fake.calls("setMyCommands")[0].params["commands"]
        assert {"imagine", "history", "help"} <= {c["command"] for c in commands}

        fake.push(fake.message_update("/imagine a red fox --n 3 --steps 1 --seed 11"))
        result = await fake.wait_for_call("editMessageMedia", timeout=GEN)

        # the placeholder photo: status caption and ❌ Cancel; progress edits its caption
        placeholder = fake.calls("sendPhoto")[0]
        job = callback_data(placeholder)[0].removeprefix("x:")
        assert placeholder.params["caption"].startswith("⏳ Queued") and callback_data(placeholder) == [f"x:{job}"]
        assert placeholder.file("photo").data == placeholder_png()
        assert any("Generating" in c.params["caption"] for c in fake.calls("editMessageCaption"))
        # …and the result replaced it: the same message, a grid of the 3 images, the keyboard
        assert (result.params["chat_id"], result.params["message_id"]) == (1001, placeholder.result["message_id"])
        assert not fake.calls("sendMediaGroup") and len(fake.calls("sendPhoto")) == 1
        media = result.params["media"]
        assert media["type"] == "photo" and "a red fox" in media["caption"] and job in media["caption"]
        data = callback_data(result)
        assert all(len(d.encode()) <= 64 for d in data)
        assert data == [f"r:{job}", *(f"u:{job}:{n}" for n in (1, 2, 3)), *(f"v:{job}:{n}" for n in (1, 2, 3)),
                        *(f"k:{job}:{n}" for n in (1, 2, 3)), *(f"g:{job}:{n}" for n in (1, 2, 3))]
        await wait_until(lambda: _equals(job_status(r.env, job), "delivered"), GEN)
        delivery = await r.env.service.job_delivery(ALICE_WHO, job)
        assert result.file(media["media"]).data == result_media(delivery)[0]
        shown = fake.messages[(1001, placeholder.result["message_id"])]
        assert fake.media_of(shown) == result_media(delivery)[0] and shown["caption"] == media["caption"]
        message = result.result

        # U3: image 3 as a document at full quality
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"u:{job}:3", message))
        document = await fake.wait_for_call("sendDocument", since=mark)
        assert document.file("document").data == delivery.images[2].path.read_bytes()
        assert document.file("document").filename == f"{job}-3.png"

        # A reaction on the grid rates every image in it (🔥 = 5); taking it back removes them
        chat = message["chat"]
        fake.push(fake.message_reaction_update(chat, message["message_id"], new_reaction=["🔥"]))
        await wait_until(lambda: stars_of(r.env, delivery.images[2].image_id, 1001))
        for image in delivery.images:
            assert await stars_of(r.env, image.image_id, 1001) == (5, "reaction")
        fake.push(fake.message_reaction_update(chat, message["message_id"], old_reaction=["🔥"], new_reaction=[]))
        for image in delivery.images:
            await wait_until(lambda image=image: _is_none(stars_of(r.env, image.image_id, 1001)))

        # Rate image 2 with the buttons: the star row, then 4 stars, then the main row again
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"k:{job}:2", message))
        stars_row = await fake.wait_for_call("editMessageReplyMarkup", since=mark)
        assert callback_data(stars_row)[:5] == [f"s:{job}:2:{s}" for s in range(1, 6)]
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"s:{job}:2:4", message))
        answer = await fake.wait_for_call("answerCallbackQuery", lambda c: "Rated" in (c.params.get("text") or ""),
                                          since=mark)
        assert answer.params["text"] == "Rated image 2: ★★★★☆"
        assert await stars_of(r.env, delivery.images[1].image_id, 1001) == (4, "button")
        assert await stars_of(r.env, delivery.images[0].image_id, 1001) is None

        # Reroll: a new job with a new seed; V1: a variation (img2img) of image 1
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"r:{job}", message))
        second = await fake.wait_for_call("sendPhoto", has_button("x:"), since=mark, timeout=GEN)
        rerolled = callback_data(second)[0].removeprefix("x:")
        fake.push(fake.callback_query_update(f"v:{job}:1", message))
        third = await fake.wait_for_call("sendPhoto", lambda c: has_button("x:")(c) and c is not second,
                                         since=mark, timeout=GEN)
        varied = callback_data(third)[0].removeprefix("x:")
        first_row, reroll_row, variation_row = [await jobs.get(r.env.db, j) for j in (job, rerolled, varied)]
        assert len({job, rerolled, varied}) == 3
        assert reroll_row.request["seed"] != first_row.request["seed"]
        assert reroll_row.request["prompt"] == "a red fox"
        assert variation_row.request["kind"] == "img2img"
        done = await fake.wait_for_call("editMessageMedia", lambda c: f"job {varied}" in str(c.params),
                                        since=mark, timeout=GEN)
        assert f"· job {varied} · more: V1 on its images" in str(done.params)  # its buttons


async def _is_none(value) -> bool:
    return (await value) is None


async def test_group_command_single_photo_and_bad_flag(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake):
        command = fake.message_update("/imagine@imagine_test_bot a castle on a hill --steps 1", BOB, GROUP)
        fake.push(fake.message_update("/imagine@other_bot not for us", BOB, GROUP))
        fake.push(command)
        photo = await fake.wait_for_call("editMessageMedia", timeout=GEN)
        placeholder = fake.calls("sendPhoto")[0]
        assert placeholder.params["chat_id"] == GROUP["id"] == photo.params["chat_id"]
        assert placeholder.params["reply_parameters"]["message_id"] == command["message"]["message_id"]
        assert photo.params["message_id"] == placeholder.result["message_id"]
        assert photo.file(photo.params["media"]["media"]).data.startswith(b"\x89PNG")
        data = callback_data(photo)
        job = data[0].removeprefix("r:")
        assert data == [f"r:{job}", f"u:{job}:1", f"v:{job}:1", *(f"s:{job}:1:{s}" for s in range(1, 6)), f"g:{job}:1",
                        f"t:{job}:1:vr"]
        assert all(len(d.encode()) <= 64 for d in data)
        assert "Bob" in photo.params["media"]["caption"]
        assert len(fake.calls("sendPhoto")) == 1 and len(fake.calls("editMessageMedia")) == 1

        mark = fake.mark()
        fake.push(fake.message_update("/imagine a fox --ar 2:9", BOB, GROUP))
        reply = await fake.wait_for_call("sendMessage", since=mark)
        assert "2:9" in reply.params["text"] and "aspect" in reply.params["text"].lower()

        mark = fake.mark()
        fake.push(fake.message_update("/imagine", BOB, GROUP))
        usage = await fake.wait_for_call("sendMessage", since=mark)
        assert usage.params["text"].startswith("Usage: /imagine")


async def test_history_private_group_and_never_started(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake, history_per_page=1):
        for prompt in ("a green frog", "a blue whale"):
            mark = fake.mark()
            fake.push(fake.message_update(f"/imagine {prompt} --steps 1"))
            await fake.wait_for_call("editMessageMedia", since=mark, timeout=GEN)

        mark = fake.mark()
        fake.push(fake.message_update("/history"))
        page = await fake.wait_for_call("sendMessage", since=mark)
        assert "a blue whale" in page.params["text"] and "page 1 of 2" in page.params["text"]
        assert "h:1:" in callback_data(page)
        mark = fake.mark()
        fake.push(fake.callback_query_update("h:1:", page.result))
        older = await fake.wait_for_call("editMessageText", since=mark)
        assert "a green frog" in older.params["text"]

        mark = fake.mark()
        fake.push(fake.message_update("/history frog", ALICE, GROUP))
        private = await fake.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == ALICE["id"], since=mark)
        notice = await fake.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == GROUP["id"], since=mark)
        assert "a green frog" in private.params["text"] and "whale" not in private.params["text"]
        assert "sent you a private message" in notice.params["text"]

        fake.forbidden("sendMessage", when=lambda c: c.params["chat_id"] == CAROL["id"])
        mark = fake.mark()
        fake.push(fake.message_update("/history", CAROL, GROUP))
        notice = await fake.wait_for_call("sendMessage", lambda c: c.ok, since=mark)
        assert notice.params["chat_id"] == GROUP["id"]
        assert "open a private chat with me first" in notice.params["text"]
        assert "t.me/imagine_test_bot?start=history" in notice.params["text"]


async def test_rate_limited_reply_waits_retry_after(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake):
        fake.rate_limit("sendMessage", retry_after=1)
        fake.push(fake.message_update("/quota"))
        first, second = await fake.wait_for_calls("sendMessage", 2)
        assert (first.status, second.status) == (429, 200)
        assert second.time - first.time >= 1.0
        assert "left this day (daily quota). Resets " in second.params["text"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_secret_and_repeated_updates(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    port = free_port()
    async with running(tmp_path, tiny, fake, webhook_url=f"http://127.0.0.1:{port}/tg", webhook_listen="127.0.0.1",
                       webhook_port=port, webhook_secret="s3cret") as r:
        hook = fake.calls("setWebhook")[0].params
        assert hook["secret_token"] == "s3cret" and "message_reaction" in hook["allowed_updates"]
        assert not fake.calls("getUpdates")

        impostor = fake.message_update("/imagine from an impostor --steps 1")
        assert await fake.post_webhook(impostor, secret_token="wrong") == 403
        assert await fake.post_webhook(impostor, secret_token=None) == 403

        update = fake.message_update("/imagine once only --steps 1")
        assert await fake.post_webhook(update) == 200
        assert await inbox_rows(r.env, update["update_id"]) == [1]  # stored before the 200
        assert await fake.post_webhook(update) == 200  # Telegram retried: same update_id
        await fake.wait_for_call("editMessageMedia", timeout=GEN)
        await asyncio.sleep(0.3)
        history = await r.env.service.history(ALICE_WHO)
        assert history.total == 1 and "once only" in history.entries[0].text
        assert len(fake.calls("sendPhoto")) == 1 and len(fake.calls("editMessageMedia")) == 1
        assert await r.env.service.unhandled("telegram") == []


async def test_old_buttons_work_after_a_restart(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        fake.push(fake.message_update("/imagine a lantern --steps 1"))
        photo = await fake.wait_for_call("editMessageMedia", timeout=GEN)
        job = callback_data(photo)[0].removeprefix("r:")
        await wait_until(lambda: _equals(job_status(r.env, job), "delivered"))

    async with running(tmp_path, tiny, fake) as r:  # a new service and front end on the same files
        mark = fake.mark()
        fake.push(fake.callback_query_update(f"s:{job}:1:3", photo.result))
        fake.push(fake.callback_query_update(f"r:{job}", photo.result))
        again = await fake.wait_for_call("sendPhoto", since=mark, timeout=GEN)
        assert callback_data(again)[0] != f"x:{job}"
        delivery = await r.env.service.job_delivery(ALICE_WHO, job)
        await wait_until(lambda: stars_of(r.env, delivery.images[0].image_id, 1001))
        assert await stars_of(r.env, delivery.images[0].image_id, 1001) == (3, "button")


async def _equals(value, expected) -> bool:
    return (await value) == expected


async def inbox_rows(env, update_id: int) -> list[int]:
    rows = await env.db.fetchall("SELECT 1 FROM inbox WHERE platform = 'telegram' AND key = ?", (str(update_id),))
    return [1 for _ in rows]


async def test_undelivered_result_replaces_the_placeholder_after_a_restart(tmp_path: Path, tiny,
                                                                          fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake, send_retries=1, send_retry_backoff=0.05) as r:
        fake.fail("editMessageMedia", 500, "Internal Server Error", times=None)
        fake.push(fake.message_update("/imagine a kite --steps 1"))
        first, second = await fake.wait_for_calls("editMessageMedia", 2, timeout=GEN)  # tried again
        assert (first.status, second.status) == (500, 500)
        placeholder = fake.calls("sendPhoto")[0]
        job = callback_data(placeholder)[0].removeprefix("x:")
        await wait_until(lambda: _equals(job_status(r.env, job), "done"))
    fake.clear_failures()
    async with running(tmp_path, tiny, fake) as r:
        photo = await fake.wait_for_call("editMessageMedia", lambda c: c.ok, timeout=GEN)
        assert callback_data(photo)[0] == f"r:{job}"
        assert photo.params["message_id"] == placeholder.result["message_id"]  # the same message
        await wait_until(lambda: _equals(job_status(r.env, job), "delivered"))
        assert len(fake.calls("sendPhoto")) == 1  # no second message


async def test_forget_needs_confirmation_from_the_same_user(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake) as r:
        fake.push(fake.message_update("/imagine a small boat --steps 1"))
        await fake.wait_for_call("editMessageMedia", timeout=GEN)

        mark = fake.mark()
        fake.push(fake.message_update("/export"))
        export = await fake.wait_for_call("sendDocument", since=mark)
        assert export.file("document").data.startswith(b"PK")

        mark = fake.mark()
        fake.push(fake.message_update("/forget", ALICE, GROUP))
        ask = await fake.wait_for_call("sendMessage", has_button("f:"), since=mark)
        assert callback_data(ask) == ["f:1001:y", "f:1001:n"]
        fake.push(fake.callback_query_update("f:1001:y", ask.result, BOB))
        refused = await fake.wait_for_call("answerCallbackQuery", since=mark)
        assert refused.params["text"] == "This button is not for you."
        assert (await r.env.service.history(ALICE_WHO)).total == 1

        fake.push(fake.callback_query_update("f:1001:y", ask.result, ALICE))
        done = await fake.wait_for_call("editMessageText", since=mark)
        assert done.params["text"].startswith("🗑 Forgotten")
        assert "Kept, because they protect others" in done.params["text"]
        assert (await r.env.service.history(ALICE_WHO)).total == 0
        # what protects others stays: the image already used in this window still counts
        assert (await r.env.service.quota(ALICE_WHO)).used == 1


async def test_admin_commands_are_for_admins_only(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake, service={"admins": {"telegram:2002"}}):
        mark = fake.mark()
        fake.push(fake.message_update("/admin block 2002"))
        refused = await fake.wait_for_call("sendMessage", since=mark)
        assert refused.params["text"] == "Only the bot's admins can do that."

        mark = fake.mark()
        fake.push(fake.message_update("/admin block 1001", BOB))
        await fake.wait_for_call("sendMessage", lambda c: c.params["text"] == "Blocked telegram:1001.", since=mark)
        fake.push(fake.message_update("/imagine let me in --steps 1"))
        blocked = await fake.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == 1001, since=mark)
        assert "blocked" in blocked.params["text"]
        fake.push(fake.message_update("/admin stats", BOB))
        stats = await fake.wait_for_call("sendMessage", lambda c: "queue" in c.params["text"], since=mark)
        assert stats.params["chat_id"] == BOB["id"]


async def test_unexpected_errors_get_a_reference(tmp_path: Path, tiny, fake: FakeTelegram,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async with running(tmp_path, tiny, fake) as r:
        async def broken(who):
            raise RuntimeError("database on fire")

        r.env.service.quota = broken  # type: ignore[method-assign]
        fake.push(fake.message_update("/quota"))
        reply = await fake.wait_for_call("sendMessage")
        assert reply.params["text"].startswith("Sorry, something went wrong (reference ")
        assert "fire" not in reply.params["text"]
        ref = reply.params["text"].split("reference ")[1].rstrip(").")
        assert any(ref in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_callback_data_fits_and_parses() -> None:
    job = "0123456789ab"
    longest = callbacks.encode("s", job, 4, 5)
    assert len(longest.encode()) <= 64 and callbacks.parse(longest) == callbacks.Action("s", (job, "4", "5"))
    data = callbacks.history_data(3, "ü" * 100)
    assert len(data.encode()) <= 64 and callbacks.parse(data).fields[0] == "3"
    with pytest.raises(ValueError):
        callbacks.encode("r", "x" * 70)
    assert callbacks.parse("rate:up") is None and callbacks.parse(None) is None
    assert callbacks.stars_for(["👍", "🔥"]) == 5 and callbacks.stars_for(["👎"]) == 1
    assert callbacks.stars_for(["🦄"]) is None and callbacks.stars_for([]) is None


async def test_status_edits_are_paced(fake: FakeTelegram) -> None:
    from telegram import Bot

    from bot.frontends.telegram.status import StatusMessage

    async with Bot(fake.token, base_url=fake.base_url) as bot:
        sent = await bot.send_message(1001, "start")
        status = StatusMessage(bot, 1001, sent.message_id, "start", interval=0.5)
        started = time.monotonic()
        await status.show("start")  # no-op: skipped
        for n in range(10):
            await status.show(f"step {n}")
        await asyncio.sleep(0.7)
        await status.show("done", final=True)
        edits = fake.calls("editMessageText")
        assert [c.params["text"] for c in edits] == ["step 9", "done"]
        assert edits[0].time - started >= 0.45


async def test_big_images_go_as_documents(tmp_path: Path, tiny, fake: FakeTelegram,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.frontends.telegram import delivery

    monkeypatch.setattr(delivery, "MAX_PHOTO_BYTES", 100)  # every PNG is "over the photo limit"
    monkeypatch.setattr(delivery, "MAX_PHOTO_SIDES", 10)  # and every grid (re-encoded to fit) too wide
    async with running(tmp_path, tiny, fake):
        fake.push(fake.message_update("/imagine a huge mural --n 2 --steps 1"))
        grid = await fake.wait_for_call("editMessageMedia", timeout=GEN)
        assert grid.params["media"]["type"] == "document" and callback_data(grid)[0].startswith("r:")
        fake.push(fake.message_update("/imagine a huge tower --steps 1"))
        single = await fake.wait_for_call("editMessageMedia", lambda c: c is not grid, timeout=GEN)
        assert single.params["media"]["type"] == "document" and callback_data(single)[0].startswith("r:")


async def test_private_setting_sends_group_requests_to_the_private_chat(tmp_path: Path, tiny,
                                                                        fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake):
        mark = fake.mark()
        fake.push(fake.message_update("/settings private=on", ALICE, GROUP))
        await fake.wait_for_call("sendMessage", lambda c: "private=on" in c.params["text"], since=mark)
        fake.push(fake.message_update("/imagine a secret garden --steps 1", ALICE, GROUP))
        photo = await fake.wait_for_call("editMessageMedia", since=mark, timeout=GEN)
        assert photo.params["chat_id"] == ALICE["id"]
        assert fake.calls("sendPhoto", since=mark)[0].params["chat_id"] == ALICE["id"]
        notes = [c.params["text"] for c in fake.calls("sendMessage", since=mark) if c.params["chat_id"] == GROUP["id"]]
        assert "🔒 Working on it in our private chat." in notes


async def test_cancel_button_on_the_status_message(tmp_path: Path, fake: FakeTelegram) -> None:
    from tests.fakes import FakePipeline

    pipeline = FakePipeline()
    pipeline.pause()
    try:
        async with running(tmp_path, pipeline, fake) as r:
            fake.push(fake.message_update("/imagine a slow snail --steps 2", BOB))  # holds the GPU
            await fake.wait_for_call("sendPhoto", has_button("x:"))
            mark = fake.mark()
            fake.push(fake.message_update("/imagine a quick hare --steps 1"))  # waits behind it
            status = await fake.wait_for_call("sendPhoto", has_button("x:"), since=mark)
            assert status.params["caption"].startswith("⏳ Queued — position")
            job = callback_data(status)[0].removeprefix("x:")
            mark = fake.mark()
            fake.push(fake.callback_query_update(f"x:{job}", status.result))
            answer = await fake.wait_for_call("answerCallbackQuery", since=mark, timeout=GEN)
            assert answer.params["text"] == "Cancelled; 1 image(s) refunded."
            edit = await fake.wait_for_call("editMessageCaption", lambda c: c.params["caption"].startswith("🚫"),
                                            since=mark)
            assert "reply_markup" not in edit.params
            assert await job_status(r.env, job) == "cancelled"
            pipeline.resume()
            await fake.wait_for_call("editMessageMedia", timeout=GEN)  # Bob's job still arrives
    finally:
        pipeline.resume()

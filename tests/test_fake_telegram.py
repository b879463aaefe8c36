"""The fake Bot API server drives the real python-telegram-bot Application offline."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from PIL import Image
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageReactionHandler,
    TypeHandler,
)

from tests.fake_telegram import NOT_MODIFIED, Call, FakeTelegram, make_chat, make_user

# PTB 22.2+ warns inside RetryAfter.__init__ itself unless PTB_TIMEDELTA=1 is set.
pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

BOB = make_user(2002, "Bob", "bob")
GROUP = make_chat(-1001234567890, "supergroup", "Imagine fans")


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Seen:
    """What the handlers saw, for the test to assert on."""

    update_ids: list[int] = field(default_factory=list)
    albums: list[tuple[Message, ...]] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    reactions: list[tuple[int, list[str]]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    reacted: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[BaseException] = field(default_factory=list)


def build_app(fake: FakeTelegram, seen: Seen, *, max_retries: int = 1) -> Application:
    """An Application shaped like the planned front end: /imagine, rating buttons, reactions."""

    async def record(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Note every update (group -1 runs before the real handlers)."""
        seen.update_ids.append(update.update_id)

    async def imagine(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Status message, edit, album of two PNGs, then a message with rating buttons."""
        message = update.effective_message
        assert message is not None and update.effective_chat is not None
        prompt = " ".join(context.args or [])
        status = await message.reply_text(f"Queued: {prompt}")
        await status.edit_text(f"Generating: {prompt}")
        if "wait" in prompt:
            await seen.gate.wait()
        album = await update.effective_chat.send_media_group(
            [
                InputMediaPhoto(png((255, 0, 0)), caption=prompt, filename="0.png"),
                InputMediaPhoto(png((0, 0, 255)), filename="1.png", has_spoiler=True),
            ]
        )
        seen.albums.append(album)
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("👍", callback_data="rate:up"),
                    InlineKeyboardButton("👎", callback_data="rate:down"),
                ]
            ]
        )
        await update.effective_chat.send_message(f"Done: {prompt}", reply_markup=keyboard)

    async def rate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answer a rating button."""
        query = update.callback_query
        assert query is not None and query.data is not None
        seen.callbacks.append(query.data)
        await query.answer("Thanks!")

    async def reaction(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Record a reaction to one of the bot's messages."""
        change = update.message_reaction
        assert change is not None
        emoji = [r.emoji for r in change.new_reaction]  # type: ignore[union-attr]
        seen.reactions.append((change.message_id, emoji))
        seen.reacted.set()

    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .rate_limiter(AIORateLimiter(max_retries=max_retries))
        .concurrent_updates(True)
        .build()
    )
    app.add_handler(TypeHandler(Update, record), group=-1)
    app.add_handler(CommandHandler("imagine", imagine))
    app.add_handler(CallbackQueryHandler(rate, pattern=r"^rate:"))
    app.add_handler(MessageReactionHandler(reaction))

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Collect handler errors so a test fails on them instead of only logging."""
        assert context.error is not None
        seen.errors.append(context.error)

    app.add_error_handler(on_error)
    return app


def running_tasks(*, include_fake_server: bool = False) -> set[asyncio.Task[object]]:
    """Unfinished tasks other than this one (the fake's connection handlers end with the fake)."""
    return {
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and not t.done()
        and (include_fake_server or t.get_coro().__qualname__ != "RequestHandler.start")  # type: ignore[union-attr]
    }


@contextlib.asynccontextmanager
async def polling(app: Application, seen: Seen, **kwargs: object) -> AsyncIterator[Application]:
    """Run ``app`` the way the bot will: ``async with`` + start + start_polling, then stop."""
    before = running_tasks()
    async with app:
        await app.bot.set_my_commands([BotCommand("imagine", "Generate images from a prompt")])
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1, **kwargs)  # type: ignore[arg-type, union-attr]
        try:
            yield app
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    await asyncio.sleep(0)
    leaked = running_tasks() - before
    assert not leaked, f"leaked tasks: {leaked}"
    assert not seen.errors, seen.errors


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    before = running_tasks(include_fake_server=True)
    async with FakeTelegram() as server:
        yield server
    await asyncio.sleep(0)
    assert not running_tasks(include_fake_server=True) - before


async def test_imagine_flow_buttons_and_reactions(fake: FakeTelegram) -> None:
    seen = Seen()
    async with polling(build_app(fake, seen), seen, allowed_updates=Update.ALL_TYPES):
        assert fake.calls("setMyCommands")[0].params["commands"] == [
            {"command": "imagine", "description": "Generate images from a prompt"}
        ]
        fake.push(fake.message_update("/imagine a red fox --ar 1:1"))
        done = await fake.wait_for_call("sendMessage", lambda c: "reply_markup" in c.params)

        status, edit = fake.calls("sendMessage")[0], fake.calls("editMessageText")[0]
        assert status.params["text"] == "Queued: a red fox --ar 1:1"
        assert edit.params["message_id"] == status.result["message_id"]
        assert edit.result["text"] == "Generating: a red fox --ar 1:1"

        album = fake.calls("sendMediaGroup")[0]
        media = album.params["media"]
        assert [m["type"] for m in media] == ["photo", "photo"]
        uploads = [album.file(m["media"]) for m in media]
        assert all(u.data.startswith(b"\x89PNG") for u in uploads)
        assert [u.filename for u in uploads] == ["0.png", "1.png"]
        assert len({m["media_group_id"] for m in album.result}) == 1

        # PTB de-jsoned the fake's answers into real objects.
        sent = seen.albums[0]
        assert [m.caption for m in sent] == ["a red fox --ar 1:1", None]
        assert (sent[0].photo[-1].width, sent[0].photo[-1].height) == (64, 48)
        assert sent[1].has_media_spoiler and not sent[0].has_media_spoiler
        ids = [status.result["message_id"], *(m.message_id for m in sent), done.result["message_id"]]
        assert ids == sorted(ids) and len(set(ids)) == 4

        # A rating button press is answered.
        mark = fake.mark()
        fake.push(fake.callback_query_update("rate:up", done.result))
        answer = await fake.wait_for_call("answerCallbackQuery", since=mark)
        assert answer.ok and answer.params["text"] == "Thanks!"
        assert seen.callbacks == ["rate:up"]

        # A reaction arrives because start_polling asked for message_reaction updates.
        chat = done.result["chat"]
        fake.push(fake.message_reaction_update(chat, sent[0].message_id, new_reaction=["🔥"]))
        await asyncio.wait_for(seen.reacted.wait(), 5)
        assert seen.reactions == [(sent[0].message_id, ["🔥"])]
        assert "message_reaction" in fake.calls("getUpdates")[0].params["allowed_updates"]
        assert not fake.filtered_updates


async def test_reactions_are_dropped_without_allowed_updates(fake: FakeTelegram) -> None:
    seen = Seen()
    async with polling(build_app(fake, seen), seen):  # no allowed_updates: Telegram's default
        reaction = fake.message_reaction_update(fake.private_chat(fake.default_user), 1)
        fake.push(reaction)
        fake.push(fake.message_update("/imagine after the reaction"))
        await fake.wait_for_call("sendMessage", lambda c: "reply_markup" in c.params)
    assert fake.filtered_updates == [reaction]
    assert seen.reactions == [] and reaction["update_id"] not in seen.update_ids


async def test_command_with_bot_name_in_group(fake: FakeTelegram) -> None:
    seen = Seen()
    async with polling(build_app(fake, seen), seen, allowed_updates=Update.ALL_TYPES):
        other = fake.message_update("/imagine@someone_else_bot not for us", BOB, GROUP)
        ours = fake.message_update("/imagine@imagine_test_bot a castle", BOB, GROUP)
        command = {"type": "bot_command", "offset": 0, "length": len("/imagine@imagine_test_bot")}
        assert ours["message"]["entities"] == [command]
        fake.push(other)
        fake.push(ours)
        done = await fake.wait_for_call("sendMessage", lambda c: "reply_markup" in c.params)
        assert done.params["chat_id"] == GROUP["id"]
        assert done.result["chat"]["type"] == "supergroup"
        for _ in range(50):  # the other bot's command reached the app and was ignored
            if other["update_id"] in seen.update_ids:
                break
            await asyncio.sleep(0.02)
        assert other["update_id"] in seen.update_ids
        statuses = fake.calls("sendMessage", ok=True)
        assert [c.params["text"] for c in statuses] == ["Queued: a castle", "Done: a castle"]
        # In groups reply_text quotes the command message, which the fake knows.
        assert statuses[0].result["reply_to_message"]["message_id"] == ours["message"]["message_id"]


async def test_rate_limited_send_is_retried_after_retry_after(fake: FakeTelegram) -> None:
    seen = Seen()
    fake.rate_limit("sendMessage", retry_after=1)
    async with polling(build_app(fake, seen, max_retries=1), seen, allowed_updates=Update.ALL_TYPES):
        fake.push(fake.message_update("/imagine slowly"))
        first, second = await fake.wait_for_calls("sendMessage", 2)
        assert (first.status, second.status) == (429, 200)
        assert first.description == "Too Many Requests: retry after 1"
        assert second.time - first.time >= 1.0
        assert second.params == first.params
        await fake.wait_for_call("sendMessage", lambda c: "reply_markup" in c.params)
    assert len(fake.calls("sendMessage")) == 3


async def test_second_user_is_served_while_first_handler_waits(fake: FakeTelegram) -> None:
    seen = Seen()
    async with polling(build_app(fake, seen), seen, allowed_updates=Update.ALL_TYPES):
        fake.push(fake.message_update("/imagine wait for the gate"))
        await fake.wait_for_call("editMessageText")
        fake.push(fake.message_update("/imagine quick one", BOB))
        bob_done = await fake.wait_for_call(
            "sendMessage", lambda c: c.params.get("text") == "Done: quick one"
        )
        assert bob_done.params["chat_id"] == BOB["id"]
        assert len(fake.calls("sendMediaGroup")) == 1 and not seen.gate.is_set()
        seen.gate.set()
        await fake.wait_for_call("sendMessage", lambda c: c.params.get("text") == "Done: wait for the gate")
    assert [album[0].chat_id for album in seen.albums] == [BOB["id"], fake.default_user["id"]]


async def test_errors_edits_and_files_through_a_plain_bot(fake: FakeTelegram) -> None:
    bot = Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)
    alice = fake.default_user["id"]
    async with bot:
        assert bot.username == "imagine_test_bot"
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("again", callback_data="again")]])
        message = await bot.send_message(
            alice, "<b>hi</b> &amp; bye", parse_mode="HTML", reply_markup=keyboard
        )
        assert message.text == "hi & bye" and message.reply_markup == keyboard

        with pytest.raises(BadRequest, match="(?i)message is not modified"):
            await bot.edit_message_text("hi & bye", alice, message.message_id, reply_markup=keyboard)
        edited = await bot.edit_message_text("hi again", alice, message.message_id)
        assert edited.reply_markup is None  # Telegram drops the keyboard unless it is repeated
        fake.bad_request("editMessageReplyMarkup", NOT_MODIFIED)
        with pytest.raises(BadRequest, match="(?i)not modified"):
            await bot.edit_message_reply_markup(alice, message.message_id, reply_markup=keyboard)
        assert fake.calls("editMessageReplyMarkup")[0].status == 400
        await bot.edit_message_reply_markup(alice, message.message_id, reply_markup=keyboard)

        fake.forbidden("sendMessage", when=lambda c: c.params["chat_id"] == BOB["id"])
        with pytest.raises(Forbidden, match="(?i)bot was blocked by the user"):
            await bot.send_message(BOB["id"], "hello?")
        fake.rate_limit("sendChatAction", retry_after=3)
        with pytest.raises(RetryAfter) as caught:
            await bot.send_chat_action(alice, "upload_photo")
        assert str(caught.value) == "Flood control exceeded. Retry in 3 seconds"
        assert await bot.send_chat_action(alice, "upload_photo")

        with pytest.raises(BadRequest, match="(?i)message text is empty"):
            await bot.send_message(alice, "  ")
        with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
            too_long = InlineKeyboardButton("b", callback_data="x" * 65)
            await bot.send_message(alice, "x", reply_markup=InlineKeyboardMarkup([[too_long]]))
        with pytest.raises(BadRequest, match="(?i)PHOTO_INVALID_DIMENSIONS"):
            await bot.send_photo(alice, png((1, 2, 3), (9000, 1500)))

        big = png((9, 9, 9), (1600, 900))
        photo = await bot.send_photo(alice, big, caption="wide", has_spoiler=True)
        assert [(p.width, p.height) for p in photo.photo] == [
            (90, 51), (320, 180), (800, 450), (1280, 720), (1600, 900)
        ]
        assert photo.has_media_spoiler and photo.caption == "wide"
        file = await photo.photo[-1].get_file()
        assert bytes(await file.download_as_bytearray()) == big
        again = await bot.send_photo(alice, photo.photo[-1].file_id)  # resend by file_id
        assert again.photo[-1].file_unique_id == photo.photo[-1].file_unique_id
        with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
            await bot.send_photo(alice, "no-such-file-id")

        document = await bot.send_document(alice, big, filename="fox.png", caption="full size")
        assert document.document is not None and document.document.file_name == "fox.png"
        assert fake.calls("sendDocument")[0].file("document").data == big

        assert await bot.set_message_reaction(alice, photo.message_id, "👍")
        assert fake.bot_reactions[(alice, photo.message_id)] == [{"type": "emoji", "emoji": "👍"}]
        assert await bot.delete_message(alice, photo.message_id)
        with pytest.raises(BadRequest, match="(?i)message to delete not found"):
            await bot.delete_message(alice, photo.message_id)
        chat = await bot.get_chat(GROUP["id"])
        assert chat.id == GROUP["id"] and chat.type == "supergroup"
        with pytest.raises(BadRequest, match="(?i)query ID is invalid"):
            await bot.answer_callback_query("12345")

        await bot.set_webhook("http://127.0.0.1:1/hook")
        with pytest.raises(Conflict, match="(?i)webhook is active"):
            await bot.get_updates()
        assert await bot.delete_webhook()
    assert all(isinstance(c, Call) for c in fake.log)


async def test_get_updates_long_polls_and_returns_early(fake: FakeTelegram) -> None:
    bot = Bot(fake.token, base_url=fake.base_url)
    async with bot:
        started = time.monotonic()
        assert await bot.get_updates(timeout=0.3) == ()
        assert 0.25 <= time.monotonic() - started < 2

        update = fake.message_update("hello")
        asyncio.get_running_loop().call_later(0.2, fake.push, update)
        started = time.monotonic()
        got = await bot.get_updates(timeout=5)
        assert time.monotonic() - started < 2
        assert [u.update_id for u in got] == [update["update_id"]]
        assert got[0].message is not None and got[0].message.text == "hello"
        # Not confirmed yet: served again; confirmed by offset: gone.
        assert len(await bot.get_updates()) == 1
        assert await bot.get_updates(offset=update["update_id"] + 1) == ()
        assert fake.pending_updates == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_mode_checks_the_secret_token(fake: FakeTelegram) -> None:
    seen = Seen()
    app = build_app(fake, seen)
    port = free_port()
    before = running_tasks()
    async with app:
        await app.start()
        await app.updater.start_webhook(  # type: ignore[union-attr]
            listen="127.0.0.1", port=port, url_path="telegram", secret_token="s3cret",
            allowed_updates=Update.ALL_TYPES,
        )
        try:
            hook = fake.calls("setWebhook")[0].params
            assert hook["url"] == f"http://127.0.0.1:{port}/telegram"
            assert hook["secret_token"] == "s3cret"
            assert "message_reaction" in hook["allowed_updates"]

            wrong = fake.message_update("/imagine from an impostor")
            assert await fake.post_webhook(wrong, secret_token="wrong") == 403
            assert await fake.post_webhook(wrong, secret_token=None) == 403

            right = fake.message_update("/imagine via webhook")
            assert await fake.post_webhook(right) == 200
            await fake.wait_for_call("sendMessage", lambda c: c.params.get("text") == "Done: via webhook")

            fake.push(fake.message_update("/imagine pushed"))  # push() POSTs while a webhook is set
            await fake.join_webhook_deliveries()
            await fake.wait_for_call("sendMessage", lambda c: c.params.get("text") == "Done: pushed")
            assert [status for _, status in fake.webhook_deliveries] == [200]
            assert wrong["update_id"] not in seen.update_ids
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    await asyncio.sleep(0)
    assert not running_tasks() - before
    assert not seen.errors, seen.errors

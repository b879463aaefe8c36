"""Telegram front end: python-telegram-bot updates in, ImagineService calls, messages out.

Thin on purpose: parsing, quota, jobs and ratings live in the service. This module decides only
how things look on Telegram:

* ``/imagine`` → a status message (queue place, ETA, progress; paced, with a ❌ Cancel button)
  → one photo with an inline keyboard, or an album plus a keyboard message replying to it
  (albums cannot carry keyboards). Photos over 10 MB or width+height > 10000 go as documents.
* Buttons carry stateless data (:mod:`bot.frontends.telegram.callbacks`), so they work after a restart.
* Reactions to the bot's result messages become ratings (source ``reaction``).
* /history and /export are private: from a group they go to the user's private chat.
* Moderation (:mod:`bot.frontends.telegram.moderation`): a cooldown/block refusal carries a 📝 Appeal
  button; /appeal files one too; /admin appeals|lift|reject|strikes|modlog|policy for admins.
* The message ids the bot sent are recorded in the job's target (``tg<message_id>`` →
  chat id, ``tgi<message_id>`` → image index or -1 for the keyboard message), which is how a
  reaction finds its image.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    ReplyParameters,
    Update,
    User,
)
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageReactionHandler,
    TypeHandler,
    filters,
)

from bot.options import help_text
from bot.service import (
    Cancelled,
    Delivery,
    Failed,
    Finished,
    HistoryView,
    ImagineService,
    Queued,
    Recovered,
    Running,
    StoredImage,
    Ticket,
    Who,
)
from bot.safety.moderation import Restricted
from bot.frontends.telegram import callbacks
from bot.frontends.telegram import moderation as tg_moderation
from bot.frontends.telegram.settings import TelegramSettings
from bot.frontends.telegram.status import StatusMessage
from generation.errors import ImagineError

__all__ = ["COMMANDS", "TelegramFrontEnd"]

logger = logging.getLogger(__name__)

PLATFORM = "telegram"
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDES = 10_000  # width + height
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_LOCAL_UPLOAD_BYTES = 2000 * 1024 * 1024
_RECENT_UPDATES = 2048

COMMANDS = (
    BotCommand("imagine", "Make images: /imagine a red fox --ar 16:9"),
    BotCommand("history", "Your recent requests (search: /history fox)"),
    BotCommand("quota", "Images left in this period"),
    BotCommand("settings", "Show or change your defaults"),
    BotCommand("cancel", "Cancel your running request"),
    BotCommand("export", "A zip of your data and images"),
    BotCommand("forget", "Delete everything stored about you"),
    BotCommand("appeal", "Ask an admin to review your strikes, cooldown or block"),
    BotCommand("help", "How to use the bot"),
)

_USAGE = "Usage: /imagine <prompt> [options], e.g. /imagine a red fox in snow --ar 16:9"
_COMMAND_HELP = """Commands:
/imagine PROMPT [options] — make images
/history [search] — your requests (in our private chat)
/quota — images left
/settings [key=value …] — defaults: aspect, style, count, steps, private
/cancel — cancel your latest running request
/export — a zip of your data · /forget — delete it all
/appeal [message] — ask an admin to review your strikes, cooldown or block

Under each result: 🔄 reroll · U1–U4 the full-quality file · V1–V4 variations · ⭐ rate.
Reacting to a result rates it too: ❤ 🔥 😍 = 5★, 👍 👏 = 4★, 🤔 = 3★, 😢 = 2★, 👎 = 1★."""
_EXAMPLES = """Examples:
/imagine a lighthouse at dawn, watercolor --ar 16:9
/imagine a cat astronaut --n 4 --seed 7
/imagine portrait of an old sailor --no blur, text --style photo"""


def who_of(user: User) -> Who:
    """The service identity of a Telegram user."""
    return Who(PLATFORM, str(user.id), user.full_name or user.username or str(user.id))


def command_text(text: str | None) -> str:
    """What follows ``/command`` (or ``/command@bot``), whitespace kept as typed."""
    parts = (text or "").split(None, 1)
    return parts[1].strip() if len(parts) > 1 else ""


def fits_as_photo(image: StoredImage, size: int) -> bool:
    """Whether Telegram accepts the image as a photo (else it goes as a document)."""
    return size <= MAX_PHOTO_BYTES and image.width + image.height <= MAX_PHOTO_SIDES


def _stars(n: int) -> str:
    return "★" * n + "☆" * (5 - n)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _eta(seconds: float) -> str:
    return f"about {max(1, round(seconds))} s" if seconds < 90 else f"about {round(seconds / 60)} min"


def _reply(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id, allow_sending_without_reply=True) if message_id else None


# -- keyboards --------------------------------------------------------------------------------


def main_keyboard(job_id: str, count: int) -> InlineKeyboardMarkup:
    """🔄, U1…Un, V1…Vn and rating buttons under a result."""
    enc = callbacks.encode
    if count == 1:
        rows = [
            [InlineKeyboardButton("🔄 Reroll", callback_data=enc("r", job_id)),
             InlineKeyboardButton("⬇ U1 full size", callback_data=enc("u", job_id, 1)),
             InlineKeyboardButton("🎨 V1 vary", callback_data=enc("v", job_id, 1))],
            [InlineKeyboardButton(f"{s}⭐", callback_data=enc("s", job_id, 1, s)) for s in range(1, 6)],
        ]
    else:
        numbers = range(1, count + 1)
        rows = [
            [InlineKeyboardButton("🔄 Reroll", callback_data=enc("r", job_id))],
            [InlineKeyboardButton(f"U{n}", callback_data=enc("u", job_id, n)) for n in numbers],
            [InlineKeyboardButton(f"V{n}", callback_data=enc("v", job_id, n)) for n in numbers],
            [InlineKeyboardButton(f"⭐ #{n}", callback_data=enc("k", job_id, n)) for n in numbers],
        ]
    return InlineKeyboardMarkup(rows)


def stars_keyboard(job_id: str, index: int) -> InlineKeyboardMarkup:
    """⭐1–5 for image ``index`` (1-based) of an album, and a way back."""
    enc = callbacks.encode
    return InlineKeyboardMarkup([
        [InlineKeyboardButton(f"{s}⭐", callback_data=enc("s", job_id, index, s)) for s in range(1, 6)],
        [InlineKeyboardButton(f"« back (rating image {index})", callback_data=enc("k", job_id, 0))],
    ])


def cancel_keyboard(job_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("❌ Cancel", callback_data=callbacks.encode("x", job_id))]])


# -- texts ------------------------------------------------------------------------------------


def status_text(update: Queued | Running, prompt: str) -> str:
    """The status message for a queued or running job."""
    prompt = _cut(prompt, 300)
    if isinstance(update, Queued):
        return f"⏳ Queued — position {update.position}, {_eta(update.eta)}\n{prompt}"
    bar = "▰" * update.step + "▱" * max(0, update.steps - update.step)
    return f"🎨 Generating — step {update.step}/{update.steps} {bar}\n{prompt}"


def caption_of(delivery: Delivery, name: str | None) -> str:
    by = f"\n— {name}" if name else ""
    return _cut(f"{delivery.text}{by} · job {delivery.job_id}", 1024)


def history_text(view: HistoryView, search: str | None) -> str:
    if not view.entries:
        if view.total and view.page:
            return "No more requests."
        return f"No requests match “{search}”." if search else "You have no requests yet. Try /imagine."
    about = f" matching “{search}”" if search else ""
    lines = [f"📜 Your requests{about} — page {view.page + 1} of {view.pages} ({view.total} in all)"]
    for number, entry in enumerate(view.entries, 1):
        when = entry.created_at[:16].replace("T", " ")
        lines.append(f"\n{number}. {when} · {entry.status} · job {entry.job_id}")
        lines.append(_cut(entry.text, 300))
        if entry.error:
            lines.append(f"   {_cut(entry.error, 200)}")
        for shown in entry.images:
            mine = f"your {shown.my_stars}★" if shown.my_stars else "not rated by you"
            mean = f", average {shown.average:.1f}★ of {shown.ratings}" if shown.ratings else ""
            lines.append(f"   image {shown.image.index + 1}: {mine}{mean}")
    return _cut("\n".join(lines), 4096)


def history_keyboard(view: HistoryView, search: str | None) -> InlineKeyboardMarkup | None:
    rows: list[list[InlineKeyboardButton]] = []
    for number, entry in enumerate(view.entries, 1):
        row = [InlineKeyboardButton(f"🖼 {number}.{shown.image.index + 1}",
                                    callback_data=callbacks.encode("u", entry.job_id, shown.image.index + 1))
               for shown in entry.images]
        if row:
            rows.append(row)
    paging = []
    if view.page > 0:
        paging.append(InlineKeyboardButton("« Newer", callback_data=callbacks.history_data(view.page - 1, search)))
    if view.has_more:
        paging.append(InlineKeyboardButton("Older »", callback_data=callbacks.history_data(view.page + 1, search)))
    if paging:
        rows.append(paging)
    return InlineKeyboardMarkup(rows) if rows else None


# -- the front end ----------------------------------------------------------------------------

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]


class TelegramFrontEnd:
    """The Telegram bot: ``await start()``, later ``await close()``; shares the loop with others."""

    def __init__(self, service: ImagineService, settings: TelegramSettings) -> None:
        self.service = service
        self.settings = settings
        self.application: Application | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent: deque[int] = deque(maxlen=_RECENT_UPDATES)
        self._recent_set: set[int] = set()
        self._webhook_secret: str | None = None

    # -- lifetime ------------------------------------------------------------------------------

    def build(self) -> Application:
        """The Application with its handlers (not started)."""
        s = self.settings
        builder = (
            ApplicationBuilder()
            .token(s.token)
            .rate_limiter(AIORateLimiter(max_retries=s.max_retries))
            .concurrent_updates(True)
            .media_write_timeout(s.upload_timeout)
        )
        if s.base_url:
            builder = builder.base_url(s.base_url)
        if s.base_file_url:
            builder = builder.base_file_url(s.base_file_url)
        if s.local_mode:
            builder = builder.local_mode(True)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self._dedupe), group=-1)
        only_new = filters.UpdateType.MESSAGE  # an edited /imagine is not a new request
        commands: dict[str, Handler] = {
            "start": self._start, "help": self._help, "imagine": self._imagine,
            "history": self._history, "quota": self._quota, "settings": self._settings,
            "cancel": self._cancel, "forget": self._forget, "export": self._export,
            "admin": self._admin, "appeal": self._appeal,
        }
        for name, handler in commands.items():
            app.add_handler(CommandHandler(name, self._guard(handler), filters=only_new))
        app.add_handler(CallbackQueryHandler(self._guard(self._button)))
        app.add_handler(MessageReactionHandler(
            self._reaction, message_reaction_types=MessageReactionHandler.MESSAGE_REACTION_UPDATED))
        app.add_error_handler(self._on_error)
        return app

    async def start(self, recovered: Recovered | None = None) -> None:
        """Connect, set the command menu, start polling (or the webhook); resume owed work."""
        s = self.settings
        # httpx logs every request URL at INFO, and Bot API URLs contain the token.
        if logging.getLogger("httpx").level < logging.WARNING:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        app = self.application = self.build()
        await app.initialize()
        try:
            await app.start()
            try:
                await app.bot.set_my_commands(list(COMMANDS))
            except TelegramError as err:
                logger.warning("could not set the command menu: %s", err)
            assert app.updater is not None
            if s.webhook_url:
                self._webhook_secret = s.webhook_secret or secrets.token_urlsafe(32)
                if s.webhook_secret is None:
                    logger.info("no telegram webhook secret configured; using a random one for this run")
                await app.updater.start_webhook(
                    listen=s.webhook_listen, port=s.webhook_port,
                    url_path=urlparse(s.webhook_url).path.lstrip("/"), webhook_url=s.webhook_url,
                    secret_token=self._webhook_secret, allowed_updates=Update.ALL_TYPES,
                    drop_pending_updates=s.drop_pending_updates,
                )
                logger.info("telegram: webhook on %s:%d", s.webhook_listen, s.webhook_port)
            else:
                await app.updater.start_polling(
                    poll_interval=0, timeout=int(s.poll_timeout), allowed_updates=Update.ALL_TYPES,
                    drop_pending_updates=s.drop_pending_updates,
                )
                logger.info("telegram: long polling as @%s", app.bot.username)
        except BaseException:
            await self.close()
            raise
        if recovered is not None:
            self.resume(recovered)

    async def close(self) -> None:
        """Stop receiving updates, stop following jobs (they stay in the database), disconnect."""
        app, self.application = self.application, None
        if app is None:
            return
        try:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await app.shutdown()

    @property
    def bot(self) -> Any:
        assert self.application is not None, "TelegramFrontEnd is not started"
        return self.application.bot

    def resume(self, recovered: Recovered) -> None:
        """Send results owed from before a restart and follow re-run jobs (Telegram targets)."""
        for delivery in recovered.deliveries:
            if delivery.target.get("platform") == PLATFORM:
                self._spawn(self._deliver_logged(delivery), f"tg-redeliver-{delivery.job_id}")
        for ticket in recovered.tickets:
            if ticket.target.get("platform") == PLATFORM:
                status = None
                if ticket.target.get("status_id"):
                    status = StatusMessage(self.bot, ticket.target["status_chat"], ticket.target["status_id"],
                                           "", interval=self._interval(ticket.target))
                self._spawn(self._watch(ticket, status), f"tg-job-{ticket.job_id}")

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- plumbing ------------------------------------------------------------------------------

    async def _dedupe(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Drop an update whose id was seen recently (webhook retries, restarts)."""
        uid = update.update_id
        if uid in self._recent_set:
            logger.info("telegram: dropping repeated update %d", uid)
            raise ApplicationHandlerStop
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(uid)
        self._recent_set.add(uid)

    def _guard(self, handler: Handler) -> Handler:
        """Show ImagineError messages to the user; everything else goes to the error handler."""
        async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            try:
                await handler(update, context)
            except ImagineError as err:
                markup = None
                if (isinstance(err, Restricted) and err.reason in tg_moderation.APPEALABLE
                        and update.effective_user is not None):
                    markup = tg_moderation.appeal_keyboard(update.effective_user.id)
                await self._tell(update, str(err), markup)
        guarded.__doc__ = handler.__doc__
        return guarded

    async def _tell(self, update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Answer a button press with an alert, or reply to the message (with ``markup``: both)."""
        if update.callback_query is not None:
            try:
                await update.callback_query.answer(_cut(text, 200), show_alert=True)
                if markup is None:
                    return
            except BadRequest:  # already answered: say it in the chat
                pass
        message = update.effective_message
        if message is not None:
            await self.bot.send_message(message.chat_id, _cut(text, 4096), reply_markup=markup,
                                        reply_parameters=_reply(None if update.callback_query
                                                                else message.message_id))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log with a reference id; tell the user a short apology with it."""
        ref = uuid.uuid4().hex[:8]
        logger.error("telegram update failed (reference %s)", ref, exc_info=context.error)
        if isinstance(update, Update):
            try:
                await self._tell(update, f"Sorry, something went wrong (reference {ref}).")
            except Exception:
                logger.exception("could not report error %s to the user", ref)

    def _interval(self, target: dict[str, Any]) -> float:
        if target.get("status_chat_type", "private") == ChatType.PRIVATE:
            return self.settings.status_edit_interval_private
        return self.settings.status_edit_interval_group

    async def _private_chat(self, user: User) -> int | None:
        """The user's private chat id, or None when the bot may not write there (never started)."""
        try:
            await self.bot.send_chat_action(user.id, ChatAction.TYPING)
        except Forbidden:
            return None
        return user.id

    def _start_link(self, payload: str = "") -> str:
        name = self.bot.username
        return f"https://t.me/{name}" + (f"?start={payload}" if payload else "")

    # -- /imagine and following a job ----------------------------------------------------------

    async def _imagine(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/imagine PROMPT [flags]: accept, show a status message, deliver in the background."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        text = command_text(message.text)
        if not text:
            await message.reply_text(f"{_USAGE}\n\n{_EXAMPLES}", do_quote=True)
            return
        await self._submit(who_of(user), user, message.chat_id, message.chat.type, message.message_id,
                           lambda who, target: self.service.imagine(who, text, target=target))

    async def _submit(self, who: Who, user: User, chat_id: int, chat_type: str, reply_to: int | None,
                      accept: Callable[[Who, dict[str, Any]], Awaitable[Ticket]]) -> None:
        """Place (group, or the private chat when the user's settings say so), accept, follow."""
        private = chat_type != ChatType.PRIVATE and (await self.service.settings(who)).get("private")
        origin, origin_reply = chat_id, reply_to
        if private:
            dm = await self._private_chat(user)
            if dm is None:
                raise ImagineError(
                    "Your settings send results privately, but I cannot write to you yet: open "
                    f"{self._start_link()} and press Start, or use /settings private=off.")
            chat_id, chat_type, reply_to = dm, ChatType.PRIVATE, None
        target = {"platform": PLATFORM, "chat_id": chat_id, "reply_to": reply_to, "user_id": user.id,
                  "name": who.display_name, "status_chat": chat_id, "status_chat_type": chat_type}
        ticket = await accept(who, target)
        if private:
            await self.bot.send_message(origin, "🔒 Working on it in our private chat.",
                                        reply_parameters=_reply(origin_reply))
        await self._follow(ticket, target)

    async def _follow(self, ticket: Ticket, target: dict[str, Any]) -> None:
        """Send the status message, remember its id, watch the ticket in the background."""
        status = None
        if not ticket.cached:
            last = ticket.last
            first = status_text(last if isinstance(last, (Queued, Running)) else Queued(ticket.position, ticket.eta),
                                ticket.request.prompt)
            markup = cancel_keyboard(ticket.job_id)
            sent = await self.bot.send_message(target["status_chat"], first, reply_markup=markup,
                                               reply_parameters=_reply(target.get("reply_to")))
            status = StatusMessage(self.bot, sent.chat_id, sent.message_id, first, markup,
                                   interval=self._interval(target))
            await self.service.record_refs(ticket.job_id, {"status_id": sent.message_id})
        self._spawn(self._watch(ticket, status), f"tg-job-{ticket.job_id}")

    async def _watch(self, ticket: Ticket, status: StatusMessage | None) -> None:
        """Progress into the status message; the result (or the failure) when it ends."""
        try:
            async for update in ticket.updates():
                if isinstance(update, (Queued, Running)):
                    if status is not None:
                        await status.show(status_text(update, ticket.request.prompt), cancel_keyboard(ticket.job_id))
                elif isinstance(update, Finished):
                    await self.deliver(update.delivery)
                    if status is not None:
                        await status.delete()
                elif isinstance(update, (Failed, Cancelled)):
                    icon = "🚫" if isinstance(update, Cancelled) else "❌"
                    text = f"{icon} {update.message}\n{_cut(ticket.request.prompt, 300)}"
                    if status is not None:
                        await status.show(text, final=True)
                    else:
                        await self.bot.send_message(ticket.target["chat_id"], text)
        except asyncio.CancelledError:
            raise
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("telegram: job %s could not be shown (reference %s)", ticket.job_id, ref)
            try:
                await self.bot.send_message(ticket.target["chat_id"],
                                            f"Sorry, your images could not be sent (reference {ref}).")
            except Exception:
                logger.exception("telegram: could not report reference %s", ref)
        finally:
            if status is not None:
                status.close()

    async def _deliver_logged(self, delivery: Delivery) -> None:
        try:
            await self.deliver(delivery)
        except Exception:
            logger.exception("telegram: re-delivering job %s failed; it stays owed", delivery.job_id)

    async def deliver(self, delivery: Delivery) -> list[Message]:
        """Send the images (photo + keyboard, or album + keyboard message); mark delivered."""
        target = delivery.target
        chat_id = int(target["chat_id"])
        datas = await asyncio.to_thread(lambda: [i.path.read_bytes() for i in delivery.images])
        as_photos = all(fits_as_photo(i, len(d)) for i, d in zip(delivery.images, datas))
        caption = caption_of(delivery, target.get("name"))
        keyboard = main_keyboard(delivery.job_id, len(delivery.images))
        reply = _reply(target.get("reply_to"))
        names = [f"{delivery.job_id}-{i.index + 1}.png" for i in delivery.images]
        refs: dict[str, Any] = {}
        if len(delivery.images) == 1:
            image, data = delivery.images[0], datas[0]
            if as_photos:
                sent = await self.bot.send_photo(chat_id, data, caption=caption, reply_markup=keyboard,
                                                 has_spoiler=image.spoiler or None, reply_parameters=reply,
                                                 filename=names[0])
            else:
                sent = await self.bot.send_document(chat_id, data, caption=caption, reply_markup=keyboard,
                                                    reply_parameters=reply, filename=names[0])
            messages = [sent]
            refs[f"tg{sent.message_id}"], refs[f"tgi{sent.message_id}"] = chat_id, 0
        else:
            media = [
                InputMediaPhoto(data, caption=caption if n == 0 else None, filename=name,
                                has_spoiler=image.spoiler or None)
                if as_photos else
                InputMediaDocument(data, caption=caption if n == len(datas) - 1 else None, filename=name)
                for n, (image, data, name) in enumerate(zip(delivery.images, datas, names))
            ]
            album = await self.bot.send_media_group(chat_id, media, reply_parameters=reply)
            for image, sent in zip(delivery.images, album):
                refs[f"tg{sent.message_id}"], refs[f"tgi{sent.message_id}"] = chat_id, image.index
            buttons = await self.bot.send_message(
                chat_id, "🔄 reroll · U = full-quality file · V = variations · ⭐ rate an image",
                reply_markup=keyboard, reply_parameters=_reply(album[0].message_id))
            refs[f"tg{buttons.message_id}"], refs[f"tgi{buttons.message_id}"] = chat_id, -1
            messages = [*album, buttons]
        await self.service.record_refs(delivery.job_id, refs)
        await self.service.mark_delivered(delivery.job_id)
        return messages

    # -- buttons -------------------------------------------------------------------------------

    async def _button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Inline buttons: reroll, U, V, ratings, cancel, history pages, forget, appeal."""
        query = update.callback_query
        assert query is not None
        action = callbacks.parse(query.data)
        user = query.from_user
        who = who_of(user)
        message = query.message if isinstance(query.message, Message) else None
        if action is None or message is None:
            await query.answer("This button no longer works.")
            return
        kind, fields = action.kind, action.fields
        if kind in "ruvksx" and not fields[0]:
            await query.answer("This button no longer works.")
            return
        if kind == "r":
            await self._submit(who, user, message.chat_id, message.chat.type, message.message_id,
                               lambda w, target: self.service.reroll(w, fields[0], target=target))
            await query.answer("🔄 Rerolling…")
        elif kind == "v":
            index = self._index(fields)
            await self._submit(who, user, message.chat_id, message.chat.type, message.message_id,
                               lambda w, target: self.service.variation(w, fields[0], index - 1, target=target))
            await query.answer(f"🎨 Variations of image {index}…")
        elif kind == "u":
            image = await self._image(fields[0], self._index(fields))
            data = await asyncio.to_thread(image.path.read_bytes)
            limit = MAX_LOCAL_UPLOAD_BYTES if self.settings.local_mode else MAX_UPLOAD_BYTES
            if len(data) > limit:
                await query.answer("That image is over Telegram's upload limit for bots.", show_alert=True)
                return
            await query.answer()
            await self.bot.send_document(message.chat_id, data, filename=f"{fields[0]}-{image.index + 1}.png",
                                         caption=f"Image {image.index + 1} of job {fields[0]}, seed {image.seed}",
                                         reply_parameters=_reply(message.message_id))
        elif kind == "k":
            index = self._index(fields, allow_zero=True)
            delivery = await self.service.job_delivery(fields[0])
            if index > len(delivery.images):
                raise ImagineError(f"Request {fields[0]} has no image {index}.")
            markup = (stars_keyboard(fields[0], index) if index
                      else main_keyboard(fields[0], len(delivery.images)))
            await query.answer()
            await self._set_markup(message, markup)
        elif kind == "s":
            index = self._index(fields)
            delivery = await self.service.job_delivery(fields[0])
            image = self._image_in(delivery, index)
            rating = await self.service.rate(who, image.image_id, fields[2] if len(fields) > 2 else "", "button")
            await query.answer(f"Rated image {index}: {_stars(rating.stars)}")
            if len(delivery.images) > 1:  # back from the star row to the main row
                await self._set_markup(message, main_keyboard(fields[0], len(delivery.images)))
        elif kind == "x":
            outcome = await self.service.cancel(who, fields[0])
            await query.answer(f"Cancelled; {outcome.refunded} image(s) refunded.")
        elif kind == "h":
            page = int(fields[0])
            search = fields[1] or None
            view = await self.service.history(who, page=page, per_page=self.settings.history_per_page,
                                              search=search)
            await query.answer()
            try:
                await message.edit_text(history_text(view, search), reply_markup=history_keyboard(view, search))
            except BadRequest as err:
                if "not modified" not in str(err).lower():
                    raise
        elif kind == "f":
            if len(fields) != 2 or fields[0] != str(user.id):
                await query.answer("This button is not for you.", show_alert=True)
                return
            if fields[1] == "y":
                outcome = await self.service.forget(who)
                await query.answer("Forgotten.")
                await message.edit_text(
                    "🗑 Forgotten: your history, ratings, settings and images are deleted "
                    f"({outcome.jobs_cancelled} running request(s) cancelled, "
                    f"{outcome.files_deleted} file(s) removed).")
            else:
                await query.answer()
                await message.edit_text("Nothing was deleted.")
        elif kind == "a":
            if fields[0] and fields[0] != str(user.id):
                await query.answer("This button is not for you; use /appeal for your own.", show_alert=True)
                return
            appeal = await self.service.moderation.appeal(who, "")
            await query.answer(f"Appeal #{appeal.id} filed.")
            await self._appealed(who, appeal.id, "")
            try:
                await message.edit_text(_cut(f"{message.text or ''}\n\n{tg_moderation.appeal_text(appeal.id)}", 4096))
            except BadRequest as err:
                logger.info("could not update the appeal message: %s", err)

    @staticmethod
    def _index(fields: tuple[str, ...], *, allow_zero: bool = False) -> int:
        if len(fields) < 2 or not fields[1].isdecimal() or len(fields[1]) > 2:
            raise ImagineError("This button no longer works.")
        value = int(fields[1])
        if value < (0 if allow_zero else 1):
            raise ImagineError("This button no longer works.")
        return value

    async def _image(self, job_id: str, index: int) -> StoredImage:
        return self._image_in(await self.service.job_delivery(job_id), index)

    @staticmethod
    def _image_in(delivery: Delivery, index: int) -> StoredImage:
        found = [i for i in delivery.images if i.index == index - 1]
        if not found:
            raise ImagineError(f"Request {delivery.job_id} has no image {index} (any more).")
        return found[0]

    async def _set_markup(self, message: Message, markup: InlineKeyboardMarkup) -> None:
        try:
            await self.bot.edit_message_reply_markup(message.chat_id, message.message_id, reply_markup=markup)
        except BadRequest as err:
            if "not modified" not in str(err).lower():
                raise

    # -- reactions -----------------------------------------------------------------------------

    async def _reaction(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A reaction to a result message rates its image (the keyboard message: every image)."""
        change = update.message_reaction
        if change is None or change.user is None:  # anonymous (a chat reacted): no one to credit
            return
        delivery = await self.service.find_by_ref(f"tg{change.message_id}", change.chat.id)
        if delivery is None:
            return
        index = delivery.target.get(f"tgi{change.message_id}", -1)
        chosen = [i for i in delivery.images if index == -1 or i.index == index]
        emoji = [r.emoji for r in change.new_reaction if getattr(r, "emoji", None)]
        stars = callbacks.stars_for(emoji)
        who = who_of(change.user)
        for image in chosen:
            try:
                if stars is None:
                    await self.service.unrate(who, image.image_id, "reaction")
                else:
                    await self.service.rate(who, image.image_id, stars, "reaction")
            except ImagineError as err:
                logger.info("reaction by %s not recorded: %s", who.key, err)

    # -- other commands ------------------------------------------------------------------------

    async def _start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/start (also the deep link ?start=history)."""
        message = update.effective_message
        assert message is not None
        if command_text(message.text) == "history":
            await self._history(update, context)
            return
        await message.reply_text(
            "Hi! I turn text into images with SDXL-Lightning.\n\n"
            f"{_EXAMPLES}\n\n{_COMMAND_HELP}\n\nSee /help for every option.")

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/help: commands, /imagine options, examples."""
        message = update.effective_message
        assert message is not None
        await message.reply_text(f"{_COMMAND_HELP}\n\n{help_text(self.service.caps)}\n\n{_EXAMPLES}")

    async def _in_private(self, update: Update, what: str, payload: str,
                          send: Callable[[int], Awaitable[Any]]) -> None:
        """Run ``send(chat_id)`` in the user's private chat; from a group, say where it went."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        if message.chat.type == ChatType.PRIVATE:
            await send(message.chat_id)
            return
        try:
            await send(user.id)
        except Forbidden:
            await message.reply_text(
                f"I cannot send you {what} privately yet: open a private chat with me first "
                f"({self._start_link(payload)}), press Start, then try again.")
            return
        await message.reply_text("📬 I sent you a private message.")

    async def _history(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/history [search]: a page of your requests, in the private chat."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        text = command_text(message.text)
        search = None if text == "history" and (message.text or "").startswith("/start") else (text or None)
        view = await self.service.history(who_of(user), per_page=self.settings.history_per_page, search=search)

        async def send(chat_id: int) -> None:
            await self.bot.send_message(chat_id, history_text(view, search),
                                        reply_markup=history_keyboard(view, search))

        await self._in_private(update, "your history", "history", send)

    async def _quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/quota: images used and left."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        used, limit, remaining, resets_at = await self.service.quota(who_of(user))
        await message.reply_text(f"You used {used} of {limit} images; {remaining} left. "
                                 f"Resets {resets_at:%Y-%m-%d %H:%M} UTC.")

    async def _settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/settings [key=value …]: show or change your defaults."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        changes: dict[str, str] = {}
        try:
            pairs = shlex.split(command_text(message.text))
        except ValueError:
            pairs = ["?"]
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq:
                await message.reply_text("Usage: /settings key=value … (keys: aspect, style, count, "
                                         "steps, private), e.g. /settings aspect=16:9 count=2")
                return
            changes[key.strip().lower()] = value
        current = await self.service.settings(who_of(user), **changes)
        shown = ", ".join(f"{k}={'on' if v is True else 'off' if v is False else v}" for k, v in current.items())
        await message.reply_text(("Saved. " if changes else "") + f"Your settings: {shown}")

    async def _cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/cancel [job]: cancel your latest (or the given) queued or running request."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        job = command_text(message.text) or None
        outcome = await self.service.cancel(who_of(user), job)
        await message.reply_text(f"Cancelled {outcome.job_id} ({_cut(outcome.text, 300)}); "
                                 f"{outcome.refunded} image(s) refunded.")

    async def _forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/forget: asks to confirm with a button only you can press."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        keyboard = InlineKeyboardMarkup([[
            InlineKeyboardButton("🗑 Yes, delete everything", callback_data=callbacks.encode("f", user.id, "y")),
            InlineKeyboardButton("Keep", callback_data=callbacks.encode("f", user.id, "n")),
        ]])
        await message.reply_text("This deletes your history, ratings, settings and images for good. Sure?",
                                 reply_markup=keyboard)

    async def _export(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/export: a zip of your data and images, as a document in the private chat."""
        user = update.effective_user
        assert user is not None
        path: Path = await self.service.export(who_of(user))
        size = path.stat().st_size
        limit = MAX_LOCAL_UPLOAD_BYTES if self.settings.local_mode else MAX_UPLOAD_BYTES

        async def send(chat_id: int) -> None:
            if size > limit:
                await self.bot.send_message(
                    chat_id, f"Your export is {size / 2**20:.0f} MB, over Telegram's {limit // 2**20} MB "
                    f"limit for bots, so I cannot send it here. Ask the bot's operator for {path.name}.")
                return
            await self.bot.send_document(chat_id, path, filename=path.name,
                                         caption="Your data: export.json and your images.")

        await self._in_private(update, "your export", "", send)

    async def _appeal(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/appeal [message]: ask an admin to review your strikes, cooldown or block."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        who, text = who_of(user), command_text(message.text)
        appeal = await self.service.moderation.appeal(who, text)
        await message.reply_text(tg_moderation.appeal_text(appeal.id), do_quote=True)
        await self._appealed(who, appeal.id, text)

    async def _appealed(self, who: Who, appeal_id: int, text: str) -> None:
        """Tell the bot's Telegram admins about a new appeal (best effort)."""
        note = f": “{_cut(text, 300)}”" if text else ""
        await tg_moderation.notify_admins(
            self.bot, self.service.moderation,
            f"📝 New appeal #{appeal_id} from {who.display_name} ({who.key}){note}\n"
            f"/admin lift {appeal_id} · /admin reject {appeal_id} · /admin appeals")

    async def _admin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/admin quota|block|unblock|stats and moderation (the service checks who may)."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        admin = who_of(user)
        args = command_text(message.text).split()
        usage = ("Usage: /admin quota USER LIMIT|default · /admin block USER · /admin unblock USER · "
                 "/admin stats (USER is a Telegram id or platform:id)\n" + tg_moderation.ADMIN_USAGE)
        sub = args[0].lower() if args else ""
        if sub in tg_moderation.ADMIN_SUBCOMMANDS:
            reply = await tg_moderation.admin_command(self.bot, self.service, message, user, admin, args)
            await message.reply_text(reply, do_quote=True)
            return
        if sub == "stats" and len(args) == 1:
            stats = await self.service.admin_stats(admin)
            lines = [f"{k}: {v}" for k, v in stats.items()]
            await message.reply_text(_cut("\n".join(lines), 4096))
            return
        if sub in ("block", "unblock") and len(args) == 2:
            platform, uid = self._user_ref(args[1])
            call = self.service.admin_block if sub == "block" else self.service.admin_unblock
            await call(admin, platform, uid)
            await message.reply_text(f"{sub.capitalize()}ed {platform}:{uid}.")
            return
        if sub == "quota" and len(args) == 3:
            platform, uid = self._user_ref(args[1])
            limit: int | None
            if args[2].lower() in ("default", "reset", "none"):
                limit = None
            elif args[2].isdecimal():
                limit = int(args[2])
            else:
                raise ImagineError(f"The limit must be a whole number or 'default', not {args[2]!r}.")
            status = await self.service.admin_set_quota(admin, platform, uid, limit)
            await message.reply_text(f"{platform}:{uid} now has {status.limit} images per period "
                                     f"({status.used} used).")
            return
        if not self.service.is_admin(admin):
            raise ImagineError("Only the bot's admins can do that.")
        await message.reply_text(usage)

    @staticmethod
    def _user_ref(text: str) -> tuple[str, str]:
        platform, sep, uid = text.partition(":")
        if not sep:
            platform, uid = PLATFORM, text
        if not uid or not platform.isalpha():
            raise ImagineError(f"A user is a Telegram id or platform:id, not {text!r}.")
        return platform.lower(), uid

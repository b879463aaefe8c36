"""Telegram front end: the adapter class, its lifetime, update plumbing and errors.

:class:`TelegramFrontEnd` is built from its parts: :class:`~.commands.CommandHandlers`,
:class:`~.accounts.AccountHandlers` (🌐 sharing, /link, /apikey),
:class:`~.buttons.ButtonHandlers` (inline buttons, reactions) and
:class:`~.delivery.Delivering` (status messages, results). It shares the event loop with the
other front ends (``initialize`` + ``start``, never ``run_polling``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from telegram import InlineKeyboardMarkup, Update, User
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    MessageReactionHandler,
    filters,
)

from bot.frontends.common import apology, clip, new_reference
from bot.frontends.telegram.accounts import AccountHandlers
from bot.frontends.telegram.buttons import ButtonHandlers
from bot.frontends.telegram.commands import COMMANDS, CommandHandlers
from bot.frontends.telegram.edits import EditHandlers
from bot.frontends.telegram.delivery import Delivering
from bot.frontends.telegram.inbox import InboxProcessor, StoringQueue, replay
from bot.frontends.telegram.keyboards import appeal_keyboard
from bot.frontends.telegram.messages import PLATFORM, reply_parameters
from bot.frontends.telegram.moderation import APPEALABLE
from bot.frontends.telegram.pacing import FloodLimits
from bot.frontends.telegram.retry import RetryingLimiter
from bot.frontends.telegram.settings import TelegramSettings
from bot.frontends.telegram.status import StatusMessage
from bot.safety.moderation import Restricted
from bot.service import ImagineService, Recovered
from generation.core.errors import ImagineError

__all__ = ["COMMANDS", "TelegramFrontEnd"]

logger = logging.getLogger(__name__)

_CONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # start-up retries; the last one repeats


Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]


class TelegramFrontEnd(CommandHandlers, AccountHandlers, ButtonHandlers, EditHandlers, Delivering):
    """The Telegram bot: ``await start()``, later ``await close()``; shares the loop with others."""

    def __init__(self, service: ImagineService, settings: TelegramSettings) -> None:
        self.service = service
        self.settings = settings
        self.application: Application | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._webhook_secret: str | None = None
        self._acking: dict[tuple[int, int], asyncio.Task[Any]] = {}  # 👀 on its way, per message
        self._owed: dict[int, set[str]] = {}  # chat -> jobs whose result is still to come there
        self._placing: set[str] = set()  # jobs whose placeholder is decided, not yet with the pacer

    # -- lifetime ------------------------------------------------------------------------------

    def build(self) -> Application:
        """The Application with its handlers (not started)."""
        s = self.settings
        builder = (
            ApplicationBuilder()
            .token(s.token)
            .rate_limiter(RetryingLimiter(max_retries=s.max_retries, attempts=s.send_retries,
                                          backoff=s.send_retry_backoff, limits=FloodLimits(
                                              overall_per_second=s.overall_per_second,
                                              group_per_minute=s.group_per_minute,
                                              private_interval=s.private_interval,
                                              status_share=s.group_status_share)))
            .update_queue(StoringQueue(self.service))  # stored before PTB can confirm it
            .concurrent_updates(InboxProcessor(self.service))
            .media_write_timeout(s.upload_timeout)
        )
        if s.base_url:
            builder = builder.base_url(s.base_url)
        if s.base_file_url:
            builder = builder.base_file_url(s.base_file_url)
        if s.local_mode:
            builder = builder.local_mode(True)
        app = builder.build()
        only_new = filters.UpdateType.MESSAGE  # an edited /imagine is not a new request
        commands: dict[str, Handler] = {
            "start": self._start, "help": self._help, "imagine": self._imagine,
            "history": self._history, "quota": self._quota, "settings": self._settings, "loras": self._loras,
            "models": self._models,
            "cancel": self._cancel, "forget": self._forget, "export": self._export,
            "admin": self._admin, "appeal": self._appeal,
            "share": self._share, "unshare": self._share, "link": self._link, "unlink": self._unlink,
            "apikey": self._apikey, "web": self._web,  # accounts.py: the gallery, one account, API keys, studio
            "edit": self._edit, "describe": self._describe,  # edits.py: 🖌️ Vary (Region), /describe
        }
        for name, handler in commands.items():
            app.add_handler(CommandHandler(name, self._guard(handler), filters=only_new))
        # a photo (or a file) whose caption is /imagine …: CommandHandler reads text only
        captioned = filters.CaptionRegex(r"^/imagine(?:@\w+)?(?:\s|$)") & (filters.PHOTO | filters.Document.ALL)
        app.add_handler(MessageHandler(captioned & only_new, self._guard(self._imagine)))
        described = filters.CaptionRegex(r"^/describe(?:@\w+)?(?:\s|$)") & (filters.PHOTO | filters.Document.ALL)
        app.add_handler(MessageHandler(described & only_new, self._guard(self._describe)))
        app.add_handler(CallbackQueryHandler(self._guard(self._button)))
        # a text reply to a result, after rating it: a comment beside the rating (buttons.py)
        app.add_handler(MessageHandler(only_new & filters.REPLY & filters.TEXT & ~filters.COMMAND,
                                       self._guard(self._reply)))
        app.add_handler(MessageReactionHandler(
            self._reaction, message_reaction_types=MessageReactionHandler.MESSAGE_REACTION_UPDATED))
        app.add_error_handler(self._on_error)
        return app

    async def start(self, recovered: Recovered | None = None) -> None:
        """Connect and start polling (or the webhook); resume owed work.

        Telegram unreachable (network, DNS): one log line, then retries in the background with
        backoff while the rest of the bot runs. A token Telegram refuses: ImagineError (exit).
        """
        # httpx logs every request URL at INFO, and Bot API URLs contain the token.
        if logging.getLogger("httpx").level < logging.WARNING:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self.application = self.build()
        try:
            await self._connect(recovered)
        except NetworkError as err:
            if isinstance(err, BadRequest):
                await self.close()
                raise
            logger.error("telegram: cannot reach the Bot API (%s); retrying in the background, "
                         "the rest of the bot keeps running", err)
            self._spawn(self._connect_later(recovered), "tg-connect")
        except BaseException:  # e.g. the webhook's port is taken: nothing half-started stays
            await self.close()
            raise

    async def _connect_later(self, recovered: Recovered | None) -> None:
        """Retry ``_connect`` with backoff until it works (quietly: one line per success)."""
        for attempt in range(1_000_000):
            await asyncio.sleep(_CONNECT_DELAYS[min(attempt, len(_CONNECT_DELAYS) - 1)])
            if self.application is None:
                return
            try:
                await self._connect(recovered)
            except NetworkError as err:
                logger.debug("telegram: still unreachable: %s", err)
                continue
            except Exception:
                logger.exception("telegram: could not start; giving up (other front ends keep running)")
                return
            logger.info("telegram: connected after %d retries", attempt + 1)
            return

    async def _connect(self, recovered: Recovered | None) -> None:
        """getMe, start, command menu, replay the stored updates, then poll or listen."""
        s, app = self.settings, self.application
        if app is None:
            raise RuntimeError("build() the Telegram application before connecting it")
        try:
            await app.initialize()
        except InvalidToken:
            await self.close()
            raise ImagineError("Telegram refused the bot token (TELEGRAM_TOKEN): check it with "
                               "@BotFather, or unset it to run without Telegram.") from None
        if not app.running:  # a retry after a failure further down
            await app.start()
        try:
            await app.bot.set_my_commands(list(COMMANDS))
        except TelegramError as err:
            logger.warning("could not set the command menu: %s", err)
        # requests stored before a crash, before anything new: they are older
        replayed = await replay(app, self.service)
        if replayed:
            logger.info("telegram: handled %d update(s) stored before a restart", replayed)
        if app.updater is None:
            raise RuntimeError("the Telegram application was built without an Updater")
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
        if recovered is not None:
            self.resume(recovered)

    async def close(self) -> None:
        """Stop receiving updates, stop following jobs (they stay in the database), disconnect."""
        app = self.application
        if app is None or self._closing:
            return
        self._closing = True
        try:
            # the application stays set while it stops: a handler still finishing its update
            # (a reply, a placeholder) can use the bot until then
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
        finally:
            tasks = [t for t in self._tasks if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.application = None
            self._closing = False
            await app.shutdown()

    @property
    def ack_reaction(self) -> str:
        return self.settings.ack_reaction

    @property
    def bot(self) -> Any:
        if self.application is None:
            raise RuntimeError("TelegramFrontEnd is not started")
        return self.application.bot

    def resume(self, recovered: Recovered) -> None:
        """Send results and failures owed from before a restart and follow re-run jobs (Telegram targets)."""
        for untold in recovered.untold:
            if untold.target.get("platform") == PLATFORM:
                self._spawn(self._tell_logged(untold), f"tg-tell-{untold.job_id}")
        for delivery in recovered.deliveries:
            if delivery.target.get("platform") == PLATFORM:
                self._spawn(self._deliver_logged(delivery), f"tg-redeliver-{delivery.job_id}")
        for ticket in recovered.tickets:
            if ticket.target.get("platform") != PLATFORM:
                continue
            target = ticket.target
            if not target.get("status_id"):  # accepted, then a crash before its placeholder
                self._spawn(self._follow_logged(ticket, target), f"tg-job-{ticket.job_id}")
                continue
            status = StatusMessage(self.bot, target["status_chat"], target["status_id"], "",
                                   interval=self._interval(target), caption=bool(target.get("placeholder")),
                                   previews=self._previews(target))
            self._spawn(self._watch(ticket, status), f"tg-job-{ticket.job_id}")

    async def _follow_logged(self, ticket: Any, target: dict[str, Any]) -> None:
        try:
            await self._follow(ticket, target)
        except Exception:  # no placeholder: the result gets one when it is delivered
            logger.exception("telegram: no placeholder for job %s", ticket.job_id)
            self._spawn(self._watch(ticket, None), f"tg-job-{ticket.job_id}")

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- plumbing ------------------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        """Show ImagineError messages to the user; everything else goes to the error handler."""
        async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            try:
                await handler(update, context)
            except ImagineError as err:
                markup = None
                if (isinstance(err, Restricted) and err.reason in APPEALABLE
                        and update.effective_user is not None):
                    markup = appeal_keyboard(update.effective_user.id)
                await self._tell(update, str(err), markup)
        guarded.__doc__ = handler.__doc__
        return guarded

    async def _tell(self, update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Answer a button press with an alert, or reply to the message (with ``markup``: both)."""
        if update.callback_query is not None:
            try:
                await update.callback_query.answer(clip(text, 200), show_alert=True)
                if markup is None:
                    return
            except BadRequest:  # already answered: say it in the chat
                pass
        message = update.effective_message
        if message is not None:
            await self.bot.send_message(message.chat_id, clip(text, 4096), reply_markup=markup,
                                        reply_parameters=reply_parameters(None if update.callback_query
                                                                else message.message_id))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log with a reference id; tell the user a short apology with it."""
        ref = new_reference()
        logger.error("telegram update failed (reference %s)", ref, exc_info=context.error)
        if isinstance(update, Update):
            try:
                await self._tell(update, apology(ref))
            except Exception:
                logger.exception("could not report error %s to the user", ref)

    def _previews(self, target: dict[str, Any]) -> bool:
        """Live previews in this job's status photo: in private chats; in groups unless turned off
        (there the pacer lets them through only while the group's budget has room)."""
        private = target.get("status_chat_type", "private") == ChatType.PRIVATE
        return private or self.settings.group_previews

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

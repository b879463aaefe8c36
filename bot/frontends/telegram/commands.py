"""The Telegram commands: /imagine, /history, /quota, /settings, /loras, /cancel, /forget, /export, /admin.

/history and /export are private: from a group they go to the user's private chat. /appeal and
the moderation subcommands of /admin are in :mod:`bot.frontends.telegram.moderation`.
:class:`CommandHandlers` is a part of :class:`~bot.frontends.telegram.front.TelegramFrontEnd`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import BotCommand, Update, User
from telegram.constants import ChatType
from telegram.error import Forbidden, TelegramError
from telegram.ext import ContextTypes

from bot.frontends.common import (
    FORGET_WARNING,
    clip,
    on_off,
    quota_text,
    settings_changes,
    stats_lines,
    upload_too_large,
)
from bot.frontends.telegram import moderation
from bot.frontends.telegram.accounts import ACCOUNT_COMMANDS, ACCOUNT_HELP
from bot.frontends.telegram.delivery import MAX_LOCAL_UPLOAD_BYTES, MAX_UPLOAD_BYTES
from bot.frontends.telegram.keyboards import forget_keyboard, history_keyboard
from bot.frontends.telegram.messages import PLATFORM, command_text, history_text, image_of, who_of
from bot.frontends.telegram.settings import TelegramSettings
from bot.options import help_text
from bot.service import ImagineService, Ticket, Who
from generation.core.errors import ImagineError, InvalidRequest

__all__ = ["COMMANDS", "COMMAND_HELP", "EXAMPLES", "USAGE", "CommandHandlers"]

logger = logging.getLogger(__name__)

COMMANDS = (
    BotCommand("imagine", "Make images: /imagine a red fox --ar 16:9"),
    BotCommand("history", "Your recent requests (search: /history fox)"),
    BotCommand("quota", "Images left in this period"),
    BotCommand("settings", "Show or change your defaults"),
    BotCommand("loras", "The LoRA adapters: names, trigger words"),
    BotCommand("models", "The bot's models: --model NAME picks one"),
    BotCommand("cancel", "Cancel your running request"),
    BotCommand("export", "A zip of your data and images"),
    BotCommand("forget", "Delete everything stored about you"),
    BotCommand("appeal", "Ask an admin to review your strikes, cooldown or block"),
    *(BotCommand(name, description) for name, description in ACCOUNT_COMMANDS),
    BotCommand("help", "How to use the bot"),
)


USAGE = "Usage: /imagine <prompt> [options], e.g. /imagine a red fox in snow --ar 16:9"
COMMAND_HELP = """Commands:
/imagine PROMPT [options] — make images (send it as a photo's caption, or as a reply to a photo,
  to start from that picture; --strength 0.4 says how much of it changes)
/history [search] — your requests (in our private chat)
/quota — images left
/settings [key=value …] — defaults: aspect, style, count, steps, private, refine, model
/loras — LoRA adapters for <lora:NAME:0.8> in a prompt
/models — the bot's models (--model NAME in a prompt picks one); admins: compare A B, promote NAME 0.1, retire NAME
/cancel — cancel your latest running request
/export — a zip of your data · /forget — delete it all
/appeal [message] — ask an admin to review your strikes, cooldown or block
""" + ACCOUNT_HELP + """

Under each result: 🔄 reroll · U1–U4 the full-quality file · V1–V4 variations · ⭐ rate · 🌐 share.
Reacting to a result rates it too: ❤ 🔥 😍 = 5★, 👍 👏 = 4★, 🤔 = 3★, 😢 = 2★, 👎 = 1★.
After rating, reply to the result with a few words: a comment kept beside your rating."""
EXAMPLES = """Examples:
/imagine a lighthouse at dawn, watercolor --ar 16:9
/imagine a cat astronaut --n 4 --seed 7
/imagine portrait of an old sailor --no blur, text --style photo
/imagine the same street at night --strength 0.5   (as the caption of your photo)"""


class CommandHandlers:
    """The slash commands (a part of the front end)."""

    service: ImagineService
    settings: TelegramSettings

    if TYPE_CHECKING:  # provided by the front end and Delivering
        @property
        def bot(self) -> Any: ...

        async def _submit(self, who: Who, user: User, chat_id: int, chat_type: str, reply_to: int | None,
                          accept: Callable[[Who, dict[str, Any]], Awaitable[Ticket]], *,
                          ack: bool = False) -> bool: ...

        def _start_link(self, payload: str = "") -> str: ...

    async def _imagine(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/imagine PROMPT [flags]: accept, show a status message, deliver in the background."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        text = command_text(message.text or message.caption)
        if not text:
            await message.reply_text(f"{USAGE}\n\n{EXAMPLES}", do_quote=True)
            return
        origin = (PLATFORM, str(update.update_id))  # a replay after a crash finds this job again
        source = image_of(message)  # a photo or file with the command as caption, or replied to

        async def accept(who: Who, target: dict[str, Any]) -> Ticket:
            image = await self._download_image(*source) if source else None
            ticket = await self.service.imagine(who, text, target=target, origin=origin, image=image)
            if ticket.notes:  # --refine: the refined prompt, or why the user's own was used
                try:
                    await message.reply_text(clip("\n".join(ticket.notes), 4000), do_quote=True)
                except TelegramError as err:
                    logger.warning("telegram: could not send the notes of job %s: %s", ticket.job_id, err)
            return ticket

        await self._submit(who_of(user), user, message.chat_id, message.chat.type, message.message_id, accept,
                           ack=True)

    async def _download_image(self, file_id: str, size: int | None) -> bytes:
        """The bytes of a photo or file the user sent (getFile, then the file download)."""
        too_large = upload_too_large(size)
        if too_large:
            raise InvalidRequest("image", too_large)
        try:
            file = await self.bot.get_file(file_id)
            data = bytes(await file.download_as_bytearray())
        except TelegramError as err:
            logger.info("telegram: file %s could not be downloaded: %s", file_id, err)
            raise InvalidRequest("image", "Your image could not be downloaded from Telegram (files over 20 MB "
                                          "cannot be); send it again, smaller.") from None
        too_large = upload_too_large(len(data))
        if too_large:
            raise InvalidRequest("image", too_large)
        return data

    async def _loras(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/loras: the LoRA adapters, their trigger words and base model."""
        message = update.effective_message
        if message is None:
            return
        await message.reply_text(clip(self.service.loras_text(), 4000))

    async def _models(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/models [compare A B | promote NAME [SHARE] | retire NAME]: the listing; the rest for admins."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        text = await self.service.models_command(who_of(user), command_text(message.text))
        await message.reply_text(clip(text, 4000))

    # -- other commands ------------------------------------------------------------------------

    async def _start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/start (also the deep link ?start=history)."""
        message = update.effective_message
        if message is None:
            return
        if command_text(message.text) == "history":
            await self._history(update, context)
            return
        await message.reply_text(
            "Hi! I turn text into images with SDXL-Lightning.\n\n"
            f"{EXAMPLES}\n\n{COMMAND_HELP}\n\nSee /help for every option.")

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/help: commands, /imagine options, examples."""
        message = update.effective_message
        if message is None:
            return
        await message.reply_text(f"{COMMAND_HELP}\n\n{help_text(self.service.caps)}\n\n{EXAMPLES}")

    async def _in_private(self, update: Update, what: str, payload: str,
                          send: Callable[[int], Awaitable[Any]]) -> None:
        """Run ``send(chat_id)`` in the user's private chat; from a group, say where it went."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
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
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
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
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        used, limit, remaining, resets_at = await self.service.quota(who_of(user))
        await message.reply_text(quota_text(used, limit, remaining, self.service.config.quota_window,
                                            f"{resets_at:%Y-%m-%d %H:%M} UTC"))

    async def _settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/settings [key=value …]: show or change your defaults."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        try:
            changes = settings_changes(command_text(message.text))
        except ValueError:
            changes = None
        if changes is None:
            await message.reply_text("Usage: /settings key=value … (keys: aspect, style, count, "
                                     "steps, private, refine, model), e.g. /settings aspect=16:9 count=2")
            return
        current = await self.service.settings(who_of(user), **changes)
        shown = ", ".join(f"{k}={on_off(v)}" for k, v in current.items())
        await message.reply_text(("Saved. " if changes else "") + f"Your settings: {shown}")

    async def _cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/cancel [job]: cancel your latest (or the given) queued or running request."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        job = command_text(message.text) or None
        outcome = await self.service.cancel(who_of(user), job)
        await message.reply_text(f"Cancelled {outcome.job_id} ({clip(outcome.text, 300)}); "
                                 f"{outcome.refunded} image(s) refunded.")

    async def _forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/forget: asks to confirm with a button only you can press."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        await message.reply_text(f"{FORGET_WARNING} Sure?", reply_markup=forget_keyboard(user.id))

    async def _export(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/export: a zip of your data and images, as a document in the private chat."""
        user = update.effective_user
        if user is None:
            return
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
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        who, text = who_of(user), command_text(message.text)
        appeal = await self.service.moderation.appeal(who, text)
        await message.reply_text(moderation.appeal_text(appeal.id), do_quote=True)
        await self._appealed(who, appeal.id, text)

    async def _appealed(self, who: Who, appeal_id: int, text: str) -> None:
        """Tell the bot's Telegram admins about a new appeal (best effort)."""
        note = f": “{clip(text, 300)}”" if text else ""
        await moderation.notify_admins(
            self,
            f"📝 New appeal #{appeal_id} from {who.display_name} ({who.key}){note}\n"
            f"/admin lift {appeal_id} · /admin reject {appeal_id} · /admin appeals")

    async def _admin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/admin quota|block|unblock|stats and moderation (the service checks who may)."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        admin = who_of(user)
        args = command_text(message.text).split()
        usage = ("Usage: /admin quota USER LIMIT|default · /admin block USER · /admin unblock USER · "
                 "/admin stats (USER is a Telegram id or platform:id)\n" + moderation.ADMIN_USAGE)
        sub = args[0].lower() if args else ""
        if sub in moderation.ADMIN_SUBCOMMANDS:
            reply = await moderation.admin_command(self, message, user, admin, args)
            await message.reply_text(reply, do_quote=True)
            return
        if sub == "stats" and len(args) == 1:
            stats = await self.service.admin_stats(admin)
            lines = stats_lines(stats)
            await message.reply_text(clip("\n".join(lines), 4096))
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

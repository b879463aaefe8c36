"""Telegram: the web gallery and one account across platforms.

    🌐 under a result    put that image in the public web gallery (its owner); ↩ Unshare takes it out
    /share JOB N         the same as a command; /unshare JOB N (the owner or an admin)
    /link [CODE]         no code: a one-time code (10 minutes) for /link on another platform, sent in
                         our private chat; with one: join that platform's account
    /unlink              act as this Telegram user alone again
    /apikey [list | revoke ID]   a key for the HTTP API (shown once); only in our private chat
    /web                 a one-time sign-in link to the web studio (10 minutes); only in our private chat

:class:`AccountHandlers` is a part of :class:`~bot.frontends.telegram.front.TelegramFrontEnd`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telegram import LinkPreviewOptions, Message, Update
from telegram.constants import ChatType
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot.frontends.common import (
    APIKEY_PRIVATE,
    UNLINKED,
    WEB_PRIVATE,
    api_key_text,
    canonical_ref,
    image_ref,
    link_code_text,
    linked_text,
    share_image,
    web_link_text,
)
from bot.frontends.telegram.keyboards import share_keyboard
from bot.frontends.telegram.messages import command_text, reply_parameters, who_of
from bot.service import ImagineService, Via, Who

__all__ = ["ACCOUNT_COMMANDS", "AccountHandlers"]

# (name, description) for the command menu (setMyCommands)
ACCOUNT_COMMANDS = (
    ("share", "Put an image in the public web gallery: /share JOB N"),
    ("unshare", "Take an image out of the gallery: /unshare JOB N"),
    ("link", "One account on Telegram and Discord: /link, or /link CODE"),
    ("unlink", "Stop sharing an account with another platform"),
    ("apikey", "A key for the HTTP API (in our private chat)"),
    ("web", "Sign in to the web studio (in our private chat)"),
)
ACCOUNT_HELP = """/share JOB N · /unshare JOB N — the public web gallery (or 🌐 under a result)
/link — a code to enter on Discord; /link CODE — join that account · /unlink
/apikey [list | revoke ID] — a key for the HTTP API (in our private chat)
/web — a sign-in link to the web studio (in our private chat)"""


class AccountHandlers:
    """Sharing, linking and API keys (a part of the front end)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end and CommandHandlers
        @property
        def bot(self) -> Any: ...

        async def _in_private(self, update: Update, what: str, payload: str,
                              send: Callable[[int], Awaitable[Any]]) -> None: ...

    async def _share(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/share JOB N and /unshare JOB N."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        share = (message.text or "").lstrip("/").lower().startswith("share")
        name = "share" if share else "unshare"
        ref = image_ref(command_text(message.text).split())
        if ref is None:
            await message.reply_text(f"Usage: /{name} JOB N (N is the image number, from 1; "
                                     "JOB is the request id in the result's caption or /history), "
                                     f"or /{name} JOB-N as the API names it.")
            return
        text = await share_image(self.service, who_of(user), ref, share)
        ref = await canonical_ref(self.service, who_of(user), ref)  # an image's number: its JOB-N
        job, _, number = ref.rpartition("-")
        await message.reply_text(text, reply_markup=share_keyboard(job, int(number)) if share else None)

    async def _share_button(self, query: Any, message: Message, who: Who, share: bool,
                            fields: tuple[str, ...]) -> None:
        """🌐 under a result: the public link (with ↩ Unshare) in the chat; ↩ Unshare: take it out."""
        if len(fields) != 2 or not fields[1].isdecimal() or not 1 <= int(fields[1]) <= 99:
            await query.answer("This button no longer works.")
            return
        job, number = fields[0], int(fields[1])
        text = await share_image(self.service, who, f"{job}-{number}", share, Via(message.chat_id, message.message_id))
        if share:
            await query.answer("🌐 Shared")
            await self.bot.send_message(message.chat_id, text, reply_markup=share_keyboard(job, number),
                                        reply_parameters=reply_parameters(message.message_id))
            return
        await query.answer(text)
        try:
            await message.edit_text(text)  # the share answer: its link no longer works
        except BadRequest as err:
            if "not modified" not in str(err).lower():
                raise

    async def _link(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/link [CODE]: a code (sent privately), or join the account of a code from another platform."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        code = command_text(message.text).strip()
        who = who_of(user)
        if code:
            await message.reply_text(linked_text(await self.service.link(who, code.split()[0])))
            return
        text = link_code_text(await self.service.link_code(who))  # whoever enters it joins this account

        async def send(chat_id: int) -> None:
            await self.bot.send_message(chat_id, text)

        await self._in_private(update, "a link code", "", send)

    async def _unlink(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/unlink."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        await message.reply_text(UNLINKED[await self.service.unlink(who_of(user))])

    async def _apikey(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/apikey [list | revoke ID]: only in the private chat."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        if message.chat.type != ChatType.PRIVATE:
            await message.reply_text(APIKEY_PRIVATE)
            return
        who, args = who_of(user), command_text(message.text).split()
        if args == ["list"]:
            text = await api_key_text(self.service, who, "list")
        elif args[:1] == ["revoke"] and len(args) == 2 and args[1].isdecimal():
            text = await api_key_text(self.service, who, "revoke", int(args[1]))
        elif args:
            text = "Usage: /apikey (a new key) · /apikey list · /apikey revoke ID"
        else:
            text = await api_key_text(self.service, who, "new")
        await message.reply_text(text)

    async def _web(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/web: a sign-in link to the web studio, only in the private chat."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return  # not a user's message (e.g. a channel post): nothing to answer
        if message.chat.type != ChatType.PRIVATE:
            await message.reply_text(WEB_PRIVATE)
            return
        url = await self.service.web_signin_link(who_of(user))  # no preview: the token stays in this chat
        await message.reply_text(web_link_text(url), link_preview_options=LinkPreviewOptions(is_disabled=True))

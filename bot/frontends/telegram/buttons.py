"""What the inline buttons, reactions and replies to the bot's messages do.

Buttons carry stateless data (:mod:`bot.frontends.telegram.callbacks`), so they work after a
restart. Reactions to the bot's result messages become ratings (source ``reaction``); a text
reply to a result message, after rating it, is a comment kept beside that rating.
:class:`ButtonHandlers` is a part of :class:`~bot.frontends.telegram.front.TelegramFrontEnd`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telegram import InlineKeyboardMarkup, Message, Update, User
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot.frontends.common import TOOLS, clip, forgotten_counts, tool_action
from bot.frontends.telegram import callbacks
from bot.frontends.telegram.delivery import MAX_LOCAL_UPLOAD_BYTES, MAX_UPLOAD_BYTES
from bot.frontends.telegram.edits import EDIT_HINT
from bot.frontends.telegram.keyboards import history_keyboard, main_keyboard, stars_keyboard, tools_keyboard
from bot.frontends.telegram.messages import PLATFORM, history_text, reply_parameters, stars_text, who_of
from bot.frontends.telegram.moderation import appeal_text
from bot.frontends.telegram.settings import TelegramSettings
from bot.service import Delivery, ImagineService, StoredImage, Ticket, Via, Who
from generation.core.errors import ImagineError

__all__ = ["ButtonHandlers"]

logger = logging.getLogger(__name__)


class ButtonHandlers:
    """Inline buttons and reactions (a part of the front end)."""

    service: ImagineService
    settings: TelegramSettings

    if TYPE_CHECKING:  # provided by the front end, Delivering and CommandHandlers
        @property
        def bot(self) -> Any: ...

        async def _submit(self, who: Who, user: User, chat_id: int, chat_type: str, reply_to: int | None,
                          accept: Callable[[Who, dict[str, Any]], Awaitable[Ticket]]) -> bool: ...

        async def _appealed(self, who: Who, appeal_id: int, text: str) -> None: ...

        async def _share_button(self, query: Any, message: Message, who: Who, share: bool,
                                fields: tuple[str, ...]) -> None: ...

        async def _describe_button(self, update: Update, query: Any, message: Message, user: User,
                                   fields: tuple[str, ...]) -> None: ...

    # -- buttons -------------------------------------------------------------------------------

    async def _button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Inline buttons: reroll, U, V, ratings, cancel, history pages, forget, appeal, share."""
        query = update.callback_query
        if query is None:
            return
        action = callbacks.parse(query.data)
        user = query.from_user
        who = who_of(user)
        message = query.message if isinstance(query.message, Message) else None
        if action is None or message is None:
            await query.answer("This button no longer works.")
            return
        kind, fields = action.kind, action.fields
        origin = (PLATFORM, str(update.update_id))  # a replay after a crash finds its job again
        via = Via(message.chat_id, message.message_id)  # the service checks a click on another's job against it
        if kind in "ruvksxgot" and not fields[0]:
            await query.answer("This button no longer works.")
            return
        if kind == "d":  # Imagine n under a /describe answer (edits.py)
            await self._describe_button(update, query, message, user, fields)
        elif kind == "t" and fields[2:3] == ("vr",):  # 🖌️ Vary (Region): the words come in a reply
            await query.answer(EDIT_HINT, show_alert=True)
        elif kind in "go":  # 🌐 share / ↩ unshare (accounts.py)
            await self._share_button(query, message, who, kind == "g", fields)
        elif kind == "r":
            await self._submit(who, user, message.chat_id, message.chat.type, message.message_id,
                               lambda w, target: self.service.reroll(w, fields[0], target=target,
                                                                     origin=origin, via=via))
            await query.answer("🔄 Rerolling…")
        elif kind == "v":
            index = self._index(fields)
            await self._submit(who, user, message.chat_id, message.chat.type, message.message_id,
                               lambda w, target: self.service.variation(w, fields[0], index - 1, target=target,
                                                                        origin=origin, via=via))
            await query.answer(f"🎨 Variations of image {index}…")
        elif kind == "u":
            image = await self._image(who, via, fields[0], self._index(fields))
            data = await asyncio.to_thread(image.path.read_bytes)
            limit = MAX_LOCAL_UPLOAD_BYTES if self.settings.local_mode else MAX_UPLOAD_BYTES
            if len(data) > limit:
                await query.answer("That image is over Telegram's upload limit for bots.", show_alert=True)
                return
            await query.answer()
            sent = await self.bot.send_document(
                message.chat_id, data, filename=f"{fields[0]}-{image.index + 1}.png",
                caption=f"Image {image.index + 1} of job {fields[0]}, seed {image.seed}",
                reply_parameters=reply_parameters(message.message_id),
                reply_markup=tools_keyboard(fields[0], image.index + 1))
            # its toolbox buttons work for whoever sees it (the service checks a click against it)
            await self.service.remember_message(fields[0], PLATFORM, message.chat_id, sent.message_id,
                                                index=image.index)
        elif kind == "t":  # upscale, zoom out, pan (bot.frontends.common.TOOLS)
            index = self._index(fields)
            code = fields[2] if len(fields) > 2 else ""
            if code not in TOOLS:
                await query.answer("This button no longer works.")
                return
            await self._submit(who, user, message.chat_id, message.chat.type, message.message_id,
                               lambda w, target: tool_action(self.service, w, fields[0], index - 1, code,
                                                             target=target, origin=origin, via=via))
            await query.answer(f"{TOOLS[code][0]} image {index}…")
        elif kind == "k":
            index = self._index(fields, allow_zero=True)
            delivery = await self.service.job_delivery(who, fields[0], via=via)
            if index > len(delivery.images):
                raise ImagineError(f"Request {fields[0]} has no image {index}.")
            markup = (stars_keyboard(fields[0], index) if index
                      else main_keyboard(fields[0], len(delivery.images)))
            await query.answer()
            await self._set_markup(message, markup)
        elif kind == "s":
            index = self._index(fields)
            delivery = await self.service.job_delivery(who, fields[0], via=via, index=index - 1)
            image = self._image_in(delivery, index)
            rating = await self.service.rate(who, image.image_id, fields[2] if len(fields) > 2 else "", "button",
                                             via=via)
            await query.answer(f"Rated image {index}: {stars_text(rating.stars)}")
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
                    f"{forgotten_counts(outcome)}")
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
                await message.edit_text(clip(f"{message.text or ''}\n\n{appeal_text(appeal.id)}", 4096))
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

    async def _image(self, who: Who, via: Via, job_id: str, index: int) -> StoredImage:
        return self._image_in(await self.service.job_delivery(who, job_id, via=via, index=index - 1), index)

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

    # -- replies -------------------------------------------------------------------------------

    async def _reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text reply to a result message: a comment beside the replier's rating of what it shows."""
        message = update.message
        if message is None or message.reply_to_message is None or message.from_user is None or not message.text:
            return
        saved = await self.service.comment_message(who_of(message.from_user), message.chat_id,
                                                   message.reply_to_message.message_id, message.text)
        if saved is None:  # a reply to some other message: a conversation, not for the bot
            return
        count = len(saved)
        await message.reply_text(f"💬 Thanks: your comment is kept beside your rating{'s' if count > 1 else ''} "
                                 f"({count} image{'s' if count > 1 else ''}).", do_quote=True)

    # -- reactions -----------------------------------------------------------------------------

    async def _reaction(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A reaction to a result message rates its image (the keyboard message: every image)."""
        change = update.message_reaction
        if change is None or change.user is None:  # anonymous (a chat reacted): no one to credit
            return
        # Telegram sends the whole old and new sets: turn them into what was added and removed,
        # then apply the one rule every front end uses (see ImagineService.rate_message)
        old = {r.emoji for r in change.old_reaction if getattr(r, "emoji", None)}
        new = {r.emoji for r in change.new_reaction if getattr(r, "emoji", None)}
        added = callbacks.stars_for(sorted(new - old))
        who = who_of(change.user)
        try:
            if added is not None:
                await self.service.rate_message(who, change.chat.id, change.message_id, added)
                return
            for emoji in sorted(old - new):
                stars = callbacks.stars_for([emoji])
                if stars is not None:
                    await self.service.unrate_message(who, change.chat.id, change.message_id, stars)
        except ImagineError as err:
            logger.info("reaction by %s not recorded: %s", who.key, err)

"""🖌️ Vary (Region) and /describe on Telegram.

    /edit WHAT -> NEW       as a reply to a result (a single image, an upscaled file, a zoom, pan
                            or edit): repaint what the words name with the new text; a job like
                            any other, charged one image; the result comes with the mask it used
    /describe               as the caption of a photo (or a file), or as a reply to one: the
                            caption and four prompts, with Imagine 1…4 and 🖼 1…4 buttons
    Imagine n / 🖼 n         /imagine with prompt n of the answer (and the described picture)

:class:`EditHandlers` is a part of :class:`~.front.TelegramFrontEnd`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telegram import Message, Update, User
from telegram.ext import ContextTypes

from bot.frontends.common import clip
from bot.frontends.edits import EDIT_USAGE, describe_lines, split_edit, suggestion_from
from bot.frontends.telegram.keyboards import describe_keyboard
from bot.frontends.telegram.messages import PLATFORM, command_text, image_of, reply_parameters, who_of
from bot.service import ImagineService, Ticket, Via, Who
from generation.core.errors import ImagineError

__all__ = ["EditHandlers", "EDIT_HINT"]

EDIT_HINT = "🖌️ Reply to this image with /edit WHAT -> NEW TEXT, e.g. /edit the cat -> a small red fox"
DESCRIBE_USAGE = "Send /describe as the caption of a photo, or as a reply to one."


class EditHandlers:
    """/edit and /describe (a part of the front end)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end and Delivering
        @property
        def bot(self) -> Any: ...

        async def _submit(self, who: Who, user: User, chat_id: int, chat_type: str, reply_to: int | None,
                          accept: Callable[[Who, dict[str, Any]], Awaitable[Ticket]], *,
                          ack: bool = False) -> bool: ...

        async def _download_image(self, file_id: str, size: int | None) -> bytes: ...

    async def _edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/edit WHAT -> NEW as a reply to a result: repaint that region (the service checks who may)."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        texts = split_edit(command_text(message.text))
        shown = message.reply_to_message
        found = (await self.service.find_message(PLATFORM, message.chat_id, shown.message_id)
                 if shown is not None else None)
        if texts is None or found is None:
            where = "" if found is not None else "Reply to one of my images with it. "
            await message.reply_text(f"{where}{EDIT_USAGE}", do_quote=True)
            return
        job_id, index = found
        via = Via(message.chat_id, shown.message_id)  # type: ignore[union-attr]
        if index is None:  # a message showing a whole job: it must be a single image
            delivery = await self.service.job_delivery(who_of(user), job_id, via=via)
            if len(delivery.images) != 1:
                raise ImagineError("That message shows several images: press U1…U4 for the one to change, "
                                   "then reply to it with /edit.")
            index = delivery.images[0].index
        origin = (PLATFORM, str(update.update_id))  # a replay after a crash finds this job again
        what, new = texts
        await self._submit(who_of(user), user, message.chat_id, message.chat.type, message.message_id,
                           lambda w, target: self.service.edit(w, job_id, index, new, words=what, target=target,
                                                               origin=origin, via=via), ack=True)

    async def _describe(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/describe with (or replying to) a photo: the caption and four prompts, with their buttons."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        source = image_of(message)
        if source is None:
            await message.reply_text(DESCRIBE_USAGE, do_quote=True)
            return
        data = await self._download_image(*source)
        found = await self.service.describe(who_of(user), data, target={"platform": PLATFORM,
                                                                        "chat_id": message.chat_id})
        # the answer replies to the message holding the picture, so 🖼 n can find it again
        holder = message if (message.photo or message.document) else message.reply_to_message
        text = describe_lines(found) + "\nImagine n: the prompt alone; 🖼 n: starting from your picture."
        await self.bot.send_message(message.chat_id, clip(text, 4096), reply_markup=describe_keyboard(
            len(found.suggestions), True), reply_parameters=reply_parameters(holder.message_id if holder else None))

    async def _describe_button(self, update: Update, query: Any, message: Message, user: User,
                               fields: tuple[str, ...]) -> None:
        """Imagine n / 🖼 n: /imagine with prompt n of the answer (and the picture it replies to)."""
        number = int(fields[0]) if fields and fields[0].isdecimal() else 0
        prompt = suggestion_from(message.text or "", number)
        if prompt is None:
            await query.answer("This button no longer works; use /describe again.")
            return
        source = None
        if len(fields) > 1 and fields[1] == "i":
            source = image_of(message.reply_to_message) if message.reply_to_message is not None else None
            if source is None:
                await query.answer("The picture is no longer there; use /describe again.", show_alert=True)
                return
        origin = (PLATFORM, str(update.update_id))

        async def accept(who: Who, target: dict[str, Any]) -> Ticket:
            image = await self._download_image(*source) if source else None
            return await self.service.imagine(who, prompt, target=target, origin=origin, image=image)

        await self._submit(who_of(user), user, message.chat_id, message.chat.type, message.message_id, accept)
        await query.answer(f"Imagine {number}…")

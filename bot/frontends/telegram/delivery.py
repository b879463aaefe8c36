"""Following a Telegram job and delivering its result.

A status message (queue place, ETA, progress; paced by :class:`~.status.StatusMessage`, with a
❌ Cancel button), then one photo with an inline keyboard, or an album plus a keyboard message
replying to it (albums cannot carry keyboards). Photos over 10 MB or width+height > 10000 go
as documents. Every message the bot sent with a result is recorded in the service's message
map (chat, message id → job and image index; the keyboard message shows every image), which is
how a reaction finds its image.

:class:`Delivering` is a part of :class:`~bot.frontends.telegram.front.TelegramFrontEnd`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telegram import InputMediaDocument, InputMediaPhoto, Message, User
from telegram.constants import ChatType

from bot.frontends.common import clip, new_reference
from bot.frontends.telegram.keyboards import cancel_keyboard, main_keyboard
from bot.frontends.telegram.messages import PLATFORM, caption_of, reply_parameters, status_text
from bot.frontends.telegram.status import StatusMessage
from bot.service import Cancelled, Delivery, Failed, Finished, ImagineService, Queued, Running, StoredImage, Ticket, Who
from generation.errors import ImagineError

__all__ = ["MAX_PHOTO_BYTES", "MAX_PHOTO_SIDES", "Delivering", "fits_as_photo"]

logger = logging.getLogger(__name__)

MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDES = 10_000  # width + height
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_LOCAL_UPLOAD_BYTES = 2000 * 1024 * 1024


def fits_as_photo(image: StoredImage, size: int) -> bool:
    """Whether Telegram accepts the image as a photo (else it goes as a document)."""
    return size <= MAX_PHOTO_BYTES and image.width + image.height <= MAX_PHOTO_SIDES


class Delivering:
    """Status messages and results (a part of the front end: needs its service and bot)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end
        @property
        def bot(self) -> Any: ...

        def _spawn(self, coro: Awaitable[Any], name: str) -> None: ...

        def _interval(self, target: dict[str, Any]) -> float: ...

        async def _private_chat(self, user: User) -> int | None: ...

        def _start_link(self, payload: str = "") -> str: ...

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
                                        reply_parameters=reply_parameters(origin_reply))
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
                                               reply_parameters=reply_parameters(target.get("reply_to")))
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
                    text = f"{icon} {update.message}\n{clip(ticket.request.prompt, 300)}"
                    if status is not None:
                        await status.show(text, final=True)
                    else:
                        await self.bot.send_message(ticket.target["chat_id"], text)
        except asyncio.CancelledError:
            raise
        except Exception:
            ref = new_reference()
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
        reply = reply_parameters(target.get("reply_to"))
        names = [f"{delivery.job_id}-{i.index + 1}.png" for i in delivery.images]
        shown: list[tuple[int, int | None]] = []  # (message id, image index; None: every image)
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
            shown.append((sent.message_id, 0))
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
                shown.append((sent.message_id, image.index))
            buttons = await self.bot.send_message(
                chat_id, "🔄 reroll · U = full-quality file · V = variations · ⭐ rate an image",
                reply_markup=keyboard, reply_parameters=reply_parameters(album[0].message_id))
            shown.append((buttons.message_id, None))
            messages = [*album, buttons]
        for message_id, index in shown:
            await self.service.remember_message(delivery.job_id, PLATFORM, chat_id, message_id, index=index)
        await self.service.mark_delivered(delivery.job_id)
        return messages

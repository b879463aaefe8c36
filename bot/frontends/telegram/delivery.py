"""Following a Telegram job and delivering its result, idempotently.

Why edits: "deliver, then mark delivered" has a window between the two; a send repeated after
a crash there makes a second copy. An edit repeated makes none. So:

1. At acceptance the bot sends a **placeholder photo** (a small grey image) whose caption is the
   job's status (queue place, ETA, progress; paced by :class:`~.status.StatusMessage`, with a
   ❌ Cancel button; while the image forms, the photo shows its live preview), and records its message id in the job's target (``status_id``,
   ``placeholder``) and in the message map (so a reaction on it rates the job).
2. The result **replaces the placeholder** with ``editMessageMedia``: the image (count 1), or a
   2-column grid of them with U1…U4 buttons for the full-quality files; too big for a photo
   (10 MB, width+height 10000) it becomes a document. Then ``mark_delivered``.
3. After a crash anywhere in 2, recovery edits the **same message** again: the user still sees
   one message with the result, never two. The only send left is the placeholder's: a crash
   between it and recording its id leaves a stale "queued" placeholder, and delivery then sends
   a new one (a placeholder carries no images, so that is a stale status, not a second copy).
   Jobs from before placeholders (a text status message) get a placeholder at delivery too.

**Busy groups** (Telegram allows 20 messages a minute in a group, edits included): a placeholder
and its result cost two, so the front end sends a placeholder only while the placeholder share
of the group's minute (:meth:`~.pacing.FloodPacer.placeholder_room`) holds it, its result and
every result it still owes there. Otherwise the 👀 reaction is the only acknowledgement and the
result is **sent directly** as a reply (one message). A send is not safe to repeat, so its
window is one local write: ``sending`` is recorded before it, the message id (``result_id``)
right after it; a restart finding ``result_id`` only marks the job delivered, one finding
``sending`` alone sends again with a caption saying an earlier copy may have arrived.

The acknowledgement costs no message: the user's ``/imagine`` gets a 👀 reaction at once
(``setMessageReaction``, in the pacer's first lane), recorded in the target (``ack``) and
removed when the job is delivered, fails or is cancelled (also after a restart). Every call
names its lane (:mod:`.pacing`): placeholders ``SEND``, results ``RESULT``, progress ``STATUS``.

:class:`Delivering` is a part of :class:`~bot.frontends.telegram.front.TelegramFrontEnd`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from PIL import Image
from telegram import InputMediaDocument, InputMediaPhoto, Message, User
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError

from bot.frontends.common import clip, new_reference, render_grid
from bot.frontends.edits import mask_overlay
from bot.frontends.telegram.keyboards import cancel_keyboard, main_keyboard, upscaled_keyboard
from bot.frontends.telegram.messages import PLATFORM, caption_of, reply_parameters, status_text
from bot.frontends.telegram.pacing import Lane, lane
from bot.frontends.telegram.status import StatusMessage
from bot.service import (AlreadyAccepted, Cancelled, Delivery, Failed, Finished, ImagineService, Queued, Running,
                         StoredImage, Ticket, Untold, Who)
from generation.core.errors import ImagineError

__all__ = ["MAX_PHOTO_BYTES", "MAX_PHOTO_SIDES", "RESENT_NOTE", "Delivering", "fits_as_photo", "placeholder_png",
           "result_media"]

logger = logging.getLogger(__name__)

MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDES = 10_000  # width + height
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_LOCAL_UPLOAD_BYTES = 2000 * 1024 * 1024
RESENT_NOTE = "♻️ Sent again after a restart: if an earlier copy arrived, it is the same."


def fits_as_photo(image: StoredImage, size: int) -> bool:
    """Whether Telegram accepts the image as a photo (else it goes as a document)."""
    return size <= MAX_PHOTO_BYTES and image.width + image.height <= MAX_PHOTO_SIDES


@cache
def placeholder_png() -> bytes:
    """The placeholder photo shown until the result replaces it (a small grey square)."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (64, 64, 72)).save(buffer, format="PNG")
    return buffer.getvalue()


def result_media(delivery: Delivery) -> tuple[bytes, str, bool]:
    """(bytes, file name, as a photo?) of a result: the image, or a grid of the images."""
    images = delivery.images
    if len(images) == 1:
        data = images[0].path.read_bytes()
        if delivery.request.kind == "upscale":  # the full-quality file, never recompressed as a photo
            return data, f"{delivery.job_id}-upscaled.png", False
        return data, f"{delivery.job_id}-1.png", fits_as_photo(images[0], len(data))
    data, ext = render_grid(images, MAX_PHOTO_BYTES)
    with Image.open(io.BytesIO(data)) as grid:
        width, height = grid.size
    photo = len(data) <= MAX_PHOTO_BYTES and width + height <= MAX_PHOTO_SIDES
    return data, f"{delivery.job_id}-grid.{ext.lstrip('.')}", photo


class Delivering:
    """Placeholders, progress and results (a part of the front end: needs its service and bot)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end
        @property
        def bot(self) -> Any: ...

        def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]: ...

        _acking: dict[tuple[int, int], asyncio.Task[Any]]
        _owed: dict[int, set[str]]
        _placing: set[str]

        def _interval(self, target: dict[str, Any]) -> float: ...

        def _previews(self, target: dict[str, Any]) -> bool: ...

        async def _private_chat(self, user: User) -> int | None: ...

        def _start_link(self, payload: str = "") -> str: ...

        @property
        def ack_reaction(self) -> str: ...

    async def _submit(self, who: Who, user: User, chat_id: int, chat_type: str, reply_to: int | None,
                      accept: Callable[[Who, dict[str, Any]], Awaitable[Ticket]], *, ack: bool = False) -> bool:
        """Place (group, or the private chat when the user's settings say so), accept, follow.

        ``ack``: ``reply_to`` is the user's own message; it gets the acknowledgement reaction at
        once (taken back if the request is refused). False when the request already made a job
        before a restart (recovery follows it).
        """
        acked = [chat_id, reply_to] if ack and reply_to is not None and self.ack_reaction else None
        if acked is not None:
            key = (chat_id, int(reply_to or 0))
            self._acking[key] = self._spawn(self._react(acked, self.ack_reaction), f"tg-ack-{chat_id}-{reply_to}")
            self._acking[key].add_done_callback(lambda task: self._acking.pop(key, None))
        try:
            return await self._place(who, user, chat_id, chat_type, reply_to, accept, acked)
        except Exception:
            if acked is not None:
                self._spawn(self._react(acked, None), f"tg-unack-{chat_id}-{reply_to}")
            raise

    async def _react(self, message: list[int] | None, emoji: str | None) -> None:
        """Set (or with None: remove) the bot's reaction on a message; best effort."""
        if not message:
            return
        pending = self._acking.get((int(message[0]), int(message[1])))
        if emoji is None and pending is not None and pending is not asyncio.current_task():
            await asyncio.wait([pending])  # the 👀 first: two calls in flight may arrive in any order
        try:
            await self.bot.set_message_reaction(int(message[0]), int(message[1]), emoji,
                                                **lane(self.bot, Lane.ACK if emoji else Lane.CLEANUP))
        except TelegramError as err:  # reactions off in this chat, message deleted, …
            logger.info("telegram: reaction on %s not changed: %s", message, err)

    async def _place(self, who: Who, user: User, chat_id: int, chat_type: str, reply_to: int | None,
                     accept: Callable[[Who, dict[str, Any]], Awaitable[Ticket]], acked: list[int] | None) -> bool:
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
        if acked is not None:
            target["ack"] = acked
        try:
            ticket = await accept(who, target)
        except AlreadyAccepted as err:
            logger.info("telegram: request already accepted as job %s; recovery follows it", err.job_id)
            return False
        if private:
            await self.bot.send_message(origin, "🔒 Working on it in our private chat.",
                                        reply_parameters=reply_parameters(origin_reply))
        await self._follow(ticket, target)
        return True

    async def _follow(self, ticket: Ticket, target: dict[str, Any]) -> None:
        """Send the placeholder, record it, watch the ticket in the background."""
        last = ticket.last
        shown = last if isinstance(last, (Queued, Running)) else Queued(ticket.position, ticket.eta,
                                                                         ticket.eta_measured)
        first = status_text(shown, ticket.request.prompt)
        markup = None if ticket.cached else cancel_keyboard(ticket.job_id)
        status = None
        self._owe(ticket.job_id, target)
        if self._direct(ticket.job_id, target):  # a busy group: the 👀 acknowledged it, the result is the message
            logger.info("telegram: group %s is busy; job %s gets no placeholder", target.get("status_chat"),
                        ticket.job_id)
        else:
            self._placing.add(ticket.job_id)  # counted until the pacer holds it
            try:
                chat_id, message_id = await self._placeholder(ticket.job_id, target, first, markup)
                status = StatusMessage(self.bot, chat_id, message_id, first, markup,
                                       interval=self._interval(target), caption=True,
                                       previews=self._previews(target))
            except TelegramError as err:  # the job is accepted: follow it, its result makes a placeholder
                logger.warning("telegram: no placeholder for job %s (%s); following it without", ticket.job_id, err)
            except BaseException:
                self._owe(ticket.job_id, target, owed=False)
                raise
            finally:
                self._placing.discard(ticket.job_id)
        self._spawn(self._watch(ticket, status), f"tg-job-{ticket.job_id}")

    def _owe(self, job_id: str, target: dict[str, Any], owed: bool = True) -> None:
        """Count (or with False: stop counting) the result ``job_id`` owes its chat."""
        chat = int(target.get("status_chat") or target["chat_id"])
        jobs = self._owed.setdefault(chat, set())
        if owed:
            jobs.add(job_id)
        else:
            jobs.discard(job_id)
            if not jobs:
                self._owed.pop(chat, None)

    def _direct(self, job_id: str, target: dict[str, Any]) -> bool:
        """Whether the job's result goes as a message of its own, without a placeholder.

        Only with an acknowledgement (the 👀) and only in a group whose placeholder share of the
        minute cannot hold a placeholder, its result and the results owed there already.
        """
        if not target.get("ack") or target.get("status_chat_type", "private") == ChatType.PRIVATE:
            return False
        pacer = getattr(self.bot, "rate_limiter", None)
        room = pacer.placeholder_room(int(target.get("status_chat") or target["chat_id"])) \
            if hasattr(pacer, "placeholder_room") else None
        if room is None:
            return False
        owed = self._owed.get(int(target.get("status_chat") or target["chat_id"]), set()) - {job_id}
        return room < 2 + len(owed) + len(owed & self._placing)  # a placeholder on its way costs one more

    async def _placeholder(self, job_id: str, target: dict[str, Any], caption: str,
                           markup: Any = None) -> tuple[int, int]:
        """Send a placeholder photo for ``job_id`` and record it; (chat id, message id)."""
        chat_id = int(target.get("status_chat") or target["chat_id"])
        sent = await self.bot.send_photo(chat_id, placeholder_png(), caption=clip(caption, 1024),
                                         reply_markup=markup, filename="placeholder.png",
                                         reply_parameters=reply_parameters(target.get("reply_to")),
                                         **lane(self.bot, Lane.SEND))
        await self.service.record_refs(job_id, {"status_id": sent.message_id, "status_chat": chat_id,
                                                "placeholder": True})
        await self.service.remember_message(job_id, PLATFORM, chat_id, sent.message_id, index=None)
        return chat_id, sent.message_id

    async def _watch(self, ticket: Ticket, status: StatusMessage | None) -> None:
        """Progress into the placeholder's caption; the result (or the failure) when it ends."""
        self._owe(ticket.job_id, ticket.target)
        try:
            async for update in ticket.updates():
                if isinstance(update, (Queued, Running)):
                    if status is not None:
                        await status.show(status_text(update, ticket.request.prompt), cancel_keyboard(ticket.job_id),
                                          preview=getattr(update, "preview", None))
                elif isinstance(update, Finished):
                    if status is not None:
                        await status.settle()
                    spot = (status.chat_id, status.message_id) if status is not None and status.caption else None
                    await self.deliver(update.delivery, spot)
                    if status is not None and not status.caption:  # an old text status message
                        await status.delete()
                elif isinstance(update, (Failed, Cancelled)):
                    icon = "🚫" if isinstance(update, Cancelled) else "❌"
                    text = f"{icon} {update.message}\n{clip(ticket.request.prompt, 300)}"
                    if status is not None:  # a preview shown goes: the grey placeholder comes back
                        await status.show(text, final=True, photo=placeholder_png())
                    else:
                        await self.bot.send_message(ticket.target["chat_id"], text,
                                                    reply_parameters=reply_parameters(ticket.target.get("reply_to")),
                                                    **lane(self.bot, Lane.RESULT))
                    await self._react(ticket.target.get("ack"), None)
                    await self.service.mark_told(ticket.job_id)  # a crash before this tells it again
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
            self._owe(ticket.job_id, ticket.target, owed=False)
            if status is not None:
                status.close()

    async def tell_untold(self, untold: Untold) -> None:
        """After a restart: show a failure that was never told, where its result would have gone.

        Its placeholder's caption becomes the message (an edit: told twice looks like once);
        without one, a message in the chat. Then the 👀 goes and the job is marked told.
        """
        target = untold.target
        icon = "🚫" if untold.cancelled else "❌"
        text = f"{icon} {untold.message}\n{clip(untold.text, 300)}"
        if target.get("status_id"):
            status = StatusMessage(self.bot, int(target.get("status_chat") or target["chat_id"]),
                                   int(target["status_id"]), "", caption=bool(target.get("placeholder")))
            await status.show(text, final=True)
        else:
            await self.bot.send_message(int(target["chat_id"]), text,
                                        reply_parameters=reply_parameters(target.get("reply_to")),
                                        **lane(self.bot, Lane.RESULT))
        await self._react(target.get("ack"), None)
        await self.service.mark_told(untold.job_id)

    async def _tell_logged(self, untold: Untold) -> None:
        try:
            await self.tell_untold(untold)
        except Exception:
            logger.exception("telegram: telling job %s's failure failed; it stays owed", untold.job_id)

    async def _deliver_logged(self, delivery: Delivery) -> None:
        try:
            await self.deliver(delivery)
        except Exception:
            logger.exception("telegram: re-delivering job %s failed; it stays owed", delivery.job_id)

    async def deliver(self, delivery: Delivery, spot: tuple[int, int] | None = None) -> Message | None:
        """Replace the job's placeholder (``spot``, else the one in its target) with the result.

        Safe to repeat: a second call edits the same message to the same result. A job without
        a placeholder gets one first.
        """
        target = delivery.target
        if spot is None and target.get("placeholder") and target.get("status_id"):
            spot = (int(target.get("status_chat") or target["chat_id"]), int(target["status_id"]))
        data, name, as_photo = await asyncio.to_thread(result_media, delivery)
        caption = caption_of(delivery, target.get("name"))
        keyboard = (upscaled_keyboard(delivery.job_id) if delivery.request.kind in ("upscale", "zoom", "pan", "edit")
                    else main_keyboard(delivery.job_id, len(delivery.images)))
        spoiler = any(i.spoiler for i in delivery.images) or None
        if spot is None and (target.get("sending") or target.get("result_id")
                             or self._direct(delivery.job_id, target)):
            return await self._send_result(delivery, data, name, as_photo, caption, keyboard, spoiler)
        media = (InputMediaPhoto(data, caption=caption, filename=name, has_spoiler=spoiler) if as_photo
                 else InputMediaDocument(data, caption=caption, filename=name))
        edited: Message | None = None
        for attempt in range(2):
            if spot is None:
                spot = await self._placeholder(delivery.job_id, target, f"📦 Sending…\n{clip(delivery.text, 300)}")
            try:
                result = await self.bot.edit_message_media(media, spot[0], spot[1], reply_markup=keyboard,
                                                           **lane(self.bot, Lane.RESULT))
                edited = result if isinstance(result, Message) else None
                break
            except BadRequest as err:
                text = str(err).lower()
                if "not modified" in text:  # the same result is shown already
                    break
                if attempt == 0 and "not found" in text:  # the placeholder was deleted: a new one
                    logger.info("telegram: placeholder of job %s is gone; sending a new one", delivery.job_id)
                    spot = None
                    continue
                raise
        if spot is None:  # pragma: no cover - the loop ends with a placeholder edited or raises
            raise RuntimeError(f"job {delivery.job_id} has no message to show its result in")
        await self.service.remember_message(delivery.job_id, PLATFORM, spot[0], spot[1], index=None)
        await self._react(target.get("ack"), None)  # before: a crash in between repeats both, harmlessly
        await self.service.mark_delivered(delivery.job_id)
        await self._send_mask(delivery, spot)
        return edited

    async def _send_mask(self, delivery: Delivery, spot: tuple[int, int]) -> None:
        """An edit's region, tinted over its source, as a small photo under the result (best effort:
        the result is delivered already)."""
        shown = await asyncio.to_thread(mask_overlay, delivery)
        if shown is None:
            return
        try:
            await self.bot.send_photo(spot[0], shown, caption="🖌️ The region that was repainted (red).",
                                      filename=f"{delivery.job_id}-mask.jpg", reply_parameters=reply_parameters(spot[1]),
                                      **lane(self.bot, Lane.RESULT))
        except TelegramError as err:
            logger.info("telegram: the mask of job %s was not sent: %s", delivery.job_id, err)

    async def _send_result(self, delivery: Delivery, data: bytes, name: str, as_photo: bool, caption: str,
                           keyboard: Any, spoiler: bool | None) -> Message | None:
        """The result as a message of its own (a busy group), sent once or said to be sent again."""
        target = delivery.target
        chat_id = int(target.get("status_chat") or target["chat_id"])
        sent: Message | None = None
        if target.get("result_id"):  # sent and recorded before a restart: only the bookkeeping is left
            message_id = int(target["result_id"])
        else:
            if target.get("sending"):  # a restart inside the window: it may have arrived
                caption = clip(f"{caption}\n{RESENT_NOTE}", 1024)
            else:
                await self.service.record_refs(delivery.job_id, {"sending": True})
            common = dict(caption=caption, filename=name, reply_markup=keyboard,
                          reply_parameters=reply_parameters(target.get("reply_to")), **lane(self.bot, Lane.RESULT))
            sent = await (self.bot.send_photo(chat_id, data, has_spoiler=spoiler, **common) if as_photo
                          else self.bot.send_document(chat_id, data, **common))
            message_id = sent.message_id
            await self.service.record_refs(delivery.job_id, {"result_id": message_id, "result_chat": chat_id})
        await self.service.remember_message(delivery.job_id, PLATFORM, chat_id, message_id, index=None)
        await self._react(target.get("ack"), None)
        await self.service.mark_delivered(delivery.job_id)
        await self._send_mask(delivery, (chat_id, message_id))
        return sent

"""The status of one job: a message edited with queue place and progress, paced for Telegram.

The message is the job's placeholder photo (its caption is edited, ``caption=True``) or, for
jobs accepted before placeholders existed, a text message.

Telegram allows about one message per second per chat and 20 per minute in a group, so edits
come at least ``interval`` seconds apart. An update that arrives sooner is kept and shown when
the interval is over (only the newest waits); an edit that would not change the message is
skipped; "message is not modified" and other edit failures are logged, never raised: progress
is best effort, the result is what counts.

Edits go in the pacer's ``STATUS`` lane (:mod:`.pacing`): when the chat's budget is spent (a busy
group), the pacer answers :class:`~.pacing.Busy` at once instead of queueing a text that would be
stale when it went; the newest text waits here and is tried again when there may be room. A
final text (failed, cancelled) goes in the ``RESULT`` lane and is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Bot, InlineKeyboardMarkup, InputMediaPhoto
from telegram.error import BadRequest, TelegramError

from bot.frontends.telegram.pacing import Busy, Lane
from bot.frontends.telegram.pacing import lane as lane_args

__all__ = ["StatusMessage"]

logger = logging.getLogger(__name__)


class StatusMessage:
    """One message the bot edits in place."""

    def __init__(self, bot: Bot, chat_id: int, message_id: int, text: str,
                 markup: InlineKeyboardMarkup | None = None, *, interval: float = 1.5,
                 caption: bool = False, previews: bool = False) -> None:
        self.bot = bot
        self.caption = caption
        self.previews = previews and caption  # only a photo can show one
        self.previewed = 0  # edits that showed a new preview
        self.chat_id = chat_id
        self.message_id = message_id
        self.interval = interval
        self.edits = 0
        self.busy = 0  # edits the pacer put off (the chat's budget was spent)
        self._shown: tuple[str, InlineKeyboardMarkup | None] = (text, markup)
        self._pending: tuple[str, InlineKeyboardMarkup | None] | None = None
        self._preview: bytes | None = None  # the newest preview, shown with the next edit
        self._preview_shown: bytes | None = None
        self._last = time.monotonic()
        self._flush: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def show(self, text: str, markup: InlineKeyboardMarkup | None = None, *,
                   final: bool = False, preview: bytes | None = None, photo: bytes | None = None) -> None:
        """Edit the message to ``text`` now, or when the interval is over (``final``: now); with
        ``preview`` (and previews on) the photo becomes it in the same edit. ``photo`` (with
        ``final``): the picture to put back where a preview was shown (the job made no image)."""
        if preview is not None and self.previews:
            self._preview = preview
        if final:
            self._cancel_flush()
            self._pending = None
            if photo is not None and self._preview_shown is not None:
                self._preview = photo  # shown once more, in the final edit's lane
                await self._edit(text, markup, Lane.RESULT, restore=True)
                return
            await self._edit(text, markup, Lane.RESULT)
            return
        wait = self._last + self.interval - time.monotonic()
        if wait <= 0 and self._flush is None:
            await self._edit(text, markup)
            return
        self._pending = (text, markup)
        if self._flush is None:
            self._flush = asyncio.create_task(self._later(max(wait, 0.0)), name=f"status-{self.message_id}")

    async def delete(self) -> None:
        """Remove the message (it is replaced by the result)."""
        self._cancel_flush()
        try:
            await self.bot.delete_message(self.chat_id, self.message_id)
        except TelegramError as err:
            logger.info("could not delete status message %s/%s: %s", self.chat_id, self.message_id, err)

    def close(self) -> None:
        """Drop a waiting edit."""
        self._cancel_flush()

    async def settle(self) -> None:
        """Drop a waiting edit and wait for one on the way (before the message is replaced)."""
        self._cancel_flush()
        self._pending = None
        async with self._lock:
            pass

    def _cancel_flush(self) -> None:
        if self._flush is not None and self._flush is not asyncio.current_task():
            self._flush.cancel()
        self._flush = None

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flush = None
        pending, self._pending = self._pending, None
        if pending is not None:
            await self._edit(*pending)

    async def _edit(self, text: str, markup: InlineKeyboardMarkup | None, lane: Lane = Lane.STATUS, *,
                    restore: bool = False) -> None:
        async with self._lock:
            fresh = self._preview is not self._preview_shown
            preview = self._preview if (lane == Lane.STATUS or restore) and fresh else None
            if (text, markup) == self._shown and preview is None:
                return
            self._last = time.monotonic()
            paced = lane_args(self.bot, lane)
            before, self._preview_shown = self._preview_shown, preview or self._preview_shown  # a failed one is not retried
            try:
                if preview is not None:
                    await self.bot.edit_message_media(
                        InputMediaPhoto(preview, caption=text, filename="placeholder.png" if restore else "preview.jpg"),
                        self.chat_id,
                        self.message_id, reply_markup=markup, **paced)
                    self.previewed += 1
                elif self.caption:
                    await self.bot.edit_message_caption(self.chat_id, self.message_id, caption=text,
                                                        reply_markup=markup, **paced)
                else:
                    await self.bot.edit_message_text(text, self.chat_id, self.message_id, reply_markup=markup,
                                                     **paced)
                self.edits += 1
            except Busy as busy:  # the chat's budget is spent: keep the newest text (and preview), try later
                self._preview_shown = before
                self.busy += 1
                if self._pending is None:
                    self._pending = (text, markup)
                if self._flush is None:
                    self._flush = asyncio.create_task(self._later(busy.wait), name=f"status-{self.message_id}")
                return
            except BadRequest as err:
                if "not modified" not in str(err).lower():
                    logger.info("status edit %s/%s failed: %s", self.chat_id, self.message_id, err)
            except TelegramError as err:
                logger.info("status edit %s/%s failed: %s", self.chat_id, self.message_id, err)
            self._shown = (text, markup)

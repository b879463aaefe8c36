"""Acknowledge only what is stored: Telegram updates go into the service's inbox first.

Long polling confirms an update to Telegram with the *next* getUpdates offset, and
python-telegram-bot's Updater sends that call as soon as it has put the batch on the
Application's update queue. The webhook server answers 200 when its handler returns, which is
right after it put the update on the same queue. So the queue is the one seam both paths pass:
:class:`StoringQueue` stores each update (``service.receive``, one commit) *before* it is
queued, and only then can PTB confirm it (polling: the next offset; webhook: the 200).

* A repeat (Telegram re-sends an unconfirmed update after a restart, or retries a webhook) is
  stored already: ``receive`` says so and the update is dropped here, never handled twice.
* When the handlers of an update are done, :class:`InboxProcessor` closes its inbox row
  (``service.handled``). An ``/imagine`` (or reroll, variation) closes it earlier, in the same
  transaction as its job row (``origin=("telegram", update_id)``).
* After a crash, :func:`replay` runs the updates stored but never closed through the
  Application again (before polling or the webhook starts). A request that already made its
  job raises ``AlreadyAccepted`` there and is skipped: recovery follows that job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, SimpleUpdateProcessor

from bot.frontends.telegram.messages import PLATFORM
from bot.service import ImagineService

__all__ = ["MAX_REPLAYS", "InboxProcessor", "StoringQueue", "replay"]

logger = logging.getLogger(__name__)

MAX_REPLAYS = 3  # an update that crashed the bot this often is closed instead of run again


class StoringQueue(asyncio.Queue):  # type: ignore[type-arg]
    """The Application's update queue: ``put`` stores an update before queueing it."""

    def __init__(self, service: ImagineService) -> None:
        super().__init__()
        self.service = service

    async def put(self, item: Any) -> None:
        if isinstance(item, Update):
            # a database error: polling retries the batch (its offset is not confirmed), the
            # webhook answers 500 and Telegram sends the update again. Raised as a TelegramError:
            # PTB's polling loop retries those and would stop on anything else.
            try:
                fresh = await self.service.receive(PLATFORM, item.update_id, item.to_dict())
            except Exception as err:
                logger.error("telegram: could not store update %d (%s); not confirming it", item.update_id, err)
                raise TelegramError(f"could not store update {item.update_id}: {err}") from err
            if not fresh:
                logger.info("telegram: update %d was stored before; not handled again", item.update_id)
                return
        await super().put(item)


class InboxProcessor(SimpleUpdateProcessor):
    """Runs updates concurrently (as ``concurrent_updates(True)``); closes each one's inbox row."""

    def __init__(self, service: ImagineService, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self.service = service

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        await coroutine  # the Application runs the handlers and the error handler in here
        if isinstance(update, Update):
            await close(self.service, update.update_id)


async def close(service: ImagineService, update_id: int) -> None:
    try:
        await service.handled(PLATFORM, update_id)
    except Exception:  # the handler ran; at worst it runs again after a restart
        logger.exception("telegram: could not close update %d in the inbox", update_id)


async def replay(application: Application, service: ImagineService) -> int:
    """Handle the updates stored but not closed before a crash; how many were run again."""
    count = 0
    for item in await service.unhandled(PLATFORM):
        if item.attempts > MAX_REPLAYS:
            logger.error("telegram: update %s failed %d times after restarts; dropping it",
                         item.key, item.attempts - 1)
            await service.handled(PLATFORM, item.key)
            continue
        update = Update.de_json(item.payload, application.bot)
        logger.info("telegram: handling update %s stored before a restart", item.key)
        await application.process_update(update)
        await close(service, update.update_id)
        count += 1
    return count

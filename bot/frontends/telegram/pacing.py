"""Telegram's flood limits kept in every sliding window, not just on average.

Telegram documents (Bots FAQ, "My bot is hitting limits"): about **1 message per second** in
one chat, **20 messages per minute** in one group, **30 messages per second** overall. PTB's
``AIORateLimiter`` is a leaky bucket: it lets a burst of 20 through at once and then refills, so
a busy group saw 29 messages within one minute. :class:`FloodPacer` counts instead:

* **What counts.** Per chat: every call that creates or edits a message (``send*`` except
  ``sendChatAction``, ``edit*``, ``copyMessage``, ``forwardMessage``; an album counts each of
  its items). The docs name only "messages"; whether edits count is not documented, so edits
  count (conservative). Reactions (``setMessageReaction``), chat actions, deletes and callback
  answers create no message and are not in a chat's budget; every call, these included, is in
  the overall 30/s.
* **Sliding windows, measured from the far end.** A call holds its place in a window from the
  moment it is let through until ``period`` seconds after its answer arrived (Telegram saw it
  somewhere in between), so no window Telegram can measure holds more than the limit, however
  slow the network.
* **Lanes.** Waiting calls go in lane order, then arrival order: the acknowledgement (a
  reaction), results, new messages (placeholders, replies), then status edits, then clean-up.
  A result never waits behind a status edit.
* **Status edits are never queued.** A status edit (lane ``STATUS``) that cannot go at once
  (or while another call waits only for the overall budget, or when ``status_share`` of this
  second's overall budget is used) raises :class:`Busy` with the seconds until there may be room; the status message keeps its
  newest text and tries again then (so positions are updated less often when it is busy, and
  what is shown is never stale). In a group, status edits may use only ``status_share`` of the
  minute's budget, minus what is waiting: the rest is kept for placeholders and results.
* **Room for results in a group.** New messages (placeholders) are at most ``send_share`` of a
  group's minute (a window of their own, besides the group's 20): in a burst of 15 requests
  the first 10 placeholders go, their results follow within the same minute, and the other 5
  wait for the window to slide (the 👀 reaction has acknowledged them already). Without it 15
  placeholders take 15 of the 20 places and 10 of the results wait a minute.
* **A placeholder only where its result fits too.** A placeholder and its result cost two of
  the group's messages; a request that gets no placeholder costs one (its result, sent as a
  reply). :meth:`FloodPacer.placeholder_room` tells the front end how many more messages the
  placeholder share of the group's minute holds now, counting the calls waiting; the front end
  sends a placeholder only while that room covers it, its result and the results it still owes
  in that group (see :mod:`.delivery`). So a burst of 15 requests in one group makes 5
  placeholders and 10 results sent directly: 20 messages, every result within the minute.
* A 429 pauses that chat (or everything, for a call without a chat) for ``retry_after``, then
  the call is tried again, at most ``max_retries`` times.

Pass the lane as ``rate_limit_args`` of a bot method: ``bot.send_photo(..., rate_limit_args=Lane.SEND)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

__all__ = ["Busy", "FloodLimits", "FloodPacer", "Lane", "lane", "message_cost"]

logger = logging.getLogger(__name__)

_IN_FLIGHT = float("inf")
MINUTE = 60.0  # the group window (tests shrink it)


class Lane(IntEnum):
    """Priority of a call: lower goes first."""

    ACK = 0
    RESULT = 1
    SEND = 2
    STATUS = 3
    CLEANUP = 4


class Busy(Exception):
    """A status edit that cannot go now; try again in ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"busy: try again in {wait:.2f} s")
        self.wait = wait


@dataclass(frozen=True)
class FloodLimits:
    """The limits kept (0 turns one off)."""

    overall_per_second: int = 30
    group_per_minute: int = 20
    private_interval: float = 1.0  # seconds per message in one private chat
    status_share: float = 0.5  # share of a group's minute that status edits may use
    send_share: float = 0.5  # share of a group's minute that new messages may use (the rest: results)


def lane(bot: Any, which: Lane) -> dict[str, Any]:
    """``rate_limit_args`` for a bot method, when the bot has a rate limiter (a plain Bot has none)."""
    return {"rate_limit_args": which} if getattr(bot, "rate_limiter", None) is not None else {}


def message_cost(endpoint: str, data: dict[str, Any]) -> int:
    """How many messages a call creates or edits (0: none, e.g. a reaction)."""
    name = endpoint.lower()
    if name == "sendmediagroup":
        media = data.get("media")
        return len(media) if isinstance(media, (list, tuple)) else 1
    if name == "sendchataction":
        return 0
    if name.startswith(("send", "edit")) or name in ("copymessage", "forwardmessage"):
        return 1
    return 0


class _Window:
    """Stamps of calls in one sliding window (``inf`` while a call is on its way)."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.stamps: list[list[float]] = []

    def used(self, now: float) -> int:
        self.stamps = [s for s in self.stamps if s[0] > now - self.period]
        return len(self.stamps)

    def wait(self, now: float, cost: int = 1, limit: int | None = None) -> float | None:
        """Seconds until ``cost`` more fit (0: now; None: when a call on its way is answered)."""
        limit = self.limit if limit is None else limit
        used = self.used(now)
        if used + cost <= limit:
            return 0.0
        ends = sorted(s[0] for s in self.stamps)
        if cost > limit:  # an album larger than the whole budget: wait for an empty window
            return None if ends and ends[-1] == _IN_FLIGHT else (ends[-1] + self.period - now if ends else 0.0)
        oldest = ends[used + cost - limit - 1]
        return None if oldest == _IN_FLIGHT else max(oldest + self.period - now, 0.0)

    def take(self, cost: int) -> list[list[float]]:
        stamps = [[_IN_FLIGHT] for _ in range(cost)]
        self.stamps.extend(stamps)
        return stamps


@dataclass(order=True)
class _Waiting:
    lane: int
    seq: int
    chat: int | str | None = field(compare=False)
    group: bool = field(compare=False)
    cost: int = field(compare=False)
    future: asyncio.Future[list[list[float]]] = field(compare=False)


class FloodPacer(BaseRateLimiter[int]):
    """A BaseRateLimiter with exact sliding windows, lanes and status edits that never queue."""

    def __init__(self, limits: FloodLimits | None = None, *, max_retries: int = 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or FloodLimits()
        self.max_retries = max_retries
        self.clock = clock
        self._overall = _Window(self.limits.overall_per_second, 1.0)
        self._chats: dict[int | str, _Window] = {}
        self._sends: dict[int | str, _Window] = {}  # groups: new messages only (send_share)
        self._paused: dict[int | str | None, float] = {}  # chat (None: all) -> until
        self._waiting: list[_Waiting] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for waiting in self._waiting:
            waiting.future.cancel()
        self._waiting.clear()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        lane = Lane(rate_limit_args) if rate_limit_args is not None else _default_lane(endpoint)
        chat = _chat_of(data)
        group = isinstance(chat, str) or (isinstance(chat, int) and chat < 0)
        cost = message_cost(endpoint, data) if chat is not None else 0
        for attempt in range(self.max_retries + 1):
            stamps = await self._acquire(lane, chat, group, cost)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as err:
                wait = _seconds(getattr(err, "_retry_after", None))
                logger.warning("telegram: 429 on %s in chat %s; pausing it %.1f s", endpoint, chat, wait)
                self._paused[chat] = max(self._paused.get(chat, 0.0), self.clock() + float(wait) + 0.1)
                if attempt == self.max_retries or lane == Lane.STATUS:
                    raise
            finally:
                done = self.clock()
                for stamp in stamps:
                    stamp[0] = done
                self._pump()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the queue -----------------------------------------------------------------------------

    async def _acquire(self, lane: Lane, chat: int | str | None, group: bool, cost: int) -> list[list[float]]:
        waiting = _Waiting(int(lane), next(self._seq), chat, group, cost,
                           asyncio.get_running_loop().create_future())
        if lane == Lane.STATUS:
            now = self.clock()
            if self.limits.overall_per_second and (
                    self._overall.used(now) >= self.limits.overall_per_second * self.limits.status_share
                    or self._starved(now)):
                raise Busy(0.5)  # half of each second is kept for the other lanes, and they go first
            wait = self._wait(waiting, now, ahead=self._ahead(chat))
            if wait != 0.0:
                raise Busy(wait if wait is not None else max(self.limits.private_interval, 0.5))
            return self._take(waiting)
        heapq.heappush(self._waiting, waiting)
        self._pump()
        try:
            return await waiting.future
        except asyncio.CancelledError:
            if waiting.future.done() and not waiting.future.cancelled():  # granted, then cancelled
                for stamp in waiting.future.result():
                    stamp[0] = self.clock()
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiting)
                heapq.heapify(self._waiting)
            raise

    def placeholder_room(self, chat: int | str) -> int | None:
        """Messages the placeholder share of a group's minute holds now (None: no group limit).

        ``send_share`` of the minute, less the group's messages in its window and those waiting.
        """
        limit = self.limits.group_per_minute
        if not limit or not (isinstance(chat, str) or chat < 0):
            return None
        window = self._chats.get(chat)
        used = window.used(self.clock()) if window is not None else 0
        return max(int(limit * self.limits.send_share), 1) - used - self._ahead(chat)

    def _starved(self, now: float) -> bool:
        """Whether a waiting call could go but for the overall budget (a status edit must not take it)."""
        saved, self._overall = self._overall, _Window(self.limits.overall_per_second, 1.0)
        try:
            return any(self._wait(w, now) == 0.0 for w in self._waiting)
        finally:
            self._overall = saved

    def _ahead(self, chat: int | str | None) -> int:
        return sum(w.cost for w in self._waiting if w.chat == chat)

    def _window(self, chat: int | str, group: bool) -> _Window | None:
        window = self._chats.get(chat)
        if window is None:
            limits = self.limits
            if group and limits.group_per_minute:
                window = _Window(limits.group_per_minute, MINUTE)
            elif not group and limits.private_interval:
                window = _Window(1, limits.private_interval)
            else:
                return None
            self._chats = _forget_idle(self._chats, self.clock())
            self._chats[chat] = window
        return window

    def _send_window(self, chat: int | str) -> _Window:
        window = self._sends.get(chat)
        if window is None:
            self._sends = _forget_idle(self._sends, self.clock())
            limit = max(int(self.limits.group_per_minute * self.limits.send_share), 1)
            window = self._sends[chat] = _Window(limit, MINUTE)
        return window

    def _wait(self, w: _Waiting, now: float, ahead: int = 0) -> float | None:
        waits: list[float | None] = [max(self._paused.get(None, 0.0) - now, 0.0)]
        if self.limits.overall_per_second:
            waits.append(self._overall.wait(now))
        if w.chat is not None:
            waits.append(max(self._paused.get(w.chat, 0.0) - now, 0.0))
            window = self._window(w.chat, w.group) if w.cost else None
            if window is not None:
                limit = window.limit
                if w.lane == Lane.STATUS and w.group:
                    limit = max(int(window.limit * self.limits.status_share) - ahead, 0)
                    if limit == 0:
                        return window.period / 4
                elif w.lane == Lane.SEND and w.group:
                    waits.append(self._send_window(w.chat).wait(now, w.cost))
                waits.append(window.wait(now, w.cost, limit))
        if any(x is None for x in waits):
            return None
        return max(x for x in waits if x is not None)

    def _take(self, w: _Waiting) -> list[list[float]]:
        stamps = self._overall.take(1) if self.limits.overall_per_second else []
        window = self._window(w.chat, w.group) if w.chat is not None and w.cost else None
        if window is not None:
            stamps += window.take(w.cost)
            if w.lane == Lane.SEND and w.group:
                stamps += self._send_window(w.chat).take(w.cost)
        return stamps

    def _pump(self) -> None:
        """Let through every waiting call that fits, in lane order; wake up when the next may."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.clock()
        blocked: set[int | str | None] = set()
        next_at: float | None = None
        for w in sorted(self._waiting):
            if w.future.done() or (w.cost and w.chat in blocked):
                continue
            wait = self._wait(w, now)
            if wait == 0.0:
                self._waiting.remove(w)
                w.future.set_result(self._take(w))
                continue
            if w.cost:  # later messages of the chat keep their order behind it (a reaction need not)
                blocked.add(w.chat)
            if wait is not None:
                next_at = now + wait if next_at is None else min(next_at, now + wait)
        heapq.heapify(self._waiting)
        if next_at is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(next_at - self.clock(), 0.0) + 0.001, self._pump)


def _forget_idle(windows: dict[int | str, _Window], now: float) -> dict[int | str, _Window]:
    """``windows`` without the idle chats once there are more than 4096 of them."""
    return {k: w for k, w in windows.items() if w.used(now)} if len(windows) > 4096 else windows


def _seconds(value: Any) -> float:
    """RetryAfter's wait (a timedelta in PTB 22, read without its deprecation warning)."""
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value) if isinstance(value, (int, float)) else 1.0


def _chat_of(data: dict[str, Any]) -> int | str | None:
    chat = data.get("chat_id")
    if chat is None:
        return None
    with contextlib.suppress(ValueError, TypeError):
        return int(chat)
    return str(chat)


def _default_lane(endpoint: str) -> Lane:
    name = endpoint.lower()
    if name.startswith("edit"):
        return Lane.RESULT  # an edit nobody marked is not a droppable status
    if name in ("setmessagereaction", "answercallbackquery"):
        return Lane.ACK
    return Lane.SEND

"""An asyncio loop on a virtual clock: time jumps to the next timer when nothing else can run.

The simulated GPUs of ``bench/queue_bench.py`` sleep their modelled batch time with
``asyncio.sleep``; the service around them (SQLite statements on the loop's thread, or on the
database's thread when the file is locked; PNG encoding through ``asyncio.to_thread``) does its
real work. The clock must not move while such work is in flight, or the bookkeeping would seem
to take as long as the next GPU batch. So the loop counts it: every ``run_in_executor`` call is
*busy* from submission until the awaiting side resumes. Only when nothing is ready, nothing is
busy and no thread has woken the loop does the clock jump to the next timer; otherwise the loop
waits in real time for the thread to answer. Bookkeeping therefore costs no virtual time: the
figures measure the scheduling policy on the cost model, and ``bench/service_bench.py``
measures the bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")

_REAL_WAIT = 0.05  # seconds of real time to wait for a busy thread before looking again


class _Selector:
    """Wraps the loop's selector: a wait with nothing in flight advances the virtual clock."""

    def __init__(self, inner: Any, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._inner.select(0)
        if events or timeout == 0:
            return events
        if self._loop.busy > 0 or timeout is None:
            # a thread is working for the loop (or nothing is scheduled): wait for it in real time
            return self._inner.select(_REAL_WAIT if timeout is not None else None)
        self._loop.advance(timeout)
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual; it moves only when the loop would otherwise sleep."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0
        self.busy = 0
        self._selector = _Selector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self._virtual

    def advance(self, seconds: float) -> None:
        self._virtual += max(seconds, 0.0)

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self.busy += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(self._settled)
        return future

    def _settled(self, _: object) -> None:
        self.busy -= 1

    @contextlib.contextmanager
    def busy_while(self) -> Iterator[None]:
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` to completion on a fresh :class:`VirtualTimeLoop` (virtual time starts at 0)."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

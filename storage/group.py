"""Group commit: writes that arrive together share one transaction.

The jobs of one GPU batch start together and finish together, so their ``mark_running`` and
"store the images, mark done" writes arrive within the same event-loop turn. Each write is a
function of a :class:`~storage.db.Transaction`; :meth:`GroupWriter.run` queues it and waits.
One writer task takes everything queued, runs it inside one ``BEGIN IMMEDIATE … COMMIT`` and
resolves each caller with its own result. If one write raises, the group is rolled back and
each of its writes runs again in a transaction of its own, so one bad write fails only its own
caller and never takes the others with it.

Durability is unchanged: a caller's ``run()`` returns only after the COMMIT that holds its
write; a crash before that loses the whole group, exactly as it would lose single writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from storage.db import Database, Transaction

__all__ = ["GroupWriter"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[Transaction], Awaitable[Any]]


class GroupWriter:
    """Runs queued writes in shared transactions on one writer task."""

    def __init__(self, db: Database, *, max_group: int = 64) -> None:
        if max_group < 1:
            raise ValueError(f"`max_group` must be at least 1 but is {max_group}")
        self.db = db
        self.max_group = max_group
        self.groups = 0  # transactions committed (for tests and benchmarks)
        self._pending: asyncio.Queue[tuple[Write, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def run(self, write: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``write(tx)`` in a transaction shared with other writes queued at the same time."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((write, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="group-writer")
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (later writes still work, until the
        database itself closes: a front end may record a delivery after the service closed)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while not self._pending.empty():
            await asyncio.sleep(0)  # let the rest of this batch's writes arrive
            group: list[tuple[Write, asyncio.Future[Any]]] = []
            while not self._pending.empty() and len(group) < self.max_group:
                item = self._pending.get_nowait()
                if not item[1].cancelled():
                    group.append(item)
            if not group:
                continue
            try:
                await self._commit(group)
            except BaseException:
                for _, future in group:  # cancelled mid-commit: nobody waits forever
                    if not future.done():
                        future.cancel()
                raise

    async def _commit(self, group: list[tuple[Write, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            async with self.db.transaction() as tx:
                for write, _ in group:
                    results.append(await write(tx))
        except Exception as error:
            if len(group) > 1:
                log.debug("a group of %d writes failed; running them one by one", len(group))
                for item in group:
                    await self._commit([item])
            elif not group[0][1].done():
                group[0][1].set_exception(error)
            return
        self.groups += 1
        for (_, future), result in zip(group, results):
            if not future.done():
                future.set_result(result)

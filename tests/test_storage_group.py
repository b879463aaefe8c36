"""GroupWriter: writes queued together share a transaction; one failing write fails only itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import Database
from storage.db import Transaction
from storage.group import GroupWriter


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "g.db") as database:
        await database.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        yield database


def insert(k: int, v: str | None = "x"):
    async def write(tx: Transaction) -> int:
        await tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v))
        return k
    return write


async def test_writes_queued_together_share_one_transaction(db: Database) -> None:
    writer = GroupWriter(db)
    results = await asyncio.gather(*(writer.run(insert(k)) for k in range(8)))
    assert results == list(range(8))
    assert writer.groups == 1
    assert await db.fetchval("SELECT count(*) FROM t") == 8
    await writer.run(insert(100))  # later writes get a group of their own
    assert writer.groups == 2
    await writer.flush()


async def test_a_failing_write_fails_only_its_caller(db: Database) -> None:
    writer = GroupWriter(db)
    outcomes = await asyncio.gather(
        writer.run(insert(1)), writer.run(insert(2, None)), writer.run(insert(3)),
        return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert "NOT NULL" in str(outcomes[1])
    assert [r["k"] for r in await db.fetchall("SELECT k FROM t ORDER BY k")] == [1, 3]
    await writer.flush()


async def test_group_size_is_bounded(db: Database) -> None:
    writer = GroupWriter(db, max_group=3)
    await asyncio.gather(*(writer.run(insert(k)) for k in range(7)))
    assert writer.groups == 3
    assert await db.fetchval("SELECT count(*) FROM t") == 7
    with pytest.raises(ValueError):
        GroupWriter(db, max_group=0)


async def test_flush_waits_for_queued_writes_and_later_writes_still_work(db: Database) -> None:
    writer = GroupWriter(db)
    pending = [asyncio.create_task(writer.run(insert(k))) for k in range(4)]
    await asyncio.sleep(0)
    await writer.flush()
    assert all(p.done() for p in pending) and [p.result() for p in pending] == [0, 1, 2, 3]
    assert await db.fetchval("SELECT count(*) FROM t") == 4
    # a front end may still record a delivery after the service flushed on shutdown
    assert await writer.run(insert(9)) == 9


async def test_a_cancelled_caller_is_skipped_and_others_still_commit(db: Database) -> None:
    writer = GroupWriter(db)
    first = asyncio.create_task(writer.run(insert(1)))
    second = asyncio.create_task(writer.run(insert(2)))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 2
    await writer.flush()
    assert await db.fetchval("SELECT count(*) FROM t WHERE k = 2") == 1

"""Quotas: atomic consume under concurrency (one and two connections), refund once, windows."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from storage import Database, jobs, quotas, users


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


async def _user(db: Database, name: str = "ada") -> int:
    return (await users.get_or_create(db, "discord", name, name)).id


async def test_consume_returns_new_usage_and_refuses_over_limit(db: Database) -> None:
    uid = await _user(db)
    window = quotas.window_start()
    assert await quotas.consume(db, uid, 3, 5, window) == 3
    assert await quotas.consume(db, uid, 2, 5, window) == 5
    assert await quotas.consume(db, uid, 1, 5, window) is None
    assert await quotas.used(db, uid, window) == 5
    assert await quotas.remaining(db, uid, 5, window) == 0
    assert await quotas.remaining(db, uid, 3, window) == 0  # never negative after a lower limit


async def test_first_request_larger_than_the_limit_is_refused(db: Database) -> None:
    uid = await _user(db)
    window = quotas.window_start()
    assert await quotas.consume(db, uid, 6, 5, window) is None
    assert await quotas.used(db, uid, window) == 0
    assert await db.fetchval("SELECT count(*) FROM quota_usage") == 0
    assert await quotas.consume(db, uid, 5, 5, window) == 5


@pytest.mark.parametrize("n", [0, -1, True, 1.5])
async def test_consume_rejects_bad_counts(db: Database, n: object) -> None:
    with pytest.raises(ValueError, match="`n`"):
        await quotas.consume(db, await _user(db), n, 5, quotas.window_start())  # type: ignore[arg-type]


async def test_200_concurrent_consumes_on_one_connection(db: Database) -> None:
    uid = await _user(db)
    window = quotas.window_start()
    results = await asyncio.gather(*(quotas.consume(db, uid, 1, 100, window) for _ in range(200)))
    granted = [r for r in results if r is not None]
    assert len(granted) == 100
    assert sorted(granted) == list(range(1, 101))
    assert await quotas.used(db, uid, window) == 100


async def test_200_concurrent_consumes_on_two_connections(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Database.open(path) as first, Database.open(path) as second:
        uid = await _user(first)
        window = quotas.window_start()
        calls = [quotas.consume(first if i % 2 else second, uid, 1, 100, window) for i in range(200)]
        results = await asyncio.gather(*calls)
        assert sum(r is not None for r in results) == 100
        assert await quotas.used(first, uid, window) == 100
        assert await quotas.used(second, uid, window) == 100


async def _charged_job(db: Database, uid: int, n: int, window: str) -> str:
    async with db.transaction() as tx:
        assert await quotas.consume(tx, uid, n, 10, window) is not None
        job = await jobs.create(
            tx, user_id=uid, request={"prompt": "a fox"}, model_id="m", charged=n,
            quota_window=window,
        )
    return job.id


async def test_refund_happens_exactly_once_under_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Database.open(path) as db, Database.open(path) as other:
        uid = await _user(db)
        window = quotas.window_start()
        job_id = await _charged_job(db, uid, 3, window)
        await quotas.consume(db, uid, 2, 10, window)  # another job's images, not refunded
        assert await quotas.used(db, uid, window) == 5
        await jobs.mark_failed(db, job_id, "boom")
        results = await asyncio.gather(
            *(quotas.refund(db if i % 2 else other, job_id) for i in range(20))
        )
        assert sorted(results) == [0] * 19 + [3]
        assert await quotas.used(db, uid, window) == 2
        assert (await jobs.get(db, job_id)).refunded  # type: ignore[union-attr]


async def test_refund_goes_to_the_window_that_was_charged(db: Database) -> None:
    uid = await _user(db)
    yesterday = quotas.window_start(datetime(2024, 1, 1, 12, tzinfo=timezone.utc))
    today = quotas.window_start(datetime(2024, 1, 2, 12, tzinfo=timezone.utc))
    job_id = await _charged_job(db, uid, 4, yesterday)
    await quotas.consume(db, uid, 1, 10, today)
    assert await quotas.refund(db, job_id) == 4
    assert await quotas.used(db, uid, yesterday) == 0
    assert await quotas.used(db, uid, today) == 1


async def test_delivered_and_uncharged_jobs_are_not_refunded(db: Database) -> None:
    uid = await _user(db)
    window = quotas.window_start()
    delivered = await _charged_job(db, uid, 2, window)
    await jobs.mark_done(db, delivered)
    assert await jobs.mark_delivered(db, delivered)
    assert await quotas.refund(db, delivered) == 0
    free = await jobs.create(db, user_id=uid, request={"prompt": "x"}, model_id="m")
    assert await quotas.refund(db, free.id) == 0
    assert await quotas.refund(db, "no-such-job") == 0
    assert await quotas.used(db, uid, window) == 2


async def test_consume_and_job_row_roll_back_together(db: Database) -> None:
    uid = await _user(db)
    window = quotas.window_start()
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await quotas.consume(tx, uid, 2, 10, window)
            await jobs.create(tx, user_id=uid, request={"prompt": "x"}, model_id="m", charged=2)
            raise RuntimeError("front end vanished")
    assert await quotas.used(db, uid, window) == 0
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_windows_roll_over(db: Database) -> None:
    uid = await _user(db)
    late = datetime(2024, 3, 9, 23, 59, 59, tzinfo=timezone.utc)
    early = late + timedelta(seconds=2)
    w1, w2 = quotas.window_start(late), quotas.window_start(early)
    assert w1 == "2024-03-09T00:00:00.000000+00:00"
    assert w2 == "2024-03-10T00:00:00.000000+00:00"
    assert await quotas.consume(db, uid, 5, 5, w1) == 5
    assert await quotas.consume(db, uid, 1, 5, w1) is None
    assert await quotas.consume(db, uid, 5, 5, w2) == 5
    assert quotas.next_reset(late) == datetime(2024, 3, 10, tzinfo=timezone.utc)


def test_window_helpers_in_a_time_zone_and_other_windows() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    moment = datetime(2024, 6, 1, 22, 30, tzinfo=timezone.utc)  # 00:30 on June 2 in Berlin
    assert quotas.window_start(moment, tz=berlin) == "2024-06-01T22:00:00.000000+00:00"
    assert quotas.next_reset(moment, tz=berlin) == datetime(2024, 6, 2, 22, tzinfo=timezone.utc)
    assert quotas.window_start(moment, "hourly") == "2024-06-01T22:00:00.000000+00:00"
    assert quotas.next_reset(moment, "hourly") == datetime(2024, 6, 1, 23, tzinfo=timezone.utc)
    # 2024-06-01 is a Saturday: the week started on Monday May 27
    assert quotas.window_start(moment, "weekly") == "2024-05-27T00:00:00.000000+00:00"
    assert quotas.next_reset(moment, "weekly") == datetime(2024, 6, 3, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="window"):
        quotas.window_start(moment, "monthly")


async def test_override_limit(db: Database) -> None:
    uid = await _user(db)
    window = quotas.window_start()
    assert await quotas.get_override(db, uid) is None
    assert await quotas.effective_limit(db, uid, 5) == 5
    await quotas.set_override(db, uid, 50)
    await quotas.set_override(db, uid, 20)
    assert await quotas.get_override(db, uid) == 20
    limit = await quotas.effective_limit(db, uid, 5)
    assert limit == 20
    assert await quotas.consume(db, uid, 12, limit, window) == 12
    await quotas.set_override(db, uid, None)
    assert await quotas.effective_limit(db, uid, 5) == 5
    with pytest.raises(ValueError):
        await quotas.set_override(db, uid, -1)


_WORKER = """
import asyncio, sys
from storage import Database, quotas

async def main(path, user_id, window):
    async with Database.open(path) as db:
        results = await asyncio.gather(*(quotas.consume(db, user_id, 1, 100, window) for _ in range(100)))
    print(sum(r is not None for r in results))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


async def test_two_processes_share_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Database.open(path) as db:
        uid = await _user(db)
    window = quotas.window_start()
    root = Path(__file__).parents[1]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, str(path), str(uid), window,
            cwd=root, stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(out.decode()) for out, _ in outputs) == 100
    async with Database.open(path) as db:
        assert await quotas.used(db, uid, window) == 100


async def test_consume_with_override_uses_the_users_own_limit_in_the_same_statement(tmp_path) -> None:
    async with Database.open(tmp_path / "q.db") as db:
        a = (await users.get_or_create(db, "t", "a")).id
        b = (await users.get_or_create(db, "t", "b")).id
        window = quotas.window_start()
        await quotas.set_override(db, a, 3)
        assert await quotas.consume_with_override(db, a, 2, 10, window) == 2
        assert await quotas.consume_with_override(db, a, 2, 10, window) is None  # 4 > own limit 3
        assert await quotas.consume_with_override(db, a, 1, 10, window) == 3
        assert await quotas.consume_with_override(db, b, 10, 10, window) == 10  # no override: default
        assert await quotas.consume_with_override(db, b, 1, 10, window) is None
        await quotas.set_override(db, a, 0)
        assert await quotas.consume_with_override(db, a, 1, 10, window) is None
        with pytest.raises(ValueError):
            await quotas.consume_with_override(db, a, 0, 10, window)

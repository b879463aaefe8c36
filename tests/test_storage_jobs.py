"""Jobs: state machine, deliver-once, recovery, dedupe, history paging and search, sweeper, stats."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage import Database, images, jobs, users

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


async def _user(db: Database, name: str = "ada") -> int:
    return (await users.get_or_create(db, "telegram", name, name)).id


async def _job(db: Database, uid: int, prompt: str = "a fox", **kwargs: object) -> str:
    request = {"prompt": prompt, "seed": 7, "count": 1, "user_id": str(uid), "platform": "telegram"}
    return (await jobs.create(db, user_id=uid, request=request, model_id="sdxl", **kwargs)).id  # type: ignore[arg-type]


async def test_create_stores_the_canonical_request_and_target(db: Database) -> None:
    uid = await _user(db)
    request = {"prompt": "a fox", "width": 1024, "seed": 7, "negative_prompt": "blur"}
    job = await jobs.create(
        db, user_id=uid, request=request, model_id="sdxl", charged=2, quota_window="w",
        priority=1, target={"platform": "telegram", "chat_id": -100, "message_id": 5},
    )
    assert len(job.id) == 32 and job.status == "queued"
    again = await jobs.get(db, job.id)
    assert again == job
    assert again.request == request and again.prompt == "a fox"
    assert again.target == {"platform": "telegram", "chat_id": -100, "message_id": 5}
    assert (again.charged, again.quota_window, again.refunded, again.priority) == (2, "w", False, 1)
    assert await jobs.get(db, "missing") is None


async def test_happy_path_and_deliver_once(db: Database) -> None:
    job_id = await _job(db, await _user(db))
    assert await jobs.mark_running(db, job_id)
    assert await jobs.mark_done(db, job_id, checkpoint_hash="abc")
    assert await jobs.mark_delivered(db, job_id)
    assert not await jobs.mark_delivered(db, job_id)
    job = await jobs.get(db, job_id)
    assert job.status == "delivered" and job.checkpoint_hash == "abc"
    assert job.started_at and job.finished_at and job.delivered_at


async def test_concurrent_delivery_happens_once(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Database.open(path) as db, Database.open(path) as other:
        job_id = await _job(db, await _user(db))
        await jobs.mark_done(db, job_id)
        results = await asyncio.gather(
            *(jobs.mark_delivered(db if i % 2 else other, job_id) for i in range(10))
        )
        assert results.count(True) == 1


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), "delivered"),  # queued -> delivered
        (("done", "delivered"), "running"),  # delivered is final
        (("done", "delivered"), "failed"),
        (("done", "delivered"), "cancelled"),
        (("failed",), "running"),
        (("failed",), "done"),
        (("cancelled",), "running"),
        (("cancelled",), "done"),
        (("done",), "cancelled"),  # too late to cancel; fail it instead
        (("done",), "running"),
    ],
)
async def test_illegal_transitions_are_no_ops(db: Database, path: tuple[str, ...], illegal: str) -> None:
    job_id = await _job(db, await _user(db))
    for status in path:
        assert await _mark(db, job_id, status)
    before = await jobs.get(db, job_id)
    assert not await _mark(db, job_id, illegal)
    assert await jobs.get(db, job_id) == before


async def _mark(db: Database, job_id: str, status: str) -> bool:
    if status == "failed":
        return await jobs.mark_failed(db, job_id, "boom")
    return await getattr(jobs, f"mark_{status}")(db, job_id)


async def test_failed_keeps_the_error_and_missing_jobs_do_not_move(db: Database) -> None:
    job_id = await _job(db, await _user(db))
    await jobs.mark_running(db, job_id)
    assert await jobs.mark_running(db, job_id)  # running again after a restart is allowed
    assert await jobs.mark_failed(db, job_id, "CUDA out of memory")
    assert (await jobs.get(db, job_id)).error == "CUDA out of memory"
    assert not await jobs.mark_running(db, "missing")


async def test_recoverable(db: Database) -> None:
    uid = await _user(db)
    made: dict[str, str] = {}
    # created one minute apart, in this order; each then moved along its path
    paths = {
        "queued": (),
        "running": ("running",),
        "done_late": ("running", "done"),
        "delivered": ("done", "delivered"),
        "failed": ("failed",),
        "cancelled": ("cancelled",),
        "done_early": ("done",),
    }
    for minute, (name, path) in enumerate(paths.items()):
        made[name] = await _job(db, uid, now=T0 + timedelta(minutes=minute))
        for status in path:
            assert await _mark(db, made[name], status)
    await db.execute(  # finished order differs from created order
        "UPDATE jobs SET finished_at = ? WHERE id = ?", ("2000-01-01", made["done_early"])
    )
    recovery = await jobs.recoverable(db)
    assert [j.id for j in recovery.to_run] == [made["queued"], made["running"]]
    assert [j.id for j in recovery.to_deliver] == [made["done_early"], made["done_late"]]


async def test_find_by_request_key_needs_a_finished_job_with_images(db: Database) -> None:
    uid, other = await _user(db), await _user(db, "bob")
    job_id = await _job(db, uid)
    twin = await jobs.get(db, await _job(db, other))
    # the key ignores who asked, so another user's identical request matches
    key = (await jobs.get(db, job_id)).request_key
    assert twin.request_key == key
    assert await jobs.find_by_request_key(db, key) is None  # queued
    await jobs.mark_done(db, job_id)
    assert await jobs.find_by_request_key(db, key) is None  # no images yet
    await images.add_image(db, job_id, 0, 7, "ab/cd/x.png", "x", 64, 64, 10)
    assert (await jobs.find_by_request_key(db, key)).id == job_id
    assert jobs.request_key({"prompt": "a", "seed": 1}, "m") != jobs.request_key({"prompt": "a", "seed": 2}, "m")
    assert jobs.request_key({"prompt": "a"}, "m", "h1") != jobs.request_key({"prompt": "a"}, "m", "h2")


async def test_history_pages_newest_first(db: Database) -> None:
    uid, other = await _user(db), await _user(db, "bob")
    for i in range(25):
        await _job(db, uid, f"prompt {i}", now=T0 + timedelta(seconds=i))
    await _job(db, other, "prompt of bob")
    first = await jobs.history(db, uid, limit=10)
    assert first.total == 25 and first.has_more
    assert [j.prompt for j in first.jobs] == [f"prompt {i}" for i in range(24, 14, -1)]
    last = await jobs.history(db, uid, limit=10, offset=20)
    assert [j.prompt for j in last.jobs] == [f"prompt {i}" for i in range(4, -1, -1)]
    assert not last.has_more
    none = await jobs.history(db, uid, statuses=["delivered"])
    assert none.total == 0 and none.jobs == ()


async def test_history_search_treats_percent_and_underscore_literally(db: Database) -> None:
    uid = await _user(db)
    await _job(db, uid, "100% cotton_shirt")
    await _job(db, uid, "1000 cottonXshirt")
    await _job(db, uid, "a back\\slash")
    await _job(db, uid, "A RED FOX")
    assert [j.prompt for j in (await jobs.history(db, uid, search="100%")).jobs] == ["100% cotton_shirt"]
    assert [j.prompt for j in (await jobs.history(db, uid, search="n_s")).jobs] == ["100% cotton_shirt"]
    assert [j.prompt for j in (await jobs.history(db, uid, search="%")).jobs] == ["100% cotton_shirt"]
    assert (await jobs.history(db, uid, search="_")).total == 1
    assert [j.prompt for j in (await jobs.history(db, uid, search="k\\s")).jobs] == ["a back\\slash"]
    assert [j.prompt for j in (await jobs.history(db, uid, search="red fox")).jobs] == ["A RED FOX"]


async def test_stuck_jobs_for_the_sweeper(db: Database) -> None:
    uid = await _user(db)
    old_queued = await _job(db, uid, now=T0)
    old_running = await _job(db, uid, now=T0)
    await jobs.mark_running(db, old_running, now=T0 + timedelta(minutes=1))
    fresh_running = await _job(db, uid, now=T0)
    await jobs.mark_running(db, fresh_running, now=T0 + timedelta(minutes=29))
    old_done = await _job(db, uid, now=T0)
    await jobs.mark_done(db, old_done, now=T0 + timedelta(minutes=2))
    now = T0 + timedelta(minutes=30)
    found = await jobs.stuck(db, timedelta(minutes=10), now=now)
    assert [j.id for j in found] == [old_queued, old_running]
    undelivered = await jobs.stuck(db, timedelta(minutes=10), statuses=["done"], now=now)
    assert [j.id for j in undelivered] == [old_done]


async def test_target_refs_merge(db: Database) -> None:
    job_id = await _job(db, await _user(db), target={"platform": "discord", "channel_id": 1})
    merged = await jobs.update_target(db, job_id, {"message_id": 99})
    assert merged == {"platform": "discord", "channel_id": 1, "message_id": 99}
    with pytest.raises(LookupError):
        await jobs.update_target(db, "nope", {"a": 1})


async def test_stats(db: Database) -> None:
    uid = await _user(db)
    await users.set_blocked(db, await _user(db, "troll"))
    now = datetime.now(timezone.utc)
    yesterday = await _job(db, uid, now=now - timedelta(days=1))
    today = await _job(db, uid)
    await jobs.mark_done(db, today)
    await images.add_image(db, today, 0, 1, "p0", "s0", 64, 64, 1)
    await images.add_image(db, today, 1, 2, "p1", "s1", 64, 64, 1)
    await images.add_image(db, yesterday, 0, 1, "p2", "s2", 64, 64, 1, now=now - timedelta(days=1))
    stats = await jobs.stats(db, now=now)
    assert stats["jobs"] == {"queued": 1, "running": 0, "done": 1, "delivered": 0, "failed": 0,
                             "cancelled": 0}
    assert stats["images_today"] == 2 and stats["images"] == 3
    assert stats["users"] == 2 and stats["blocked_users"] == 1
    assert await jobs.active_count(db, uid) == 1

"""job_messages: one indexed map from sent messages to jobs, and the migration of older refs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from storage import Database, jobs, messages, privacy, quotas, users
from storage.db import MIGRATIONS_DIR


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


async def _job(db: Database, platform: str = "telegram", user: str = "1", **kwargs: object) -> str:
    uid = (await users.get_or_create(db, platform, user)).id
    job = await jobs.create(db, user_id=uid, request={"prompt": "a fox", "seed": 1}, model_id="m", **kwargs)
    return job.id


async def _old_job(db: Database, platform: str, target: dict) -> str:
    """A job row as schema version 2 wrote it (no later columns)."""
    uid = (await users.get_or_create(db, platform, "1")).id
    job_id = f"old{await db.fetchval('SELECT count(*) FROM jobs')}"
    await db.execute(
        "INSERT INTO jobs (id, user_id, request, request_key, model_id, target, created_at)"
        " VALUES (?, ?, '{}', 'k', 'm', ?, '2026-01-01T00:00:00Z')", (job_id, uid, json.dumps(target)))
    return job_id


async def test_remember_and_find_by_platform_chat_and_message(db: Database) -> None:
    a, b = await _job(db), await _job(db)
    await messages.remember(db, "telegram", -100, 7, a, 0)
    await messages.remember(db, "telegram", -100, 8, a, None)
    await messages.remember(db, "telegram", 555, 7, b, 1)  # same message id in another chat
    await messages.remember(db, "discord", None, 7, b)
    assert await messages.find(db, "telegram", -100, 7) == (a, 0)
    assert await messages.find(db, "telegram", "-100", "8") == (a, None)
    assert await messages.find(db, "telegram", 555, 7) == (b, 1)
    assert await messages.find(db, "discord", None, 7) == (b, None)
    assert await messages.find(db, "discord", 1, 7) is None
    assert await messages.find(db, "telegram", -100, 9) is None
    assert [m[2] for m in await messages.for_job(db, a)] == ["7", "8"]


async def test_remembering_a_message_again_moves_it_to_the_new_job(db: Database) -> None:
    a, b = await _job(db), await _job(db)
    await messages.remember(db, "telegram", 1, 7, a, 0)
    await messages.remember(db, "telegram", 1, 7, b, 2)  # an edited placeholder now shows b
    assert await messages.find(db, "telegram", 1, 7) == (b, 2)


async def test_negative_index_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="image_index"):
        await messages.remember(db, "telegram", 1, 7, await _job(db), -1)


async def test_rows_go_with_their_job(db: Database) -> None:
    a = await _job(db, user="9")
    await messages.remember(db, "telegram", 1, 7, a)
    uid = (await users.get_by_platform(db, "telegram", "9")).id
    await privacy.forget(db, uid)
    assert await messages.find(db, "telegram", 1, 7) is None


async def test_lookup_uses_the_primary_key_not_a_scan(db: Database) -> None:
    plan = await db.fetchall(
        "EXPLAIN QUERY PLAN SELECT job_id, image_index FROM job_messages"
        " WHERE platform = ? AND chat_id = ? AND message_id = ?", ("telegram", "1", "7"))
    detail = " ".join(row["detail"] for row in plan)
    assert "SEARCH" in detail and "SCAN" not in detail


async def test_migration_moves_refs_of_an_existing_database(tmp_path: Path) -> None:
    old = tmp_path / "old-migrations"
    old.mkdir()
    for name in ("0001_init.sql", "0002_moderation.sql"):
        shutil.copy(MIGRATIONS_DIR / name, old / name)
    path = tmp_path / "bot.db"
    async with Database.open(path, migrations_dir=old) as db:
        assert await db.user_version() == 2
        discord_job = await _old_job(db, "discord", {
            "platform": "discord", "channel_id": 5, "messages": {"1001": -1, "1002": 3}})
        tg_job = await _old_job(db, "telegram", {
            "chat_id": -42, "tg77": -42, "tgi77": 0, "tg78": -42, "tgi78": -1, "tg79": -42})
        await _old_job(db, "telegram", {"chat_id": 1, "status_id": 5})
    async with Database.open(path) as db:
        assert await db.user_version() >= 3
        assert await messages.find(db, "discord", None, 1001) == (discord_job, None)
        assert await messages.find(db, "discord", "", "1002") == (discord_job, 3)
        assert await messages.find(db, "telegram", -42, 77) == (tg_job, 0)
        assert await messages.find(db, "telegram", -42, 78) == (tg_job, None)
        assert await messages.find(db, "telegram", -42, 79) == (tg_job, None)  # no index: all
        count = await db.fetchval("SELECT count(*) FROM job_messages")
        assert count == 5
        target = json.loads(await db.fetchval("SELECT target FROM jobs WHERE id = ?", (tg_job,)))
        assert target["chat_id"] == -42  # the job's own refs are untouched


async def test_forget_keeps_block_limit_and_current_window_but_deletes_content(db: Database) -> None:
    user = await users.get_or_create(db, "telegram", "9", "eve")
    await users.set_blocked(db, user.id, True)
    await users.update_settings(db, user.id, {"style": "anime"})
    await quotas.set_override(db, user.id, 3)
    old, current = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    await quotas.consume(db, user.id, 2, 10, old)
    await quotas.consume(db, user.id, 3, 10, current)
    await _job(db, user="9")
    await privacy.forget(db, user.id, keep_quota_from=current)
    after = await users.get_by_platform(db, "telegram", "9")
    assert after is not None and after.id == user.id
    assert after.blocked and after.settings == {} and after.display_name == ""
    assert await quotas.used(db, user.id, current) == 3
    assert await quotas.used(db, user.id, old) == 0
    assert await quotas.effective_limit(db, user.id, 50) == 3
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE user_id = ?", (user.id,)) == 0

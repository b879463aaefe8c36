"""Users (get-or-create, flags, settings merge), ratings and model versions."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage import Database, images, jobs, model_versions, ratings, users


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


async def test_get_or_create_is_idempotent_and_updates_the_name(db: Database) -> None:
    first = await users.get_or_create(db, "discord", 1234, "ada")
    again = await users.get_or_create(db, "discord", "1234", "Ada L.")
    same = await users.get_or_create(db, "discord", "1234")  # no name: keep the known one
    assert first.id == again.id == same.id
    assert (again.display_name, same.display_name) == ("Ada L.", "Ada L.")
    other = await users.get_or_create(db, "telegram", "1234", "ada")
    assert other.id != first.id
    assert (first.blocked, first.dm_closed, first.settings) == (False, False, {})
    assert await users.get_by_platform(db, "telegram", 1234) == other
    assert await users.get_by_platform(db, "telegram", 9) is None


async def test_concurrent_first_sight_creates_one_user(db: Database) -> None:
    found = await asyncio.gather(*(users.get_or_create(db, "cli", "x", "x") for _ in range(20)))
    assert len({u.id for u in found}) == 1
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_flags(db: Database) -> None:
    uid = (await users.get_or_create(db, "discord", "1")).id
    assert await users.set_blocked(db, uid)
    assert await users.set_dm_closed(db, uid)
    user = await users.get(db, uid)
    assert user.blocked and user.dm_closed
    await users.set_blocked(db, uid, False)
    await users.set_dm_closed(db, uid, False)
    user = await users.get(db, uid)
    assert not user.blocked and not user.dm_closed
    assert not await users.set_blocked(db, 999)
    assert await users.get(db, 999) is None


async def test_settings_merge(db: Database) -> None:
    uid = (await users.get_or_create(db, "discord", "1")).id
    assert await users.update_settings(db, uid, {"aspect": "16:9", "style": {"name": "anime"}}) == {
        "aspect": "16:9", "style": {"name": "anime"}}
    merged = await users.update_settings(db, uid, {"steps": 8, "style": {"strength": 2}})
    assert merged == {"aspect": "16:9", "steps": 8, "style": {"name": "anime", "strength": 2}}
    assert await users.update_settings(db, uid, {"aspect": None}) == {
        "steps": 8, "style": {"name": "anime", "strength": 2}}
    assert await users.get_settings(db, uid) == {"steps": 8, "style": {"name": "anime", "strength": 2}}
    with pytest.raises(LookupError):
        await users.update_settings(db, 999, {"a": 1})


async def _image(db: Database) -> tuple[int, int, int]:
    owner = (await users.get_or_create(db, "discord", "owner")).id
    rater = (await users.get_or_create(db, "discord", "rater")).id
    job = await jobs.create(db, user_id=owner, request={"prompt": "x"}, model_id="m")
    image = await images.add_image(db, job.id, 0, 1, "a/b/c.png", "c", 64, 64, 1)
    return image.id, owner, rater


async def test_rating_upsert_update_delete(db: Database) -> None:
    image_id, owner, rater = await _image(db)
    assert await ratings.average(db, image_id) == (None, 0)
    first = await ratings.upsert(db, image_id, rater, 3, "reaction")
    assert (first.stars, first.source, first.comment) == (3, "reaction", None)
    updated = await ratings.upsert(db, image_id, rater, 5, "button", comment="lovely")
    assert (updated.stars, updated.source, updated.comment) == (5, "button", "lovely")
    kept_comment = await ratings.upsert(db, image_id, rater, 4, "command")
    assert kept_comment.comment == "lovely"
    await ratings.upsert(db, image_id, owner, 1, "button")
    assert await ratings.average(db, image_id) == (2.5, 2)
    assert len(await ratings.for_image(db, image_id)) == 2
    # a removed reaction does not erase a rating given another way
    assert not await ratings.delete(db, image_id, rater, source="reaction")
    assert await ratings.delete(db, image_id, rater)
    assert await ratings.get(db, image_id, rater) is None
    assert not await ratings.delete(db, image_id, rater)
    assert await ratings.average(db, image_id) == (1.0, 1)


async def test_rating_validation(db: Database) -> None:
    image_id, _, rater = await _image(db)
    for stars in (0, 6, True, 2.5):
        with pytest.raises(ValueError, match="stars"):
            await ratings.upsert(db, image_id, rater, stars, "button")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source"):
        await ratings.upsert(db, image_id, rater, 3, "telepathy")
    with pytest.raises(sqlite3.IntegrityError):
        await ratings.upsert(db, 999, rater, 3, "button")


async def test_model_versions(db: Database) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    await model_versions.record_seen(db, "sdxl-lightning", "aaa", now=t0)
    seen = await model_versions.record_seen(db, "sdxl-lightning", "aaa", now=t0 + timedelta(days=1))
    assert seen.first_seen.startswith("2024-01-01") and seen.last_seen.startswith("2024-01-02")
    await model_versions.record_seen(db, "sdxl-lightning", "bbb", now=t0 + timedelta(days=2))
    assert [v.checkpoint_hash for v in await model_versions.all_versions(db)] == ["bbb", "aaa"]

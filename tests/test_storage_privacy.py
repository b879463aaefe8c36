"""forget() removes one user's data and returns only files no one else needs; export() contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import Database, ImageStore, export, forget, images, jobs, quotas, ratings, users


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


async def _world(db: Database, store: ImageStore) -> dict[str, object]:
    ada = (await users.get_or_create(db, "discord", "1", "ada")).id
    bob = (await users.get_or_create(db, "telegram", "2", "bob")).id
    shared, shared_sha = store.put(b"identical request, identical image")
    own, own_sha = store.put(b"only ada's image")
    window = quotas.window_start()
    await quotas.consume(db, ada, 2, 10, window)
    await quotas.set_override(db, ada, 20)
    ada_job = await jobs.create(
        db, user_id=ada, request={"prompt": "a fox", "seed": 7}, model_id="m", charged=2,
        quota_window=window,
    )
    await jobs.mark_done(db, ada_job.id)
    a0 = await images.add_image(db, ada_job.id, 0, 7, shared, shared_sha, 64, 64, 10)
    a1 = await images.add_image(db, ada_job.id, 1, 8, own, own_sha, 64, 64, 10)
    bob_job = await jobs.create(db, user_id=bob, request={"prompt": "a fox", "seed": 7}, model_id="m")
    b0 = await images.add_image(db, bob_job.id, 0, 7, shared, shared_sha, 64, 64, 10)
    await ratings.upsert(db, b0.id, ada, 5, "reaction")  # ada rates bob's image
    await ratings.upsert(db, a1.id, bob, 2, "button")  # bob rates ada's image
    await ratings.upsert(db, a0.id, ada, 4, "button", comment="nice")
    return {"ada": ada, "bob": bob, "shared": shared, "own": own, "ada_job": ada_job.id,
            "bob_job": bob_job.id, "b0": b0.id, "window": window}


async def test_forget_removes_what_the_user_made_and_keeps_shared_files(db: Database, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    w = await _world(db, store)
    orphans = await forget(db, w["ada"])
    assert orphans == [w["own"]]
    store.delete(orphans)
    assert store.exists(w["shared"]) and not store.exists(w["own"])
    ada = w["ada"]
    for sql in (
        "SELECT count(*) FROM jobs WHERE user_id = ?",
        "SELECT count(*) FROM ratings WHERE user_id = ?",
        "SELECT count(*) FROM quota_usage WHERE user_id = ?",  # no window kept: none asked for
    ):
        assert await db.fetchval(sql, (ada,)) == 0, sql
    # what protects others stays with the platform identity: the row (block) and the own limit
    kept = await users.get(db, ada)
    assert kept is not None and kept.display_name == "" and kept.settings == {}
    assert await db.fetchval("SELECT daily_limit FROM quota_overrides WHERE user_id = ?", (ada,)) == 20
    assert await db.fetchval("SELECT count(*) FROM images") == 1  # bob's
    assert await db.fetchval("SELECT count(*) FROM ratings") == 0  # bob's rating was on ada's image
    assert (await jobs.get(db, w["bob_job"])) is not None
    assert await users.get(db, w["bob"]) is not None
    assert await forget(db, ada) == []  # forgetting twice is harmless


async def test_export_contents(db: Database, tmp_path: Path) -> None:
    w = await _world(db, ImageStore(tmp_path / "images"))
    data = await export(db, w["ada"])
    json.dumps(data)  # JSON-ready
    assert data["user"]["platform"] == "discord" and data["user"]["display_name"] == "ada"
    assert [j["id"] for j in data["jobs"]] == [w["ada_job"]]
    job = data["jobs"][0]
    assert job["request"] == {"prompt": "a fox", "seed": 7} and job["status"] == "done"
    assert [(i["idx"], i["seed"], i["path"]) for i in job["images"]] == [
        (0, 7, w["shared"]), (1, 8, w["own"])]
    assert all(len(i["sha256"]) == 64 for i in job["images"])
    assert sorted((r["stars"], r["source"], r["job_id"]) for r in data["ratings"]) == [
        (4, "button", w["ada_job"]), (5, "reaction", w["bob_job"])]
    assert data["quota"] == {"usage": [{"window_start": w["window"], "used": 2}],
                             "daily_limit_override": 20}
    bob = await export(db, w["bob"])
    assert [r["stars"] for r in bob["ratings"]] == [2]
    with pytest.raises(LookupError):
        await export(db, 999)

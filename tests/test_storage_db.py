"""Database: connection settings, migrations by user_version, transactions, backup, layering."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage import Database, MigrationError, users
from storage.db import MIGRATIONS_DIR, find_migrations, split_statements


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


def _latest() -> int:
    return find_migrations(MIGRATIONS_DIR)[-1][0]


async def test_connection_settings(db: Database) -> None:
    assert await db.fetchval("PRAGMA journal_mode") == "wal"
    assert await db.fetchval("PRAGMA foreign_keys") == 1
    # statements run on the loop's thread and never wait there; a locked file waits on the
    # database's thread, up to busy_timeout_ms (test_a_locked_database_waits_off_the_loop)
    assert await db.fetchval("PRAGMA busy_timeout") == 0 and db.busy_timeout_ms == 5000
    assert await db.fetchval("PRAGMA synchronous") == 1  # NORMAL
    assert await db.user_version() == _latest()


async def test_schema_has_the_tables(db: Database) -> None:
    names = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "quota_usage", "quota_overrides", "jobs", "images", "ratings",
            "model_versions"} <= names
    columns = {r["name"] for r in await db.fetchall("PRAGMA table_xinfo(jobs)")}
    assert {"quota_window", "request_key", "refunded", "charged", "target", "prompt"} <= columns


async def test_await_form_and_reopen_does_not_reapply(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    db = await Database.open(path)
    await users.get_or_create(db, "cli", "1", "ada")
    await db.close()
    # Re-applying 0001 would fail on CREATE TABLE users; reopening must be a no-op.
    async with Database.open(path) as again:
        assert await again.user_version() == _latest()
        assert await again.fetchval("SELECT count(*) FROM users") == 1


async def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    opened = await asyncio.gather(*(Database.open(path) for _ in range(4)))
    try:
        assert {await db.user_version() for db in opened} == {_latest()}
    finally:
        for db in opened:
            await db.close()


async def test_database_at_version_1_upgrades(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_init.sql", migrations / "0001_init.sql")
    path = tmp_path / "bot.db"
    async with Database.open(path, migrations_dir=migrations) as db:
        assert await db.user_version() == 1
        await users.get_or_create(db, "cli", "1", "ada")

    (migrations / "0002_nickname.sql").write_text(
        "-- a second migration with a trigger; semicolons inside BEGIN…END stay together\n"
        "ALTER TABLE users ADD COLUMN nickname TEXT;\n"
        "CREATE TABLE audit (user_id INTEGER, what TEXT);\n"
        "CREATE TRIGGER users_audit AFTER UPDATE OF nickname ON users BEGIN\n"
        "  INSERT INTO audit VALUES (new.id, 'nick; changed');\n"
        "END;\n"
    )
    async with Database.open(path, migrations_dir=migrations) as db:
        assert await db.user_version() == 2
        await db.execute("UPDATE users SET nickname = 'a' WHERE id = 1")
        assert await db.fetchval("SELECT what FROM audit") == "nick; changed"
        assert await db.fetchval("SELECT display_name FROM users") == "ada"


async def test_failed_migration_rolls_back_and_keeps_version(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_init.sql", migrations / "0001_init.sql")
    (migrations / "0002_broken.sql").write_text(
        "CREATE TABLE half (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    path = tmp_path / "bot.db"
    with pytest.raises(MigrationError, match="0002_broken"):
        await Database.open(path, migrations_dir=migrations)
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA user_version").fetchone()[0] == 1
        assert plain.execute("SELECT count(*) FROM sqlite_master WHERE name='half'").fetchone()[0] == 0


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as plain:
        plain.execute("PRAGMA user_version = 99")
    with pytest.raises(MigrationError, match="newer"):
        await Database.open(path)


def test_badly_numbered_migrations_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="1..N"):
        find_migrations(tmp_path)


def test_split_statements() -> None:
    script = "-- c\nCREATE TABLE a (x);\nINSERT INTO a VALUES ('x;y'); INSERT INTO a VALUES (2);\n-- end\n"
    assert split_statements(script) == [
        "-- c\nCREATE TABLE a (x);",
        "INSERT INTO a VALUES ('x;y');",
        "INSERT INTO a VALUES (2);",
    ]


async def test_transaction_commits_and_rolls_back(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO model_versions VALUES ('m', 'a', 't', 't')")
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO model_versions VALUES ('m', 'b', 't', 't')")
            raise RuntimeError("boom")
    assert [r[0] for r in await db.fetchall("SELECT checkpoint_hash FROM model_versions")] == ["a"]


async def test_other_tasks_wait_for_an_open_transaction(db: Database) -> None:
    seen: list[int] = []

    async def reader() -> None:
        seen.append(await db.fetchval("SELECT count(*) FROM model_versions"))

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO model_versions VALUES ('m', 'a', 't', 't')")
        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        assert not seen  # blocked on the lock, not reading uncommitted rows
    await task
    assert seen == [1]


async def test_using_db_inside_its_transaction_raises(db: Database) -> None:
    async with db.transaction():
        with pytest.raises(RuntimeError, match="handle"):
            await db.fetchval("SELECT 1")


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await db.execute(
            "INSERT INTO jobs (id, user_id, request, request_key, model_id, created_at)"
            " VALUES ('j', 999, '{}', 'k', 'm', 't')"
        )


async def test_backup_is_a_readable_copy(db: Database, tmp_path: Path) -> None:
    for i in range(5):
        await users.get_or_create(db, "telegram", str(i), f"user {i}")
    dest = await db.backup(tmp_path / "backups" / "bot-2024-01-01.db")
    assert dest.is_file()
    assert not (tmp_path / "backups" / "bot-2024-01-01.db-wal").exists()
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [r[0] for r in copy.execute("SELECT display_name FROM users ORDER BY id")]
        assert names == [f"user {i}" for i in range(5)]
        assert copy.execute("PRAGMA user_version").fetchone()[0] == _latest()
    async with Database.open(dest) as reopened:
        assert await reopened.fetchval("SELECT count(*) FROM users") == 5


def test_storage_imports_no_upper_layer() -> None:
    code = (
        "import sys, storage\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('generation', 'bot', 'torch', 'discord', 'telegram', 'diffusers')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


async def test_a_locked_database_waits_off_the_loop(tmp_path: Path) -> None:
    """Another process holds the write lock: a write waits for it (up to busy_timeout) on the
    database's thread while the event loop goes on, then succeeds; reads are not held up."""
    path = tmp_path / "bot.db"
    async with Database.open(path, busy_timeout_ms=5000) as db:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO model_versions VALUES ('m', 'other', 't', 't')")
        write = asyncio.create_task(db.execute("INSERT INTO model_versions VALUES ('m', 'mine', 't', 't')"))
        ticks = 0
        for _ in range(20):  # the loop runs while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done() and ticks == 20
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(write, 5)
        rows = await db.fetchall("SELECT checkpoint_hash FROM model_versions ORDER BY checkpoint_hash")
        assert [r[0] for r in rows] == ["mine", "other"]
        async with db.transaction() as tx:  # and back on the loop's thread afterwards
            await tx.execute("INSERT INTO model_versions VALUES ('m', 'third', 't', 't')")
        assert await db.fetchval("SELECT count(*) FROM model_versions") == 3


async def test_a_lock_held_past_busy_timeout_fails_the_write(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Database.open(path, busy_timeout_ms=200) as db:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO model_versions VALUES ('m', 'x', 't', 't')")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await db.fetchval("SELECT count(*) FROM model_versions") == 0


async def test_threaded_mode_gives_the_same_results(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "bot.db", threaded=True) as db:
        assert db.threaded and await db.fetchval("PRAGMA busy_timeout") == 5000
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO model_versions VALUES ('m', 'a', 't', 't')")
        with pytest.raises(RuntimeError, match="boom"):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO model_versions VALUES ('m', 'b', 't', 't')")
                raise RuntimeError("boom")
        assert [r[0] for r in await db.fetchall("SELECT checkpoint_hash FROM model_versions")] == ["a"]

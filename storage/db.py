"""One aiosqlite connection per process: settings, migrations, transactions and backups.

Every statement goes through :class:`Database` (one statement, autocommit) or through the
:class:`Transaction` handle of ``async with db.transaction() as tx`` (``BEGIN IMMEDIATE`` …
``COMMIT``/``ROLLBACK``). An asyncio lock keeps other tasks' statements out of an open
transaction; inside the block use ``tx``, never ``db`` (that raises instead of deadlocking).
Other processes on the same file wait up to ``busy_timeout`` for the write lock.

Repository functions take an :data:`Executor` (a Database or a Transaction), so several of
them can share one transaction, e.g. consuming quota and writing the job row together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generator, Protocol, Union

import aiosqlite

__all__ = [
    "MIGRATIONS_DIR",
    "Database",
    "Executor",
    "MigrationError",
    "Params",
    "Transaction",
    "split_statements",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_\-]+\.sql$")

Params = Union[Sequence[Any], Mapping[str, Any]]


class MigrationError(RuntimeError):
    """The database schema cannot be brought to this code's version."""


class Executor(Protocol):
    """What repository functions need: run one statement and read its rows."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None: ...

    async def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any: ...

    async def execute(self, sql: str, params: Params = ()) -> list[sqlite3.Row]: ...


class _Queries:
    """fetchall/fetchone/fetchval/execute on top of one ``_rows`` method."""

    async def _rows(self, sql: str, params: Params) -> list[sqlite3.Row]:
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """All rows of one statement (use ``RETURNING`` to read back writes)."""
        return await self._rows(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row, or None."""
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any:
        """The first column of the first row, or ``default``."""
        rows = await self._rows(sql, params)
        return rows[0][0] if rows else default

    async def execute(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one statement; returns its rows (empty unless it has ``RETURNING``)."""
        return await self._rows(sql, params)


class Transaction(_Queries):
    """The handle of an open ``BEGIN IMMEDIATE`` transaction; valid inside its block only."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn: aiosqlite.Connection | None = conn

    async def _rows(self, sql: str, params: Params) -> list[sqlite3.Row]:
        if self._conn is None:
            raise RuntimeError("this transaction is finished")
        return list(await self._conn.execute_fetchall(sql, params))


class Database(_Queries):
    """An open SQLite database file with the schema migrated to the latest version."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    # -- lifetime ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = 5000,
        migrations_dir: str | os.PathLike[str] | None = None,
    ) -> _Opening:
        """Open (creating and migrating) ``path``; await it or use it with ``async with``."""
        return _Opening(cls._open(path, busy_timeout_ms, migrations_dir))

    @classmethod
    async def _open(
        cls,
        path: str | os.PathLike[str],
        busy_timeout_ms: int,
        migrations_dir: str | os.PathLike[str] | None,
    ) -> Database:
        location = Path(path)
        if str(path) != ":memory:":
            location.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = await _enable_wal(conn, busy_timeout_ms / 1000)
            await conn.execute_fetchall("PRAGMA synchronous = NORMAL")
            await conn.execute_fetchall("PRAGMA foreign_keys = ON")
            db = cls(conn, location)
            await db._migrate(Path(migrations_dir) if migrations_dir else MIGRATIONS_DIR)
        except BaseException:
            await conn.close()
            raise
        log.debug("opened %s (journal_mode=%s)", location, mode)
        return db

    async def close(self) -> None:
        """Close the connection (waits for a running transaction to finish)."""
        async with self._lock:
            await self._conn.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- statements and transactions ---------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[aiosqlite.Connection]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            raise RuntimeError("inside db.transaction() use its handle (tx), not the Database")
        async with self._lock:
            self._owner = task
            try:
                yield self._conn
            finally:
                self._owner = None

    async def _rows(self, sql: str, params: Params) -> list[sqlite3.Row]:
        async with self._exclusive() as conn:
            return list(await conn.execute_fetchall(sql, params))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` when the block raises."""
        async with self._exclusive() as conn:
            tx = Transaction(conn)
            try:
                await conn.execute_fetchall("BEGIN IMMEDIATE")
                yield tx
                await conn.commit()
            except BaseException:
                # Queued behind anything still running on the connection's thread, so it
                # also undoes a BEGIN whose await was cancelled.
                await asyncio.shield(conn.rollback())
                raise
            finally:
                tx._conn = None

    async def user_version(self) -> int:
        """The schema version (``PRAGMA user_version``)."""
        return int(await self.fetchval("PRAGMA user_version", default=0))

    # -- migrations --------------------------------------------------------------------------

    async def _migrate(self, directory: Path) -> None:
        migrations = find_migrations(directory)
        latest = migrations[-1][0] if migrations else 0
        current = await self.user_version()
        if current > latest:
            raise MigrationError(
                f"{self.path} is at schema version {current}, newer than this code ({latest})"
            )
        for number, path in migrations:
            if number <= current:
                continue
            statements = split_statements(path.read_text(encoding="utf-8"))
            try:
                async with self.transaction() as tx:
                    # Another process may have migrated while we waited for the lock.
                    if int(await tx.fetchval("PRAGMA user_version", default=0)) >= number:
                        continue
                    for statement in statements:
                        await tx.execute(statement)
                    await tx.execute(f"PRAGMA user_version = {number}")
            except sqlite3.Error as exc:
                raise MigrationError(f"migration {path.name} failed: {exc}") from exc
            log.info("applied migration %s to %s", path.name, self.path)

    # -- backup ------------------------------------------------------------------------------

    async def backup(self, dest_path: str | os.PathLike[str]) -> Path:
        """Copy the live database to ``dest_path`` (sqlite3 online backup), atomically."""
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        target = sqlite3.connect(partial, check_same_thread=False)
        try:
            async with self._exclusive() as conn:
                await conn.backup(target)
            # A self-contained file: no -wal/-shm companions needed to read it.
            mode = target.execute("PRAGMA journal_mode = DELETE").fetchall()[0][0]
            if mode != "delete":
                raise sqlite3.OperationalError(f"backup {dest} stayed in journal mode {mode}")
        finally:
            target.close()
        os.replace(partial, dest)
        log.info("backed up %s to %s", self.path, dest)
        return dest


class _Opening:
    """``await Database.open(p)`` or ``async with Database.open(p) as db``."""

    def __init__(self, opening: Any) -> None:
        self._opening = opening
        self._db: Database | None = None

    def __await__(self) -> Generator[Any, None, Database]:
        return self._opening.__await__()

    async def __aenter__(self) -> Database:
        self._db = await self._opening
        return self._db

    async def __aexit__(self, *exc_info: object) -> None:
        if self._db is not None:
            await self._db.close()


async def _enable_wal(conn: aiosqlite.Connection, timeout: float) -> str:
    """Switch to WAL; retried, since the switch can fail with 'locked' without waiting."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            return str(list(rows)[0][0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)


def find_migrations(directory: Path) -> list[tuple[int, Path]]:
    """``(number, path)`` of ``NNNN_name.sql`` files, checked to be numbered 1, 2, … N."""
    found: list[tuple[int, Path]] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append((int(match.group(1)), path))
    numbers = [number for number, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise MigrationError(f"migrations in {directory} must be numbered 1..N, got {numbers}")
    return found


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (triggers' ``BEGIN … END;`` included)."""
    statements: list[str] = []
    start = 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : end + 1]):
            statement = script[start : end + 1].strip()
            if _has_code(statement):
                statements.append(statement)
            start = end + 1
    rest = script[start:].strip()
    if _has_code(rest):
        statements.append(rest)
    return statements


def _has_code(sql: str) -> bool:
    lines = (line.split("--", 1)[0].strip() for line in sql.splitlines())
    return any(line and line != ";" for line in lines)

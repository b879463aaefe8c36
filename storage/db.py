"""One SQLite connection per process: settings, migrations, transactions and backups.

Every statement goes through :class:`Database` (one statement, autocommit) or through the
:class:`Transaction` handle of ``async with db.transaction() as tx`` (``BEGIN IMMEDIATE`` …
``COMMIT``/``ROLLBACK``). An asyncio lock keeps other tasks' statements out of an open
transaction; inside the block use ``tx``, never ``db`` (that raises instead of deadlocking).

**Where statements run.** On the event loop's own thread: a statement here takes tens of
microseconds (WAL, ``synchronous = NORMAL``: a commit writes the log without an fsync), while
handing each one to a connection thread and back (aiosqlite's way, used before issue #29) cost
two thread switches, which on a busy machine took longer than the statement and left the loop
waiting half the time (``bench/service_bench.py``: ``docs/benchmarks.md``). The connection's
own busy timeout is 0, so a statement never blocks the loop waiting for another process's
write lock: one that finds the database locked (``SQLITE_BUSY``) is run again on the
database's thread with ``busy_timeout`` (other processes, e.g. an admin command, wait up to it
for the write lock as before), and the loop goes on meanwhile. ``threaded=True`` runs every
statement on that thread (the old cost, for the benchmark's before/after); the online backup
always runs there.

Repository functions take an :data:`Executor` (a Database or a Transaction), so several of
them can share one transaction, e.g. consuming quota and writing the job row together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generator, Protocol, TypeVar, Union

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
T = TypeVar("T")


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

    def __init__(self, db: Database) -> None:
        self._db: Database | None = db

    async def _rows(self, sql: str, params: Params) -> list[sqlite3.Row]:
        if self._db is None:
            raise RuntimeError("this transaction is finished")
        return await self._db._call(self._db._fetch, sql, params)


class Database(_Queries):
    """An open SQLite database file with the schema migrated to the latest version."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, busy_timeout_ms: int = 5000,
                 threaded: bool = False) -> None:
        self._conn = conn
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.threaded = threaded
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{path.name}")
        self._in_thread: asyncio.Future[Any] | None = None  # a call on the thread (maybe abandoned)

    # -- where a statement runs ----------------------------------------------------------------

    def _fetch(self, sql: str, params: Params) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the loop's thread; on the database's thread if the file is locked."""
        if not self.threaded and (self._in_thread is None or self._in_thread.done()):
            try:
                return function(*args)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
        return await self._on_thread(function, *args)

    async def _on_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the database's thread, waiting up to ``busy_timeout`` for locks."""
        def waiting() -> T:
            if self.threaded:
                return function(*args)
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            try:
                return function(*args)
            finally:
                self._conn.execute("PRAGMA busy_timeout = 0")

        future = asyncio.get_running_loop().run_in_executor(self._thread, waiting)
        self._in_thread = future
        return await future

    # -- lifetime ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = 5000,
        migrations_dir: str | os.PathLike[str] | None = None,
        threaded: bool = False,
    ) -> _Opening:
        """Open (creating and migrating) ``path``; await it or use it with ``async with``.

        ``threaded``: every statement on the database's thread (see the module docstring).
        """
        return _Opening(cls._open(path, busy_timeout_ms, migrations_dir, threaded))

    @classmethod
    async def _open(
        cls,
        path: str | os.PathLike[str],
        busy_timeout_ms: int,
        migrations_dir: str | os.PathLike[str] | None,
        threaded: bool = False,
    ) -> Database:
        location = Path(path)
        if str(path) != ":memory:":
            location.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=busy_timeout_ms / 1000 if threaded else 0)
        db = cls(conn, location, busy_timeout_ms=busy_timeout_ms, threaded=threaded)
        try:
            conn.row_factory = sqlite3.Row
            mode = await _enable_wal(db, busy_timeout_ms / 1000)
            await db._call(conn.execute, "PRAGMA synchronous = NORMAL")
            await db._call(conn.execute, "PRAGMA foreign_keys = ON")
            await db._migrate(Path(migrations_dir) if migrations_dir else MIGRATIONS_DIR)
        except BaseException:
            await db.close()
            raise
        log.debug("opened %s (journal_mode=%s)", location, mode)
        return db

    async def close(self) -> None:
        """Close the connection (waits for a running transaction to finish)."""
        async with self._lock:
            if self._in_thread is not None:
                await asyncio.gather(self._in_thread, return_exceptions=True)
            self._conn.close()
            self._thread.shutdown(wait=True)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- statements and transactions ---------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            raise RuntimeError("inside db.transaction() use its handle (tx), not the Database")
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None

    async def _rows(self, sql: str, params: Params) -> list[sqlite3.Row]:
        async with self._exclusive():
            return await self._call(self._fetch, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` when the block raises."""
        async with self._exclusive():
            tx = Transaction(self)
            try:
                await self._call(self._conn.execute, "BEGIN IMMEDIATE")
                yield tx
                await self._call(self._conn.execute, "COMMIT")
            except BaseException:
                # after anything still running on the database's thread (e.g. a BEGIN whose
                # await was cancelled), so it is undone too
                await asyncio.shield(self._rollback())
                raise
            finally:
                tx._db = None

    async def _rollback(self) -> None:
        def rollback() -> None:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

        if self.threaded or (self._in_thread is not None and not self._in_thread.done()):
            await self._on_thread(rollback)
        else:
            rollback()

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
            async with self._exclusive():
                await self._on_thread(self._conn.backup, target)
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


async def _enable_wal(db: Database, timeout: float) -> str:
    """Switch to WAL; retried, since the switch can fail with 'locked' without waiting."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            rows = await db._call(db._fetch, "PRAGMA journal_mode = WAL", ())
            return str(rows[0][0])
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

"""Stop a running bot mid-batch (kill -9, or SIGTERM), start it again: every job delivered once,
charged once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = ["/imagine a fox --seed 1 --n 2", "/imagine a cat --seed 2", "/imagine an owl --seed 3 --ar 16:9"]


def start(config: Path, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "slow_bot.py"), str(delay), "run", "--model", "tiny",
         "--config", str(config)],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql).fetchall()


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except sqlite3.OperationalError:
            pass  # database not created yet
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config with its own data and output folders; returns (config, database, output)."""
    data, out = tmp_path / "data", tmp_path / "out"
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n[output]\ndir = "{out}"\n')
    return config, data / "imagine.db", out


def stop_mid_batch(
    config: Path, db: Path, how: signal.Signals, delay: float
) -> tuple[int, set[str], str]:
    """Run the bot, accept REQUESTS, send ``how`` while a batch runs.

    Returns the exit code, the ids of the jobs that were running, and what the chat printed.
    """
    first = start(config, delay=delay)
    try:
        assert first.stdin is not None
        first.stdin.write("\n".join(REQUESTS) + "\n")
        first.stdin.flush()
        wait_until(lambda: len(rows(db, "SELECT id FROM jobs")) == 3, 120, "three accepted jobs")
        wait_until(lambda: rows(db, "SELECT count(*) FROM jobs WHERE status = 'running'")[0][0] > 0,
                   60, "a running batch")
        running = {job_id for (job_id,) in rows(db, "SELECT id FROM jobs WHERE status = 'running'")}
        first.send_signal(how)
        stdout, _ = first.communicate(timeout=60)
        return first.returncode, running, stdout
    finally:
        if first.poll() is None:
            first.kill()


def test_kill_9_mid_batch_then_restart_delivers_each_job_once(tmp_path: Path) -> None:
    config, db, out = setup(tmp_path)
    code, _, before = stop_mid_batch(config, db, signal.SIGKILL, delay=1.0)
    assert code == -signal.SIGKILL
    statuses = rows(db, "SELECT status FROM jobs")
    assert {s for (s,) in statuses} <= {"queued", "running"}, statuses
    assert rows(db, "SELECT sum(used) FROM quota_usage")[0][0] == 4
    assert not out.exists() or not list(out.glob("*.png"))

    assert ": done" not in before
    restart_and_check(config, db, out, before)


def restart_and_check(config: Path, db: Path, out: Path, before: str) -> None:
    """A second run recovers: each job delivered exactly once over both runs, charged once."""
    second = start(config, delay=0.0)
    try:
        wait_until(lambda: rows(db, "SELECT count(*) FROM jobs WHERE status = 'delivered'")[0][0] == 3,
                   180, "three delivered jobs")
        stdout, stderr = second.communicate("/quit\n", timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, stderr

    jobs = rows(db, "SELECT id, status, charged, refunded FROM jobs")
    assert [(status, refunded) for _, status, _, refunded in jobs] == [("delivered", 0)] * 3
    assert sum(charged for _, _, charged, _ in jobs) == 4
    assert rows(db, "SELECT sum(used) FROM quota_usage")[0][0] == 4  # nobody charged twice
    assert rows(db, "SELECT count(*) FROM images")[0][0] == 4
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == sorted(f"{job_id}-{i}.png" for job_id, *_ in jobs for i in
                           range(1, 1 + rows(db, f"SELECT count(*) FROM images WHERE job_id = '{job_id}'")[0][0]))
    for job_id, *_ in jobs:
        assert (before + stdout).count(f"{job_id}: done") == 1, before + stdout


def test_sigterm_finishes_the_running_batch_and_keeps_the_queue(tmp_path: Path) -> None:
    config, db, out = setup(tmp_path)
    code, running, before = stop_mid_batch(config, db, signal.SIGTERM, delay=0.5)
    assert code == 0
    statuses = dict(rows(db, "SELECT id, status FROM jobs"))
    for job_id in running:  # the batch on the GPU was finished and delivered before exiting
        assert statuses[job_id] == "delivered", statuses
        assert before.count(f"{job_id}: done") == 1, before
    # the rest stayed queued for the next start (or, if a new batch began just before the
    # signal, that batch was finished too): nothing failed, cancelled or left half-run
    assert set(statuses.values()) <= {"queued", "done", "delivered"}, statuses
    assert rows(db, "SELECT count(*) FROM jobs WHERE refunded = 1")[0][0] == 0

    restart_and_check(config, db, out, before)

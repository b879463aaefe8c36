"""Kill -9 the real bot inside each window of a Discord request, restart it: never lost, never doubled.

The bot runs as its own process (``tests/discord_bot.py``: the real ``imagine-bot run`` with
the real discord.py client, slowed per denoising step) against the fake Discord on 127.0.0.1
in this process. Each test aims a SIGKILL at one window:

    (a) the fake received the result upload (edit, or channel message) and stored it; the bot
        never hears back, so it has not recorded the delivery          -> fake.before_answer
    (b) the interaction is stored and deferred, the job row not committed  -> IMAGINE_KILL_AT
    (c) a batch is running, (d) other jobs wait in the queue               -> timed on the slow pipeline
    (e) during recovery's re-send after the restart                        -> fake.before_answer again

Afterwards every request is delivered exactly once with its own image (counted at the fake:
messages that carry the job's file), or refused with a message and not charged, and the quota
is exact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_discord import FakeDiscord, RecordedRequest, fake_discord_server

ROOT = Path(__file__).resolve().parents[1]
START = 300.0  # a cold start imports torch and loads the tiny model: minutes on an overloaded machine
SETTLE = 240.0


class Bot:
    """The bot process: start, kill, stop; every wait bounded."""

    def __init__(self, tmp_path: Path, fake: FakeDiscord, quota: int = 20) -> None:
        self.tmp = tmp_path
        self.fake = fake
        self.db = tmp_path / "data" / "imagine.db"
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[output]\ndir = "{tmp_path / "out"}"\n'
            f"[quota]\nimages = {quota}\n[moderation]\nrequest_interval_s = 0\n"
            f'[discord]\napi_base_url = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
            "progress_edit_interval = 0.2\n[preview]\nenabled = false\n")  # result windows, not previews
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, delay: float = 0.0, kill_at: str = "", fail_prompt: str = "") -> None:
        """Start the bot; return once it has synced its commands (it then takes interactions)."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "DISCORD_TOKEN": "fake-token",
               "IMAGINE_KILL_AT": kill_at, "FAIL_PROMPT": fail_prompt}
        synced = len(self.fake.requests_to("PUT", rf"/applications/{self.fake.app_id}/commands"))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "discord_bot.py"), str(delay), "run", "--model", "tiny",
            "--config", str(self.config), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.tmp / f"bot-{self.starts}.log", "w"))
        self.starts += 1
        await until(lambda: len(self.fake.requests_to("PUT", rf"/applications/{self.fake.app_id}/commands"))
                    > synced, START, "the bot to connect and sync its commands", self)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def killed(self) -> None:
        """Wait for the aimed kill to land."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), SETTLE)
        assert code == -signal.SIGKILL, f"exit {code}: {self.log()}"

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 60)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("the bot did not stop on SIGTERM") from None
        assert code == 0, self.log()

    def log(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("bot-*.log")))

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql, args).fetchall()


async def until(check: Callable[[], Any], timeout: float, what: str, bot: Bot | None = None) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            value = check()
        except sqlite3.OperationalError:  # the database is not there yet
            value = None
        if value:
            return value
        if bot is not None and bot.proc is not None and bot.proc.returncode is not None:
            raise AssertionError(f"the bot exited ({bot.proc.returncode}) while waiting for {what}: {bot.log()}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f": {bot.log()}" if bot else ""))


def is_result_upload(fake: FakeDiscord, rec: RecordedRequest) -> bool:
    """A request that carries a result image: the edit of @original, or a channel/DM message."""
    upload = rec.status == 200 and any(f.filename.endswith((".png", ".jpg", ".webp")) for f in rec.files)
    return upload and (rec.path.endswith("/messages/@original") or rec.path.startswith("/channels/"))


def kill_at_upload(fake: FakeDiscord, bot: Bot, nth: int = 1, job_id: str = "") -> list[RecordedRequest]:
    """SIGKILL the bot once the fake has stored its ``nth`` result upload (of ``job_id``), before answering."""
    seen: list[RecordedRequest] = []

    def hook(rec: RecordedRequest) -> None:
        if is_result_upload(fake, rec) and rec.files[0].filename.startswith(job_id):
            seen.append(rec)
            if len(seen) == nth:
                bot.kill()
                fake.before_answer = None

    fake.before_answer = hook
    return seen


async def imagine(fake: FakeDiscord, prompt: str) -> dict[str, Any]:
    return await fake.send_interaction(fake.slash("imagine", {"prompt": prompt}))


def messages_of(fake: FakeDiscord, job_id: str) -> list[dict[str, Any]]:
    """Every message at the fake that shows the result of ``job_id`` (its file)."""
    return [m for m in fake.messages.values()
            if any(a["filename"].startswith(f"{job_id}.") for a in m.get("attachments", []))]


async def check_exactly_once(bot: Bot, fake: FakeDiscord, made: list[dict[str, Any]],
                             refused: list[dict[str, Any]] = (), charged: int | None = None) -> dict[str, int]:
    """Each of ``made`` delivered once with its own image; each of ``refused`` told and not charged."""
    expected = {f"discord:{i['id']}" for i in made}
    await until(lambda: {o for o, s in bot.rows("SELECT origin, status FROM jobs") if s == "delivered"} >= expected,
                SETTLE, "every request delivered", bot)
    await asyncio.sleep(0.5)  # a late double would show up here
    jobs = {origin: (job_id, status, used, refunded) for origin, job_id, status, used, refunded in bot.rows(
        "SELECT origin, id, status, charged, refunded FROM jobs")}
    assert set(jobs) == expected, jobs  # one job per request that made one; none for a refusal
    lost = doubled = 0
    for inter in made:
        job_id, status, _, refunded = jobs[f"discord:{inter['id']}"]
        assert (status, refunded) == ("delivered", 0)
        shown = messages_of(fake, job_id)
        lost += not shown
        doubled += max(0, len(shown) - 1)
        (path,) = bot.rows("SELECT path FROM images WHERE job_id = ?", job_id)[0]
        stored = (bot.db.parent / "images" / path).read_bytes()
        for message in shown:  # the right image: the stored PNG of that very job
            assert fake.attachment_bytes(message["attachments"][0]) == stored
    assert (lost, doubled) == (0, 0), f"lost {lost}, doubled {doubled}"
    for inter in refused:
        told = [m for m in fake.messages.values() if "left of your" in m.get("content", "")
                and (m.get("interaction_metadata", {}).get("id") == inter["id"] or f"<@{fake.user['id']}>" in m["content"])]
        assert len(told) == 1, told
    used = bot.rows("SELECT coalesce(sum(used), 0) FROM quota_usage")[0][0]
    assert used == (charged if charged is not None else len(made))  # quota exact: nobody charged twice
    assert bot.rows("SELECT count(*) FROM inbox WHERE handled_at IS NULL")[0][0] == 0
    return {"requests": len(made) + len(refused), "lost": lost, "doubled": doubled}


@pytest.fixture
async def fake() -> Any:
    async with fake_discord_server(initial_response_timeout=15.0) as server:  # a loaded CI box is slow
        yield server


def job_of(bot: Bot, inter: dict[str, Any]) -> str | None:
    found = bot.rows("SELECT id FROM jobs WHERE origin = ?", f"discord:{inter['id']}")
    return found[0][0] if found else None


async def test_kill_9_in_every_window_then_each_request_is_delivered_once(fake: FakeDiscord, tmp_path: Path) -> None:
    """Five runs of one bot, four aimed kills; then every request delivered once, or refused, quota exact."""
    bot = Bot(tmp_path, fake, quota=6)
    try:
        # Run 1: (c) a batch runs and (d) jobs wait, then (b) killed inside the next job row's transaction
        await bot.start(delay=1.0, kill_at="before_commit:5")
        made = [await imagine(fake, f"a {animal} --seed {seed} --steps 4") for seed, animal in
                enumerate(["bear", "lynx", "wolf"], 1)]
        made.append(await imagine(fake, "a moose --seed 9 --steps 2"))
        await until(lambda: bot.rows("SELECT count(*) FROM jobs")[0][0] == 4, 60, "four accepted jobs", bot)
        await until(lambda: bot.rows("SELECT count(*) FROM jobs WHERE status = 'running'")[0][0], 60,
                    "a running batch", bot)
        heron = await imagine(fake, "a heron --seed 4 --steps 1")
        made.append(heron)
        await bot.killed()
        statuses = [s for (s,) in bot.rows("SELECT status FROM jobs")]
        assert "running" in statuses and "queued" in statuses, statuses  # (c) and (d)
        assert job_of(bot, heron) is None and fake.interactions[heron["token"]].responded  # (b): acked, no row
        assert bot.rows("SELECT key FROM inbox WHERE handled_at IS NULL") == [(heron["id"],)]

        # Run 2: (a) the bear's token has expired, so its result goes to the channel (with a nonce);
        # killed once the fake has stored that message, before the bot hears back
        bear = job_of(bot, made[0])
        assert bear is not None
        fake.expire_interaction(made[0])
        first = kill_at_upload(fake, bot, job_id=bear)
        await bot.start()
        await bot.killed()
        (posted,) = first
        assert posted.path.startswith("/channels/") and posted.json["enforce_nonce"] is True
        assert len(messages_of(fake, bear)) == 1 and bot.rows("SELECT status FROM jobs WHERE id = ?", bear) == [("done",)]

        # Run 3: (e) killed during recovery's re-send
        resend = kill_at_upload(fake, bot)
        await bot.start()
        await bot.killed()
        assert len(resend) == 1

        # Run 4: (b) killed right after the deferral of a new request
        await bot.start(kill_at="after_defer:1")
        stork = await imagine(fake, "a stork --seed 5 --steps 1")
        made.append(stork)
        await bot.killed()
        assert job_of(bot, stork) is None

        # Run 5: everything owed is delivered; a request over the quota is refused and not charged
        await bot.start()
        over = await imagine(fake, "a flock --n 4 --steps 1")
        outcome = await check_exactly_once(bot, fake, made, [over])
        assert outcome == {"requests": 7, "lost": 0, "doubled": 0}
        # the bear's channel message was found again (history) or deduplicated by Discord (nonce)
        looked = fake.requests_to("GET", rf"/channels/{fake.text_channel_id}/messages")
        assert looked or fake.nonce_hits >= 1
        print(f"kill rounds: 4, requests: {outcome['requests']}, lost: 0, doubled: 0, "
              f"result sends: {len([r for r in fake.requests if is_result_upload(fake, r)])}")
    finally:
        await bot.stop()


async def test_a_kill_after_discord_stored_the_edit_then_during_the_resend(fake: FakeDiscord, tmp_path: Path) -> None:
    """(a) then (e) on the usual path: the re-sends edit the same interaction response."""
    bot = Bot(tmp_path, fake)
    try:
        await bot.start()
        first = kill_at_upload(fake, bot)
        made = [await imagine(fake, "a fox --seed 1 --steps 1")]
        await bot.killed()
        assert len(first) == 1 and bot.rows("SELECT status FROM jobs") == [("done",)]  # stored, not recorded
        resend = kill_at_upload(fake, bot)
        await bot.start()
        await bot.killed()
        assert len(resend) == 1 and bot.rows("SELECT status FROM jobs") == [("done",)]
        await bot.start()
        outcome = await check_exactly_once(bot, fake, made)
        assert outcome == {"requests": 1, "lost": 0, "doubled": 0}
        assert len([r for r in fake.requests if is_result_upload(fake, r)]) == 3  # three sends, one message
    finally:
        await bot.stop()


def failure_messages(fake: FakeDiscord, words: str) -> list[dict[str, Any]]:
    """Messages at the fake that tell the failure of the request with ``words``."""
    return [m for m in fake.messages.values() if "❌" in m.get("content", "") and words in m.get("content", "")]


async def test_kills_between_failed_and_told_tell_the_failure_once(fake: FakeDiscord, tmp_path: Path) -> None:
    """A job fails (the pipeline raises) and the bot dies (1) right after the failure and its refund
    committed, before anything was told, and (2) after Discord stored the failure message, before
    the bot recorded it; (3) after a clean start each failure is told exactly once, nothing is charged."""
    bot = Bot(tmp_path, fake)
    try:
        await bot.start(kill_at="after_failed:1", fail_prompt="doomed")
        kite = await imagine(fake, "a doomed kite --seed 1 --steps 1")
        await bot.killed()
        kite_job = job_of(bot, kite)
        assert bot.rows("SELECT status, refunded, told FROM jobs WHERE id = ?", kite_job) == [("failed", 1, 0)]
        assert failure_messages(fake, "a doomed kite") == []  # the window: failed, not told

        stored: list[RecordedRequest] = []

        def hook(rec: RecordedRequest) -> None:
            content = str(rec.json.get("content", "")) if isinstance(rec.json, dict) else ""
            if "❌" in content and "doomed ship" in content:
                stored.append(rec)
                bot.kill()
                fake.before_answer = None

        fake.before_answer = hook
        await bot.start(fail_prompt="doomed")  # tells the kite (owed), then the ship fails
        await until(lambda: bot.rows("SELECT told FROM jobs WHERE id = ?", kite_job) == [(1,)], SETTLE,
                    "the kite's failure told", bot)
        ship = await imagine(fake, "another doomed ship --seed 2 --steps 1")
        await bot.killed()
        assert len(stored) == 1
        ship_job = job_of(bot, ship)
        assert bot.rows("SELECT status, refunded, told FROM jobs WHERE id = ?", ship_job) == [("failed", 1, 0)]

        await bot.start(fail_prompt="doomed")
        await until(lambda: bot.rows("SELECT count(*) FROM jobs WHERE told = 0")[0][0] == 0, SETTLE,
                    "every failure told", bot)
        await asyncio.sleep(0.5)  # a late double would show up here
        lost = doubled = 0
        for words in ("a doomed kite", "another doomed ship"):
            shown = failure_messages(fake, words)
            lost += not shown
            doubled += max(0, len(shown) - 1)
        assert (lost, doubled) == (0, 0), f"lost {lost}, doubled {doubled}"
        assert bot.rows("SELECT coalesce(sum(used), 0) FROM quota_usage")[0][0] == 0  # both refunded
        assert bot.rows("SELECT count(*) FROM jobs WHERE status = 'failed' AND refunded = 1")[0][0] == 2
        assert bot.rows("SELECT count(*) FROM inbox WHERE handled_at IS NULL")[0][0] == 0
        print(f"kill rounds (failed→told): 2, requests: 2, lost: {lost}, doubled: {doubled}")
    finally:
        await bot.stop()

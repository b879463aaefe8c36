"""Kill -9 the real bot (``imagine-bot run``, real python-telegram-bot, FakeTelegram on 127.0.0.1)
exactly inside the windows where a request could be lost or a result sent twice, restart it,
and count: every request delivered exactly once with the right images, or refused with a
message and not charged; the quota exact.

Windows (issue #10): (a) Telegram applied the result, the bot never heard back; (b) the update
was fetched, its job row not yet committed; (c) mid-batch; (d) while queued; (e) during the
re-delivery after a restart. A busy group's result sent directly, without a placeholder (issue
#29): (f) ``sending`` recorded, the send not made; (g) Telegram applied the send, the bot never
heard back (the one window a send leaves: the copy after the restart says so); (h) the send
recorded, the job not yet marked delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.frontends.telegram.delivery import RESENT_NOTE, placeholder_png, result_media
from tests.fake_telegram import Call, FakeTelegram, make_chat, make_user

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

ROOT = Path(__file__).resolve().parents[1]
BOUND = 120.0  # seconds: the most any one wait may take on a slow machine


@dataclass
class Bot:
    """One ``imagine-bot run`` process against the fake, and how to find out about its data."""

    tmp: Path
    fake: FakeTelegram
    runs: list[asyncio.subprocess.Process] = field(default_factory=list)
    extra: str = ""  # more [telegram] settings

    @property
    def db(self) -> Path:
        return self.tmp / "data" / "imagine.db"

    def config(self) -> Path:
        path = self.tmp / "config.toml"
        path.write_text(
            f'[storage]\ndata_dir = "{self.tmp / "data"}"\n[output]\ndir = "{self.tmp / "out"}"\n'
            "[moderation]\nrequest_interval_s = 0\n"
            "[preview]\nenabled = false\n"  # the windows of results, not of previews
            f'[telegram]\nbase_url = "{self.fake.base_url}"\nbase_file_url = "{self.fake.base_file_url}"\n'
            "poll_timeout = 1\nstatus_edit_interval_private = 0.2\nsend_retry_backoff = 0.1\n" + self.extra)
        return path

    async def start(self, delay: float = 0.0, kill_before_job_commit: int = 0, *, kill_after_failed: int = 0,
                    fail_prompt: str = "", kill_after_refs: str = "") -> asyncio.subprocess.Process:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TELEGRAM_TOKEN": self.fake.token,
               "KILL_BEFORE_JOB_COMMIT": str(kill_before_job_commit), "KILL_AFTER_FAILED": str(kill_after_failed),
               "FAIL_PROMPT": fail_prompt, "KILL_AFTER_REFS": kill_after_refs}
        log = open(self.tmp / f"bot-{len(self.runs)}.log", "wb")  # noqa: SIM115 - the process owns it
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "kill_bot.py"), str(delay), "run", "--model", "tiny",
            "--config", str(self.config()), cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.runs.append(proc)
        return proc

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet

    async def until(self, check: Callable[[], Any], what: str, timeout: float = BOUND) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; logs: {self.logs()[-3000:]}")
            await asyncio.sleep(0.1)

    async def died(self, proc: asyncio.subprocess.Process) -> None:
        code = await asyncio.wait_for(proc.wait(), BOUND)
        assert code == -signal.SIGKILL, (code, self.logs()[-3000:])

    async def stop(self) -> None:
        for proc in self.runs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("bot-*.log")))

    def kill_on(self, method: str, nth: int) -> None:
        """SIGKILL the running bot when the fake has applied its ``nth`` ``method`` call (before answering)."""
        seen = 0

        def applied(call: Call) -> None:
            nonlocal seen
            if call.method == method:
                seen += 1
                if seen == nth and self.runs and self.runs[-1].returncode is None:
                    os.kill(self.runs[-1].pid, signal.SIGKILL)
                    self.fake.on_applied = None

        self.fake.on_applied = applied


@dataclass
class Outcome:
    rounds: int = 0
    requests: int = 0
    lost: int = 0
    doubled: int = 0


OUTCOME = Outcome()


def check(bot: Bot, requests: dict[int, tuple[str, int]], refused: dict[int, str]) -> None:
    """Every request delivered once with its images or refused and told; the quota exact.

    ``requests``: update id → (prompt, image count); ``refused``: update id → words of the refusal.
    """
    fake = bot.fake
    OUTCOME.rounds += 1
    OUTCOME.requests += len(requests) + len(refused)
    store = bot.tmp / "data" / "images"
    shown: dict[bytes, int] = {}
    for message in fake.messages.values():
        data = fake.media_of(message)
        if data is not None and data != placeholder_png():
            shown[data] = shown.get(data, 0) + 1
    charged = 0
    for update_id, (prompt, count) in requests.items():
        made = bot.rows("SELECT id, status, charged, refunded FROM jobs WHERE origin = ?", f"telegram:{update_id}")
        if not made:
            OUTCOME.lost += 1
            raise AssertionError(f"request {update_id} ({prompt}) was lost")
        if len(made) > 1:  # the UNIQUE origin makes this impossible; counted all the same
            OUTCOME.doubled += 1
        (job_id, status, job_charged, refunded), = made
        assert (status, job_charged, refunded) == ("delivered", count, 0), made
        charged += job_charged
        images = [SimpleNamespace(path=store / p, width=w, height=h, index=i, spoiler=False)
                  for i, p, w, h in bot.rows("SELECT idx, path, width, height FROM images WHERE job_id = ?"
                                             " ORDER BY idx", job_id)]
        assert len(images) == count
        as_sent = SimpleNamespace(job_id=job_id, images=images, request=SimpleNamespace(kind="txt2img"))
        expected, _, _ = result_media(as_sent)  # type: ignore[arg-type]
        copies = shown.pop(expected, 0)
        if copies == 0:
            OUTCOME.lost += 1
        elif copies > 1:
            OUTCOME.doubled += 1
        assert copies == 1, f"job {job_id} ({prompt}) is shown {copies} times"
        (target,), = bot.rows("SELECT target FROM jobs WHERE id = ?", job_id)
        ack = json.loads(target).get("ack")  # the 👀 on the request, taken back before "delivered"
        assert ack is not None and not fake.bot_reactions.get((ack[0], ack[1])), (job_id, ack)
    assert not shown, f"{len(shown)} messages show images of no request"  # e.g. a stray second send
    assert not fake.calls("sendMediaGroup")
    for update_id, words in refused.items():
        assert not bot.rows("SELECT id FROM jobs WHERE origin = ?", f"telegram:{update_id}")
        told = [c for c in fake.calls("sendMessage", ok=True) if words in c.params.get("text", "")]
        assert told, f"refused request {update_id} was not told"
    used = bot.rows("SELECT coalesce(sum(used), 0) FROM quota_usage")[0][0]
    assert used == charged, (used, charged)
    assert not bot.rows("SELECT key FROM inbox WHERE handled_at IS NULL")


def push(fake: FakeTelegram, user_id: int, text: str) -> int:
    update = fake.message_update(text, make_user(user_id, f"User{user_id}"))
    fake.push(update)
    return int(update["update_id"])


def delivered(bot: Bot, n: int) -> Callable[[], bool]:
    return lambda: bot.rows("SELECT count(*) FROM jobs WHERE status = 'delivered'") == [(n,)]


def placeholders_recorded(bot: Bot, n: int) -> Callable[[], bool]:
    return lambda: bot.rows("SELECT count(*) FROM jobs WHERE json_extract(target, '$.placeholder')") == [(n,)]


@pytest.mark.slow
async def test_kills_in_every_window_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    """One bot, five starts, four SIGKILLs, each aimed at a window:

    1. (b) inside the second job's transaction: its update fetched and stored, the row not committed;
    2. (c) + (d) while one job is on the GPU and the other waits in the queue;
    3. (a) when Telegram has applied the first result (editMessageMedia), before the bot heard back;
    4. (e) the same, in the re-delivery of that result after the restart;
    5. a clean run: everything is delivered, once.
    """
    async with FakeTelegram() as fake:
        bot = Bot(tmp_path, fake)
        try:
            requests = {push(fake, 11, "/imagine a slow snail --steps 4 --seed 1"): ("a slow snail", 1),
                        push(fake, 12, "/imagine two wide rivers --steps 4 --n 2 --seed 2 --ar 16:9"):
                            ("two wide rivers", 2)}
            refused = {push(fake, 13, "/imagine a fox --ar 2:9"): "2:9"}

            # 1. (b)
            await bot.died(await bot.start(delay=0.3, kill_before_job_commit=2))
            assert len(bot.rows("SELECT id FROM jobs")) <= 1
            # what the bot confirmed to Telegram (no longer pending there) is in its inbox
            stored = {int(k) for (k,) in bot.rows("SELECT key FROM inbox")}
            confirmed = (set(requests) | set(refused)) - {u["update_id"] for u in fake.pending_updates}
            assert confirmed <= stored and len(stored) >= 2

            # 2. (c) + (d): the snail (4 slow steps) runs, the rivers (another shape) wait
            second = await bot.start(delay=0.3)
            await bot.until(lambda: sorted(bot.rows("SELECT status FROM jobs")) == [("queued",), ("running",)],
                            "one job running, one queued")
            await bot.until(placeholders_recorded(bot, 2), "both placeholders recorded")
            second.kill()
            await bot.died(second)

            # 3. (a) and 4. (e)
            bot.kill_on("editMessageMedia", 1)
            await bot.died(await bot.start())
            assert bot.rows("SELECT count(*) FROM jobs WHERE status = 'done'") >= [(1,)]
            bot.kill_on("editMessageMedia", 1)
            await bot.died(await bot.start())

            # 5.
            await bot.start()
            await bot.until(delivered(bot, 2), "both jobs delivered")
            await bot.until(lambda: not bot.rows("SELECT key FROM inbox WHERE handled_at IS NULL"), "inbox closed")
            await asyncio.sleep(0.5)
            check(bot, requests, refused)
            # every photo sent was a placeholder; the results are edits (a crash between sending a
            # placeholder and recording it may leave a stale one: a status, never a second copy)
            sent = fake.calls("sendPhoto", ok=True)
            assert {c.file("photo").data for c in sent} == {placeholder_png()} and 2 <= len(sent) <= 3
            assert len(fake.calls("editMessageMedia", ok=True)) >= 3  # (a) and (e) were edits applied
        finally:
            await bot.stop()


GROUP = make_chat(-100_424_242, "supergroup", "Busy group")


@pytest.mark.slow
async def test_kills_around_a_direct_send_in_a_busy_group_lose_nothing(tmp_path: Path) -> None:
    """A group whose minute is too tight for placeholders (``group_per_minute = 3``): each result is
    sent as the only message. Three requests, a kill in each window of that send, then a clean run:

    1. (f) A: ``sending`` recorded, killed before the send: after the restart it is sent once,
       saying it was sent again (the bot cannot know it never went);
    2. (g) B: Telegram applied the send, the bot died before hearing back: after the restart it is
       sent again, that copy saying so; never lost, at most that one labelled second copy;
    3. (h) C: the send recorded (``result_id``), killed before "delivered": not sent again.
    All three are delivered, charged once, their 👀 taken back; no placeholder is sent.
    """
    async with FakeTelegram() as fake:
        bot = Bot(tmp_path, fake, extra="group_per_minute = 3\n")
        prompts = {"a": "a amber lantern", "b": "a blue kettle", "c": "a cedar chest"}
        updates: dict[str, int] = {}

        def ask(key: str, seed: int) -> None:
            update = fake.message_update(f"/imagine {prompts[key]} --steps 1 --seed {seed}",
                                         make_user(40 + seed, f"User{seed}"), GROUP)
            fake.push(update)
            updates[key] = int(update["update_id"])

        def results(key: str) -> list[Call]:
            return [c for c in fake.calls("sendPhoto", ok=True)
                    if prompts[key] in (c.params.get("caption") or "") and c.file("photo").data != placeholder_png()]

        def target(key: str) -> dict[str, Any]:
            (text,), = bot.rows("SELECT target FROM jobs WHERE origin = ?", f"telegram:{updates[key]}")
            return json.loads(text)

        try:
            # 1. (f)
            ask("a", 1)
            await bot.died(await bot.start(kill_after_refs="sending:1"))
            assert target("a").get("sending") and not target("a").get("result_id") and not results("a")

            # 2. (g): A is re-sent at start-up; B's send is applied, then the bot dies
            ask("b", 2)

            def applied(call: Call) -> None:
                if call.method == "sendPhoto" and prompts["b"] in (call.params.get("caption") or "") \
                        and bot.runs[-1].returncode is None:
                    os.kill(bot.runs[-1].pid, signal.SIGKILL)
                    fake.on_applied = None

            fake.on_applied = applied
            await bot.died(await bot.start())
            assert len(results("b")) == 1 and not target("b").get("result_id")

            # 3. (h): B's re-send records its result_id first, then C's kills
            ask("c", 3)
            await bot.died(await bot.start(kill_after_refs="result_id:2"))
            assert target("c").get("result_id") and bot.rows(
                "SELECT status FROM jobs WHERE origin = ?", f"telegram:{updates['c']}") == [("done",)]

            # 4. clean
            await bot.start()
            await bot.until(delivered(bot, 3), "the three jobs delivered")
            await bot.until(lambda: not any(fake.bot_reactions.values()), "the 👀 taken back")
            await asyncio.sleep(0.5)
            a, b, c = results("a"), results("b"), results("c")
            assert len(a) == 1 and RESENT_NOTE in a[0].params["caption"]
            assert len(b) == 2 and RESENT_NOTE not in b[0].params["caption"] and RESENT_NOTE in b[1].params["caption"]
            assert b[0].file("photo").data == b[1].file("photo").data  # the same result, said to be again
            assert len(c) == 1 and RESENT_NOTE not in c[0].params["caption"]
            OUTCOME.rounds += 1
            OUTCOME.requests += 3
            for key, shown in (("a", a), ("b", b), ("c", c)):
                (job_id, charged, refunded), = bot.rows("SELECT id, charged, refunded FROM jobs WHERE origin = ?",
                                                        f"telegram:{updates[key]}")
                assert (charged, refunded) == (1, 0)
                assert target(key)["result_id"] == shown[-1].result["message_id"]
                assert all(s.params["reply_parameters"]["message_id"] == target(key)["reply_to"] for s in shown)
                (path,), = bot.rows("SELECT path FROM images WHERE job_id = ?", job_id)
                assert shown[0].file("photo").data == (tmp_path / "data" / "images" / path).read_bytes()
            assert not [c for c in fake.calls("sendPhoto") if c.file("photo").data == placeholder_png()]
            assert bot.rows("SELECT coalesce(sum(used), 0) FROM quota_usage") == [(3,)]
            assert not bot.rows("SELECT key FROM inbox WHERE handled_at IS NULL")
        finally:
            await bot.stop()


def told_once(bot: Bot, update_id: int, words: str) -> None:
    """A failed request: refunded, marked told, its message shown once (never lost, never doubled),
    its 👀 taken back."""
    fake = bot.fake
    OUTCOME.requests += 1
    made = bot.rows("SELECT id, status, charged, refunded, told, target FROM jobs WHERE origin = ?",
                    f"telegram:{update_id}")
    if not made:
        OUTCOME.lost += 1
        raise AssertionError(f"request {update_id} was lost")
    (job_id, status, charged, refunded, told, target), = made
    assert (status, refunded, told) == ("failed", 1, 1), made
    shown = [m for m in fake.messages.values()
             if words in (m.get("caption") or m.get("text") or "") and "❌" in (m.get("caption") or m.get("text") or "")]
    if not shown:
        OUTCOME.lost += 1
    elif len(shown) > 1:
        OUTCOME.doubled += 1
    assert len(shown) == 1, f"job {job_id}'s failure is shown {len(shown)} times"
    ack = json.loads(target).get("ack")
    assert ack is not None and not fake.bot_reactions.get((ack[0], ack[1])), (job_id, ack)


@pytest.mark.slow
async def test_kills_between_failed_and_told_tell_the_failure_once(tmp_path: Path) -> None:
    """A job fails (the pipeline raises) and the bot dies:

    1. right after the failure and its refund committed, before anything was told;
    2. after Telegram applied the failure message (the placeholder's caption), before the bot
       recorded that it was told;
    3. a clean run: each failure is told exactly once (the placeholder shows it, the 👀 goes),
       the other request is delivered once, and nothing stays charged.
    """
    async with FakeTelegram() as fake:
        bot = Bot(tmp_path, fake)
        try:
            doomed = push(fake, 31, "/imagine a doomed kite --steps 1 --seed 5")
            requests = {push(fake, 32, "/imagine a calm sea --steps 1 --seed 6"): ("a calm sea", 1)}

            # 1. killed between "failed" (committed, refunded) and "told"
            await bot.died(await bot.start(kill_after_failed=1, fail_prompt="doomed"))
            (status, refunded, told), = bot.rows("SELECT status, refunded, told FROM jobs WHERE origin = ?",
                                                 f"telegram:{doomed}")
            assert (status, refunded, told) == ("failed", 1, 0)
            assert not [m for m in fake.messages.values() if "❌" in (m.get("caption") or m.get("text") or "")]

            # 2. killed when Telegram applied the second failure's message, before it was recorded
            second = push(fake, 33, "/imagine another doomed ship --steps 1 --seed 7")
            seen = 0

            def applied(call: Call) -> None:
                nonlocal seen
                if call.method == "editMessageCaption" and "doomed ship" in (call.params.get("caption") or "") \
                        and "❌" in (call.params.get("caption") or ""):
                    seen += 1
                    if seen == 1 and bot.runs[-1].returncode is None:
                        os.kill(bot.runs[-1].pid, signal.SIGKILL)
                        fake.on_applied = None

            fake.on_applied = applied
            await bot.died(await bot.start(fail_prompt="doomed"))

            # 3. the clean run tells what is owed, once
            await bot.start(fail_prompt="doomed")
            await bot.until(lambda: bot.rows("SELECT count(*) FROM jobs WHERE told = 0") == [(0,)]
                            and bot.rows("SELECT count(*) FROM jobs WHERE status = 'delivered'") == [(1,)],
                            "both failures told and the other request delivered")
            await asyncio.sleep(0.5)
            told_once(bot, doomed, "a doomed kite")
            told_once(bot, second, "another doomed ship")
            check(bot, requests, {})
        finally:
            await bot.stop()


def test_zz_report() -> None:
    """Prints the measured totals (shown with -s; the assertions above are what fail)."""
    print(f"\nkill tests: {OUTCOME.rounds} rounds, {OUTCOME.requests} requests, "
          f"{OUTCOME.lost} lost, {OUTCOME.doubled} doubled")
    assert OUTCOME.lost == 0 and OUTCOME.doubled == 0

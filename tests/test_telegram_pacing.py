"""Telegram's flood limits under load: the pacer against a fake that enforces them.

The fake answers 429 when a window goes over a documented limit (``FloodRules``), so these tests
fail if the pacer lets a burst through. A group's "minute" is shrunk (``pacing.MINUTE`` and
``FloodRules.minute``) so a scripted burst runs in seconds; the counting is the same.
No timing goals here (those are in bench/load_bench.py), only limits and order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from telegram.ext import ExtBot

from bot.frontends.telegram import pacing
from bot.frontends.telegram.delivery import placeholder_png
from bot.frontends.telegram.pacing import Busy, FloodLimits, FloodPacer, Lane, _Window, message_cost
from tests.fake_telegram import FakeTelegram, FloodRules, make_chat, make_user, peak_in_window
from tests.telegram_support import running, wait_until

MINUTE = 2.0
GROUP = -100777
GEN = 120.0


@pytest.fixture
def short_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "MINUTE", MINUTE)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(flood=FloodRules(minute=MINUTE)) as server:
        yield server


def group_stamps(fake: FakeTelegram, chat: int = GROUP) -> list[tuple[float, int]]:
    return [(t, cost) for t, c, cost, _ in fake.flood_log if c == chat and cost]


def test_window_counts_calls_on_their_way_until_answered() -> None:
    window = _Window(2, 10.0)
    first = window.take(1)
    assert window.wait(0.0) == 0.0
    window.take(1)
    assert window.wait(0.0) is None  # both still on their way: wait for an answer
    first[0][0] = 5.0  # answered at 5 s: its place frees at 15 s, not 10 s after it was sent
    assert window.wait(6.0) == pytest.approx(9.0)
    assert message_cost("sendMediaGroup", {"media": [1, 2, 3]}) == 3
    assert message_cost("setMessageReaction", {}) == 0 and message_cost("sendChatAction", {}) == 0
    assert message_cost("editMessageCaption", {}) == 1


async def test_scripted_burst_never_exceeds_20_per_minute_in_a_group(fake: FakeTelegram, short_minute: None) -> None:
    """45 sends, status edits and reactions at once into one group: no window over 20, no 429."""
    pacer = FloodPacer(FloodLimits(), max_retries=0)
    async with ExtBot(fake.token, base_url=fake.base_url, rate_limiter=pacer) as bot:
        user = await bot.send_message(GROUP, "hello", rate_limit_args=Lane.SEND)
        busy = 0

        async def status(n: int) -> None:
            nonlocal busy
            try:
                await bot.edit_message_text(f"status {n}", GROUP, user.message_id, rate_limit_args=Lane.STATUS)
            except Busy:
                busy += 1

        sends = [bot.send_message(GROUP, f"message {n}", rate_limit_args=Lane.SEND) for n in range(44)]
        reactions = [bot.set_message_reaction(GROUP, user.message_id, "👀", rate_limit_args=Lane.ACK)
                     for _ in range(10)]
        statuses = [status(n) for n in range(30)]
        await asyncio.wait_for(asyncio.gather(*sends, *reactions, *statuses), 30)
        assert not fake.flood_refusals
        peak, _ = peak_in_window(group_stamps(fake), MINUTE)
        assert peak <= 20
        assert len(fake.calls("sendMessage", ok=True)) == 45 and len(fake.calls("setMessageReaction", ok=True)) == 10
        assert busy >= 20  # the budget was spent on messages: status edits were put off, not queued


async def test_results_go_before_waiting_sends_and_status(fake: FakeTelegram, short_minute: None) -> None:
    pacer = FloodPacer(FloodLimits(group_per_minute=3), max_retries=0)
    fake.flood = FloodRules(group_per_minute=3, minute=MINUTE)
    async with ExtBot(fake.token, base_url=fake.base_url, rate_limiter=pacer) as bot:
        first = await bot.send_message(GROUP, "placeholder", rate_limit_args=Lane.SEND)
        await asyncio.gather(*(bot.send_message(GROUP, f"fill {n}", rate_limit_args=Lane.SEND) for n in range(2)))
        mark = fake.mark()  # the group's budget is spent now
        with pytest.raises(Busy):
            await bot.edit_message_text("status", GROUP, first.message_id, rate_limit_args=Lane.STATUS)
        sends = [asyncio.ensure_future(bot.send_message(GROUP, f"later {n}", rate_limit_args=Lane.SEND))
                 for n in range(2)]
        await asyncio.sleep(0.05)
        result = asyncio.ensure_future(bot.edit_message_text("result", GROUP, first.message_id,
                                                             rate_limit_args=Lane.RESULT))
        await asyncio.wait_for(asyncio.gather(result, *sends), 20)
        order = [c.method for c in fake.log[mark:] if c.ok]
        assert order[0] == "editMessageText" and order.count("sendMessage") == 2
        assert not fake.flood_refusals


async def test_private_chat_gets_at_most_one_message_a_second(fake: FakeTelegram) -> None:
    pacer = FloodPacer(FloodLimits(private_interval=1.0), max_retries=0)
    async with ExtBot(fake.token, base_url=fake.base_url, rate_limiter=pacer) as bot:
        await asyncio.wait_for(asyncio.gather(*(bot.send_message(4242, f"m {n}") for n in range(4))), 20)
    stamps = [(t, cost) for t, c, cost, _ in fake.flood_log if c == 4242 and cost]
    assert len(stamps) == 4 and peak_in_window(stamps, 1.0)[0] == 1 and not fake.flood_refusals


async def test_fake_refuses_a_21st_message_in_a_minute(fake: FakeTelegram) -> None:
    """Without the pacer the fake's limit bites (so the tests above can fail)."""
    async with ExtBot(fake.token, base_url=fake.base_url) as bot:
        results = await asyncio.gather(*(bot.send_message(GROUP, f"m {n}") for n in range(21)),
                                       return_exceptions=True)
    assert sum(isinstance(r, Exception) for r in results) == 1 and len(fake.flood_refusals) == 1
    assert fake.flood_refusals[0].status == 429


async def test_busy_group_one_message_per_request_and_a_reaction(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    """15 members of one group /imagine at once: 👀 at once, one message each, every result within
    the group's first minute (a real 60 s one: nothing waits for it to slide), no window over 20.

    A placeholder and its result cost two of the group's 20; so only the first few requests get
    one (while the placeholder share holds it and every result owed), the others' results are
    sent directly as replies: 15 + placeholders <= 20.
    """
    group = make_chat(GROUP, "supergroup", "Busy group")
    users = [make_user(5000 + n, f"user{n}") for n in range(15)]
    limits = dict(group_per_minute=20, private_interval=1.0, overall_per_second=30,
                  status_edit_interval_group=0.2)
    fake.flood = FloodRules()  # Telegram's own minute
    async with running(tmp_path, tiny, fake, **limits) as r:
        updates = [fake.message_update(f"/imagine a fox number {n} --steps 1", user, group) for n, user in enumerate(users)]
        for update in updates:
            fake.push(update)
        asked = {u["message"]["message_id"] for u in updates}

        def sent() -> list:
            return [c for c in fake.log if c.ok and c.params.get("chat_id") == GROUP and c.method.startswith("send")
                    and c.method != "sendChatAction"]

        def answered() -> set[int]:
            placeholders = {c.result["message_id"]: c.params["reply_parameters"]["message_id"] for c in sent()
                            if c.file("photo").data == placeholder_png()}
            edited = {placeholders[c.params["message_id"]] for c in fake.calls("editMessageMedia", ok=True)}
            direct = {c.params["reply_parameters"]["message_id"] for c in sent()
                      if c.file("photo").data != placeholder_png()}
            return edited | direct

        await wait_until(lambda: answered() == asked, GEN)
        # the acknowledgement: 👀 on each user's own message, then taken back on delivery
        reacted = [c for c in fake.calls("setMessageReaction", ok=True) if c.params.get("reaction")]
        assert {c.params["message_id"] for c in reacted} == asked
        assert all(c.params["reaction"] == [{"type": "emoji", "emoji": "👀"}] for c in reacted)
        await wait_until(lambda: all(not fake.bot_reactions.get((GROUP, m)) for m in asked), 30)
        # one message per request: a placeholder later replaced by the result, or the result itself
        sends = sent()
        assert [c.method for c in sends] == ["sendPhoto"] * 15
        placeholders = [c for c in sends if c.file("photo").data == placeholder_png()]
        direct = [c for c in sends if c.file("photo").data != placeholder_png()]
        results = fake.calls("editMessageMedia", ok=True)
        assert sorted(c.params["message_id"] for c in results) == sorted(c.result["message_id"] for c in placeholders)
        assert 1 <= len(placeholders) <= 5 and len(direct) >= 10  # 2 × 5 + 10 = 20: the minute holds all
        assert sorted(c.params["reply_parameters"]["message_id"] for c in sends) == sorted(asked)
        assert all(c.params.get("caption") and "job " in c.params["caption"] for c in direct)
        for _ in range(200):  # "delivered" is written just after the send is answered: wait for it (bounded, 10 s)
            rows = await r.env.db.fetchall("SELECT status, target FROM jobs")
            if all(s == "delivered" for s, _ in rows):
                break
            await asyncio.sleep(0.05)
        assert [s for s, _ in rows] == ["delivered"] * 15
        sent_directly = [json.loads(t) for _, t in rows if not json.loads(t).get("placeholder")]
        assert sorted(t["result_id"] for t in sent_directly) == sorted(c.result["message_id"] for c in direct)
        assert not fake.flood_refusals
        assert peak_in_window(group_stamps(fake), 60.0)[0] <= 20


async def test_a_refused_request_loses_its_reaction_and_is_told_why(tmp_path: Path, tiny) -> None:
    async with FakeTelegram() as fake, running(tmp_path, tiny, fake):
        update = fake.message_update("/imagine porn number 1")
        fake.push(update)
        reply = await fake.wait_for_call("sendMessage", timeout=30)
        assert "blocked" in reply.params["text"].lower()
        key = (update["message"]["chat"]["id"], update["message"]["message_id"])
        await wait_until(lambda: len(fake.calls("setMessageReaction", ok=True)) >= 2, 10)
        first, last = fake.calls("setMessageReaction", ok=True)[:2]
        assert first.params["reaction"] == [{"type": "emoji", "emoji": "👀"}] and not last.params.get("reaction")
        assert not fake.bot_reactions.get(key) and not fake.calls("sendPhoto")


async def test_the_acknowledgement_is_stored_with_the_job_and_can_be_turned_off(tmp_path: Path, tiny) -> None:
    from storage import jobs

    async with FakeTelegram() as fake, running(tmp_path, tiny, fake) as r:
        update = fake.message_update("/imagine a lighthouse --steps 1")
        fake.push(update)
        placeholder = await fake.wait_for_call("sendPhoto", timeout=30)
        job = placeholder.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].removeprefix("x:")
        row = await jobs.get(r.env.db, job)
        assert row is not None and row.target["ack"] == [update["message"]["chat"]["id"], update["message"]["message_id"]]
    async with FakeTelegram() as fake, running(tmp_path / "off", tiny, fake, ack_reaction=""):
        fake.push(fake.message_update("/imagine a lighthouse --steps 1"))
        await fake.wait_for_call("editMessageMedia", timeout=GEN)
        assert not fake.calls("setMessageReaction")


async def test_a_429_pauses_that_chat_only_and_the_call_is_tried_again(fake: FakeTelegram) -> None:
    pacer = FloodPacer(FloodLimits(private_interval=0.0), max_retries=1)
    fake.rate_limit("sendMessage", retry_after=1, when=lambda c: c.params.get("chat_id") == 111)
    async with ExtBot(fake.token, base_url=fake.base_url, rate_limiter=pacer) as bot:
        slow = asyncio.ensure_future(bot.send_message(111, "first try refused"))
        await fake.wait_for_call("sendMessage", lambda c: c.status == 429)
        other = await asyncio.wait_for(bot.send_message(222, "another chat goes on"), 0.9)
        sent = await asyncio.wait_for(slow, 5)
    ok = fake.calls("sendMessage", ok=True)
    assert [c.params["chat_id"] for c in ok] == [222, 111] and other.chat_id == 222 and sent.chat_id == 111
    assert ok[1].time - fake.calls("sendMessage", ok=False)[0].time >= 1.0


async def test_an_instant_result_still_takes_the_reaction_back(tmp_path: Path, tiny) -> None:
    """A repeat with a seed is answered from the stored images at once: the 👀 is set, then removed."""
    async with FakeTelegram() as fake, running(tmp_path, tiny, fake):
        for n in range(2):
            mark = fake.mark()
            fake.push(fake.message_update("/imagine a quiet harbour --seed 5 --steps 1"))
            await fake.wait_for_call("editMessageMedia", timeout=GEN, since=mark)
        await wait_until(lambda: len(fake.calls("setMessageReaction", ok=True)) >= 4, 10)
        assert not any(fake.bot_reactions.values())
        assert [bool(c.params.get("reaction")) for c in fake.calls("setMessageReaction", ok=True)] == [
            True, False, True, False]


async def test_a_status_edit_never_takes_the_place_of_a_waiting_result(fake: FakeTelegram) -> None:
    pacer = FloodPacer(FloodLimits(overall_per_second=4, group_per_minute=0, private_interval=0.0), max_retries=0)
    async with ExtBot(fake.token, base_url=fake.base_url, rate_limiter=pacer) as bot:
        first = await bot.send_message(4242, "placeholder")
        await asyncio.sleep(1.1)
        await bot.edit_message_text("status 1", 4242, first.message_id, rate_limit_args=Lane.STATUS)  # room: it goes
        await asyncio.gather(*(bot.send_message(5000 + n, "fill") for n in range(3)))  # the second is spent
        result = asyncio.ensure_future(bot.edit_message_text("result", 4242, first.message_id,
                                                             rate_limit_args=Lane.RESULT))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await bot.edit_message_text("status 2", 4242, first.message_id, rate_limit_args=Lane.STATUS)
        await asyncio.wait_for(result, 5)
    assert [c.params["text"] for c in fake.calls("editMessageText", ok=True)] == ["status 1", "result"]

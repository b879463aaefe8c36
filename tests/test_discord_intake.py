"""Discord: an interaction is stored before it is deferred, and one left unanswered by a crash is
answered after the restart (by editing its response while the token lives, else in the channel)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.discord import DiscordFrontEnd
from bot.service import Who
from storage import jobs, messages
from tests.fake_discord import FakeDiscord, RecordedRequest, fake_discord_server
from tests.test_discord import TIMEOUT, _delivered, callback, eventually, original, result_of, running

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def fake() -> Any:
    async with fake_discord_server() as server:
        yield server


def inbox_row(db: Path, key: str) -> tuple[Any, ...] | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT key, payload, handled_at FROM inbox WHERE platform = 'discord' AND key = ?",
                            (key,)).fetchone()


async def test_the_interaction_is_stored_before_the_deferral_and_the_job_closes_it(fake: FakeDiscord, tmp_path: Path,
                                                                                    tiny: Any) -> None:
    seen_at_defer: list[Any] = []

    def at_defer(rec: RecordedRequest) -> None:  # runs as Discord receives the deferral
        if rec.path.startswith("/interactions/"):
            seen_at_defer.append(inbox_row(tmp_path / "bot.db", rec.path.split("/")[2]))

    fake.before_answer = at_defer
    async with running(fake, tmp_path, tiny) as (env, front):
        sent_at = asyncio.get_running_loop().time()
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fox --seed 1 --steps 1"}))
        defer = await fake.wait_for_request("POST", callback(inter), 5)
        assert defer.json == {"type": 5} and defer.received_at - sent_at < 3
        (row,) = seen_at_defer
        assert row is not None and row[0] == inter["id"] and row[2] is None  # stored, not yet handled
        _, message = await result_of(fake, inter)
        job_id = message["attachments"][0]["filename"].split(".")[0]
        job = await eventually(lambda: _delivered(env, job_id))
        assert job.origin == f"discord:{inter['id']}"
        assert inbox_row(tmp_path / "bot.db", inter["id"])[2] is not None  # closed with the job row
        assert job.target["interaction"]["token"] == inter["token"]

        loop = asyncio.get_running_loop()  # the write before the deferral is small next to Discord's 3 s
        started = loop.time()
        await env.service.receive("discord", "timing", {"kind": "imagine", "prompt": "x" * 500})
        assert loop.time() - started < 0.5


async def test_a_request_deferred_but_not_submitted_before_a_crash_is_made_once_after_the_restart(
        fake: FakeDiscord, tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: DiscordFrontEnd, key: str, stored: dict[str, Any], live: Any) -> None:
        return None  # as if killed right after the deferral

    with monkeypatch.context() as patch:
        patch.setattr(DiscordFrontEnd, "_run", crash)
        async with running(fake, tmp_path, tiny) as (env, front):
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a heron --seed 2 --steps 1"}))
            await fake.wait_for_request("POST", callback(inter), 5)
            assert await env.db.fetchval("SELECT count(*) FROM jobs") == 0
    async with running(fake, tmp_path, tiny) as (env, front):
        _, message = await result_of(fake, inter)  # the same "thinking…" message gets the result
        job_id = message["attachments"][0]["filename"].split(".")[0]
        job = await eventually(lambda: _delivered(env, job_id))
        assert job.origin == f"discord:{inter['id']}" and job.request["seed"] == 2
        assert await env.service.unhandled("discord") == []
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 1
        assert fake.channel_messages(fake.text_channel_id) == [message]


async def test_after_the_token_expired_the_restart_answers_in_the_channel_with_a_nonce(
        fake: FakeDiscord, tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: DiscordFrontEnd, key: str, stored: dict[str, Any], live: Any) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(DiscordFrontEnd, "_run", crash)
        async with running(fake, tmp_path, tiny) as (env, front):
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "an ibis --steps 1"}))
            await fake.wait_for_request("POST", callback(inter), 5)
    fake.expire_interaction(inter)
    async with running(fake, tmp_path, tiny) as (env, front):
        post = await fake.wait_for_request("POST", rf"/channels/{fake.text_channel_id}/messages", TIMEOUT,
                                           predicate=lambda r: bool(r.files))
        job_id = post.files[0].filename.split(".")[0]
        assert f"<@{fake.user['id']}>" in post.json["content"]
        assert post.json["nonce"] == f"imagine:{job_id}" and post.json["enforce_nonce"] is True
        await eventually(lambda: _delivered(env, job_id))
        assert await messages.find(env.db, "discord", None, post.response["id"]) == (job_id, None)


async def test_a_refusal_left_by_a_crash_is_told_after_the_restart_and_not_charged(
        fake: FakeDiscord, tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: DiscordFrontEnd, key: str, stored: dict[str, Any], live: Any) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(DiscordFrontEnd, "_run", crash)
        async with running(fake, tmp_path, tiny, daily_quota=2) as (env, front):
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a swarm --n 3 --steps 1"}))
            await fake.wait_for_request("POST", callback(inter), 5)
    async with running(fake, tmp_path, tiny, daily_quota=2) as (env, front):
        told = await fake.wait_for_request("PATCH", original(fake, inter), TIMEOUT)
        assert "left of your 2" in told.json["content"] and f"<@{fake.user['id']}>" in told.json["content"]
        assert await eventually(lambda: _no_open(env))
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 0
        assert (await env.service.quota(Who("discord", fake.user["id"])))[0] == 0


async def _no_open(env: Any) -> bool:
    return not await env.db.fetchval("SELECT count(*) FROM inbox WHERE handled_at IS NULL")


async def test_a_result_owed_at_restart_edits_the_same_response_while_the_token_lives(
        fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a kingfisher --seed 5 --steps 1"}))
        _, message = await result_of(fake, inter)
        job_id = message["attachments"][0]["filename"].split(".")[0]
        await eventually(lambda: _delivered(env, job_id))
        await env.db.execute("UPDATE jobs SET status = 'done', delivered_at = NULL WHERE id = ?", (job_id,))
        front.resume(await env.service.recover())  # as after a crash between the send and mark_delivered
        again = await fake.wait_for_request("PATCH", original(fake, inter), TIMEOUT, predicate=lambda r: bool(r.files))
        assert again.status == 200 and again.response["id"] == message["id"]
        await eventually(lambda: _delivered(env, job_id))
        assert fake.channel_messages(fake.text_channel_id) == [fake.original_response(inter["token"])]
        assert not fake.requests_to("POST", rf"/channels/{fake.text_channel_id}/messages")
        assert (await jobs.get(env.db, job_id)).status == "delivered"


async def test_an_interaction_the_gateway_delivers_twice_is_answered_once(fake: FakeDiscord, tmp_path: Path,
                                                                          tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a gannet --seed 6 --steps 1"}))
        await fake.wait_for_request("POST", callback(inter), 5)
        await fake.dispatch("INTERACTION_CREATE", inter)  # e.g. replayed on a RESUME
        _, message = await result_of(fake, inter)
        job_id = message["attachments"][0]["filename"].split(".")[0]
        await eventually(lambda: _delivered(env, job_id))
        await asyncio.sleep(0.3)
        assert len(fake.requests_to("POST", callback(inter))) == 1
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 1


async def _posted_in_channel_then_crashed(fake: FakeDiscord, env: Any, front: DiscordFrontEnd) -> tuple[str, Any]:
    """A result sent as a channel message (token expired), then 'undelivered' as after a crash."""
    inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a puffin --seed 8 --steps 1"}))
    await fake.wait_for_request("POST", callback(inter), 5)
    fake.expire_interaction(inter)
    post = await fake.wait_for_request("POST", rf"/channels/{fake.text_channel_id}/messages", TIMEOUT,
                                       predicate=lambda r: bool(r.files))
    job_id = post.files[0].filename.split(".")[0]
    await eventually(lambda: _delivered(env, job_id))
    await env.db.execute("UPDATE jobs SET status = 'done', delivered_at = NULL WHERE id = ?", (job_id,))
    return job_id, post


async def test_a_result_owed_after_the_nonce_window_is_found_in_the_channel_not_posted_again(
        tmp_path: Path, tiny: Any) -> None:
    async with fake_discord_server(nonce_window=0.0) as fake:  # as if the restart took longer than Discord's window
        async with running(fake, tmp_path, tiny) as (env, front):
            job_id, post = await _posted_in_channel_then_crashed(fake, env, front)
            front.resume(await env.service.recover())
            await eventually(lambda: _delivered(env, job_id))
            assert fake.requests_to("GET", rf"/channels/{fake.text_channel_id}/messages")
            assert len(fake.requests_to("POST", rf"/channels/{fake.text_channel_id}/messages")) == 1
            assert len([m for m in fake.channel_messages(fake.text_channel_id) if m["attachments"]]) == 1
            assert await messages.find(env.db, "discord", None, post.response["id"]) == (job_id, None)


@pytest.mark.parametrize("window", [300.0, 0.0])
async def test_when_the_channel_cannot_be_read_the_nonce_dedupes_or_the_resend_says_it_may_be_a_copy(
        tmp_path: Path, tiny: Any, window: float) -> None:
    from bot.frontends.discord.delivery import RESENT_NOTE

    async with fake_discord_server(nonce_window=window) as fake:
        async with running(fake, tmp_path, tiny) as (env, front):
            job_id, first = await _posted_in_channel_then_crashed(fake, env, front)
            fake.fail_next("GET", rf"/channels/{fake.text_channel_id}/messages", status=403, code=50001,
                           message="Missing Access", times=None)
            front.resume(await env.service.recover())
            again = await fake.wait_for_request("POST", rf"/channels/{fake.text_channel_id}/messages", TIMEOUT,
                                                predicate=lambda r: bool(r.files))
            await eventually(lambda: _delivered(env, job_id))
            assert again.json["nonce"] == first.json["nonce"] == f"imagine:{job_id}"
            results = [m for m in fake.channel_messages(fake.text_channel_id) if m["attachments"]]
            if window:  # within Discord's few minutes: the same message comes back, nothing new
                assert fake.nonce_hits == 1 and again.response["id"] == first.response["id"] and len(results) == 1
            else:  # past them: a second message, and it says what it is
                assert len(results) == 2 and RESENT_NOTE in results[1]["content"]
                assert RESENT_NOTE not in results[0]["content"]


async def test_a_stored_request_that_failed_every_start_is_dropped_with_an_apology(
        fake: FakeDiscord, tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: DiscordFrontEnd, key: str, stored: dict[str, Any], live: Any) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(DiscordFrontEnd, "_run", crash)
        async with running(fake, tmp_path, tiny) as (env, front):
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a loon --steps 1"}))
            await fake.wait_for_request("POST", callback(inter), 5)
            for _ in range(3):  # three starts that died while answering it
                await env.service.unhandled("discord")
    async with running(fake, tmp_path, tiny) as (env, front):
        told = await fake.wait_for_request("PATCH", original(fake, inter), TIMEOUT)
        assert "reference" in told.json["content"] and f"<@{fake.user['id']}>" in told.json["content"]
        assert await eventually(lambda: _no_open(env))
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 0

"""Telegram faults: unreachable or unknown host at start, a refused token, failing sends, and a
crash between storing an update and handling it (the inbox replays it once)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import run_bot
from bot.config import load_config
from bot.frontends.telegram import TelegramFrontEnd, front
from generation.core.errors import ImagineError
from tests.fake_discord import FakeDiscord
from tests.fake_telegram import FakeTelegram, make_user
from tests.fakes import FakePipeline
from tests.service_support import service_env
from tests.telegram_support import callback_data, running, settings_for, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

GEN = 30.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_at_start_logs_once_and_connects_later(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front, "_CONNECT_DELAYS", (0.2, 0.4))
    fake = FakeTelegram(port=free_port())  # not listening yet: connection refused
    caplog.set_level(logging.INFO, "bot.frontends.telegram")
    async with service_env(tmp_path, FakePipeline()) as env:
        telegram = TelegramFrontEnd(env.service, settings_for(fake))
        await asyncio.wait_for(telegram.start(), 10)  # returns: the rest of the bot goes on
        try:
            await asyncio.sleep(1.0)  # a few retries while it is down
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "cannot reach the Bot API" in errors[0].getMessage()
            async with fake:
                fake.push(fake.message_update("/quota"))
                reply = await fake.wait_for_call("sendMessage", timeout=10)
                assert "left" in reply.params["text"]
                assert any("connected after" in r.getMessage() for r in caplog.records)
        finally:
            await telegram.close()


async def test_dns_failure_at_start_is_one_line_too(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    monkeypatch.setattr(front, "_CONNECT_DELAYS", (30.0,))
    caplog.set_level(logging.INFO, "bot.frontends.telegram")
    async with service_env(tmp_path, FakePipeline()) as env:
        settings = settings_for(FakeTelegram(), base_url="http://api.telegram.invalid/bot")
        telegram = TelegramFrontEnd(env.service, settings)
        await asyncio.wait_for(telegram.start(), 10)
        try:
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "cannot reach the Bot API" in errors[0], errors
        finally:
            await telegram.close()


async def test_a_refused_token_is_a_clear_error(tmp_path: Path, fake: FakeTelegram) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        telegram = TelegramFrontEnd(env.service, settings_for(fake, token="999:not-the-token"))
        with pytest.raises(ImagineError, match="Telegram refused the bot token"):
            await asyncio.wait_for(telegram.start(), 10)
        assert telegram.application is None


async def test_failed_sends_are_retried_in_process_but_not_bad_requests(tmp_path: Path,
                                                                          fake: FakeTelegram) -> None:
    async with running(tmp_path, FakePipeline(), fake, send_retries=3, send_retry_backoff=0.05):
        fake.fail("sendMessage", 500, "Internal Server Error", times=2)
        fake.push(fake.message_update("/quota"))
        calls = await fake.wait_for_calls("sendMessage", 3)
        assert [c.status for c in calls] == [500, 500, 200]
        assert calls[2].time - calls[1].time >= 0.09  # backoff doubles: 0.05, then 0.1

        mark = fake.mark()
        fake.fail("sendMessage", 502, "Bad Gateway", times=None)
        fake.push(fake.message_update("/quota"))
        await fake.wait_for_calls("sendMessage", 4, since=mark)  # 1 + 3 retries, then it gives up
        await asyncio.sleep(1.0)
        replies = [c for c in fake.calls("sendMessage", since=mark) if "left" in c.params["text"]]
        assert len(replies) == 4  # (then the apology fails the same way)
        fake.clear_failures()

        mark = fake.mark()
        fake.bad_request("sendMessage", "Bad Request: chat not found")
        fake.push(fake.message_update("/quota"))
        await fake.wait_for_call("sendMessage", since=mark)
        await asyncio.sleep(0.5)
        assert [c.status for c in fake.calls("sendMessage", since=mark)][:1] == [400]
        assert len([c for c in fake.calls("sendMessage", since=mark) if c.status == 400]) == 1


async def test_an_update_stored_before_a_crash_is_handled_once(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    """Stored (and so confirmed) but never handled: the next start handles it, exactly once, even
    though Telegram also sends it again (it was never confirmed by a later offset)."""
    update = fake.message_update("/imagine a stored lamp --steps 1", make_user(1001, "Alice"))
    refusal = fake.message_update("/imagine a fox --ar 2:9", make_user(1001, "Alice"))
    async with service_env(tmp_path, tiny) as env:
        for stored in (update, refusal):
            assert await env.service.receive("telegram", stored["update_id"], stored)
    fake.push(update)  # Telegram re-sends both: the offset never confirmed them
    fake.push(refusal)
    async with running(tmp_path, tiny, fake) as r:
        result = await fake.wait_for_call("editMessageMedia", timeout=GEN)
        job = callback_data(result)[0].removeprefix("r:")
        await wait_until(lambda: env_done(r.env), GEN)
        await asyncio.sleep(1.0)  # time for a second copy, were there one
        assert len(fake.calls("sendPhoto")) == 1 and len(fake.calls("editMessageMedia")) == 1
        told = [c for c in fake.calls("sendMessage") if "2:9" in c.params["text"]]
        assert len(told) == 1
        assert await r.env.service.unhandled("telegram") == []
        row = await r.env.db.fetchone("SELECT origin, charged FROM jobs WHERE id = ?", (job,))
        assert (row["origin"], row["charged"]) == (f"telegram:{update['update_id']}", 1)


async def env_done(env) -> bool:  # type: ignore[no-untyped-def]
    rows = await env.db.fetchall("SELECT status FROM jobs")
    return [r["status"] for r in rows] == ["delivered"]


async def test_an_update_that_could_not_be_stored_is_not_confirmed(tmp_path: Path, fake: FakeTelegram,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The database refuses the first write: the update stays unconfirmed, comes again, and is
    then stored and handled once; polling goes on."""
    async with running(tmp_path, FakePipeline(), fake) as r:
        receive = r.env.service.receive
        failures = [sqlite3.OperationalError("database is locked")]

        async def flaky(platform: str, key: str | int, payload: dict) -> bool:  # type: ignore[type-arg]
            if failures:
                raise failures.pop()
            return await receive(platform, key, payload)

        monkeypatch.setattr(r.env.service, "receive", flaky)
        update = fake.message_update("/quota")
        fake.push(update)
        reply = await fake.wait_for_call("sendMessage", timeout=15)
        assert "left" in reply.params["text"] and not failures
        polls = [c for c in fake.calls("getUpdates") if c.ok and c.result]
        assert len(polls) >= 2  # fetched twice: the first fetch was not confirmed
        assert all(u["update_id"] == update["update_id"] for c in polls for u in c.result)
        fake.push(fake.message_update("/quota"))  # and polling goes on
        await fake.wait_for_calls("sendMessage", 2, timeout=15)
        await asyncio.sleep(0.5)
        assert len(fake.calls("sendMessage")) == 2


def bot_config(tmp_path: Path, telegram_base: str, discord_api: FakeDiscord | None = None) -> Path:
    config_file = tmp_path / "config.toml"
    text = f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
    if discord_api is not None:
        text += (f'[discord]\napi_base_url = "{discord_api.api_base}"\ngateway_url = "{discord_api.gateway_url}"\n'
                 "progress_edit_interval = 0.1\n")
    text += f'[telegram]\nbase_url = "{telegram_base}"\npoll_timeout = 1\n'
    config_file.write_text(text)
    return config_file


@pytest.mark.slow
async def test_run_keeps_discord_going_while_telegram_is_unreachable(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()  # nothing listens there
    async with FakeDiscord() as discord_api:
        config = load_config(bot_config(tmp_path, f"http://127.0.0.1:{port}/bot", discord_api),
                             env={"DISCORD_TOKEN": "fake-token", "TELEGRAM_TOKEN": "123456:TEST-fake-token"})
        bot = asyncio.create_task(run_bot(config, model="tiny"))
        try:
            await wait_until(lambda: discord_api.requests_to("PUT", r"/applications/.*/commands"), GEN * 3)
            inter = await discord_api.send_interaction(discord_api.slash("imagine", {"prompt": "an owl --seed 4"}))
            await discord_api.wait_for_request(
                "PATCH", rf"/webhooks/{discord_api.app_id}/{re.escape(inter['token'])}/messages/@original",
                GEN * 3, predicate=lambda r: bool(r.files))
            assert not bot.done()
            lines = [r.getMessage() for r in caplog.records if "cannot reach the Bot API" in r.getMessage()]
            assert len(lines) == 1, lines
        finally:
            bot.cancel()
            await asyncio.wait_for(asyncio.gather(bot, return_exceptions=True), GEN * 3)


@pytest.mark.slow
async def test_run_stops_with_a_clear_message_on_a_refused_token(tmp_path: Path, fake: FakeTelegram) -> None:
    config = load_config(bot_config(tmp_path, fake.base_url), env={"TELEGRAM_TOKEN": "999:not-the-token"})
    with pytest.raises(ImagineError, match="Telegram refused the bot token"):  # __main__: message, exit 2
        await asyncio.wait_for(run_bot(config, model="tiny"), GEN * 3)


async def test_a_job_whose_placeholder_failed_is_still_delivered(tmp_path: Path, fake: FakeTelegram) -> None:
    async with running(tmp_path, FakePipeline(), fake, send_retries=0) as r:
        fake.fail("sendPhoto", 500, "Internal Server Error", times=1)
        fake.push(fake.message_update("/imagine a stubborn mule --steps 1"))
        result = await fake.wait_for_call("editMessageMedia", timeout=GEN)
        assert [c.status for c in fake.calls("sendPhoto")] == [500, 200]  # the result made its own
        job = callback_data(result)[0].removeprefix("r:")
        await wait_until(lambda: _status_is(r.env, job, "delivered"), GEN)


async def _status_is(env, job: str, status: str) -> bool:  # type: ignore[no-untyped-def]
    row = await env.db.fetchone("SELECT status FROM jobs WHERE id = ?", (job,))
    return row is not None and row["status"] == status

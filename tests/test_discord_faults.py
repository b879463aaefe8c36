"""Discord start-up faults: unreachable or unresolvable -> one clear log line, retry with backoff in the
background while the rest of the bot runs; an invalid token -> a clear message and a non-zero exit."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
from bot.frontends.discord.front import DiscordLoginFailed
from tests.fake_discord import FakeDiscord
from tests.service_support import service_env
from tests.test_discord import result_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FRONT_LOG = "bot.frontends.discord.front"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the Discord front end logged at WARNING or above."""
    return [r.getMessage() for r in caplog.records if r.name == FRONT_LOG and r.levelno >= logging.WARNING]


def quick(**urls: Any) -> DiscordSettings:
    return DiscordSettings("fake-token", guild_ready_timeout=0.05, progress_edit_interval=0.05,
                           retry_initial_s=0.1, retry_max_s=0.4, connect_timeout_s=5, **urls)


async def test_unreachable_at_start_logs_one_line_and_connects_when_discord_comes_back(
        tmp_path: Path, tiny: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=FRONT_LOG)
    port = free_port()  # nothing listens here yet: connection refused
    settings = quick(api_base_url=f"http://127.0.0.1:{port}/api/v10", gateway_url=f"ws://127.0.0.1:{port}/gateway")
    async with service_env(tmp_path, tiny) as env:
        front = DiscordFrontEnd(env.service, settings)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(front.start(timeout=10), 15)
        assert loop.time() - started < 5  # start() returned: the other front ends start now
        await asyncio.sleep(1.0)  # several retries (0.1, 0.2, 0.4, 0.4 s) …
        retries = [r for r in caplog.records if r.name == FRONT_LOG and "still unreachable" in r.getMessage()]
        assert len(retries) >= 2
        (line,) = loud(caplog)  # … and still one line for the operator
        assert "cannot reach" in line and f"127.0.0.1:{port}" in line and "retrying" in line
        fake = FakeDiscord()
        await fake.start(patch=False, port=port)
        try:
            await asyncio.wait_for(front._ready.wait(), 30)
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a phoenix --steps 1"}))
            edit, _ = await result_of(fake, inter)
            assert edit.files
        finally:
            await asyncio.wait_for(front.close(), 15)
            await fake.stop()
        assert len(loud(caplog)) == 1


async def test_a_dns_failure_logs_one_line_and_close_stops_the_retries(
        tmp_path: Path, tiny: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    asked: list[str] = []

    async def no_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", no_dns)  # no lookup leaves this machine
    settings = quick(api_base_url="http://discord.invalid/api/v10", gateway_url="ws://discord.invalid/gateway")
    async with service_env(tmp_path, tiny) as env:
        front = DiscordFrontEnd(env.service, settings)
        await asyncio.wait_for(front.start(timeout=10), 15)
        await asyncio.sleep(0.8)
        assert len(asked) >= 2 and set(asked) == {"discord.invalid"}  # tried again, with backoff
        (line,) = loud(caplog)
        assert "cannot reach http://discord.invalid/api/v10" in line
        await asyncio.wait_for(front.close(), 5)
        tries = len(asked)
        await asyncio.sleep(0.6)
        assert len(asked) == tries  # closing stopped the retries


async def test_an_invalid_token_raises_a_clear_error(tmp_path: Path, tiny: Any) -> None:
    async with FakeDiscord() as fake, service_env(tmp_path, tiny) as env:
        fake.fail_next("GET", "/users/@me", status=401, message="401: Unauthorized", times=None)
        front = DiscordFrontEnd(env.service, quick())
        try:
            with pytest.raises(DiscordLoginFailed, match="DISCORD_TOKEN"):
                await asyncio.wait_for(front.start(timeout=10), 15)
            assert len(fake.requests_to("GET", "/users/@me")) == 1  # never retried: it counts toward a ban
        finally:
            await asyncio.wait_for(front.close(), 15)


class _Refuse(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"message": "401: Unauthorized", "code": 0}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def refusing_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v10"
    finally:
        server.shutdown()
        server.server_close()


def test_imagine_bot_run_with_an_invalid_token_says_so_and_exits_non_zero(
        tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main

    with refusing_api() as base:
        config = tmp_path / "config.toml"
        config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[discord]\napi_base_url = "{base}"\n')
        monkeypatch.setenv("DISCORD_TOKEN", "not-a-token")
        monkeypatch.delenv("TELEGRAM_TOKEN", raising=False)
        code = main(["run", "--model", "tiny", "--config", str(config)])
    assert code != 0
    err = capsys.readouterr().err
    assert "Discord refused the bot token (DISCORD_TOKEN)" in err and "not-a-token" not in err


async def test_telegram_keeps_working_while_discord_is_unreachable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bot.app import run_bot
    from bot.config import load_config
    from tests.fake_telegram import FakeTelegram

    port = free_port()
    async with FakeTelegram() as telegram_api:
        config_file = tmp_path / "config.toml"
        config_file.write_text(
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
            f'[discord]\napi_base_url = "http://127.0.0.1:{port}/api/v10"\ngateway_url = "ws://127.0.0.1:{port}/gw"\n'
            f'[telegram]\nbase_url = "{telegram_api.base_url}"\nbase_file_url = "{telegram_api.base_file_url}"\n'
            "poll_timeout = 1\n")
        config = load_config(config_file, env={"DISCORD_TOKEN": "fake-token", "TELEGRAM_TOKEN": telegram_api.token})
        bot = asyncio.create_task(run_bot(config, model="tiny", lines=[]))
        try:
            await telegram_api.wait_for_call("getUpdates", timeout=90)
            telegram_api.push(telegram_api.message_update("/imagine a fox in snow --seed 3"))
            await telegram_api.wait_for_call("sendPhoto", timeout=90)
            assert [m for m in loud(caplog) if "cannot reach" in m]
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(bot, 90)
    assert not re.search("Traceback", caplog.text)

"""``imagine-bot run`` wiring: tokens in the environment start Discord and Telegram (against the
fakes on 127.0.0.1), both share one service and queue, and SIGTERM stops everything cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
from pathlib import Path

import pytest

from bot.app import run_bot
from bot.config import ConfigError, load_config
from tests.fake_discord import FakeDiscord
from tests.fake_telegram import FakeTelegram

TIMEOUT = 90.0


def statuses(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(
            "SELECT u.platform, j.status FROM jobs j JOIN users u ON u.id = j.user_id ORDER BY u.platform"
        ).fetchall()


async def until(check, timeout: float = TIMEOUT):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)
    return value


async def test_tokens_start_both_front_ends_sharing_one_service(tmp_path: Path) -> None:
    async with FakeDiscord() as discord_api, FakeTelegram() as telegram_api:
        config_file = tmp_path / "config.toml"
        config_file.write_text(
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
            f'[discord]\napi_base_url = "{discord_api.api_base}"\ngateway_url = "{discord_api.gateway_url}"\n'
            "progress_edit_interval = 0.1\n"
            f'[telegram]\nbase_url = "{telegram_api.base_url}"\nbase_file_url = "{telegram_api.base_file_url}"\n'
            "poll_timeout = 1\nstatus_edit_interval_private = 0.1\n"
        )
        config = load_config(config_file, env={"DISCORD_TOKEN": "fake-token", "TELEGRAM_TOKEN": telegram_api.token})
        assert config.discord is not None and config.telegram is not None
        assert "fake-token" not in repr(config) and telegram_api.token not in repr(config)

        bot = asyncio.create_task(run_bot(config, model="tiny", lines=["/imagine never read"]))
        try:
            await telegram_api.wait_for_call("getUpdates", timeout=TIMEOUT)
            await until(lambda: discord_api.requests_to("PUT", r"/applications/.*/commands"))

            telegram_api.push(telegram_api.message_update("/imagine a fox in snow --seed 3"))
            inter = await discord_api.send_interaction(discord_api.slash("imagine", {"prompt": "an owl --seed 4"}))
            await telegram_api.wait_for_call("sendPhoto", timeout=TIMEOUT)
            await discord_api.wait_for_request(
                "PATCH", rf"/webhooks/{discord_api.app_id}/{re.escape(inter['token'])}/messages/@original",
                TIMEOUT, predicate=lambda r: bool(r.files),
            )
            db = tmp_path / "data" / "imagine.db"
            await until(lambda: statuses(db) == [("discord", "delivered"), ("telegram", "delivered")])
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the bot's own handler: a graceful stop
            await asyncio.wait_for(bot, TIMEOUT)
    assert not (tmp_path / "out").exists()  # the terminal chat did not run


def test_tokens_never_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[discord]\ntoken = "oops"\n')
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        load_config(path, env={})
    path.write_text('[telegram]\ntoken = "oops"\n')
    with pytest.raises(ConfigError, match="TELEGRAM_TOKEN"):
        load_config(path, env={})


def test_token_file_and_no_token_means_no_front_end(tmp_path: Path) -> None:
    secret = tmp_path / "discord-token"
    secret.write_text("from-a-file\n")
    config = load_config(None, env={"DISCORD_TOKEN_FILE": str(secret)})
    assert config.discord is not None and config.discord.token == "from-a-file"
    assert config.telegram is None
    none = load_config(None, env={})
    assert none.discord is None and none.telegram is None
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(None, env={"TELEGRAM_TOKEN_FILE": str(tmp_path / "missing")})

"""/web from the chats (the real discord.py and python-telegram-bot clients against the fakes, the
terminal chat) and ``imagine-bot web-link``: a sign-in link only in a private chat, that signs the
browser in as that chat account."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli import main
from bot.frontends.web import WebFrontEnd, WebSettings
from bot.service import Who
from tests.fakes import FakePipeline
from tests.service_support import service_env
from tests.studio_support import csrf_of
from tests.test_web_chat import ALICE, GROUP, PUBLIC, both, dc_answer, tg_reply

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")


async def _signs_in_as(service: Any, link: str) -> Who:
    """Open a link in a browser-like client on a web app over ``service``; who the studio says it is."""
    assert link.startswith(PUBLIC + "/signin/"), link
    path = link.removeprefix(PUBLIC)
    app = WebFrontEnd(service, WebSettings(enabled=True, public_url=PUBLIC)).app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://test") as client:
        page = await client.get(path)
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        assert (await client.post(path, data={"nonce": nonce})).status_code == 303
        studio = await client.get("/studio")
        assert studio.status_code == 200
        session = await service.web_session(client.cookies["ib_session"])
        assert session is not None and session.csrf == csrf_of(studio.text)
        return session.who


async def test_web_in_private_chats_only(tmp_path: Path, tiny: Any) -> None:
    async with both(tmp_path, tiny) as (env, tg, dc):
        # Telegram: in a group it says to ask in private; in private it answers the link
        said = await tg_reply(tg, "/web", ALICE, GROUP, "only handed out in a private chat")
        assert "/signin/" not in said.params["text"]
        said = await tg_reply(tg, "/web", ALICE, None, "sign-in link")
        link = re.search(r"(https://\S+/signin/\S+)", said.params["text"]).group(1)  # type: ignore[union-attr]
        preview = said.params.get("link_preview_options")
        assert (json.loads(preview) if isinstance(preview, str) else preview)["is_disabled"] is True
        assert (await _signs_in_as(env.service, link)).key == "telegram:1001"
        menu = {c["command"] for c in tg.calls("setMyCommands")[-1].params["commands"]}
        assert "web" in menu

        # Discord: ephemeral answers; in a guild channel it says to DM, in a DM the link
        data = await dc_answer(dc, dc.slash("web", {}))
        assert data["content"].startswith("Sign-in links to the web studio are only handed out in a private chat")
        assert data["flags"] & 64  # ephemeral
        dm = dc.dm_channel_for(dc.user["id"])
        data = await dc_answer(dc, dc.slash("web", {}, channel=dm))
        link = re.search(r"(https://\S+/signin/\S+)", data["content"]).group(1)  # type: ignore[union-attr]
        assert data["flags"] & 64
        assert (await _signs_in_as(env.service, link)).key == f"discord:{dc.user['id']}"


async def test_console_web(tmp_path: Path) -> None:
    from bot.frontends.console import run_console

    carol = Who("console", "carol", "carol")
    async with service_env(tmp_path, FakePipeline(), public_url=PUBLIC) as env:
        out = io.StringIO()
        await asyncio.wait_for(run_console(env.service, who=carol, output_dir=tmp_path / "out",
                                           lines=["/web"], out=out), 30)
        link = re.search(r"(https://\S+/signin/\S+)", out.getvalue()).group(1)  # type: ignore[union-attr]
        assert (await _signs_in_as(env.service, link)).key == "console:carol"


def test_operators_web_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[web]\nenabled = true\n'
                      f'public_url = "{PUBLIC}"\n')
    assert main(["web-link", "telegram:1001", "--config", str(config)]) == 0
    link = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["web-link", "nocolon", "--config", str(config)]) == 2
    assert "platform:user_id" in capsys.readouterr().err
    (tmp_path / "svc").mkdir()
    shutil.copy(tmp_path / "data" / "imagine.db", tmp_path / "svc" / "bot.db")

    async def check() -> None:
        async with service_env(tmp_path / "svc", FakePipeline(), public_url=PUBLIC) as env:
            assert (await _signs_in_as(env.service, link)).key == "telegram:1001"
            assert await env.service.web_signin_name(link.rpartition("/")[2]) is None  # used

    asyncio.run(check())


async def test_web_says_the_studio_is_off_when_the_web_front_end_is(tmp_path: Path, tiny: Any) -> None:
    """[web] off: /web in a private chat says there is no studio (and how an operator turns it on),
    on Telegram and on Discord, and no sign-in link is made."""
    async with both(tmp_path, tiny, web_enabled=False) as (env, tg, dc):
        said = await tg_reply(tg, "/web", ALICE, None, "web studio is off")
        assert "[web]" in said.params["text"] and "/signin/" not in said.params["text"]
        dm = dc.dm_channel_for(dc.user["id"])
        data = await dc_answer(dc, dc.slash("web", {}, channel=dm))
        assert "web studio is off" in data["content"] and "[web]" in data["content"]
        assert "/signin/" not in data["content"] and data["flags"] & 64
        assert int(await env.db.fetchval("SELECT count(*) FROM web_signins")) == 0

"""The web gallery and one account, from the chats: the real discord.py and python-telegram-bot
clients against the fakes on 127.0.0.1, one real service on SQLite shared by both, the tiny pipeline."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
from bot.frontends.telegram import TelegramFrontEnd
from bot.service import Who
from storage import moderation
from tests.fake_discord import FakeDiscord, fake_discord_server
from tests.fake_telegram import Call, FakeTelegram, make_chat, make_user
from tests.service_support import Env, service_env
from tests.telegram_support import callback_data, settings_for

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

GEN = 30.0
PUBLIC = "https://imagine.example.org"
ALICE = make_user(1001, "Alice", "alice")
BOB = make_user(2002, "Bob", "bob")
GROUP = make_chat(-1001234567890, "supergroup", "Imagine fans")
ALICE_WHO = Who("telegram", "1001", "Alice")


@asynccontextmanager
async def both(root: Path, tiny: Any, **service: Any) -> AsyncIterator[tuple[Env, FakeTelegram, FakeDiscord]]:
    """One service; a Telegram front end against FakeTelegram and a Discord one against the fake Discord."""
    async with FakeTelegram() as tg, fake_discord_server() as dc, \
            service_env(root, tiny, public_url=PUBLIC, **service) as env:
        telegram = TelegramFrontEnd(env.service, settings_for(tg))
        discord_front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                                     progress_edit_interval=0.05))
        await telegram.start(await env.service.recover())
        await asyncio.wait_for(discord_front.start(timeout=10), 15)
        try:
            yield env, tg, dc
        finally:
            await asyncio.wait_for(discord_front.close(), 15)
            await telegram.close()
        assert dc.unhandled == [], [f"{r.method} {r.path}" for r in dc.unhandled]


def to(chat_id: int, *words: str):  # type: ignore[no-untyped-def]
    return lambda c: c.params.get("chat_id") == chat_id and all(w in (c.params.get("text") or "") for w in words)


async def tg_reply(fake: FakeTelegram, text: str, user: dict[str, Any], chat: dict[str, Any] | None = None,
                   *words: str, answer_in: int | None = None) -> Call:
    """Push a command; the bot's next sendMessage to ``answer_in`` (default: that chat) with ``words``."""
    mark = fake.mark()
    fake.push(fake.message_update(text, user, chat))
    chat_id = answer_in or (chat or user)["id"]
    return await fake.wait_for_call("sendMessage", to(chat_id, *words), since=mark, timeout=GEN)


async def dc_answer(fake: FakeDiscord, payload: dict[str, Any]) -> dict[str, Any]:
    """Send an interaction; the data of its immediate reply (type 4)."""
    inter = await fake.send_interaction(payload)
    reply = await fake.wait_for_request("POST", rf"/interactions/{inter['id']}/{re.escape(inter['token'])}/callback", 5)
    assert reply.json["type"] in (4, 7), reply.json
    return reply.json["data"] | {"_inter": inter}


async def dc_result(fake: FakeDiscord, prompt: str, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """/imagine on Discord; the stored result message (with its buttons)."""
    inter = await fake.send_interaction(fake.slash("imagine", {"prompt": prompt}, user))
    path = rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}/messages/@original"
    await fake.wait_for_request("PATCH", path, GEN, predicate=lambda r: bool(r.files))
    message = fake.original_response(inter["token"])
    assert message is not None
    return message


def custom_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def test_share_buttons_on_both_platforms(tmp_path: Path, tiny: Any) -> None:
    async with both(tmp_path, tiny) as (env, tg, dc):
        # Telegram: 🌐 under an album result; a stranger may not, the owner may; ↩ Unshare undoes it
        tg.push(tg.message_update("/imagine a lighthouse --n 2 --steps 1", ALICE, GROUP))
        result = await tg.wait_for_call("editMessageMedia", timeout=GEN)
        job = callback_data(result)[0].removeprefix("r:")
        assert callback_data(result)[-2:] == [f"g:{job}:1", f"g:{job}:2"]
        assert (await env.service.gallery()).total == 0  # nothing is public unless shared
        mark = tg.mark()
        tg.push(tg.callback_query_update(f"g:{job}:2", result.result, BOB))
        refused = await tg.wait_for_call("answerCallbackQuery", since=mark, timeout=GEN)
        assert "Only the person who asked for this image can share it" in refused.params["text"]
        assert (await env.service.gallery()).total == 0
        mark = tg.mark()
        tg.push(tg.callback_query_update(f"g:{job}:2", result.result, ALICE))
        shared = await tg.wait_for_call("sendMessage", to(GROUP["id"], "Shared"), since=mark, timeout=GEN)
        share_id = re.search(rf"{PUBLIC}/i/(\S+)", shared.params["text"]).group(1)
        assert (await env.service.shared_image(share_id)).ref == f"{job}-2"
        assert callback_data(shared) == [f"o:{job}:2"]
        mark = tg.mark()
        tg.push(tg.callback_query_update(f"o:{job}:2", shared.result, ALICE))
        edited = await tg.wait_for_call("editMessageText", since=mark, timeout=GEN)
        assert edited.params["text"] == f"{job}-2 is no longer in the gallery."
        assert (await env.service.gallery()).total == 0
        # the commands, with a usage line for a bad reference
        said = await tg_reply(tg, f"/share {job} 1", ALICE, None, "Shared")
        assert f"{PUBLIC}/i/" in said.params["text"]
        said = await tg_reply(tg, "/share nope", ALICE, None, "Usage: /share JOB N")
        said = await tg_reply(tg, f"/unshare {job} 1", ALICE, None, "no longer")

        # Discord: 🌐 on a single image; the answer is ephemeral, with an Unshare button
        message = await dc_result(dc, "an owl --steps 1")
        dc_job = custom_ids(message)[0].split(":")[2]
        assert custom_ids(message)[-3:] == [f"imagine:share:{dc_job}:0", f"imagine:comment:{dc_job}",
                                            f"imagine:tool:vr:{dc_job}:0"]  # 🖌️ Vary (Region), on its own row
        stranger = dc.make_user("mallory")
        data = await dc_answer(dc, dc.button(f"imagine:share:{dc_job}:0", message, stranger))
        assert data["flags"] == 64 and "Only the person who asked for this image" in data["content"]
        data = await dc_answer(dc, dc.button(f"imagine:share:{dc_job}:0", message))
        assert data["flags"] == 64 and data["content"].startswith(f"🌐 Shared {dc_job}-1 in the gallery: {PUBLIC}/i/")
        assert [c["custom_id"] for c in data["components"][0]["components"]] == [f"imagine:unshare:{dc_job}:0"]
        assert (await env.service.gallery()).total == 1
        answer = dc.original_response(data["_inter"]["token"])
        data = await dc_answer(dc, dc.button(f"imagine:unshare:{dc_job}:0", answer))
        assert data["content"] == f"{dc_job}-1 is no longer in the gallery." and data["components"] == []
        assert (await env.service.gallery()).total == 0
        data = await dc_answer(dc, dc.slash("share", {"job": dc_job, "image": 1}))
        assert f"{PUBLIC}/i/" in data["content"]
        data = await dc_answer(dc, dc.slash("unshare", {"job": dc_job}, stranger))
        assert "or an admin" in data["content"]  # shared: in plain sight, so say who may
        data = await dc_answer(dc, dc.slash("share", {"job": "nosuchjob", "image": 1}))
        assert data["content"] == "There is no image nosuchjob-1."
        # the image by its other names: JOB-N as the API writes it, or its number as /history shows it
        data = await dc_answer(dc, dc.slash("unshare", {"job": f"{dc_job}-1"}))
        assert data["content"] == f"{dc_job}-1 is no longer in the gallery."
        number = (await env.service.job_delivery(Who("discord", str(dc.user["id"])), dc_job)).images[0].image_id
        data = await dc_answer(dc, dc.slash("share", {"job": str(number)}))
        assert data["content"].startswith(f"🌐 Shared {dc_job}-1 in the gallery: {PUBLIC}/i/")
        assert [c["custom_id"] for c in data["components"][0]["components"]] == [f"imagine:unshare:{dc_job}:0"]
        said = await tg_reply(tg, f"/unshare {dc_job}-1", ALICE, None, "Only the person")  # not Alice's


async def test_a_telegram_code_entered_on_discord_joins_the_accounts(tmp_path: Path, tiny: Any) -> None:
    async with both(tmp_path, tiny, daily_quota=5) as (env, tg, dc):
        put = dc.requests_to("PUT", rf"/applications/{dc.app_id}/commands")[0]
        assert {c["name"] for c in put.json} >= {"share", "unshare", "link", "unlink", "apikey"}
        menu = {c["command"] for c in tg.calls("setMyCommands")[0].params["commands"]}
        assert menu >= {"share", "unshare", "link", "unlink", "apikey"}

        tg.push(tg.message_update("/imagine a fox --steps 1", ALICE))
        tg_result = await tg.wait_for_call("editMessageMedia", timeout=GEN)
        tg_job = callback_data(tg_result)[0].removeprefix("r:")
        dc_message = await dc_result(dc, "an owl --steps 1 --n 2")
        dc_job = custom_ids(dc_message)[0].split(":")[2]
        dc_who = Who("discord", dc.user["id"])

        # /link in a group: the code goes to the private chat, never to the group
        said = await tg_reply(tg, "/link", ALICE, GROUP, "Your link code", answer_in=ALICE["id"])
        code = re.search(r"Your link code: (\w+)", said.params["text"]).group(1)
        assert not [c for c in tg.calls("sendMessage") if code in (c.params.get("text") or "")
                    and c.params.get("chat_id") == GROUP["id"]]

        data = await dc_answer(dc, dc.slash("link", {"code": code}))
        assert data["flags"] == 64 and data["content"] == f"Linked: telegram:1001, discord:{dc.user['id']} now share one account."
        for who in (ALICE_WHO, dc_who):  # one quota, one history
            assert (await env.service.quota(who)).used == 3
            assert {e.job_id for e in (await env.service.history(who)).entries} == {tg_job, dc_job}
        data = await dc_answer(dc, dc.slash("quota"))
        assert data["content"].startswith("Used 3 of 5 images; 2 left this day (daily quota). Resets <t:")
        # the same code again (another Discord user), a wrong one, an expired one: refused, said why
        data = await dc_answer(dc, dc.slash("link", {"code": code}, dc.make_user("eve")))
        assert "unknown, used or expired" in data["content"]
        said = await tg_reply(tg, "/link NOTACODE", BOB, None, "unknown, used or expired")
        said = await tg_reply(tg, "/link", BOB, None, "Your link code")
        late = re.search(r"Your link code: (\w+)", said.params["text"]).group(1)
        env.clock.advance(minutes=10, seconds=1)
        data = await dc_answer(dc, dc.slash("link", {"code": late}, dc.make_user("frank")))
        assert "unknown, used or expired" in data["content"]

        # the stricter moderation state holds: Alice's cooldown on Telegram stops the Discord side too
        await moderation.set_cooldown(env.db, ALICE_WHO.key, env.clock() + timedelta(hours=1))
        inter = await dc.send_interaction(dc.slash("imagine", {"prompt": "a cat --steps 1"}))
        refused = await dc.wait_for_request("POST", rf"/webhooks/{dc.app_id}/{re.escape(inter['token'])}$", GEN)
        assert "cooldown" in refused.json["content"].lower()
        assert (await env.service.quota(dc_who)).used == 3

        # an API key made on Discord (in a DM) acts as the account; /apikey list shows when it was used
        data = await dc_answer(dc, dc.slash("apikey", {}))
        assert data["content"].startswith("API keys are only handed out in a private chat")
        dm = dc.dm_channel_for(dc.user["id"])
        data = await dc_answer(dc, dc.slash("apikey", {}, channel=dm))
        key = re.search(r"^(ib_\S+)$", data["content"], re.M).group(1)
        found = await env.service.authenticate(key)
        assert found is not None and found[0].key == ALICE_WHO.key  # the account's holder
        said = await tg_reply(tg, "/apikey", ALICE, GROUP, "only handed out in a private chat")
        said = await tg_reply(tg, "/apikey list", ALICE, None, "Your API keys")
        assert "last used" in said.params["text"] and key not in said.params["text"]

        # /unlink on Discord: acts as itself again (fresh history); the account keeps its own
        data = await dc_answer(dc, dc.slash("unlink"))
        assert data["content"].startswith("Unlinked")
        assert (await env.service.history(dc_who)).total == 0
        assert (await env.service.history(ALICE_WHO)).total == 2

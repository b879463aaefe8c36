"""Moderation through the Discord front end: the real discord.py client against the fake Discord,
a real service on SQLite and the tiny pipeline; image detections injected at the detector seam."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
from bot.safety import AllowAllImages, BlocklistChecker, Moderation, ModerationSettings, NudityClassifier
from bot.service import Who
from storage import moderation as mod_store
from tests.fake_discord import FakeDiscord, RecordedRequest, fake_discord_server
from tests.service_support import ROOT, Env, service_env

TIMEOUT = 30.0
MANAGE_GUILD = 1 << 5
EXPOSED = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.91, "box": [1, 2, 30, 40]}]


class FlagEverything:
    """Stands in for NudeNet's NudeDetector: every image shows an exposed body part."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: Any) -> list[dict[str, Any]]:
        self.calls += 1
        return list(EXPOSED)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with fake_discord_server() as server:
        yield server


@asynccontextmanager
async def running(fake: FakeDiscord, root: Path, tiny: Any, *, admin: dict[str, Any] | None = None,
                  detector: Any = None, **settings: Any) -> AsyncIterator[tuple[Env, DiscordFrontEnd]]:
    """A service whose moderation uses ``detector`` (None: images pass) and a started front end."""
    admins = frozenset({ROOT.key} | ({f"discord:{admin['id']}"} if admin else set()))
    async with service_env(root, tiny, admins=admins) as env:
        env.service.moderation = Moderation(
            env.db, ModerationSettings(**{"request_interval_s": 0.0, **settings}),
            prompt_checker=BlocklistChecker.default(),
            image_classifier=NudityClassifier(detector=detector) if detector else AllowAllImages(),
            admins=admins, clock=env.clock)
        front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                             progress_edit_interval=0.05))
        await asyncio.wait_for(front.start(timeout=10), 15)
        try:
            yield env, front
        finally:
            await asyncio.wait_for(front.close(), 15)
    assert fake.unhandled == [], [f"{r.method} {r.path}" for r in fake.unhandled]


def original(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    return rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}/messages/@original"


def followups(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    return rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}$"


def callback(inter: dict[str, Any]) -> str:
    return rf"/interactions/{inter['id']}/{re.escape(inter['token'])}/callback"


def admin(sub: str, **options: Any) -> list[dict[str, Any]]:
    return [{"name": sub, "type": 1, "options": [FakeDiscord._option(k, v) for k, v in options.items()]}]


async def answer(fake: FakeDiscord, inter: dict[str, Any]) -> dict[str, Any]:
    """The data of an immediate ephemeral reply (CHANNEL_MESSAGE_WITH_SOURCE)."""
    reply = await fake.wait_for_request("POST", callback(inter), 5)
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] == 64, reply.json
    return reply.json["data"]


async def refusal(fake: FakeDiscord, inter: dict[str, Any]) -> RecordedRequest:
    """A refused /imagine: the public "thinking…" is deleted, an ephemeral follow-up says why."""
    sent = await fake.wait_for_request("POST", followups(fake, inter), 10)
    assert sent.json["flags"] == 64 and not sent.files
    return sent


def uploads(fake: FakeDiscord) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.files]


async def test_blocked_images_never_reach_discord_and_are_refunded(fake: FakeDiscord, tmp_path: Path,
                                                                   tiny: Any) -> None:
    detector = FlagEverything()
    async with running(fake, tmp_path, tiny, detector=detector) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a red fox --n 2 --steps 1"}))
        said = await fake.wait_for_request("PATCH", original(fake, inter), TIMEOUT,
                                           predicate=lambda r: "blocked" in (r.json or {}).get("content", ""))
        assert "refunded" in said.json["content"] and not said.files
        assert detector.calls == 2
        await asyncio.sleep(0.2)
        assert uploads(fake) == []  # nothing with an attachment was ever sent
        used, *_ = await env.service.quota(Who("discord", fake.user["id"]))
        assert used == 0
        assert (await env.db.fetchval("SELECT count(*) FROM images")) == 0


async def test_spoiler_policy_only_in_nsfw_channels(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny, detector=FlagEverything(), strike_on_image_block=False) as (env, _):
        owner = fake.make_user("owner")  # not a bot admin, but manages the server
        payload = fake.slash("admin", admin("policy", explicit="spoiler"), owner)
        payload["member"]["permissions"] = str(int(payload["member"]["permissions"]) | MANAGE_GUILD)
        data = await answer(fake, await fake.send_interaction(payload))
        assert data["content"].startswith("Saved.") and "spoiler" in data["content"]
        assert (await env.service.moderation.policy_for(f"discord:guild:{fake.guild_id}")).explicit == "spoiler"

        nsfw = await fake.send_interaction(fake.slash("imagine", {"prompt": "a statue --steps 1"},
                                                      channel=fake.nsfw_channel_id))
        edit = await fake.wait_for_request("PATCH", original(fake, nsfw), TIMEOUT, predicate=lambda r: bool(r.files))
        assert [f.filename.startswith("SPOILER_") for f in edit.files] == [True]

        sfw = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fountain --steps 1"}))
        said = await fake.wait_for_request("PATCH", original(fake, sfw), TIMEOUT,
                                           predicate=lambda r: "blocked" in (r.json or {}).get("content", ""))
        assert "refunded" in said.json["content"]
        assert [r for r in uploads(fake) if sfw["token"] in r.path or r.path.endswith(
            f"/channels/{fake.text_channel_id}/messages")] == []


async def test_strikes_cooldown_appeal_button_and_lift(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    boss = fake.make_user("boss")
    async with running(fake, tmp_path, tiny, admin=boss, cooldown_after=3) as (env, _):
        for n in range(3):
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": f"hentai drawing {n}"}))
            sent = await refusal(fake, inter)
            assert "blocked by the safety filter" in sent.json["content"]
            assert sent.json["components"][0]["components"][0]["custom_id"] == "imagine:appeal"
        assert "cooldown" in sent.json["content"]

        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a cat --steps 1"}))
        sent = await refusal(fake, inter)
        assert "cooldown" in sent.json["content"]
        (button,) = sent.json["components"][0]["components"]
        assert button["custom_id"] == "imagine:appeal" and button["label"] == "Appeal"

        data = await answer(fake, await fake.send_interaction(fake.button("imagine:appeal", sent.response)))
        assert "Appeal #1 filed" in data["content"] and "cooldown" in data["content"]
        (filed,) = await mod_store.list_appeals(env.db, "open")
        assert filed.user_key == f"discord:{fake.user['id']}" and filed.state == "cooldown"
        again = await answer(fake, await fake.send_interaction(fake.slash("appeal", {"message": "sorry"})))
        assert "already waiting" in again["content"]

        refused = await answer(fake, await fake.send_interaction(fake.slash("admin", admin("appeals"))))
        assert "admins" in refused["content"]
        listed = await answer(fake, await fake.send_interaction(fake.slash("admin", admin("appeals"), boss)))
        assert "#1" in listed["content"] and filed.user_key in listed["content"]
        strikes = await answer(fake, await fake.send_interaction(
            fake.slash("admin", admin("strikes", user=f"<@{fake.user['id']}>"), boss)))
        assert "3 strike(s)" in strikes["content"]
        lifted = await answer(fake, await fake.send_interaction(fake.slash("admin", admin("lift", target="1"), boss)))
        assert "Lifted" in lifted["content"]
        assert await mod_store.list_appeals(env.db, "open") == []
        log = await answer(fake, await fake.send_interaction(fake.slash("admin", admin("modlog"), boss)))
        assert "lifted" in log["content"] and "hentai" not in log["content"]

        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a cat --steps 1"}))
        edit = await fake.wait_for_request("PATCH", original(fake, inter), TIMEOUT, predicate=lambda r: bool(r.files))
        assert edit.status == 200


async def test_policy_is_refused_without_admin_or_manage_server(fake: FakeDiscord, tmp_path: Path,
                                                                tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, _):
        data = await answer(fake, await fake.send_interaction(
            fake.slash("admin", admin("policy", explicit="spoiler", allow="explicit sexual content"))))
        assert "admins" in data["content"]
        scope = f"discord:guild:{fake.guild_id}"
        assert (await env.service.moderation.policy_for(scope)).explicit == "block"
        shown = await answer(fake, await fake.send_interaction(fake.slash("admin", admin("policy"))))
        assert "block" in shown["content"] and scope in shown["content"]
        rejected = await answer(fake, await fake.send_interaction(fake.slash("admin", admin("reject", appeal="1"))))
        assert "admins" in rejected["content"]

"""The Discord front end: the real discord.py client against the fake Discord, a real service on SQLite."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
from bot.service import Who
from storage import images, jobs, messages, ratings, read_metadata, users
from tests.fake_discord import FakeDiscord, RecordedRequest, fake_discord_server
from tests.service_support import Env, service_env

TIMEOUT = 30.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with fake_discord_server() as server:
        yield server


@asynccontextmanager
async def running(fake: FakeDiscord, root: Path, tiny: Any, **service_settings: Any) -> AsyncIterator[tuple[Env, DiscordFrontEnd]]:
    """A service on ``root`` and a started front end connected to ``fake``."""
    async with service_env(root, tiny, **service_settings) as env:
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


def callback(inter: dict[str, Any]) -> str:
    return rf"/interactions/{inter['id']}/{re.escape(inter['token'])}/callback"


async def result_of(fake: FakeDiscord, inter: dict[str, Any], timeout: float = TIMEOUT) -> tuple[RecordedRequest, dict[str, Any]]:
    """The PATCH @original that carried a file, and the stored message."""
    edit = await fake.wait_for_request("PATCH", original(fake, inter), timeout, predicate=lambda r: bool(r.files))
    message = fake.original_response(inter["token"])
    assert message is not None and edit.status == 200
    return edit, message


def custom_ids(message: dict[str, Any]) -> list[list[str]]:
    return [[c["custom_id"] for c in row["components"]] for row in message["components"]]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll an async ``check`` until it returns something truthy (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_imagine_defers_shows_progress_and_posts_a_grid_with_buttons(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/commands")[0]
        assert {c["name"] for c in put.json} >= {"imagine", "history", "quota", "settings", "cancel", "forget",
                                                  "export", "admin"}
        assert fake.intents is not None and fake.intents & (1 << 15) == 0  # no message content

        sent_at = asyncio.get_running_loop().time()
        inter = await fake.send_interaction(fake.slash(
            "imagine", {"prompt": "a red fox --seed 7 --steps 2", "aspect": "16:9", "count": 4}))
        defer = await fake.wait_for_request("POST", callback(inter), 5)
        assert defer.json == {"type": 5} and defer.received_at - sent_at < 3

        progress = await fake.wait_for_request("PATCH", original(fake, inter), TIMEOUT, predicate=lambda r: not r.files)
        assert "a red fox" in progress.json["content"] and ("queued" in progress.json["content"]
                                                            or "generating" in progress.json["content"])
        edit, message = await result_of(fake, inter)
        (upload,) = edit.files
        assert upload.filename.endswith(".png") and png_size(upload.data) == (2 * 336, 2 * 192)
        assert fake.attachment_bytes(message["attachments"][0]) == upload.data
        job_id = custom_ids(message)[0][0].split(":")[2]
        assert custom_ids(message) == [
            [f"imagine:up:{job_id}:{i}" for i in range(4)] + [f"imagine:reroll:{job_id}"],
            [f"imagine:var:{job_id}:{i}" for i in range(4)] + [f"imagine:del:{job_id}"],
            [f"imagine:share:{job_id}:{i}" for i in range(4)] + [f"imagine:comment:{job_id}"],
        ]
        assert [c.get("label") for c in message["components"][0]["components"][:4]] == ["U1", "U2", "U3", "U4"]
        assert "a red fox" in message["content"] and "--seed 7" in message["content"]

        row = await eventually(lambda: _delivered(env, job_id))
        assert row.request["seed"] == 7 and (row.request["width"], row.request["height"]) == (336, 192)
        assert row.request["count"] == 4 and row.request["steps"] == 2
        assert row.target["platform"] == "discord"
        assert await messages.find(env.db, "discord", None, message["id"]) == (job_id, None)
        assert row.target["jump_url"].endswith(f"/{fake.text_channel_id}/{message['id']}")


async def _delivered(env: Env, job_id: str) -> Any:
    row = await jobs.get(env.db, job_id)
    return row if row is not None and row.status == "delivered" else None


async def test_bad_flag_gets_an_ephemeral_error_naming_it(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fox --ar 2:9"}))
        reply = await fake.wait_for_request("POST", callback(inter), 5)
        assert reply.json["type"] == 4 and reply.json["data"]["flags"] == 64
        assert "2:9" in reply.json["data"]["content"] and "aspect" in reply.json["data"]["content"].lower()
        both = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fox --seed 1", "seed": 2}))
        reply = await fake.wait_for_request("POST", callback(both), 5)
        assert reply.json["data"]["flags"] == 64 and "keep one" in reply.json["data"]["content"]
        assert (await env.db.fetchval("SELECT count(*) FROM jobs")) == 0


async def test_upscale_reroll_variation_and_owner_only_delete(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a blue whale --n 2 --steps 1 --seed 3"}))
        _, grid = await result_of(fake, inter)
        job_id = custom_ids(grid)[0][0].split(":")[2]
        stored = await images.images_for_job(env.db, job_id)

        u2 = await fake.send_interaction(fake.button(f"imagine:up:{job_id}:1", grid))
        edit, single = await result_of(fake, u2)
        assert edit.files[0].data == env.store.path_for(stored[1].path).read_bytes()
        assert png_size(edit.files[0].data) == (256, 256) and "image #2" in single["content"]
        assert custom_ids(single) == [[f"imagine:tool:ups:{job_id}:1", f"imagine:tool:upc:{job_id}:1",
                                       f"imagine:tool:vr:{job_id}:1"],
                                      [f"imagine:tool:z15:{job_id}:1", f"imagine:tool:z2:{job_id}:1"],
                                      [f"imagine:tool:{p}:{job_id}:1" for p in ("pl", "pr", "pu", "pd")],
                                      [f"imagine:var:{job_id}:1", f"imagine:del:{job_id}", f"imagine:share:{job_id}:1",
                                       f"imagine:comment:{job_id}:1"]]
        assert await messages.find(env.db, "discord", None, single["id"]) == (job_id, 1)

        reroll = await fake.send_interaction(fake.button(f"imagine:reroll:{job_id}", grid))
        _, rerolled = await result_of(fake, reroll)
        new_id = custom_ids(rerolled)[0][0].split(":")[2]
        new = await jobs.get(env.db, new_id)
        assert new_id != job_id and new.request["prompt"] == "a blue whale" and new.request["seed"] != 3

        vary = await fake.send_interaction(fake.button(f"imagine:var:{job_id}:0", grid))
        _, varied = await result_of(fake, vary)
        var_job = await jobs.get(env.db, custom_ids(varied)[0][0].split(":")[2])
        assert var_job.request["kind"] == "img2img"
        assert f"variation of image 1 of {job_id}" in varied["content"] and "more: V1 on its images" in varied["content"]
        assert var_job.request["init_image"] == str(env.store.path_for(stored[0].path).resolve())

        bob = fake.make_user("bob")
        refused = await fake.send_interaction(fake.button(f"imagine:del:{job_id}", grid, bob))
        reply = await fake.wait_for_request("POST", callback(refused), 5)
        assert reply.json["type"] == 4 and reply.json["data"]["flags"] == 64 and "Only" in reply.json["data"]["content"]
        assert int(grid["id"]) in fake.messages
        delete = await fake.send_interaction(fake.button(f"imagine:del:{job_id}", grid))
        await fake.wait_for_request("DELETE", original(fake, delete), 5)
        assert int(grid["id"]) not in fake.messages


async def test_reactions_rate_and_removing_them_unrates(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a lighthouse --n 2 --steps 1"}))
        _, grid = await result_of(fake, inter)
        job_id = custom_ids(grid)[0][0].split(":")[2]
        await eventually(lambda: _delivered(env, job_id))
        user = await users.get_by_platform(env.db, "discord", fake.user["id"])
        image_ids = [i.id for i in await images.images_for_job(env.db, job_id)]

        async def stars() -> list[int | None]:
            found = [await ratings.get(env.db, i, user.id) for i in image_ids]
            return [r.stars if r else None for r in found]

        await fake.add_reaction("4️⃣", grid)
        assert await eventually(lambda: _equals(stars, [4, 4]))
        await fake.add_reaction("5️⃣", grid)
        assert await eventually(lambda: _equals(stars, [5, 5]))
        await fake.remove_reaction("4️⃣", grid)  # not the reaction that set the rating: kept
        await fake.add_reaction("👍", grid)  # not a rating
        await asyncio.sleep(0.2)
        assert await stars() == [5, 5]
        await fake.remove_reaction("5️⃣", grid)
        assert await eventually(lambda: _equals(stars, [None, None]))

        u1 = await fake.send_interaction(fake.button(f"imagine:up:{job_id}:0", grid))
        _, single = await result_of(fake, u1)
        await fake.add_reaction("3️⃣", single)
        assert await eventually(lambda: _equals(stars, [3, None]))


async def _equals(get: Callable[[], Any], expected: Any) -> bool:
    return await get() == expected


async def test_history_arrives_by_dm_with_embeds_and_paging(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "an old oak --steps 1 --seed 11"}))
        _, result = await result_of(fake, inter)
        job_id = custom_ids(result)[0][0].split(":")[2]
        await eventually(lambda: _delivered(env, job_id))
        await fake.add_reaction("5️⃣", result)
        who = Who("discord", fake.user["id"])
        assert await eventually(lambda: _history_rated(env, who))

        hist = await fake.send_interaction(fake.slash("history", {"search": "oak"}))
        defer = await fake.wait_for_request("POST", callback(hist), 5)
        assert defer.json == {"type": 5, "data": {"flags": 64}}
        dm_channel = fake.dm_channel_for(fake.user["id"])
        post = await fake.wait_for_request("POST", rf"/channels/{dm_channel}/messages", 10)
        assert post.status == 200
        (embed,) = post.json["embeds"]
        assert embed["title"].startswith("an old oak") and embed["url"] == result_url(fake, result)
        assert embed["thumbnail"]["url"] == "attachment://thumb-0.jpg" and post.files[0].filename == "thumb-0.jpg"
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Seed"] == "11" and fields["Your rating"] == "★★★★★"
        assert [c["custom_id"] for c in post.json["components"][0]["components"]] == [
            "imagine:hist:0:oak", "imagine:hist:1:oak"]
        done = await fake.wait_for_request("PATCH", original(fake, hist), 5)
        assert "DMs" in done.json["content"]


def result_url(fake: FakeDiscord, message: dict[str, Any]) -> str:
    return f"https://discord.com/channels/{fake.guild_id}/{fake.text_channel_id}/{message['id']}"


async def _history_rated(env: Env, who: Who) -> bool:
    view = await env.service.history(who)
    return bool(view.entries) and view.entries[0].images[0].my_stars == 5


async def test_closed_dms_are_reported_ephemerally_and_remembered(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        fake.close_dms(fake.user["id"])
        hist = await fake.send_interaction(fake.slash("history"))
        edit = await fake.wait_for_request("PATCH", original(fake, hist), 10)
        assert "DMs are closed" in edit.json["content"]
        assert fake.original_response(hist["token"])["flags"] & 64
        user = await users.get_by_platform(env.db, "discord", fake.user["id"])
        assert user is not None and user.dm_closed


async def test_expired_token_delivers_by_channel_message_after_a_429(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        path = rf"/channels/{fake.text_channel_id}/messages"
        fake.rate_limit_next("POST", path, retry_after=0.2)
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a glass city --n 2 --steps 8"}))
        await fake.wait_for_request("POST", callback(inter), 5, status=200)
        fake.expire_interaction(inter)
        limited = await fake.wait_for_request("POST", path, TIMEOUT)
        posted = await fake.wait_for_request("POST", path, 10)
        assert (limited.status, posted.status) == (429, 200) and posted.received_at - limited.received_at >= 0.2
        assert len(fake.requests_to("POST", path)) == 2
        assert f"<@{fake.user['id']}>" in posted.json["content"] and posted.files
        assert posted.json["components"][0]["components"][-1]["custom_id"].startswith("imagine:reroll:")
        message = posted.response
        job_id = posted.json["components"][0]["components"][-1]["custom_id"].split(":")[2]
        await eventually(lambda: _delivered(env, job_id))
        assert await messages.find(env.db, "discord", None, message["id"]) == (job_id, None)


async def test_files_over_the_upload_limit_are_reencoded(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    limit = 12_000
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a noisy sky --steps 1"},
                                                       attachment_size_limit=limit))
        edit, _ = await result_of(fake, inter)
        (upload,) = edit.files
        assert upload.size <= limit and upload.filename.rsplit(".", 1)[1] in ("webp", "jpg")
        job_id = upload.filename.split(".")[0]
        (stored,) = await images.images_for_job(env.db, job_id)
        assert stored.bytes > limit  # really over: it was re-encoded
        # ... and still carries how it was made (EXIF), like the stored PNG
        assert read_metadata(upload.data) == read_metadata(env.store.path_for(stored.path).read_bytes())
        assert read_metadata(upload.data)["prompt"] == "a noisy sky"


async def test_buttons_and_reactions_work_after_a_restart(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a paper boat --n 2 --steps 1"}))
        _, grid = await result_of(fake, inter)
        job_id = custom_ids(grid)[0][0].split(":")[2]
        await eventually(lambda: _delivered(env, job_id))
    async with running(fake, tmp_path, tiny) as (env, front):
        assert len(fake.identifies) == 2
        click = await fake.send_interaction(fake.button(f"imagine:up:{job_id}:1", grid))
        edit, _ = await result_of(fake, click)
        stored = await images.images_for_job(env.db, job_id)
        assert edit.files[0].data == env.store.path_for(stored[1].path).read_bytes()
        await fake.add_reaction("2️⃣", grid)
        user = await users.get_by_platform(env.db, "discord", fake.user["id"])

        async def rated() -> bool:
            return (await ratings.get(env.db, stored[0].id, user.id)) is not None

        assert await eventually(rated)


async def test_forget_asks_to_confirm(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a snail --steps 1"}))
        await result_of(fake, inter)
        ask = await fake.send_interaction(fake.slash("forget"))
        reply = await fake.wait_for_request("POST", callback(ask), 5)
        assert reply.json["data"]["flags"] == 64
        message = fake.original_response(ask["token"])
        uid = fake.user["id"]
        assert custom_ids(message) == [[f"imagine:forget:yes:{uid}", f"imagine:forget:no:{uid}"]]
        assert (await env.db.fetchval("SELECT count(*) FROM jobs")) == 1
        yes = await fake.send_interaction(fake.button(f"imagine:forget:yes:{uid}", message))
        done = await fake.wait_for_request("PATCH", original(fake, yes), 10)
        assert done.json["content"].startswith("Forgotten") and done.json["components"] == []
        assert "Kept, because they protect others" in done.json["content"]
        assert (await env.db.fetchval("SELECT count(*) FROM jobs")) == 0
        # the image already used in this window still counts after /forget
        assert (await env.service.quota(Who("discord", str(uid)))).used == 1


async def test_admin_is_refused_for_others_and_works_for_admins(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    boss = fake.make_user("boss")
    async with running(fake, tmp_path, tiny, admins=frozenset({f"discord:{boss['id']}"})) as (env, front):
        stats = [{"name": "stats", "type": 1, "options": []}]
        refused = await fake.send_interaction(fake.slash("admin", stats))
        reply = await fake.wait_for_request("POST", callback(refused), 5)
        assert reply.json["data"]["flags"] == 64 and "admins" in reply.json["data"]["content"]
        allowed = await fake.send_interaction(fake.slash("admin", stats, boss))
        reply = await fake.wait_for_request("POST", callback(allowed), 5)
        assert reply.json["data"]["flags"] == 64 and '"model"' in reply.json["data"]["content"]


async def test_quota_settings_and_a_dm_imagine(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        saved = await fake.send_interaction(fake.slash("settings", {"aspect": "3:4", "count": 2}))
        reply = await fake.wait_for_request("POST", callback(saved), 5)
        assert reply.json["data"]["content"].startswith("Saved.") and "aspect: 3:4" in reply.json["data"]["content"]
        dm = fake.dm_channel_for(fake.user["id"])
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a kite --steps 1"}, channel=dm))
        edit, message = await result_of(fake, inter)
        assert png_size(edit.files[0].data) == (2 * 224, 288)  # 2 images of 3:4 side by side
        assert fake.dm_messages(fake.user["id"]) == [message]
        quota = await fake.send_interaction(fake.slash("quota"))
        reply = await fake.wait_for_request("POST", callback(quota), 5)
        assert reply.json["data"]["content"].startswith("Used 2 of 50 images; 48 left this day (daily quota). Resets <t:")


async def test_private_results_go_by_dm_or_ephemerally_when_dms_are_closed(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        await env.service.settings(Who("discord", fake.user["id"]), private=True)
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a secret garden --steps 1"}))
        dm_channel = fake.dm_channel_for(fake.user["id"])
        post = await fake.wait_for_request("POST", rf"/channels/{dm_channel}/messages", TIMEOUT)
        assert post.files and png_size(post.files[0].data) == (256, 256)
        note = await fake.wait_for_request("PATCH", original(fake, inter), 5,
                                           predicate=lambda r: "DMs" in r.json.get("content", ""))
        assert "secret garden" not in str([r.json for r in fake.requests_to("PATCH", original(fake, inter))])

        fake.close_dms(fake.user["id"])
        again = await fake.send_interaction(fake.slash("imagine", {"prompt": "a secret door --steps 1"}))
        followup = await fake.wait_for_request("POST", rf"/webhooks/{fake.app_id}/{re.escape(again['token'])}",
                                               TIMEOUT)
        assert followup.json["flags"] == 64 and followup.files
        assert (await users.get_by_platform(env.db, "discord", fake.user["id"])).dm_closed
        assert note.status == 200


async def test_export_is_sent_by_dm(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a map --steps 1"}))
        await result_of(fake, inter)
        export = await fake.send_interaction(fake.slash("export"))
        dm_channel = fake.dm_channel_for(fake.user["id"])
        post = await fake.wait_for_request("POST", rf"/channels/{dm_channel}/messages", 10)
        assert post.files[0].filename.endswith(".zip") and post.files[0].data[:2] == b"PK"
        done = await fake.wait_for_request("POST", rf"/webhooks/{fake.app_id}/{re.escape(export['token'])}", 5)
        assert done.json["flags"] == 64 and "DMs" in done.json["content"]


async def test_style_autocomplete_offers_presets(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        payload = fake.slash("imagine", [{"name": "prompt", "type": 3, "value": "a fox"},
                                         {"name": "style", "type": 3, "value": "ani", "focused": True}])
        payload["type"] = 4
        inter = await fake.send_interaction(payload)
        reply = await fake.wait_for_request("POST", callback(inter), 5)
        assert reply.json["type"] == 8
        assert [c["value"] for c in reply.json["data"]["choices"]] == ["anime"]


async def test_progress_edits_are_throttled(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with service_env(tmp_path, tiny) as env:
        front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                             progress_edit_interval=0.3))
        await asyncio.wait_for(front.start(timeout=10), 15)
        try:
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a comet --n 2 --steps 8"}))
            await result_of(fake, inter)
            edits = [r for r in fake.requests_to("PATCH", original(fake, inter)) if not r.files]
            assert edits and all(b.received_at - a.received_at >= 0.29 for a, b in zip(edits, edits[1:]))
        finally:
            await asyncio.wait_for(front.close(), 15)


async def test_no_voice_warnings_at_start(
    tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot never joins voice: discord.py's PyNaCl/davey warnings are not shown at start."""
    import discord

    monkeypatch.setattr(discord.VoiceClient, "warn_nacl", True)  # as in a fresh process without PyNaCl
    monkeypatch.setattr(discord.VoiceClient, "warn_dave", True, raising=False)
    caplog.set_level(logging.WARNING, logger="discord")
    async with service_env(tmp_path, tiny) as env:
        front = DiscordFrontEnd(env.service, DiscordSettings("fake-token"))
        await front.bot.close()
    assert not [r for r in caplog.records if "voice" in r.getMessage()], caplog.text


async def test_config_urls_and_dev_guild_sync(tmp_path: Path, tiny: Any) -> None:
    import discord.http

    fake = FakeDiscord()
    await fake.start(patch=False)
    default_base = discord.http.Route.BASE
    try:
        async with service_env(tmp_path, tiny) as env:
            settings = DiscordSettings("secret-token", api_base_url=fake.api_base, gateway_url=fake.gateway_url,
                                       dev_guild_ids=(fake.guild_id,), guild_ready_timeout=0.05)
            assert "secret-token" not in repr(settings)
            front = DiscordFrontEnd(env.service, settings)
            await asyncio.wait_for(front.start(timeout=10), 15)
            try:
                assert fake.requests_to("GET", "/users/@me")[0].headers["Authorization"] == "Bot secret-token"
                put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands")
                assert put and "imagine" in {c["name"] for c in put[0].json}
            finally:
                await asyncio.wait_for(front.close(), 15)
        assert discord.http.Route.BASE == default_base
    finally:
        await fake.stop()


async def test_recovered_results_are_posted_in_the_channel(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        target = {"platform": "discord", "user_id": fake.user["id"], "channel_id": str(fake.text_channel_id),
                  "guild_id": str(fake.guild_id), "private": False}
        ticket = await env.service.imagine(Who("discord", fake.user["id"]), "a lost letter --steps 1", target=target)
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)  # done, never delivered: as if the bot had died
        front.resume(await env.service.recover())
        post = await fake.wait_for_request("POST", rf"/channels/{fake.text_channel_id}/messages", 10)
        assert "a lost letter" in post.json["content"] and post.files
        assert await eventually(lambda: _delivered(env, ticket.job_id))


async def test_cancel_refunds_the_latest_queued_request(fake: FakeDiscord, tmp_path: Path) -> None:
    from tests.fakes import FakePipeline

    gpu = FakePipeline()
    gpu.pause()  # the first job holds the GPU, the second waits in line
    try:
        async with running(fake, tmp_path, gpu) as (env, front):
            first = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fox --seed 1"}))
            assert await asyncio.to_thread(gpu.wait_entered, 10)
            second = await fake.send_interaction(fake.slash("imagine", {"prompt": "an owl --seed 2 --n 2"}))
            await fake.wait_for_request("POST", callback(second), 5)
            user = await users.get_by_platform(env.db, "discord", str(fake.user["id"]))
            queued = await eventually(lambda: _latest_job(env, user.id, "queued"))
            assert queued is not None

            inter = await fake.send_interaction(fake.slash("cancel", {}))
            reply = await fake.wait_for_request(
                "POST", rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}", TIMEOUT)
            assert f"Cancelled {queued.id}" in reply.json["content"] and "2 image(s) refunded" in reply.json["content"]
            row = await jobs.get(env.db, queued.id)
            assert row.status == "cancelled" and row.refunded == 1

            gpu.resume()
            await result_of(fake, first)  # the running request still arrives
    finally:
        gpu.resume()


async def _latest_job(env: Env, user_id: int, status: str) -> Any:
    page = await jobs.history(env.db, user_id, limit=1, statuses=(status,))
    return page.jobs[0] if page.jobs else None

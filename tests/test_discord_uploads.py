"""/imagine with an attached image through the real discord.py client against the fake Discord."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.frontends.discord.commands import aspect_choices
from generation.core.request import ModelCaps
from storage import inputs
from tests.fake_discord import FakeDiscord
from tests.test_discord import TIMEOUT, callback, eventually, fake, original, result_of, running  # noqa: F401
from tests.upload_support import BAD_UPLOADS, photo


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


async def test_attached_image_makes_an_img2img_job_unlike_text_only(fake: FakeDiscord, tmp_path: Path,
                                                                    tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/commands")[0]
        imagine = next(c for c in put.json if c["name"] == "imagine")
        options = {o["name"]: o for o in imagine["options"]}
        assert options["image"]["type"] == 11 and options["strength"]["type"] == 10
        assert options["aspect"]["type"] == 3 and options["aspect"].get("autocomplete") is True

        text = await fake.send_interaction(fake.slash("imagine", {"prompt": "a harbour --seed 5"}))
        _, plain = await result_of(fake, text)
        attachment = fake.user_attachment(photo(300, 200), "harbour.png")
        inter = await fake.send_interaction(fake.slash_with_attachment(
            "imagine", {"prompt": "a harbour --seed 5", "strength": 0.5}, attachment))
        assert (await fake.wait_for_request("POST", callback(inter), 5)).json == {"type": 5}
        edit, message = await result_of(fake, inter)
        assert "from your image" in message["content"]
        job_id = message["components"][0]["components"][0]["custom_id"].split(":")[2]
        row = await eventually(lambda: _job(env, job_id))
        assert row.request["kind"] == "img2img" and row.request["strength"] == 0.5
        assert (row.request["width"], row.request["height"]) == (304, 208)  # nearest bucket to 3:2
        assert await inputs.for_job(env.db, job_id) is not None
        ours = _pixels(edit.files[0].data)
        theirs = _pixels(fake.attachment_bytes(plain["attachments"][0]))
        assert ours.shape != theirs.shape or np.abs(ours - theirs).mean() > 1
        assert (await env.service.quota(_who(inter))).used == 2

        # /history shows the picture it started from beside the result (DM embeds)
        from tests.test_discord import _delivered
        await eventually(lambda: _delivered(env, job_id))
        await fake.send_interaction(fake.slash("history"))
        post = await fake.wait_for_request("POST", rf"/channels/{fake.dm_channel_for(fake.user['id'])}/messages", 10)
        upload_embed, plain_embed = post.json["embeds"]  # newest first
        assert upload_embed["footer"]["text"] == f"request {job_id}"
        assert upload_embed["thumbnail"]["url"] == "attachment://thumb-0.jpg"
        assert upload_embed["author"] == {"name": "Started from your image", "icon_url": "attachment://from-0.jpg"}
        assert "author" not in plain_embed
        files = {f.filename: f.data for f in post.files}
        assert set(files) == {"thumb-0.jpg", "from-0.jpg", "thumb-1.jpg"}
        with Image.open(io.BytesIO(files["from-0.jpg"])) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (160, 109)  # the 304x208 upload, made small


@pytest.mark.parametrize(("name", "make", "words"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
async def test_bad_attachment_gets_its_message_and_costs_nothing(fake: FakeDiscord, tmp_path: Path, tiny: Any,
                                                                 name: str, make, words: list[str]) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        attachment = fake.user_attachment(make(), f"upload-{name}.png")
        inter = await fake.send_interaction(fake.slash_with_attachment("imagine", {"prompt": "a harbour"},
                                                                       attachment))
        told = await _ephemeral_text(fake, inter)
        for word in words:
            assert word in told
        assert (await env.service.quota(_who(inter))).used == 0
        assert int(await env.db.fetchval("SELECT count(*) FROM jobs")) == 0


async def test_expired_attachment_link_is_told(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        attachment = fake.user_attachment(photo(), "gone.png")
        fake.attachments.pop(int(attachment["id"]))  # the CDN answers 404
        inter = await fake.send_interaction(fake.slash_with_attachment("imagine", {"prompt": "a harbour"},
                                                                       attachment))
        assert "attach it again" in await _ephemeral_text(fake, inter)
        assert (await env.service.quota(_who(inter))).used == 0


async def test_strength_without_an_image_and_typed_ratio(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a harbour", "strength": 0.4}))
        reply = await fake.wait_for_request("POST", callback(inter), 5)
        assert reply.json["type"] == 4 and "needs an image" in reply.json["data"]["content"]
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a harbour --steps 1", "aspect": "4:5"}))
        _, message = await result_of(fake, inter)
        job_id = message["components"][0]["components"][0]["custom_id"].split(":")[2]
        row = await eventually(lambda: _job(env, job_id))
        assert (row.request["width"], row.request["height"]) == (224, 288)


def test_aspect_autocomplete_offers_named_and_typed_ratios() -> None:
    caps = ModelCaps()
    assert [c.value for c in aspect_choices(caps, "")] == list(caps.sizes())
    typed = aspect_choices(caps, "4:5")
    assert typed[0].value == "4:5" and typed[0].name == "4:5 (896x1152)"
    assert [c.value for c in aspect_choices(caps, "9:1")] == ["9:16"]  # 9:1 itself is beyond 4:1
    assert aspect_choices(caps, "5:1") == []
    assert "16:9" in [c.value for c in aspect_choices(caps, "16")]


def _who(inter: dict[str, Any]) -> Any:
    from bot.service import Who
    user = inter.get("member", {}).get("user") or inter["user"]
    return Who("discord", user["id"])


async def _job(env: Any, job_id: str) -> Any:
    from storage import jobs
    return await jobs.get(env.db, job_id)


async def _ephemeral_text(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    """What the user was told: an ephemeral reply, or the edit/follow-up after the deferral."""
    async def told() -> str | None:
        for rec in fake.requests_to("POST", callback(inter)):
            data = (rec.json or {}).get("data") or {}
            if data.get("content"):
                return data["content"]
        for rec in fake.requests_to("POST", rf"/webhooks/{fake.app_id}/{inter['token']}") + \
                fake.requests_to("PATCH", original(fake, inter)):
            if rec.json and rec.json.get("content"):
                return rec.json["content"]
        return None

    text = await eventually(told, TIMEOUT)
    assert text, "the user was told nothing"
    return text


@pytest.mark.slow
async def test_upscale_buttons_under_one_image_make_a_2x_job_for_the_clicker(fake: FakeDiscord, tmp_path: Path,
                                                                             tiny: Any) -> None:
    async with running(fake, tmp_path, tiny, upscale_cost=2) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a harbour --n 2 --steps 1 --seed 3"}))
        _, grid = await result_of(fake, inter)
        job_id = grid["components"][0]["components"][0]["custom_id"].split(":")[2]
        u1 = await fake.send_interaction(fake.button(f"imagine:up:{job_id}:0", grid))
        _, single = await result_of(fake, u1)
        labels = [c["label"] for c in single["components"][0]["components"]]
        assert labels == ["⬆️ Upscale (Subtle)", "⬆️ Upscale (Creative)"]
        bob = fake.make_user("bob")
        click = await fake.send_interaction(fake.button(f"imagine:tool:ups:{job_id}:0", single, bob))
        assert (await fake.wait_for_request("POST", callback(click), 5)).json == {"type": 5}
        edit, upscaled = await result_of(fake, click, 180)
        (sent,) = edit.files
        with Image.open(io.BytesIO(sent.data)) as image:  # the full-quality PNG, twice the size
            assert image.format == "PNG" and image.size == (512, 512)
        assert "upscale (subtle) of image 1 of " + job_id in upscaled["content"]
        new_id = zoomed_id([c["custom_id"] for row in upscaled["components"] for c in row["components"]])
        row = await eventually(lambda: _job(env, new_id))
        assert row.request["kind"] == "upscale" and row.charged == 2
        from bot.service import Who
        assert (await env.service.quota(Who("discord", bob["id"]))).used == 2  # the clicker pays


@pytest.mark.slow
async def test_zoom_button_makes_a_zoom_job(fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a harbour --n 2 --steps 1 --seed 3"}))
        _, made = await result_of(fake, inter, 180)
        job_id = made["components"][0]["components"][0]["custom_id"].split(":")[2]
        u1 = await fake.send_interaction(fake.button(f"imagine:up:{job_id}:0", made))
        _, single = await result_of(fake, u1, 180)
        click = await fake.send_interaction(fake.button(f"imagine:tool:z2:{job_id}:0", single))
        edit, zoomed = await result_of(fake, click, 180)
        with Image.open(io.BytesIO(edit.files[0].data)) as image:
            assert image.size == (256, 256)
        assert "zoom out 2x of image 1 of " + job_id in zoomed["content"]
        ids = [c["custom_id"] for row in zoomed["components"] for c in row["components"]]
        assert f"imagine:tool:pl:{zoomed_id(ids)}:0" in ids  # pan further from the zoomed image


def zoomed_id(ids: list[str]) -> str:
    return next(i for i in ids if i.startswith("imagine:del:")).split(":")[2]

"""POST /v1/images with a picture to start from: base64 in JSON, or a multipart upload (tiny model)."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage import inputs, jobs
from tests.service_support import ADA
from tests.upload_support import BAD_UPLOADS, photo
from tests.web_support import auth, key_for, web_env


async def _done(client, job_id: str, headers: dict[str, str]) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(600):  # bounded: 60 s
        body = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


async def _pixels(client, ref: str, headers: dict[str, str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    data = (await client.get(f"/v1/images/{ref}", headers=headers)).content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_base64_and_multipart_uploads_start_from_the_picture(tmp_path: Path, tiny) -> None:
    async with web_env(tmp_path, tiny) as web:
        h = auth(await key_for(web.env, ADA))
        plain = (await web.client.post("/v1/images", json={"prompt": "a harbour", "seed": 3}, headers=h)).json()
        picture = photo(300, 200)
        r = await web.client.post("/v1/images", json={"prompt": "a harbour", "seed": 3, "strength": 0.5,
                                                      "image": base64.b64encode(picture).decode()}, headers=h)
        assert r.status_code == 202, r.text
        from_json = r.json()["job_id"]
        r = await web.client.post("/v1/images", data={"prompt": "a harbour --ar 1:1", "seed": "3"},
                                  files={"image": ("harbour.png", picture, "image/png")}, headers=h)
        assert r.status_code == 202, r.text
        from_form = r.json()["job_id"]
        base = await _pixels(web.client, (await _done(web.client, plain["job_id"], h))["images"][0]["id"], h)
        for job_id, size in ((from_json, (304, 208)), (from_form, (256, 256))):
            done = await _done(web.client, job_id, h)
            assert done["status"] == "done"
            row = await jobs.get(web.env.db, job_id)
            assert row.request["kind"] == "img2img" and (row.request["width"], row.request["height"]) == size
            assert await inputs.for_job(web.env.db, job_id) is not None
            ours = await _pixels(web.client, done["images"][0]["id"], h)
            assert ours.shape != base.shape or np.abs(ours - base).mean() > 1
        assert (await web.env.service.quota(ADA)).used == 3


@pytest.mark.parametrize(("name", "make", "words"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
async def test_bad_upload_is_a_4xx_with_its_message_and_costs_nothing(tmp_path: Path, name, make, words) -> None:
    async with web_env(tmp_path) as web:
        h = auth(await key_for(web.env, ADA))
        r = await web.client.post("/v1/images", data={"prompt": "a harbour"},
                                  files={"image": (f"{name}.png", make(), "image/png")}, headers=h)
        assert 400 <= r.status_code < 500
        for word in words:
            assert word in r.text
        assert (await web.env.service.quota(ADA)).used == 0


async def test_not_base64_is_told(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        h = auth(await key_for(web.env, ADA))
        r = await web.client.post("/v1/images", json={"prompt": "a harbour", "image": "not base64!"}, headers=h)
        assert r.status_code == 422 and "base64" in r.text
        r = await web.client.post("/v1/images", json={"prompt": "a harbour", "strength": 0.3}, headers=h)
        assert r.status_code == 422 and "needs an image" in r.text
        r = await web.client.post("/v1/images", json={"prompt": "a harbour", "nope": 1}, headers=h)
        assert r.status_code == 422
        assert (await web.env.service.quota(ADA)).used == 0


@pytest.mark.slow
async def test_upscale_route_makes_a_2x_job(tmp_path: Path, tiny) -> None:
    async with web_env(tmp_path, tiny, upscale_cost=2) as web:
        h = auth(await key_for(web.env, ADA))
        made = (await web.client.post("/v1/images", json={"prompt": "a harbour --steps 1", "seed": 3},
                                      headers=h)).json()
        ref = (await _done(web.client, made["job_id"], h))["images"][0]["id"]
        r = await web.client.post(f"/v1/images/{ref}/upscale", json={"mode": "creative"}, headers=h)
        assert r.status_code == 202, r.text
        done = await _done(web.client, r.json()["job_id"], h)
        assert done["status"] == "done"
        pixels = await _pixels(web.client, done["images"][0]["id"], h)
        assert pixels.shape == (512, 512, 3)
        row = await jobs.get(web.env.db, r.json()["job_id"])
        assert row.request["mode"] == "creative" and row.charged == 2
        assert (await web.client.post(f"/v1/images/{ref}/upscale", json={"mode": "wild"}, headers=h)).status_code == 422
        assert (await web.client.post("/v1/images/nope/upscale", headers=h)).status_code == 422
        assert (await web.client.post(f"{'/v1/images/'}{made['job_id']}-4/upscale", headers=h)).status_code == 404
        assert (await web.env.service.quota(ADA)).used == 3


@pytest.mark.slow
async def test_zoom_and_pan_routes(tmp_path: Path, tiny) -> None:
    async with web_env(tmp_path, tiny) as web:
        h = auth(await key_for(web.env, ADA))
        made = (await web.client.post("/v1/images", json={"prompt": "a harbour --steps 1", "seed": 3},
                                      headers=h)).json()
        ref = (await _done(web.client, made["job_id"], h))["images"][0]["id"]
        zoom = await web.client.post(f"/v1/images/{ref}/zoom", json={"factor": "1.5"}, headers=h)
        pan = await web.client.post(f"/v1/images/{ref}/pan", json={"direction": "up", "prompt": "a tall harbour"},
                                    headers=h)
        assert zoom.status_code == 202 and pan.status_code == 202, (zoom.text, pan.text)
        for accepted, shape in ((zoom, (256, 256, 3)), (pan, (304, 208, 3))):
            done = await _done(web.client, accepted.json()["job_id"], h)
            assert done["status"] == "done"
            assert (await _pixels(web.client, done["images"][0]["id"], h)).shape == shape  # pan up: taller
        assert (await web.client.post(f"/v1/images/{ref}/pan", json={"direction": "back"}, headers=h)).status_code == 422


async def test_toolbox_routes_have_the_key_rate_limit_not_the_chat_spacing(tmp_path: Path) -> None:
    """As POST /v1/images: an API key's upscale, zoom and pan are not spaced like chat requests
    (the per-key rate limit bounds them); the same user's chat clicks still are."""
    from bot.safety import AllowAllImages, BlocklistChecker, Moderation, ModerationSettings, Restricted
    from bot.frontends.web import WebSettings
    from tests.service_support import ROOT as ADMIN

    async with web_env(tmp_path, settings=WebSettings(enabled=True, rate_limit=5)) as web:
        made = await (await web.env.service.imagine(ADA, "a harbour")).delivery()
        web.env.service.moderation = Moderation(  # the shipped default spacing, as `make run` has it
            web.env.db, ModerationSettings(request_interval_s=3.0), prompt_checker=BlocklistChecker.default(),
            image_classifier=AllowAllImages(), admins={ADMIN.key}, clock=web.env.clock)
        h = auth(await key_for(web.env, ADA))
        ref = f"{made.job_id}-1"
        calls = [web.client.post(f"/v1/images/{ref}/upscale", json={"mode": "subtle"}, headers=h),
                 web.client.post(f"/v1/images/{ref}/zoom", json={"factor": "2"}, headers=h),
                 web.client.post(f"/v1/images/{ref}/pan", json={"direction": "left"}, headers=h),
                 web.client.post(f"/v1/images/{ref}/upscale", json={"mode": "creative"}, headers=h)]
        answers = [await c for c in calls]  # one after another, within the same second
        assert [r.status_code for r in answers] == [202] * 4, [r.text for r in answers]
        assert len({r.json()["job_id"] for r in answers}) == 4
        # the key's own limit (5 a minute) still holds: a fifth request passes, a sixth is refused
        extra = [await web.client.post(f"/v1/images/{ref}/pan", json={"direction": "up"}, headers=h)
                 for _ in range(2)]
        assert [r.status_code for r in extra] == [202, 429] and "this key" in extra[1].json()["detail"]
        # in a chat, the same user is spaced as before
        await web.env.service.upscale(ADA, made.job_id, 0)
        with pytest.raises(Restricted, match="wait 3 s"):
            await web.env.service.outpaint(ADA, made.job_id, 0, "zoom", "2")


async def test_history_and_my_images_show_the_picture_a_job_started_from(tmp_path: Path) -> None:
    """GET /v1/history names the upload's URL (the PNG as stored); My images shows its thumbnail
    beside the result; neither lets another account reach it."""
    from tests.service_support import BOB
    from tests.studio_support import sign_in

    async with web_env(tmp_path) as web:
        h = auth(await key_for(web.env, ADA))
        picture = photo(300, 200)
        sent = await web.client.post("/v1/images", data={"prompt": "a harbour", "seed": "3"},
                                     files={"image": ("harbour.png", picture, "image/png")}, headers=h)
        plain = await web.client.post("/v1/images", json={"prompt": "a lighthouse"}, headers=h)
        upload_job, plain_job = sent.json()["job_id"], plain.json()["job_id"]
        await _done(web.client, upload_job, h)
        await _done(web.client, plain_job, h)
        listed = {j["job_id"]: j for j in (await web.client.get("/v1/history", headers=h)).json()["jobs"]}
        assert listed[plain_job]["input_image"] is None
        assert listed[upload_job]["input_image"] == f"/v1/jobs/{upload_job}/input"
        r = await web.client.get(listed[upload_job]["input_image"], headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(r.content)) as stored:
            assert stored.size == (304, 208)  # fitted to its bucket, as the job used it
        kept = await inputs.for_job(web.env.db, upload_job)
        assert r.content == web.env.store.path_for(kept.path).read_bytes()
        assert (await web.client.get(f"/v1/jobs/{plain_job}/input", headers=h)).status_code == 404
        bob_h = auth(await key_for(web.env, BOB))
        assert (await web.client.get(f"/v1/jobs/{upload_job}/input", headers=bob_h)).status_code == 404

        await sign_in(web.client, web.env.service, ADA)
        mine = (await web.client.get("/me")).text
        thumb = f"/studio/jobs/{upload_job}/input.jpg"
        assert mine.count(thumb) == 1 and f"/studio/jobs/{plain_job}/input.jpg" not in mine
        r = await web.client.get(thumb)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(r.content)).size == (304, 208)  # small already: not enlarged
        assert thumb in (await web.client.get(f"/me/{upload_job}-1")).text
        assert "input.jpg" not in (await web.client.get(f"/me/{plain_job}-1")).text
        import httpx
        async with httpx.AsyncClient(transport=web.client._transport, base_url="http://test") as bob:
            await sign_in(bob, web.env.service, BOB)
            assert (await bob.get(thumb)).status_code == 404

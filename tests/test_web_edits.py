"""The HTTP routes of issue 24: POST /v1/images/{ref}/edit (words or a mask), GET /v1/jobs/{id}/mask,
POST /v1/describe (tiny models, a real service, httpx in-process)."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.model.segment import MaskModel
from storage import jobs
from tests.service_support import ADA, BOB
from tests.test_describe import ScriptedDescriber
from tests.test_edit import PARTIAL
from tests.web_support import auth, key_for, web_env


async def _done(client, job_id: str, headers: dict[str, str]) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(600):  # bounded: 60 s
        body = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
async def test_edit_route_by_words_and_by_mask(tmp_path: Path, tiny) -> None:
    async with web_env(tmp_path, tiny, daily_quota=10, edit=PARTIAL) as web:
        web.env.service.segmenter = MaskModel(PARTIAL)
        h = auth(await key_for(web.env, ADA))
        made = (await web.client.post("/v1/images", json={"prompt": "a harbour --steps 1", "seed": 3},
                                      headers=h)).json()
        ref = (await _done(web.client, made["job_id"], h))["images"][0]["id"]
        r = await web.client.post(f"/v1/images/{ref}/edit", json={"prompt": "a fox", "region": "the boat"},
                                  headers=h)
        assert r.status_code == 202, r.text
        assert (await _done(web.client, r.json()["job_id"], h))["status"] == "done"
        shown = await web.client.get(r.json()["mask_url"], headers=h)
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(shown.content)).size == (256, 256)
        # a drawn mask (white = repaint), as multipart
        drawn = Image.new("L", (256, 256), 0)
        drawn.paste(255, (0, 0, 128, 256))
        r = await web.client.post(f"/v1/images/{ref}/edit", data={"prompt": "a lighthouse"},
                                  files={"mask": ("mask.png", _png(drawn), "image/png")}, headers=h)
        assert r.status_code == 202, r.text
        done = await _done(web.client, r.json()["job_id"], h)
        pixels = np.asarray(Image.open(io.BytesIO((await web.client.get(
            f"/v1/images/{done['images'][0]['id']}", headers=h)).content)).convert("RGB")).astype(int)
        source = np.asarray(Image.open(io.BytesIO((await web.client.get(
            f"/v1/images/{ref}", headers=h)).content)).convert("RGB")).astype(int)
        assert np.abs(pixels[:, 160:] - source[:, 160:]).max() <= 2  # right of the mask and its soft edge: kept
        row = await jobs.get(web.env.db, r.json()["job_id"])
        assert row.request["mode"] == "mask" and row.charged == 1
        # refusals: no charge
        blank = _png(Image.new("L", (256, 256), 0))
        r = await web.client.post(f"/v1/images/{ref}/edit", json={
            "prompt": "a fox", "mask": base64.b64encode(blank).decode()}, headers=h)
        assert r.status_code == 422 and "covers nothing" in r.text
        r = await web.client.post(f"/v1/images/{ref}/edit", json={"prompt": "a fox"}, headers=h)
        assert r.status_code == 422 and "Name what to change" in r.text
        bob = auth(await key_for(web.env, BOB))
        r = await web.client.post(f"/v1/images/{ref}/edit", json={"prompt": "a fox", "region": "x"}, headers=bob)
        assert r.status_code == 404  # another's image: a job id is no key to it
        assert (await web.client.get(f"/v1/jobs/{made['job_id']}/mask", headers=h)).status_code == 404  # no edit
        assert (await web.env.service.quota(ADA)).used == 3


async def test_describe_route(tmp_path: Path) -> None:
    async with web_env(tmp_path, describe_per_hour=1) as web:
        web.env.service.describer = ScriptedDescriber("a cat on a wall")
        h = auth(await key_for(web.env, ADA))
        picture = _png(Image.new("RGB", (300, 200), (10, 20, 30)))
        r = await web.client.post("/v1/describe", files={"image": ("p.png", picture, "image/png")}, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["caption"] == "a cat on a wall" and len(body["suggestions"]) == 4 and body["aspect"] == "3:2"
        r = await web.client.post("/v1/describe", json={"image": base64.b64encode(picture).decode()}, headers=h)
        assert r.status_code == 429 and "an hour" in r.text and int(r.headers["Retry-After"]) > 3000
        r = await web.client.post("/v1/describe", json={}, headers=auth(await key_for(web.env, BOB)))
        assert r.status_code == 422 and "picture to describe" in r.text
        made = await web.client.post("/v1/images", json={"prompt": body["suggestions"][1]}, headers=h)
        assert made.status_code == 202, made.text  # a suggestion is a valid prompt

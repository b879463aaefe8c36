"""Masks through the compatible APIs (issue 24, item 3): OpenAI's /v1/images/edits with ``mask``
(transparent = the area to edit) with the real openai client, A1111's img2img ``mask`` (white = the
area), ``mask_blur``, ``inpainting_fill``, ``inpainting_mask_invert``; the same edit path as 🖌️ Vary
(Region), the tiny SDXL painting, the rest of the picture kept."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from storage import jobs
from tests.compat_support import basic, served, user_jobs
from tests.service_support import ADA
from tests.web_support import key_for

pytestmark = pytest.mark.slow


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


PHOTO = Image.new("RGB", (256, 256), (30, 140, 90))


async def test_openai_edit_with_a_mask_repaints_only_the_transparent_area(tmp_path: Path, tiny) -> None:
    async with served(tmp_path, tiny) as app:
        key = await key_for(app.env, ADA)
        async with openai.AsyncOpenAI(base_url=f"{app.base_url}/v1", api_key=key, max_retries=0, timeout=60) as client:
            mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
            mask.paste((0, 0, 0, 0), (0, 0, 96, 256))  # the left strip: transparent, the area to edit
            edited = await client.images.edit(image=("photo.png", _png(PHOTO), "image/png"), prompt="a red door",
                                              mask=("mask.png", _png(mask), "image/png"), response_format="b64_json")
            pixels = _pixels(base64.b64decode(edited.data[0].b64_json))
            assert pixels.shape == (256, 256, 3)
            assert np.abs(pixels[:, 140:] - np.array([30, 140, 90])).max() <= 2  # outside the mask: the photo
            assert np.abs(pixels[:, :80] - np.array([30, 140, 90])).mean() > 2  # inside: painted
            job = (await user_jobs(app.env, ADA))[-1]
            assert job.request["kind"] == "edit" and job.request["mode"] == "mask" and job.charged == 1
            with pytest.raises(openai.BadRequestError) as many:
                await client.images.edit(image=("photo.png", _png(PHOTO), "image/png"), prompt="a door", n=2,
                                         mask=("mask.png", _png(mask), "image/png"))
            assert many.value.param == "n"
            assert (await app.env.service.quota(ADA)).used == 1


async def test_a1111_img2img_with_a_mask_blur_and_invert(tmp_path: Path, tiny) -> None:
    async with served(tmp_path, tiny) as app:
        auth = basic(await key_for(app.env, ADA))
        mask = Image.new("L", (256, 256), 0)
        mask.paste(255, (160, 0, 256, 256))  # white: the right strip
        async with httpx.AsyncClient(base_url=app.base_url, timeout=60) as http:
            body = {"init_images": [base64.b64encode(_png(PHOTO)).decode()], "prompt": "a window",
                    "mask": base64.b64encode(_png(mask)).decode(), "mask_blur": 0, "inpainting_fill": 2,
                    "denoising_strength": 0.6, "batch_size": 2, "steps": 4, "seed": 3}
            r = await http.post("/sdapi/v1/img2img", headers=auth, json=body)
            assert r.status_code == 200, r.text
            pixels = _pixels(base64.b64decode(r.json()["images"][0]))
            info = json.loads(r.json()["info"])
            assert np.abs(pixels[:, :150] - np.array([30, 140, 90])).max() <= 2
            assert np.abs(pixels[:, 170:] - np.array([30, 140, 90])).mean() > 2
            assert "batch_size x n_iter -> 1: an inpainting request makes one image" in info["adjustments"]
            assert any(n.startswith("inpainting_fill 2: the region is drawn anew") for n in info["adjustments"])
            row = await jobs.get(app.env.db, info["job_id"])
            assert row.request["kind"] == "edit" and row.request["strength"] == 1.0

            r = await http.post("/sdapi/v1/img2img", headers=auth, json={
                **body, "inpainting_mask_invert": 1, "mask_blur": 8, "inpainting_fill": 1, "batch_size": 1})
            assert r.status_code == 200, r.text
            pixels = _pixels(base64.b64decode(r.json()["images"][0]))
            assert np.abs(pixels[:, 200:] - np.array([30, 140, 90])).max() <= 2  # inverted: the right is kept
            assert json.loads(r.json()["info"])["denoising_strength"] == 0.6
            r = await http.post("/sdapi/v1/img2img", headers=auth, json={**body, "mask_blur": 500})
            assert r.status_code == 422 and "mask_blur" in r.text
            assert (await app.env.service.quota(ADA)).used == 2

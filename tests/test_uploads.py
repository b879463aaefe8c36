"""An uploaded image as img2img input (bot/service/uploads.py): checks, no charge when refused, its file's life."""

from __future__ import annotations

import asyncio
import io
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from generation.core.errors import InvalidRequest
from storage.images import input_path
from tests.compat_support import png_bytes
from tests.fakes import FakePipeline
from tests.service_support import ADA, service_env


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


async def test_bad_uploads_say_why_and_cost_nothing_a_phone_photo_is_taken(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    animated = _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    truncated = png_bytes()[:200]
    gif = _encoded(Image.new("RGB", (64, 64)), "GIF")
    async with service_env(tmp_path, FakePipeline()) as env:
        cases = [(b"", "empty"), (b"hello", "not a readable image"), (truncated, "not a readable image"),
                 (animated, "Animated"), (gif, "GIF is not accepted")]
        for data, reason in cases:
            with pytest.raises(InvalidRequest) as refused:
                await env.service.imagine(ADA, "a cat", image=data)
            assert refused.value.field == "image" and reason in str(refused.value), reason
        frames = [Image.new("RGB", (64, 48), c) for c in ("green", "blue")]  # a phone photo: JPEG + depth map
        ticket = await env.service.imagine(ADA, "a cat", image=_encoded(frames[0], "MPO", save_all=True,
                                                                           append_images=frames[1:]))
        assert ticket.request.kind == "img2img" and len((await ticket.delivery()).images) == 1
        with pytest.raises(InvalidRequest) as low:
            await env.service.imagine(ADA, "a cat", image=png_bytes(), strength=0.0)
        assert low.value.field == "strength"
        assert (await env.service.quota(ADA)).used == 1  # only the photo that was accepted


async def test_decompression_bombs_and_oversized_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # so that a small file is a "bomb" here
    async with service_env(tmp_path, FakePipeline()) as env:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(InvalidRequest) as bomb:
                await env.service.imagine(ADA, "a cat", image=png_bytes(size=(300, 300)))
        assert "decompression bomb" in str(bomb.value)
        monkeypatch.setattr("bot.service.uploads.MAX_UPLOAD_BYTES", 1000)
        with pytest.raises(InvalidRequest) as big:
            await env.service.imagine(ADA, "a cat", image=_encoded(Image.effect_noise((90, 90), 64), "PNG"))
        assert "the limit is" in str(big.value)
        assert (await env.service.quota(ADA)).used == 0


async def test_an_uploads_file_lives_while_its_job_needs_it_and_goes_with_forget(tmp_path: Path) -> None:
    pipeline = FakePipeline()
    pipeline.pause()
    async with service_env(tmp_path, pipeline) as env:
        ticket = await env.service.imagine(ADA, "in autumn colours", image=png_bytes(size=(400, 300)), strength=0.5)
        request = ticket.request
        assert request.kind == "img2img" and request.strength == 0.5
        assert (request.width, request.height) == env.service.caps.size_for("4:3")  # the upload's shape
        upload = input_path(request.init_image)
        assert upload is not None and env.store.exists(upload)
        assert await asyncio.to_thread(pipeline.wait_entered)
        await env.store.delete_unreferenced(env.db, grace=timedelta(0))
        assert env.store.exists(upload)  # its job is running: the input stays
        pipeline.resume()
        delivery = await asyncio.wait_for(ticket.delivery(), 30)
        assert len(delivery.images) == 1

        second = await env.service.imagine(ADA, "in winter", image=png_bytes((9, 9, 9), (300, 400)))
        await asyncio.wait_for(second.delivery(), 30)
        other = input_path(second.request.init_image)
        removed = await env.store.delete_unreferenced(env.db, grace=timedelta(0))
        assert upload in removed and other in removed  # the jobs are over: swept like any unreferenced file
        assert all(env.store.exists(str(i.path.relative_to(env.store.root.resolve()))) for i in delivery.images)

        third = await env.service.imagine(ADA, "at night", image=png_bytes((1, 2, 3)))
        await asyncio.wait_for(third.delivery(), 30)
        last = input_path(third.request.init_image)
        assert env.store.exists(last)
        await env.service.forget(ADA)
        assert not env.store.exists(last)  # /forget takes the uploaded picture too

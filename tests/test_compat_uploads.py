"""An uploaded image as img2img input through imagine(image=, strength=), as the OpenAI/A1111 routes
send it (one upload path: bot/service/uploads.py over generation/tools/inputs.py): checks, no
charge when refused, its file's life (job_inputs), a picture without a prompt."""

from __future__ import annotations

import asyncio
import io
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from generation.core.errors import InvalidRequest
from storage import inputs
from storage.files import png_with_metadata
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
    tiff = _encoded(Image.new("RGB", (64, 64)), "TIFF")
    async with service_env(tmp_path, FakePipeline()) as env:
        cases = [(b"", "empty"), (b"hello", "not an image I can read"), (truncated, "damaged"),
                 (animated, "Animated"), (tiff, "TIFF images are not accepted")]
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
        with pytest.raises(InvalidRequest) as big:  # refused by its length, before it is opened
            await env.service.imagine(ADA, "a cat", image=png_bytes() + bytes(20_000_001))
        assert "over the 20 MB limit" in str(big.value)
        assert (await env.service.quota(ADA)).used == 0


async def test_an_uploads_file_lives_with_its_job_and_goes_with_forget(tmp_path: Path) -> None:
    pipeline = FakePipeline()
    pipeline.pause()
    async with service_env(tmp_path, pipeline) as env:
        ticket = await env.service.imagine(ADA, "in autumn colours", image=png_bytes(size=(400, 300)), strength=0.5)
        request = ticket.request
        assert request.kind == "img2img" and request.strength == 0.5
        assert (request.width, request.height) == env.service.caps.size_for("4:3")  # the upload's shape
        stored = await inputs.for_job(env.db, ticket.job_id)
        assert stored is not None and env.store.exists(stored.path)
        assert Path(request.init_image) == env.store.path_for(stored.path).resolve()
        assert await asyncio.to_thread(pipeline.wait_entered)
        await env.store.delete_unreferenced(env.db, grace=timedelta(0))
        assert env.store.exists(stored.path)  # its job is running: the input stays
        pipeline.resume()
        delivery = await asyncio.wait_for(ticket.delivery(), 30)
        assert len(delivery.images) == 1
        removed = await env.store.delete_unreferenced(env.db, grace=timedelta(0))
        assert stored.path not in removed and env.store.exists(stored.path)  # kept with the job (history)
        await env.service.forget(ADA)
        assert not env.store.exists(stored.path)  # /forget takes the uploaded picture too


async def test_an_upload_without_a_prompt_takes_the_one_it_carries(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        ours = png_with_metadata(Image.new("RGB", (64, 64), "teal"), {"prompt": "a lighthouse at dusk"})
        carried = await env.service.imagine(ADA, "", image=ours)
        assert carried.request.prompt == "a lighthouse at dusk" and "stored in the image" in carried.notes[0]
        plain = await env.service.imagine(ADA, "  ", image=png_bytes())
        assert plain.request.prompt == "high quality, detailed" and "carries none" in plain.notes[0]
        await asyncio.wait_for(carried.delivery(), 30)
        await asyncio.wait_for(plain.delivery(), 30)

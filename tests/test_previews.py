"""Live previews in the engine: TAESD between steps, the same final image, each job its own preview."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.app import _start_executors
from bot.config import load_config
from generation.model.entries import entry_configs
from generation.core.batch import Batch, BatchItem
from generation.core.request import GenerationRequest
from generation.model.preview import PreviewSettings, preview_jpeg
from generation.scheduling.events import Step
from generation.scheduling.queue import GenerationQueue
from generation.scheduling.worker import Worker
from tests.fakes import FakePipeline
from tests.preview_support import previewing_pipeline


@pytest.fixture(scope="module")
def previewing() -> Any:
    return previewing_pipeline(every_steps=1)


def _pixels(images: list[Any]) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB")) for image in images]


def test_final_image_is_identical_with_previews_on_and_off(previewing: Any) -> None:
    batch = Batch("txt2img", 256, 256, 4, (BatchItem("a lighthouse at dusk", "", 11), BatchItem("a red fox", "", 12)))
    steps: list[tuple[Any, ...]] = []
    decodes = previewing.previewer.decodes
    on = previewing.generate(batch, lambda *args: steps.append(args))
    previewer, previewing.previewer = previewing.previewer, None
    try:
        off = previewing.generate(batch)
    finally:
        previewing.previewer = previewer
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(on), _pixels(off), strict=True))
    # every_steps = 1: a preview after steps 1-3 of 4 (not after the last: the image follows), one
    # small image per item of the batch, named by its place in the batch
    assert [args[:2] for args in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [sorted(args[2]) for args in steps[:3]] == [[0, 1]] * 3 and len(steps[3]) == 2
    assert all(image.size == (256, 256) for args in steps[:3] for image in args[2].values())
    assert previewer.decodes == decodes + 3 and previewer.seconds > 0
    # the previews show the image forming: they differ from step to step and between the items
    first, second = (np.asarray(steps[0][2][i]) for i in (0, 1))
    assert not np.array_equal(first, second)
    assert not np.array_equal(np.asarray(steps[0][2][0]), np.asarray(steps[2][2][0]))


def test_a_preview_shows_the_schedulers_estimate_of_the_finished_image(previewing: Any) -> None:
    """What a preview decodes is the scheduler's estimate of the finished latents at that step
    (its ``pred_original_sample``), not the noisy latents; the scheduler is left as it was."""
    import torch

    scheduler_class_step = type(previewing.pipe.scheduler).step
    estimates: list[Any] = []
    decoded: list[Any] = []
    latents_seen: list[Any] = []
    step = type(previewing.pipe.scheduler).step

    def spying_step(self: Any, *args: Any, **kwargs: Any) -> Any:  # the scheduler's own, watched
        out = step(self, *args, **kwargs)
        estimates.append(out[1] if isinstance(out, tuple) else out.pred_original_sample)
        latents_seen.append(out[0] if isinstance(out, tuple) else out.prev_sample)
        return out

    decode = previewing.previewer.decode

    def spying_decode(latents: Any) -> list[Any]:
        decoded.append(latents)
        return decode(latents)

    batch = Batch("txt2img", 256, 256, 4, (BatchItem("a lighthouse at dusk", "", 11),))
    schedulers = {id(s): s for s in previewing._schedulers.values()}.values()
    try:
        for scheduler in schedulers:
            type(scheduler).step = spying_step
        previewing.previewer.decode = spying_decode
        previewing.generate(batch, lambda *args: None)
    finally:
        for scheduler in schedulers:
            type(scheduler).step = scheduler_class_step
        previewing.previewer.decode = decode
    assert len(decoded) == 3 and len(estimates) == 4  # previews after steps 1-3 of 4
    for n in range(3):
        assert decoded[n] is estimates[n]  # the estimate, not a copy of it
        assert not torch.equal(decoded[n], latents_seen[n])  # and not the noisy latents
    assert all("step" not in vars(s) for s in schedulers)  # nothing left on the scheduler


def test_img2img_and_every_other_step(previewing: Any, tmp_path: Path) -> None:
    source = tmp_path / "start.png"
    Image.new("RGB", (256, 256), (30, 120, 200)).save(source)
    batch = Batch("img2img", 256, 256, 8, (BatchItem("a blue sea", "", 3, init_image=str(source)),), strength=0.5)
    previewing.previewer.every_steps = 2
    try:
        steps: list[tuple[Any, ...]] = []
        previewing.generate(batch, lambda *args: steps.append(args))
    finally:
        previewing.previewer.every_steps = 1
    assert [args[0] for args in steps] == [1, 2, 3, 4]  # img2img runs int(8 * 0.5) steps
    assert [len(args) for args in steps] == [2, 3, 2, 2]  # a preview at step 2 only (4 is the last)


class PaintingPipeline(FakePipeline):
    """A fake GPU whose step callback carries a preview per item: item i is painted colour i."""

    COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]

    def generate(self, batch: Batch, on_step: Any = None, should_stop: Any = None) -> list[Image.Image]:
        def step(i: int, n: int) -> None:
            if on_step is not None:
                on_step(i, n, {k: Image.new("RGB", (16, 16), self.COLOURS[k]) for k in range(len(batch.items))})

        return super().generate(batch, step, should_stop)


async def test_each_job_of_a_batch_gets_the_preview_of_its_own_images() -> None:
    pipeline = PaintingPipeline()
    pipeline.pause()  # a first job holds the GPU, so the next two share one batch
    async with Worker(pipeline) as worker:
        queue = GenerationQueue(worker, max_batch_images=8)
        queue.start()
        try:
            first = queue.submit(GenerationRequest("a first", 256, 256, user_id="0", steps=2))
            await asyncio.to_thread(pipeline.wait_entered)
            one = queue.submit(GenerationRequest("one", 256, 256, user_id="1", steps=2, seed=1))
            three = queue.submit(GenerationRequest("three", 256, 256, user_id="2", steps=2, count=3, seed=5))
            seen: dict[str, list[Step]] = {"one": [], "three": []}
            one.subscribe(lambda e: isinstance(e, Step) and seen["one"].append(e), replay=False)
            three.subscribe(lambda e: isinstance(e, Step) and seen["three"].append(e), replay=False)
            pipeline.resume()
            await asyncio.wait_for(asyncio.gather(first.result(), one.result(), three.result()), 30)
        finally:
            await queue.close()
    assert pipeline.call_sizes == [1, 4]  # one batch for both jobs
    previews = {name: [e.preview for e in steps if e.preview is not None] for name, steps in seen.items()}
    assert previews["one"] and previews["three"]
    with Image.open(io.BytesIO(previews["one"][0])) as alone:
        assert alone.size == (16, 16) and _near(alone.getpixel((8, 8)), PaintingPipeline.COLOURS[0])
    with Image.open(io.BytesIO(previews["three"][0])) as grid:  # its three images, 2 columns
        assert grid.size == (32, 32)
        corners = [grid.getpixel((8, 8)), grid.getpixel((24, 8)), grid.getpixel((8, 24))]
    assert all(_near(c, colour) for c, colour in zip(corners, PaintingPipeline.COLOURS[1:4], strict=True))


async def test_a_batch_split_on_out_of_memory_keeps_each_preview_with_its_job() -> None:
    """Out of memory halves the batch: the second half's previews still go to the jobs they are of."""
    pipeline = PaintingPipeline(oom_above=2)
    pipeline.pause()
    async with Worker(pipeline) as worker:
        queue = GenerationQueue(worker, max_batch_images=8)
        queue.start()
        try:
            first = queue.submit(GenerationRequest("a first", 256, 256, user_id="0", steps=2))
            await asyncio.to_thread(pipeline.wait_entered)
            one = queue.submit(GenerationRequest("one", 256, 256, user_id="1", steps=2, seed=1))
            three = queue.submit(GenerationRequest("three", 256, 256, user_id="2", steps=2, count=3, seed=5))
            seen: dict[str, list[bytes]] = {"one": [], "three": []}
            for name, job in (("one", one), ("three", three)):
                job.subscribe(lambda e, name=name: isinstance(e, Step) and e.preview is not None
                              and seen[name].append(e.preview), replay=False)
            pipeline.resume()
            await asyncio.wait_for(asyncio.gather(first.result(), one.result(), three.result()), 30)
        finally:
            await queue.close()
    assert pipeline.call_sizes == [1, 4, 2, 2]  # 4 did not fit: items 0-1, then 2-3
    sizes = {name: [Image.open(io.BytesIO(p)).size for p in previews] for name, previews in seen.items()}
    assert set(sizes["one"]) == {(16, 16)} and len(sizes["one"]) == 2  # first half only (steps 1, 2)
    assert (16, 16) in sizes["three"] and (32, 16) in sizes["three"]  # its 1st image, then its 2nd and 3rd


def _near(pixel: Any, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, colour))


def test_preview_jpeg_is_one_small_jpeg() -> None:
    images = [Image.new("RGB", (64, 48), (10 * i, 0, 0)) for i in range(3)]
    with Image.open(io.BytesIO(preview_jpeg(images))) as grid:
        assert grid.format == "JPEG" and grid.size == (128, 96)
    with Image.open(io.BytesIO(preview_jpeg(images[:1]))) as alone:
        assert alone.size == (64, 48)


def test_settings_are_checked_with_a_message_naming_the_key() -> None:
    with pytest.raises(ValueError, match="preview.every_steps"):
        PreviewSettings(every_steps=0)
    with pytest.raises(ValueError, match="preview.size"):
        PreviewSettings(size=8)


async def test_preview_enabled_false_means_no_previews_from_the_workers(tmp_path: Path) -> None:
    """The composition root attaches the previewer from [preview]; off, no step carries one."""
    async def previews_with(text: str) -> list[int]:
        (tmp_path / "config.toml").write_text(text)
        config = load_config(tmp_path / "config.toml", env={})
        configs = entry_configs(config.model, config.models)
        [worker] = await asyncio.to_thread(_start_executors, config, configs, None)
        steps: list[tuple[Any, ...]] = []
        try:
            await worker.run(Batch("txt2img", 64, 64, 4, (BatchItem("a fox", "", 1),)), on_step=lambda *a: steps.append(a))
        finally:
            await worker.close()
        return [args[0] for args in steps if len(args) == 3]

    assert await previews_with('[model]\nname = "tiny"\ndevice = "cpu"\n[preview]\nevery_steps = 2\n') == [2]
    assert await previews_with('[model]\nname = "tiny"\ndevice = "cpu"\n[preview]\nenabled = false\n') == []


def test_a_preview_is_decoded_at_its_own_size(previewing: Any) -> None:
    """Latents of a 512x768 image decode to a preview of at most 256 px (the latents are scaled down
    first, so the decode costs the preview's pixels, not the image's)."""
    import torch

    decodes = previewing.previewer.decodes
    (image,) = previewing.previewer.decode(torch.randn(1, 4, 96, 64))
    assert max(image.size) == 256 and image.size == (168, 256)
    assert previewing.previewer.decodes == decodes + 1


class RedIsBlocked:
    """An image check (old style) that refuses pure red pictures: the painted previews, not the results."""

    def check(self, image: Any) -> str:
        r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
        return "blocked" if r > 200 and g < 50 and b < 50 else "ok"


@pytest.mark.parametrize("refused", [False, True])
async def test_a_preview_is_shown_only_once_the_image_check_passed_it(tmp_path: Path, refused: bool) -> None:
    """Every image sent is checked: a preview the check finds something in is not passed on (nor
    any later one of the job); the job itself goes on and is judged on its final image."""
    from storage import moderation as moderation_log
    from tests.service_support import ADA, service_env

    checker = RedIsBlocked() if refused else None
    async with service_env(tmp_path, PaintingPipeline(), image_checker=checker) as env:
        ticket = await env.service.imagine(ADA, "a red square --steps 4")
        seen = [u async for u in ticket.updates() if isinstance(u, Step)]
        delivery = await ticket.delivery()
        shown = [u.preview for u in seen if u.preview is not None]
        assert len(delivery.images) == 1
        if refused:
            assert shown == [] and ticket.preview is None and ticket.previews_refused
            assert [u.step for u in seen][-1] == 4  # the steps still count up
            assert await moderation_log.log_entries(env.db) == []  # no strike for an image still forming
        else:
            assert len(shown) >= 3 and ticket.preview == shown[-1] and not ticket.previews_refused
            with Image.open(io.BytesIO(shown[0])) as first:
                assert _near(first.getpixel((8, 8)), PaintingPipeline.COLOURS[0])

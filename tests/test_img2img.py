"""Variations (img2img): request fields, batches, the tiny pipeline, the worker and the queue."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.core.batch import Batch, BatchInterrupted, BatchItem, ItemsRejected
from generation.core.errors import GenerationFailed, InvalidRequest
from generation.model.pipeline import LightningPipeline
from generation.scheduling.queue import GenerationQueue, Job, TimeEstimator
from generation.core.request import GenerationRequest, ModelCaps, denoising_steps
from generation.scheduling.worker import Worker
from tests.fakes import FakePipeline, fake_color

TIMEOUT = 5.0
MISSING_MESSAGE = "no longer available"


def variation(init: Path | str, *, user: str = "a", prompt: str = "a fox", seed: int | None = 7,
              strength: float = 0.6, steps: int = 4, size: int = 256, count: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=size, height=size, steps=steps, seed=seed, count=count,
                             kind="img2img", init_image=str(init), strength=strength, user_id=user,
                             platform="discord")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small noisy RGB image on disk (for the fake pipeline)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "source.png"
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
    return path


# -- the request --------------------------------------------------------------------------------


def test_img2img_request_fields_shape_and_round_trip(source: Path) -> None:
    r = variation(source, strength=0.5, steps=8)
    assert (r.kind, r.init_image, r.strength) == ("img2img", str(source), 0.5)
    assert r.shape == ("img2img", 256, 256, 8, 0.5)
    assert GenerationRequest.from_dict(r.to_dict()) == r
    whole = variation(source, strength=1)
    assert whole.strength == 1.0 and isinstance(whole.strength, float)
    assert GenerationRequest(prompt="x", kind="img2img", init_image=source).init_image == str(source)  # PathLike
    txt = GenerationRequest(prompt="a fox", width=256, height=256)
    assert txt.shape == ("txt2img", 256, 256, 4) and txt.init_image is None
    assert len({txt.shape, r.shape, variation(source, strength=0.75, steps=8).shape}) == 3
    assert ModelCaps(base_resolution=256, steps=(4, 8)).check(r) is r


def test_init_image_required_for_img2img_only(source: Path) -> None:
    with pytest.raises(InvalidRequest, match="init_image") as info:
        GenerationRequest(prompt="a fox", kind="img2img")
    assert info.value.field == "init_image"
    with pytest.raises(InvalidRequest, match="init_image") as info:
        GenerationRequest(prompt="a fox", init_image=str(source))
    assert info.value.field == "init_image"
    for bad in ("relative/source.png", "", 42):
        with pytest.raises(InvalidRequest, match="absolute path") as info:
            GenerationRequest(prompt="a fox", kind="img2img", init_image=bad)  # type: ignore[arg-type]
        assert info.value.field == "init_image"


@pytest.mark.parametrize("strength", [0, 0.0, -0.5, 1.0001, 2, math.nan, math.inf, True, False, "0.5", None])
def test_invalid_strength_is_named(source: Path, strength: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        variation(source, strength=strength)  # type: ignore[arg-type]
    assert info.value.field == "strength"
    assert "Strength" in str(info.value) and "above 0" in str(info.value) and "at most 1" in str(info.value)


@pytest.mark.parametrize(("steps", "lowest"), [(1, 1.0), (2, 0.5), (4, 0.25), (8, 0.125)])
def test_strength_must_leave_one_step(source: Path, steps: int, lowest: float) -> None:
    assert denoising_steps(steps, lowest) == 1
    assert variation(source, steps=steps, strength=lowest).shape[-1] == lowest
    with pytest.raises(InvalidRequest, match=f"too low for {steps} steps") as info:
        variation(source, steps=steps, strength=lowest * 0.99)
    assert info.value.field == "strength"
    assert f"{lowest:g}" in str(info.value)


def test_batch_carries_strength_and_init_images(source: Path) -> None:
    items = tuple(BatchItem("p", "", s, str(source)) for s in range(3))
    batch = Batch.from_shape(variation(source, strength=0.5).shape, items)
    assert batch.shape == ("img2img", 256, 256, 4, 0.5) and batch.denoising_steps == 2
    first, second = batch.split()
    assert first.shape == second.shape == batch.shape
    assert first.items + second.items == items
    assert batch.subset([2, 0]).items == (items[2], items[0]) and batch.subset([1]).strength == 0.5
    txt = Batch.from_shape(("txt2img", 256, 256, 4), [BatchItem("p", "", 1)])
    assert txt.strength is None and txt.denoising_steps == 4
    with pytest.raises(ValueError, match="strength"):
        Batch("img2img", 256, 256, 4, items)
    with pytest.raises(ValueError, match="init_image"):
        Batch("txt2img", 256, 256, 4, items)


def test_eta_guess_counts_the_steps_img2img_runs() -> None:
    est = TimeEstimator()
    assert est.guess(("img2img", 256, 256, 4, 0.5)) == pytest.approx(est.guess(("txt2img", 256, 256, 2)))
    assert est.guess(("img2img", 256, 256, 4, 1.0)) == pytest.approx(est.guess(("txt2img", 256, 256, 4)))


# -- the tiny pipeline --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tiny: LightningPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image the tiny pipeline made, saved like the bot saves its images."""
    [image] = tiny.generate(Batch("txt2img", 256, 256, 4, (BatchItem("a red fox", "", 42),)))
    path = tmp_path_factory.mktemp("images") / "fox.png"
    image.save(path)
    return path


def vary(init: Path, *seeds: int, strength: float = 0.6, steps: int = 4, width: int = 256,
         height: int = 256) -> Batch:
    items = tuple(BatchItem("a red fox", "", seed, str(init)) for seed in seeds)
    return Batch("img2img", width, height, steps, items, strength)


def test_img2img_shares_the_loaded_components(tiny: LightningPipeline, generated: Path) -> None:
    tiny.generate(vary(generated, 1, steps=2, strength=1.0))
    img2img = tiny.img2img
    assert img2img is tiny.img2img  # built once
    for name in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        assert getattr(img2img, name) is getattr(tiny.pipe, name), name
    assert img2img.unet is tiny.unet_for(2)
    assert img2img.scheduler is tiny._schedulers[2]
    assert img2img.scheduler.config.timestep_spacing == "trailing"


@pytest.mark.parametrize("size", [(256, 256), (336, 192)])
def test_variation_has_the_batch_size(tiny: LightningPipeline, generated: Path, size: tuple[int, int]) -> None:
    images = tiny.generate(vary(generated, 1, 2, width=size[0], height=size[1]))
    assert [image.size for image in images] == [size, size]
    assert all(image.mode == "RGB" for image in images)


def test_variation_is_reproducible_and_seeded(tiny: LightningPipeline, generated: Path) -> None:
    first = [pixels(im) for im in tiny.generate(vary(generated, 5, 6))]
    again = [pixels(im) for im in tiny.generate(vary(generated, 5, 6))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # same seed + init: same pixels
    assert np.abs(first[0] - first[1]).mean() > 5  # different seeds: different images
    alone = pixels(tiny.generate(vary(generated, 6))[0])
    diff = np.abs(alone - first[1])  # a seed gives the same variation alone or in a batch
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_variation_depends_on_the_init_image(tiny: LightningPipeline, generated: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    Image.new("RGB", (256, 256), (20, 200, 90)).save(other)
    # random weights: the init's mark is faint, clearest at low strength (least re-noised)
    [from_fox] = tiny.generate(vary(generated, 5, strength=0.25))
    [from_other] = tiny.generate(vary(other, 5, strength=0.25))
    assert np.abs(pixels(from_fox) - pixels(from_other)).mean() > 1


def test_img2img_leaves_txt2img_unchanged(tiny: LightningPipeline, generated: Path) -> None:
    txt = Batch("txt2img", 256, 256, 4, (BatchItem("a red fox", "", 42),))
    before = pixels(tiny.generate(txt)[0])
    tiny.generate(vary(generated, 1, steps=1, strength=1.0))
    assert np.array_equal(before, pixels(tiny.generate(txt)[0]))
    assert np.array_equal(before, pixels(Image.open(generated).convert("RGB")))


@pytest.mark.parametrize(("steps", "strength", "runs"), [(4, 0.6, 2), (4, 1.0, 4), (8, 0.5, 4), (1, 1.0, 1)])
def test_progress_counts_the_steps_that_run(
    tiny: LightningPipeline, generated: Path, steps: int, strength: float, runs: int
) -> None:
    seen: list[tuple[int, int]] = []
    tiny.generate(vary(generated, 1, steps=steps, strength=strength), on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(i, runs) for i in range(1, runs + 1)]


def test_should_stop_interrupts_a_variation(tiny: LightningPipeline, generated: Path) -> None:
    seen: list[tuple[int, int]] = []
    with pytest.raises(BatchInterrupted):
        tiny.generate(vary(generated, 1, 2, strength=1.0), on_step=lambda i, n: seen.append((i, n)),
                      should_stop=lambda: True)
    assert seen == [(1, 4)]


def test_strength_too_low_is_refused_by_the_pipeline(tiny: LightningPipeline, generated: Path) -> None:
    with pytest.raises(InvalidRequest, match="too low for 4 steps") as info:
        tiny.generate(vary(generated, 1, strength=0.2))
    assert info.value.field == "strength"


def test_missing_or_broken_init_images_are_rejected_per_item(
    tiny: LightningPipeline, generated: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    batch = Batch("img2img", 256, 256, 4, (
        BatchItem("a", "", 1, str(generated)),
        BatchItem("b", "", 2, str(tmp_path / "deleted.png")),
        BatchItem("c", "", 3, str(broken)),
    ), 0.6)
    with pytest.raises(ItemsRejected) as info:
        tiny.generate(batch)
    assert sorted(info.value.errors) == [1, 2]
    assert MISSING_MESSAGE in str(info.value.errors[1])
    assert "could not be read" in str(info.value.errors[2])
    assert all(isinstance(e, GenerationFailed) for e in info.value.errors.values())


async def test_worker_fails_only_the_items_whose_init_image_is_gone(
    tiny: LightningPipeline, generated: Path, tmp_path: Path
) -> None:
    batch = Batch("img2img", 256, 256, 4, (
        BatchItem("a", "", 1, str(tmp_path / "deleted.png")),
        BatchItem("b", "", 2, str(generated)),
    ), 0.6)
    async with Worker(tiny) as worker:
        first, second = await asyncio.wait_for(worker.run(batch), 30)
        assert isinstance(first, GenerationFailed) and MISSING_MESSAGE in str(first)
        assert isinstance(second, Image.Image)
        expected = tiny.generate(batch.subset([1]))[0]
        assert np.abs(pixels(second) - pixels(expected)).max() <= 1
        # the worker is still serving
        [again] = await asyncio.wait_for(worker.run(batch.subset([1])), 30)
        assert isinstance(again, Image.Image)


# -- the queue (fake pipeline) ------------------------------------------------------------------


@pytest.fixture
async def fake_queue():
    pipe = FakePipeline()
    worker = Worker(pipe)
    worker.start()
    queue = GenerationQueue(worker)
    queue.start()
    yield pipe, queue
    pipe.resume()
    await asyncio.wait_for(queue.close(drain=False), TIMEOUT)
    await asyncio.wait_for(worker.close(), TIMEOUT)


async def results(*jobs: Job) -> list:
    return await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs), return_exceptions=True), TIMEOUT)


async def hold(pipe: FakePipeline, queue: GenerationQueue) -> Job:
    """Occupy the worker with a paused job, so later submissions wait together."""
    pipe.pause()
    job = queue.submit(GenerationRequest(prompt="blocker", width=512, height=512, user_id="z", platform="x"))
    assert await asyncio.to_thread(pipe.wait_entered, TIMEOUT)
    return job


async def test_txt2img_and_img2img_never_share_a_batch(fake_queue, source: Path) -> None:
    pipe, queue = fake_queue
    blocker = await hold(pipe, queue)
    txt = [queue.submit(GenerationRequest(prompt=f"{u} text", width=256, height=256, seed=1, user_id=u,
                                          platform="discord")) for u in "ab"]
    img = [queue.submit(variation(source, user=u, prompt=f"{u} vary")) for u in "cd"]
    pipe.resume()
    await results(blocker, *txt, *img)
    assert all(job.status == "done" for job in (*txt, *img))
    calls = pipe.calls[1:]
    assert sorted(call.batch.kind for call in calls) == ["img2img", "txt2img"]
    for call in calls:
        assert len({item.init_image is None for item in call.batch.items}) == 1
        assert call.size == 2


async def test_variations_of_one_shape_batch_together(fake_queue, source: Path, tmp_path: Path) -> None:
    pipe, queue = fake_queue
    other = tmp_path / "other.png"
    Image.new("RGB", (256, 256), (1, 2, 3)).save(other)
    blocker = await hold(pipe, queue)
    same = [queue.submit(variation(source if u != "c" else other, user=u, seed=3)) for u in "abc"]
    stronger = queue.submit(variation(source, user="d", strength=0.8))
    pipe.resume()
    done = await results(blocker, *same, stronger)
    calls = pipe.calls[1:]
    assert [call.batch.shape for call in calls] == [("img2img", 256, 256, 4, 0.6), ("img2img", 256, 256, 4, 0.8)]
    assert [call.size for call in calls] == [3, 1]
    assert [call.steps_run for call in calls] == [2, 3]
    colors = [result.images[0].getpixel((0, 0)) for result in done[1:4]]
    assert colors[0] == colors[1] == fake_color("a fox", 3, Image.open(source))  # same init + seed
    assert colors[2] == fake_color("a fox", 3, Image.open(other)) != colors[0]
    assert done[1].request.init_image == str(source) and done[1].images[0].info["init_image"] == str(source)


async def test_missing_init_image_fails_only_that_job(fake_queue, source: Path, tmp_path: Path) -> None:
    pipe, queue = fake_queue
    gone = tmp_path / "gone.png"
    Image.new("RGB", (256, 256)).save(gone)
    blocker = await hold(pipe, queue)
    lost = queue.submit(variation(gone, user="a"))
    kept = queue.submit(variation(source, user="b"))
    gone.unlink()  # deleted (e.g. /forget) while the job waited
    pipe.resume()
    outcome_lost, outcome_kept = (await results(blocker, lost, kept))[1:]
    assert isinstance(outcome_lost, GenerationFailed) and MISSING_MESSAGE in str(outcome_lost)
    assert lost.status == "failed"
    assert kept.status == "done" and len(outcome_kept.images) == 1
    assert [call.outcome for call in pipe.calls[1:]] == ["rejected", "ok"]
    # the worker goes on serving
    [after] = (await results(queue.submit(variation(source, user="c", seed=99))))
    assert after.images[0].getpixel((0, 0)) == fake_color("a fox", 99, Image.open(source))


def test_request_replace_keeps_validation(source: Path) -> None:
    r = variation(source, steps=4, strength=0.25)
    with pytest.raises(InvalidRequest, match="too low for 2 steps"):
        dataclasses.replace(r, steps=2)

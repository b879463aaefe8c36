"""Edit by words (issue 24, item 1): CLIPSeg (tiny, random weights, the real classes) finds the region,
the mask is grown and feathered, an inpainting pass repaints only that region; a mask covering
nothing or nearly everything is refused without a charge; the authority check of every action."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.service import NotFound, Via
from generation.core.errors import InvalidRequest
from generation.model.segment import MaskModel
from generation.tools.masks import EditSettings, coverage, mask_from_image, prepare_mask, unpack
from storage import inputs, jobs
from tests.service_support import ADA, BOB, service_env

TIMEOUT = 120.0
# the tiny CLIPSeg's map is random: above 0.9 it marks scattered patches (a partial mask), nothing is
# above 1.0 (an empty mask) and everything is above 0.0 (the whole picture)
PARTIAL = EditSettings(mask_model="tiny", threshold=0.9, grow=0.0, feather=0.01)


@pytest.fixture(scope="module")
def mask_model() -> MaskModel:
    return MaskModel(PARTIAL)


async def _made(env, who=ADA) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    ticket = await env.service.imagine(who, "a harbour --seed 3 --steps 2")
    return ticket.job_id, await asyncio.wait_for(ticket.delivery(), TIMEOUT)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_mask_is_grown_and_feathered_and_measured() -> None:
    probabilities = np.zeros((64, 64), dtype=np.float32)
    probabilities[24:40, 24:40] = 0.95  # a 16x16 square: 1/16 of the map
    settings = EditSettings(grow=0.05, feather=0.04)
    mask = np.asarray(prepare_mask(probabilities, (256, 256), settings))
    assert mask[128, 128] == 255  # inside: repainted fully
    assert mask[128, 96 - 10] > 200  # grown by 5% of 256 px (13 px) beyond the square's edge at 96
    assert 0 < mask[128, 96 - 18] < 255  # then a soft edge
    assert mask[128, 20] == 0 and mask[5, 5] == 0  # far away: kept exactly
    assert 0.0625 < coverage(Image.fromarray(mask)) < 0.3  # (64 + 2 * 18)² px and the soft edge
    nothing = prepare_mask(np.zeros((64, 64)), (256, 256), settings)
    assert coverage(nothing) == 0.0


def test_growing_is_a_square_dilation_by_grow_of_the_short_side() -> None:
    from generation.tools.masks import soften

    rng = np.random.default_rng(1)
    spots = rng.random((100, 160)) > 0.997
    grown = np.asarray(soften(Image.fromarray((spots * 255).astype(np.uint8), "L"),
                              EditSettings(grow=0.05, feather=0.0))) > 0
    expected = np.zeros_like(spots)
    for y, x in zip(*np.nonzero(spots)):
        expected[max(0, y - 5):y + 6, max(0, x - 5):x + 6] = True  # 5% of the short side (100 px)
    assert spots.any() and (grown == expected).all()


def test_drawn_masks_in_each_convention() -> None:
    alpha = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    alpha.paste((0, 0, 0, 0), (0, 0, 32, 64))  # OpenAI: transparent = edit (the left half)
    left = np.asarray(mask_from_image(alpha, (128, 128), "alpha"))
    assert left[:, :60].min() == 255 and left[:, 68:].max() == 0
    white = Image.new("L", (64, 64), 0)
    white.paste(255, (32, 0, 64, 64))  # A1111: white = edit (the right half)
    right = np.asarray(mask_from_image(white, (128, 128), "white"))
    assert right[:, 68:].min() == 255 and right[:, :60].max() == 0
    flipped = np.asarray(mask_from_image(white, (128, 128), "white", invert=True))
    assert (flipped == 255 - right).all()


@pytest.mark.slow
async def test_edit_by_words_repaints_only_the_region(tmp_path: Path, tiny, mask_model: MaskModel) -> None:
    async with service_env(tmp_path, tiny, daily_quota=5, edit=PARTIAL) as env:
        env.service.segmenter = mask_model
        job_id, made = await _made(env)
        original = Image.open(made.images[0].path).convert("RGB")
        ticket = await env.service.edit(ADA, job_id, 0, "a small red fox", words="the boat")
        delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        (image,) = delivery.images
        result = np.asarray(Image.open(image.path).convert("RGB")).astype(int)
        assert result.shape[:2] == original.size[::-1]
        # the mask that was used is the job's input, in its alpha channel: outside it, the original
        stored = await inputs.for_job(env.db, ticket.job_id)
        assert stored is not None and stored.source == "edit" and delivery.mask is not None
        source, mask = unpack(Image.open(delivery.mask))
        keep = np.asarray(mask) == 0
        assert 0.05 < 1 - keep.mean() < 0.95
        assert np.abs(result - np.asarray(original).astype(int))[keep].max() <= 2
        assert np.abs(result - np.asarray(original).astype(int))[~keep].mean() > 2  # inside: repainted
        assert np.asarray(source).shape == result.shape
        row = await jobs.get(env.db, ticket.job_id)
        assert row.request["kind"] == "edit" and row.request["edit_words"] == "the boat"
        assert row.request["prompt"] == "a small red fox" and row.request["source"] == f"{job_id}#1"
        assert row.charged == 1 and (await env.service.quota(ADA)).used == 2
        assert "vary (region)" in delivery.text and "the boat" in delivery.text
        assert (await env.service.history(ADA)).entries[0].job_id == ticket.job_id


async def test_a_mask_of_nothing_or_everything_is_refused_free(tmp_path: Path, tiny, mask_model) -> None:
    async with service_env(tmp_path, tiny, daily_quota=5, edit=replace(PARTIAL, threshold=1.0)) as env:
        job_id, _ = await _made(env)
        env.service.segmenter = mask_model
        with pytest.raises(InvalidRequest, match="Nothing matching “the cat” was found.*nothing was charged"):
            await env.service.edit(ADA, job_id, 0, "a dog", words="the cat")  # nothing is above 1
        env.service.config = replace(env.service.config, edit=replace(PARTIAL, threshold=0.0))
        with pytest.raises(InvalidRequest, match="covers 100% of the image: nearly everything"):
            await env.service.edit(ADA, job_id, 0, "a dog", words="the cat")
        blank = _png(Image.new("L", (256, 256), 0))  # a drawn mask that marks nothing
        with pytest.raises(InvalidRequest, match="The mask covers nothing"):
            await env.service.edit(ADA, job_id, 0, "a dog", mask=blank)
        with pytest.raises(InvalidRequest, match="Name what to change"):
            await env.service.edit(ADA, job_id, 0, "a dog", words="  ")
        with pytest.raises(InvalidRequest, match="paint in the region instead"):
            await env.service.edit(ADA, job_id, 0, "", words="the cat")
        assert (await env.service.quota(ADA)).used == 1  # the first image only
        env.service.segmenter = None
        with pytest.raises(InvalidRequest, match="edit.mask_model"):
            await env.service.edit(ADA, job_id, 0, "a dog", words="the cat")


async def test_edit_of_anothers_image_needs_a_click_on_its_message(tmp_path: Path, tiny, mask_model) -> None:
    async with service_env(tmp_path, tiny, daily_quota=5, edit=PARTIAL) as env:
        env.service.segmenter = mask_model
        job_id, _ = await _made(env)
        with pytest.raises(NotFound):  # a typed id of another's job is no key to it
            await env.service.edit(BOB, job_id, 0, "a fox", words="the boat")
        with pytest.raises(NotFound):
            await env.service.edit(BOB, job_id, 0, "a fox", words="the boat", via=Via(None, 4242))
        await env.service.remember_message(job_id, "discord", None, 4243, index=0)
        ticket = await env.service.edit(BOB, job_id, 0, "a fox", words="the boat", via=Via(None, 4243))
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        assert (await env.service.quota(BOB)).used == 1  # the clicker pays, and owns the edit


@pytest.mark.slow
async def test_edit_of_an_upload_with_an_openai_mask(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, daily_quota=5) as env:
        picture = Image.new("RGB", (300, 300), (40, 90, 160))
        mask = Image.new("RGBA", (300, 300), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (100, 100, 200, 200))  # transparent: the area to edit
        ticket = await env.service.edit_upload(ADA, _png(picture), _png(mask), "a yellow sun --seed 4 --steps 2")
        delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        result = np.asarray(Image.open(delivery.images[0].path).convert("RGB")).astype(int)
        assert result.shape == (256, 256, 3)
        assert np.abs(result[:60, :60] - np.array([40, 90, 160])).max() <= 3  # outside the mask: the upload
        row = await jobs.get(env.db, ticket.job_id)
        assert row.request["kind"] == "edit" and row.request["mode"] == "mask" and row.request["source"] is None
        assert (await env.service.quota(ADA)).used == 1


async def test_an_edit_accepted_before_a_restart_runs_once_after_it(tmp_path: Path, tiny, mask_model) -> None:
    """The mask is stored with the job (its input, in the alpha channel): a restart runs the edit
    again from it, without the mask model and without charging again."""
    async with service_env(tmp_path, tiny, daily_quota=5, edit=PARTIAL) as first:
        job_id, made = await _made(first)
    async with service_env(tmp_path, tiny, daily_quota=5, edit=PARTIAL, start_queue=False) as second:
        second.service.segmenter = mask_model
        accepted = await second.service.edit(ADA, job_id, 0, "a red sail", words="the boat")
        assert (await second.service.quota(ADA)).used == 2
    async with service_env(tmp_path, tiny, daily_quota=5, edit=PARTIAL) as third:  # no mask model now
        recovered = await third.service.recover()
        (ticket,) = recovered.tickets
        assert ticket.job_id == accepted.job_id
        delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        original = np.asarray(Image.open(made.images[0].path).convert("RGB")).astype(int)
        result = np.asarray(Image.open(delivery.images[0].path).convert("RGB")).astype(int)
        _, mask = unpack(Image.open(delivery.mask))
        keep = np.asarray(mask) == 0
        assert np.abs(result - original)[keep].max() <= 2 and not keep.all()
        assert (await third.service.quota(ADA)).used == 2  # not charged again


def test_an_upscaled_image_is_edited_at_its_bucket_and_kept_at_its_size(tmp_path: Path, tiny) -> None:
    """A 2x image (an upscale) is repainted at the model's size and laid back at its own: outside
    the mask every pixel is the original's, inside it changed."""
    from generation.core.batch import Batch, BatchItem
    from generation.tools.masks import pack

    rng = np.random.default_rng(3)
    big = Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), "RGB")
    region = Image.new("L", (512, 512), 0)
    region.paste(255, (100, 100, 300, 300))
    path = tmp_path / "input.png"
    pack(big, region).save(path)
    batch = Batch("edit", 256, 256, 2, (BatchItem("a red door", "", 5, init_image=str(path), mode="mask"),), 1.0)
    (result,) = tiny.generate(batch)
    assert result.size == (512, 512)
    pixels, original = np.asarray(result).astype(int), np.asarray(big).astype(int)
    keep = np.asarray(region) == 0
    assert np.abs(pixels - original)[keep].max() == 0
    assert np.abs(pixels - original)[~keep].mean() > 10

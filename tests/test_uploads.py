"""Start from your own image (issue 23, item 1): the upload checks and the service path, tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.service import Finished, QuotaExceeded, Who
from generation.core.errors import InvalidRequest
from generation.tools.inputs import check_upload
from storage import inputs, jobs
from tests.service_support import ADA, service_env
from tests.upload_support import BAD_UPLOADS, photo

TIMEOUT = 60.0


@pytest.mark.parametrize(("name", "make", "words"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_upload_gets_one_clear_message(name: str, make, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_upload(make())
    assert info.value.field == "image"
    for word in words:
        assert word in str(info.value)


def test_good_upload_is_rgb_with_orientation_and_transparency_handled() -> None:
    assert check_upload(photo(300, 200, fmt="JPEG")).size == (300, 200)
    clear = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    out = check_upload(__import__("tests.upload_support", fromlist=["png"]).png(clear))
    assert out.image.mode == "RGB" and out.image.getpixel((0, 0)) == (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: a phone photo taken upright
    rotated = Image.open(__import__("io").BytesIO(photo(60, 40, fmt="JPEG")))
    buf = __import__("io").BytesIO()
    rotated.save(buf, "JPEG", exif=exif.tobytes())
    assert check_upload(buf.getvalue()).size == (40, 60)


class BlockRed:
    """Refuses images that are mostly red (the upload below), allows the rest."""

    def check(self, image: Image.Image) -> str:
        r, g, b = np.asarray(image.convert("RGB")).reshape(-1, 3).mean(axis=0)
        return "blocked" if r > 200 and g < 60 and b < 60 else "ok"


def red_png() -> bytes:
    from tests.upload_support import png
    return png(Image.new("RGB", (200, 200), (230, 10, 10)))


@pytest.fixture
async def env(tmp_path: Path, tiny):
    async with service_env(tmp_path, tiny, image_checker=BlockRed(), daily_quota=5) as e:
        yield e


async def _done(ticket) -> object:
    return await asyncio.wait_for(ticket.delivery(), TIMEOUT)


async def test_upload_makes_an_img2img_job_unlike_text_only(env) -> None:
    service = env.service
    text = "a lighthouse --seed 11 --steps 4"
    plain = await _done(await service.imagine(ADA, text))
    ticket = await service.imagine(ADA, text, image=photo(300, 200), strength=0.5)
    started = await _done(ticket)
    request = ticket.request
    # the bucket nearest 3:2 at the tiny model's base, img2img at the strength asked
    assert (request.kind, request.strength, request.width, request.height) == ("img2img", 0.5, 304, 208)
    assert request.seed == plain.request.seed
    ours = np.asarray(Image.open(started.images[0].path)).astype(int)
    theirs = np.asarray(Image.open(plain.images[0].path).resize((304, 208))).astype(int)
    assert np.abs(ours - theirs).mean() > 1
    # stored with the job: a job_inputs row whose file is the fitted image the job started from
    row = await inputs.for_job(env.db, ticket.job_id)
    assert row is not None and (row.width, row.height) == (304, 208)
    assert Path(request.init_image) == env.store.path_for(row.path).resolve()
    assert Image.open(request.init_image).size == (304, 208)
    assert "from your image" in started.text and "--strength 0.5" in started.text
    assert (await service.quota(ADA)).used == 2


async def test_aspect_given_wins_over_the_images_own(env) -> None:
    ticket = await env.service.imagine(ADA, "a lighthouse --ar 1:1 --strength 0.75", image=photo(300, 200))
    assert (ticket.request.width, ticket.request.height, ticket.request.strength) == (256, 256, 0.75)
    await _done(ticket)


@pytest.mark.parametrize(("name", "make", "words"), BAD_UPLOADS[:3] + BAD_UPLOADS[5:6],
                         ids=[b[0] for b in BAD_UPLOADS[:3] + BAD_UPLOADS[5:6]])
async def test_bad_upload_costs_nothing(env, name: str, make, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        await env.service.imagine(ADA, "a lighthouse", image=make())
    assert words[0] in str(info.value)
    assert (await env.service.quota(ADA)).used == 0
    assert int(await env.db.fetchval("SELECT count(*) FROM jobs")) == 0


async def test_upload_refused_by_the_image_check_costs_nothing(env) -> None:
    with pytest.raises(InvalidRequest, match="image safety check") as info:
        await env.service.imagine(ADA, "a lighthouse", image=red_png())
    assert info.value.field == "image"
    assert (await env.service.quota(ADA)).used == 0
    assert int(await env.db.fetchval("SELECT count(*) FROM job_inputs")) == 0


async def test_strength_needs_an_image_and_bounds(env) -> None:
    with pytest.raises(InvalidRequest, match="needs an image"):
        await env.service.imagine(ADA, "a lighthouse --strength 0.4")
    for bad in ("0.05", "1.5", "lots"):
        with pytest.raises(InvalidRequest, match="0.1 to 1") as info:
            await env.service.imagine(ADA, f"a lighthouse --strength {bad}", image=photo())
        assert info.value.field == "strength"
    assert (await env.service.quota(ADA)).used == 0


async def test_low_strength_takes_more_steps(env) -> None:
    ticket = await env.service.imagine(ADA, "a lighthouse --strength 0.2", image=photo())
    assert ticket.request.steps == 8 and int(ticket.request.steps * 0.2) == 1
    await _done(ticket)


async def test_over_quota_upload_is_refused_and_history_and_forget(env) -> None:
    service = env.service
    ticket = await service.imagine(ADA, "a lighthouse --n 4", image=photo())
    await _done(ticket)
    with pytest.raises(QuotaExceeded):
        await service.imagine(ADA, "a lighthouse --n 2", image=photo(seed=3))
    view = await service.history(ADA)
    entry = view.entries[0]
    assert entry.input_image is not None and entry.input_image.is_file()
    assert "from your image" in entry.text
    kept = await inputs.for_job(env.db, ticket.job_id)
    await service.forget(ADA)
    assert await inputs.for_job(env.db, ticket.job_id) is None
    assert not env.store.exists(kept.path)


async def test_export_holds_the_upload_and_forget_deletes_only_its_own(env) -> None:
    """/export carries the picture a user sent (uploads/JOB.png, named in export.json); /forget
    deletes it, but not the same picture another user sent (files are content-addressed)."""
    import json
    import zipfile

    from tests.service_support import BOB

    service = env.service
    picture = photo(300, 200)
    ada = await _done(await service.imagine(ADA, "a lighthouse --seed 4", image=picture))
    bob = await _done(await service.imagine(BOB, "a lighthouse at dusk --seed 5", image=picture))
    plain = await _done(await service.imagine(ADA, "a harbour --seed 6"))
    with zipfile.ZipFile(await service.export(ADA)) as archive:
        data = json.loads(archive.read("export.json"))
        by_id = {job["id"]: job for job in data["jobs"]}
        sent = by_id[ada.job_id]["input"]
        assert sent["file"] == f"uploads/{ada.job_id}.png" and (sent["width"], sent["height"]) == (304, 208)
        stored = await inputs.for_job(env.db, ada.job_id)
        assert archive.read(sent["file"]) == env.store.path_for(stored.path).read_bytes()
        assert by_id[plain.job_id]["input"] is None
        assert bob.job_id not in by_id and not any(bob.job_id in name for name in archive.namelist())
    bobs = await inputs.for_job(env.db, bob.job_id)
    assert bobs.path == stored.path  # the same picture, one file
    await service.forget(ADA)
    assert await inputs.for_job(env.db, ada.job_id) is None
    assert env.store.exists(bobs.path)  # Bob's upload stays
    await service.forget(BOB)
    assert not env.store.exists(bobs.path)


async def test_restart_runs_the_upload_job_again(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, start_queue=False) as env:
        ticket = await env.service.imagine(ADA, "a lighthouse --seed 3", image=photo())
        job_id = ticket.job_id
    async with service_env(tmp_path, tiny) as env:
        recovered = await env.service.recover()
        assert [t.job_id for t in recovered.tickets] == [job_id]
        delivery = await _done(recovered.tickets[0])
        assert delivery.request.kind == "img2img" and len(delivery.images) == 1
        assert (await jobs.get(env.db, job_id)).status == "done"
        assert (await env.service.quota(Who("telegram", "1001"))).used == 1

"""Image files: content-addressed store, garbage collection, PNG metadata, fitting under a limit."""

from __future__ import annotations

import io
import os
import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from storage import Database, ImageStore, images, jobs, users
from storage.files import fit_under, png_with_metadata, read_png_metadata


@pytest.fixture
async def db(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as database:
        yield database


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    data = png_with_metadata(_noise(32, 32), {"prompt": "../../etc/passwd %s 🦊"})
    relative, digest = store.put(data)
    assert relative == f"{digest[:2]}/{digest[2:4]}/{digest}.png"
    assert "passwd" not in relative and ".." not in relative
    assert store.open(relative) == data
    assert store.path_for(relative) == tmp_path / "images" / relative
    mtime = store.path_for(relative).stat().st_mtime_ns
    assert store.put(data) == (relative, digest)
    assert store.path_for(relative).stat().st_mtime_ns == mtime  # not rewritten
    other, _ = store.put(data + b"x")
    assert other != relative
    assert store.files() == sorted([relative, other])
    assert not [p for p in (tmp_path / "images").rglob("*.tmp")]


def test_path_for_refuses_to_leave_the_root(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    for bad in ("../x.png", "/etc/passwd", "ab/../../x", ""):
        with pytest.raises(ValueError):
            store.path_for(bad)
    with pytest.raises(ValueError):
        store.put(b"x", ext="../png")


async def test_image_rows_and_garbage_collection(db: Database, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    uid = (await users.get_or_create(db, "cli", "1")).id
    job = await jobs.create(db, user_id=uid, request={"prompt": "x"}, model_id="m")
    kept, kept_sha = store.put(b"kept image")
    orphan, _ = store.put(b"orphan image")
    young, _ = store.put(b"just written, row not inserted yet")
    await images.add_image(db, job.id, 1, 8, kept, kept_sha, 64, 32, 10, safety="ok")
    await images.add_image(db, job.id, 0, 7, kept, kept_sha, 64, 32, 10)
    rows = await images.images_for_job(db, job.id)
    assert [(r.idx, r.seed) for r in rows] == [(0, 7), (1, 8)]
    assert (await images.images_for_jobs(db, [job.id, "none"]))["none"] == []
    assert await images.get_image(db, rows[0].id) == rows[0]
    old = time.time() - 7200
    for path in (kept, orphan):
        os.utime(store.path_for(path), (old, old))
    removed = await store.delete_unreferenced(db, grace=timedelta(hours=1))
    assert removed == [orphan]
    assert store.exists(kept) and store.exists(young) and not store.exists(orphan)
    assert not store.path_for(orphan).parent.exists()  # empty shard directories pruned
    assert await images.is_referenced(db, kept) and not await images.is_referenced(db, young)
    assert store.delete([young, young]) == 1


def test_png_metadata_round_trip() -> None:
    params = {"prompt": "a fox, “quoted” & ünïcode 🦊", "seed": 7, "steps": 4, "model": "sdxl"}
    data = png_with_metadata(Image.new("RGB", (64, 48), "orange"), params)
    assert read_png_metadata(data) == {**params, "sampler": "Euler", "cfg_scale": 0}
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (64, 48)
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    assert read_png_metadata(plain.getvalue()) == {}


def test_fit_under_keeps_small_files_as_png() -> None:
    data = png_with_metadata(Image.new("RGB", (64, 64)), {})
    assert fit_under(data, 10_000_000) == (data, "png")


@pytest.mark.parametrize(("size", "limit"), [((1024, 1024), 400_000), ((1344, 768), 60_000)])
def test_fit_under_gets_noise_under_the_limit_keeping_the_aspect(size: tuple[int, int], limit: int) -> None:
    data = png_with_metadata(_noise(*size), {"prompt": "noise"})
    assert len(data) > 3 * limit
    encoded, ext = fit_under(data, limit)
    assert len(encoded) <= limit
    assert ext in ("webp", "jpg")
    with Image.open(io.BytesIO(encoded)) as image:
        assert image.format == {"webp": "WEBP", "jpg": "JPEG"}[ext]
        width, height = image.size
    assert abs(width / height - size[0] / size[1]) < 0.01


def test_fit_under_with_jpeg_only_and_transparency() -> None:
    rgba = _noise(256, 256).convert("RGBA")
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    encoded, ext = fit_under(buffer.getvalue(), 40_000, formats=("jpeg",))
    assert ext == "jpg" and len(encoded) <= 40_000


def test_put_after_its_shard_directory_was_removed(tmp_path: Path) -> None:
    """The store remembers the shard directories it made (no mkdir per put); one removed since
    (a prune by another store or process) is made again, and the file is stored all the same."""
    store = ImageStore(tmp_path / "images")
    first, _ = store.put(b"one image", "png")
    shard = store.path_for(first).parent
    (shard / Path(first).name).unlink()
    shard.rmdir()
    shard.parent.rmdir()  # both levels, as the garbage collection prunes them
    again, _ = store.put(b"one image", "png")
    assert again == first
    assert store.open(again) == b"one image"
    assert not list(shard.glob(".*"))  # no temp file left behind

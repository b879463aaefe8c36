"""Issue #22, items 2 and 4 (the gallery's part): a shared image's public copy holds only what its
page shows, thumbnails and format conversions are made once and cached on disk, and removed
with the image (real service, real files, the web app over httpx)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.frontends.web import formats
from storage import images, read_metadata
from tests.service_support import ADA
from tests.test_refine import ScriptedRefiner
from tests.web_support import auth, key_for, web_env


def _texts(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(getattr(image, "text", {}) or {}), image.getexif()  # type: ignore[return-value]


async def test_a_shared_copy_holds_only_what_its_page_shows(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        svc = web.env.service
        svc.refiner = ScriptedRefiner("a secret cat, detailed fur, soft light")
        first = await (await svc.imagine(ADA, "my diary cat --refine --seed 4")).delivery()
        # a variation names its source job in its own metadata
        varied = await (await svc.variation(ADA, first.job_id, 0)).delivery()
        key = auth(await key_for(web.env, ADA))
        for delivery in (first, varied):
            stored = delivery.images[0].path.read_bytes()
            assert delivery.job_id in stored.decode("latin-1")  # the owner's file keeps everything
            ref = f"{delivery.job_id}-1"
            share_id = (await web.client.post(f"/v1/images/{ref}/share", headers=key)).json()["share_id"]
            public = (await web.client.get(f"/i/{share_id}/image.png")).content
            texts, exif = _texts(public)
            assert set(texts) == {"parameters"} and not exif and read_metadata(public) == {}
            everything = public.decode("latin-1")
            for secret in (delivery.job_id, first.job_id, "my diary", ADA.user_id, str(tmp_path), "telegram"):
                assert secret not in everything, secret
            assert texts["parameters"].startswith("a secret cat, detailed fur, soft light")
            assert f"Seed: {delivery.images[0].seed}" in texts["parameters"]
            with Image.open(io.BytesIO(public)) as shown, Image.open(delivery.images[0].path) as original:
                assert shown.size == original.size and shown.tobytes() == original.tobytes()
            page = (await web.client.get(f"/i/{share_id}")).text
            assert "my diary" not in page and delivery.job_id not in page and first.job_id not in page


async def test_thumbnails_and_conversions_are_made_once_and_removed_with_the_image(tmp_path: Path,
                                                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    made: list[str] = []
    thumbnail, convert = formats.thumbnail, formats.convert
    monkeypatch.setattr("bot.frontends.web.views.thumbnail", lambda path: made.append("thumb") or thumbnail(path))
    monkeypatch.setattr("bot.frontends.web.commands.convert",
                        lambda path, fmt: made.append(fmt) or convert(path, fmt))
    async with web_env(tmp_path) as web:
        svc = web.env.service
        delivery = await (await svc.imagine(ADA, "a lighthouse --seed 9")).delivery()
        key = auth(await key_for(web.env, ADA))
        ref = f"{delivery.job_id}-1"
        share_id = (await web.client.post(f"/v1/images/{ref}/share", headers=key)).json()["share_id"]
        for _ in range(3):
            assert (await web.client.get(f"/i/{share_id}/thumb.jpg")).status_code == 200
            assert (await web.client.get(f"/i/{share_id}/image.png")).status_code == 200
            for fmt in ("webp", "svg"):
                assert (await web.client.get(f"/v1/images/{ref}?format={fmt}", headers=key)).status_code == 200
        assert sorted(made) == ["svg", "thumb", "webp"]  # each made once, then served from disk
        derived = web.env.store.derived_root
        assert len([p for p in derived.rglob("*") if p.is_file()]) == 4  # thumb, public copy, webp, svg

        await svc.forget(ADA)  # the image goes, and everything made from it
        assert not [p for p in derived.rglob("*") if p.is_file()]
        assert await images.images_for_job(web.env.db, delivery.job_id) == []
        assert (await web.client.get(f"/i/{share_id}/thumb.jpg")).status_code == 404

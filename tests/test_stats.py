"""Ratings by what made the image: model version, steps, style, LoRA (admin stats and the CLI)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bot.__main__ import main
from generation.core.request import ModelCaps
from storage import images
from storage.rating_stats import ratings_by
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, ROOT, service_env

TIMEOUT = 30.0
CAPS = ModelCaps(name="fake", base_resolution=256, steps=(1, 2, 4, 8),
                 loras=(("ink", "0123456789ab"), ("neon", "ba9876543210")))


async def make_rated(env, who, text: str, stars: int) -> None:  # type: ignore[no-untyped-def]
    ticket = await env.service.imagine(who, text)
    await asyncio.wait_for(ticket.delivery(), TIMEOUT)
    for image in await images.images_for_job(env.db, ticket.job_id):
        await env.service.rate(who, image.id, stars)


@pytest.fixture
async def rated(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with service_env(tmp_path, FakePipeline(caps=CAPS)) as env:
        await make_rated(env, ADA, "a fox <lora:ink:0.8> --steps 2", 5)
        await make_rated(env, BOB, "a fox <lora:ink:0.5> <lora:neon> --style anime", 3)
        await make_rated(env, ADA, "a fox --steps 2", 2)
        await make_rated(env, BOB, "a fox --n 2", 4)  # two images, two ratings
        yield env


async def test_groups_by_lora_count_each_adapter_and_none(rated) -> None:  # type: ignore[no-untyped-def]
    groups = {g.key: g for g in await ratings_by(rated.db, "lora")}
    assert (groups["ink"].average, groups["ink"].ratings) == (4.0, 2)
    assert (groups["neon"].average, groups["neon"].ratings) == (3.0, 1)
    assert (groups["(none)"].average, groups["(none)"].ratings, groups["(none)"].images) == (10 / 3, 3, 3)
    assert [g.key for g in await ratings_by(rated.db, "lora")] == ["ink", "(none)", "neon"]  # best first


async def test_groups_by_steps_style_and_model(rated) -> None:  # type: ignore[no-untyped-def]
    steps = {g.key: (g.average, g.ratings) for g in await ratings_by(rated.db, "steps")}
    assert steps == {"2": (3.5, 2), "4": (11 / 3, 3)}
    styles = {g.key: g.average for g in await ratings_by(rated.db, "style")}
    assert styles == {"anime": 3.0, "none": 15 / 4}
    models = await ratings_by(rated.db, "model")
    assert len(models) == 1 and models[0].key.startswith("fake") and models[0].ratings == 5
    with pytest.raises(ValueError):
        await ratings_by(rated.db, "colour")


async def test_admin_stats_show_ratings_by_each_dimension(rated) -> None:  # type: ignore[no-untyped-def]
    stats = await rated.service.admin_stats(ROOT)
    assert set(stats["ratings"]) == {"model", "steps", "style", "lora"}
    assert stats["ratings"]["lora"][0] == "ink: 4.00★ (2 ratings)"
    assert await rated.service.rating_stats("steps") == {"steps": ["4: 3.67★ (3 ratings)", "2: 3.50★ (2 ratings)"]}


async def test_the_cli_prints_the_same(rated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "cli-data"
    data.mkdir()
    await rated.db.execute("PRAGMA wal_checkpoint(FULL)")  # the copy must hold every row
    shutil.copy(tmp_path / "bot.db", data / "imagine.db")
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n')
    assert await asyncio.to_thread(main, ["stats", "--config", str(config), "--by", "lora"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["by lora:", "  ink: 4.00★ (2 ratings)", "  (none): 3.33★ (3 ratings)",
                                "  neon: 3.00★ (1 rating)"]


# -- CLIP score ([eval] clip_model) -------------------------------------------------------------


def test_the_tiny_clip_scores_images_against_their_prompt() -> None:
    from PIL import Image

    from generation.quality.clip_score import ClipScorer, EvalSettings

    scorer = ClipScorer(EvalSettings(clip_model="tiny"))
    try:
        red, noise = Image.new("RGB", (64, 64), (255, 0, 0)), Image.effect_noise((64, 64), 50).convert("RGB")
        first = scorer.score_now([red, noise], "a (red:1.2) fox")
        assert first == scorer.score_now([red, noise], "a red fox")  # the words, not the syntax
        assert all(0.0 <= s <= 100.0 for s in first) and first != scorer.score_now([red, noise], "a blue whale")
    finally:
        scorer.close()


async def test_scores_are_stored_after_delivery_and_shown_beside_ratings(tmp_path: Path) -> None:
    from generation.quality.clip_score import ClipScorer, EvalSettings
    from storage.scores import clip_scores

    async with service_env(tmp_path, FakePipeline(caps=CAPS)) as env:
        env.service.scorer = ClipScorer(EvalSettings(clip_model="tiny"))
        try:
            await make_rated(env, ADA, "a fox <lora:ink:0.8> --n 2", 5)
            await make_rated(env, BOB, "a whale", 2)
            await env.service.close()  # lets the scoring finish
            rows = await env.db.fetchall("SELECT id FROM images")
            scores = await clip_scores(env.db, [row["id"] for row in rows])
            assert len(scores) == 3 and all(0.0 <= s <= 100.0 for s in scores.values())
            groups = {g.key: g for g in await ratings_by(env.db, "lora")}
            assert groups["ink"].scored == 2 and groups["(none)"].scored == 1
            assert groups["ink"].clip is not None and ", CLIP " in str(groups["ink"])
            assert ", CLIP " in (await env.service.rating_stats("lora"))["lora"][0]
        finally:
            env.service.scorer.close()

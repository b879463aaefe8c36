"""Prompt refinement: the real generate path on a tiny random causal LM, the cache, the time
limit fallback, safety on the refined text, and history keeping both prompts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.safety import BlockedPrompt, BlocklistChecker
from generation.core.errors import InvalidRequest
from generation.prompts.refine import PromptRefiner, Refined, RefineSettings, build_tiny_causal_lm, clean_refined
from storage import images, jobs, read_png_metadata
from tests.fakes import FakePipeline
from tests.service_support import ADA, service_env

TIMEOUT = 30.0


class ScriptedRefiner(PromptRefiner):
    """The real PromptRefiner with generate() replaced: answers, blocks, or raises on cue."""

    def __init__(self, answer: str = "a cat, detailed fur, soft light", **settings: Any) -> None:
        super().__init__(RefineSettings(model="scripted", **settings))
        self.answer = answer
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def generate(self, prompt: str, deadline: float | None = None) -> str:
        self.calls += 1
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        return self.answer


# -- the model path -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm() -> tuple[Any, Any]:
    return build_tiny_causal_lm()


async def test_a_tiny_random_causal_lm_refines_through_the_real_path(tiny_lm: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_lm
    refiner = PromptRefiner(RefineSettings(model="tiny", max_new_tokens=12, timeout_s=120),
                            model=model, tokenizer=tokenizer)
    try:
        outcome = await refiner.refine("a cat")
    finally:
        refiner.close()
    assert outcome.refined and outcome.note is None
    assert outcome.text and outcome.text != "a cat"  # nonsense, but the model's own
    assert refiner.calls == 1


def test_cleaning_takes_the_first_line_and_bounds_weights() -> None:
    assert clean_refined('\n  Prompt: "a cat, soft light"\nmore') == "a cat, soft light"
    assert clean_refined("(cat:9) on a mat") == "\\(cat:9\\) on a mat"
    assert clean_refined("(cat:1.2) on a mat") == "(cat:1.2) on a mat"
    with pytest.raises(ValueError):
        clean_refined(" \n \u200b ")


# -- cache and time limit ---------------------------------------------------------------------


async def test_results_are_cached_per_prompt() -> None:
    refiner = ScriptedRefiner()
    try:
        first = await refiner.refine("a cat")
        second = await refiner.refine("a cat")
        other = await refiner.refine("a dog")
    finally:
        refiner.close()
    assert first == second == Refined("a cat, detailed fur, soft light", True)
    assert other.refined and refiner.calls == 2


async def test_a_slow_model_falls_back_to_the_original_with_a_note() -> None:
    refiner = ScriptedRefiner(timeout_s=0.2)
    refiner.release.clear()  # the model never answers in time
    try:
        outcome = await refiner.refine("a cat")
        assert outcome == Refined("a cat", False, outcome.note) and "longer than 0.2 s" in (outcome.note or "")
        assert "a cat" not in refiner._cache  # a timeout is not cached
    finally:
        refiner.release.set()
        refiner.close()


async def test_a_failing_model_falls_back_to_the_original() -> None:
    refiner = ScriptedRefiner()
    refiner.fail = True
    try:
        outcome = await refiner.refine("a cat")
    finally:
        refiner.close()
    assert not outcome.refined and outcome.text == "a cat" and "failed" in (outcome.note or "")


# -- the service --------------------------------------------------------------------------------


async def test_refined_prompt_is_drawn_shown_and_both_are_kept(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        env.service.refiner = ScriptedRefiner()
        ticket = await env.service.imagine(ADA, "a cat --refine --seed 4")
        assert ticket.request.prompt == "a cat, detailed fur, soft light"
        assert ticket.request.original_prompt == "a cat"
        assert ticket.notes == ("Refined prompt: a cat, detailed fur, soft light",)
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        assert env.pipeline.prompts == ["a cat, detailed fur, soft light"]
        row = await jobs.get(env.db, ticket.job_id)
        assert row is not None and row.request["original_prompt"] == "a cat"
        assert row.request["prompt"] == "a cat, detailed fur, soft light" and row.request["refine"] is True
        stored = await images.images_for_job(env.db, ticket.job_id)
        metadata = read_png_metadata(env.store.path_for(stored[0].path).read_bytes())
        assert metadata["original_prompt"] == "a cat" and metadata["prompt"].startswith("a cat, detailed")
        entry = (await env.service.history(ADA)).entries[0]
        assert entry.original_prompt == "a cat" and entry.text.startswith("a cat, detailed fur")
        assert "--refine" not in entry.text and "--refine" not in metadata["command"]  # makes this image again


async def test_a_refined_text_that_fails_safety_is_not_used(tmp_path: Path) -> None:
    checker = BlocklistChecker(["forbiddenword"])
    async with service_env(tmp_path, FakePipeline(), prompt_checker=checker) as env:
        env.service.refiner = ScriptedRefiner("a cat with a forbiddenword")
        ticket = await env.service.imagine(ADA, "a cat --refine")
        assert ticket.request.prompt == "a cat" and ticket.request.original_prompt is None
        assert "safety check" in ticket.notes[0]
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        assert env.pipeline.prompts == ["a cat"]


async def test_a_refused_prompt_never_reaches_the_model(tmp_path: Path) -> None:
    checker = BlocklistChecker(["forbiddenword"])
    async with service_env(tmp_path, FakePipeline(), prompt_checker=checker) as env:
        refiner = ScriptedRefiner()
        env.service.refiner = refiner
        with pytest.raises(BlockedPrompt):
            await env.service.imagine(ADA, "a forbiddenword --refine")
        assert refiner.calls == 0


async def test_a_timeout_in_the_service_uses_the_original_and_says_so(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        refiner = ScriptedRefiner(timeout_s=0.2)
        refiner.release.clear()
        env.service.refiner = refiner
        try:
            ticket = await env.service.imagine(ADA, "a cat --refine")
        finally:
            refiner.release.set()
        assert ticket.request.prompt == "a cat" and "longer than" in ticket.notes[0]
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)


async def test_refine_without_a_model_is_refused(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        with pytest.raises(InvalidRequest, match="refine.model") as caught:
            await env.service.imagine(ADA, "a cat --refine")
        assert caught.value.field == "refine"


# -- imagine-bot generate --refine --------------------------------------------------------------


@pytest.mark.parametrize(("answer", "drawn", "said"), [
    ("a cat, detailed fur, soft light", "a cat, detailed fur, soft light", "Refined prompt: a cat, detailed fur"),
    ("a cat with a forbiddenword", "a cat", "imagine-bot: The refined prompt did not pass the safety check"),
])
async def test_the_cli_refines_with_the_configured_prompt_check(
        answer: str, drawn: str, said: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli.generate import refine_for_cli
    from bot.config import Config, SafetyConfig
    from generation.core.request import GenerationRequest

    monkeypatch.setattr("generation.prompts.refine.PromptRefiner", lambda settings: ScriptedRefiner(answer))
    config = Config(refine=RefineSettings(model="scripted"), safety=SafetyConfig(words=("forbiddenword",)))
    request = await refine_for_cli(config, GenerationRequest("a cat"))
    assert request.prompt == drawn
    assert request.original_prompt == ("a cat" if drawn != "a cat" else None)
    assert capsys.readouterr().err.startswith(said)

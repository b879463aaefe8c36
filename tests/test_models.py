"""More than one model (issue 25): the catalogue in the config, capabilities, the tiny Flux through
the queue, several models on one executor under a memory budget, rollout shares and the comparison."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.config import ConfigError, load_config
from bot.options import Defaults, parse_imagine
from generation.core.batch import Batch, BatchItem
from generation.core.catalogue import Catalogue, ModelInfo
from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest, ModelCaps
from generation.model.entries import ModelEntry, entry_configs
from generation.model.model_config import ModelConfig
from generation.model.pipeline import expected_caps, load_pipeline
from generation.model.shelf import ModelShelf
from generation.quality.significance import summary, welch
from generation.scheduling.queue import GenerationQueue
from generation.scheduling.worker import Worker

CPU = ModelConfig(name="tiny", device="cpu")
ENTRIES = (ModelEntry("tiny", "tiny", default=True), ModelEntry("flux", "tiny-flux"), ModelEntry("turbo", "tiny-turbo"))


@pytest.fixture(scope="module")
def loaded() -> dict[str, Any]:
    """Each tiny kind loaded once for the module (a shelf's loader hands these out)."""
    return {kind: load_pipeline(ModelConfig(name=kind, device="cpu")) for kind in ("tiny", "tiny-flux", "tiny-turbo")}


def shelf_of(loaded: dict[str, Any], entries: tuple[ModelEntry, ...] = ENTRIES, budget_gb: float = 0.0,
             calls: list[str] | None = None) -> ModelShelf:
    def loader(config: ModelConfig) -> Any:
        if calls is not None:
            calls.append(config.name)
        return loaded[config.name]

    return ModelShelf(entry_configs(CPU, entries), loader, budget_gb=budget_gb)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# -- the catalogue in the config --------------------------------------------------------------------


def test_models_tables_build_the_catalogue_and_model_stays_the_shorthand(tmp_path: Path) -> None:
    config = load_config(_toml(tmp_path, '[model]\nname = "tiny"\ndevice = "cpu"\n'
                                         '[models.lightning]\nkind = "tiny"\ndefault = true\n'
                                         '[models.flux]\nkind = "tiny-flux"\ntraffic = 0.1\n'
                                         '[models.turbo]\nkind = "tiny-turbo"\nsteps = [1, 2]\n'))
    configs = entry_configs(config.model, config.models)
    assert list(configs) == ["lightning", "flux", "turbo"]
    assert [c.name for _, c in configs.values()] == ["tiny", "tiny-flux", "tiny-turbo"]
    assert all(c.device == "cpu" for _, c in configs.values())  # [model]'s device and options apply
    assert configs["turbo"][1].steps == (1, 2) and configs["flux"][0].traffic == 0.1
    alone = load_config(_toml(tmp_path, '[model]\nname = "tiny"\n'))
    (name, (entry, model)), = entry_configs(alone.model, alone.models).items()
    assert name == "tiny" and entry.default and model == alone.model


@pytest.mark.parametrize(("text", "says"), [
    ('[models.a]\nkind = "dalle"\n', "models.a.kind must be one of sdxl-lightning"),
    ('[models.a]\nkind = "tiny"\ndefault = true\n[models.b]\nkind = "tiny"\ndefault = true\n',
     "only one model may have default = true"),
    ('[models.a]\nkind = "tiny"\ndefault = true\n[models.b]\nkind = "tiny-flux"\ntraffic = 0.7\n'
     '[models.c]\nkind = "tiny-turbo"\ntraffic = 0.6\n', "add up to 1.3"),
    ('[models.a]\nkind = "tiny"\ndefault = true\ntraffic = 0.2\n', "the default model gets every request"),
    ('[models.A_B]\nkind = "tiny"\n', "a model name is 1-32 lowercase"),
    ('[models.a]\nkind = "sdxl"\n', 'kind "sdxl" needs path'),
    ('[models.a]\nkind = "tiny"\ntraffic = 1.5\n', "traffic must be a share from 0 to 1"),
    ('[models.a]\nkind = "tiny"\nsize = 3\n', "Unknown key models.a.size"),
    ('[models.a]\nkind = "tiny-flux"\nguidance = 3.5\n', "guidance is for kind \"sdxl\" only"),
])
def test_catalogue_mistakes_are_refused_naming_the_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_toml(tmp_path, text))
    assert says in str(info.value)


# -- capabilities, checked when the request comes in ------------------------------------------------


def _flux_caps() -> ModelCaps:
    return expected_caps(ModelConfig(name="tiny-flux"))


def test_flux_has_its_own_buckets_and_refuses_what_it_cannot_do() -> None:
    flux = _flux_caps()
    assert flux.family == "flux" and flux.default_steps == 4 and flux.steps == (1, 2, 4)
    schnell = expected_caps(ModelConfig(name="flux-schnell"))  # known without loading it
    assert schnell.sizes()["16:9"] == (1360, 768) != ModelCaps().sizes()["16:9"]  # its own buckets, not SDXL's
    assert schnell.sizes()["21:9"] == (1568, 672) and schnell.kinds == ("txt2img",)
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in flux.sizes().values())
    w, h = flux.sizes()["1:1"]
    refusals = [
        (GenerationRequest("a fox", w, h, negative_prompt="blur", model="flux"), "negative_prompt", "remove --no"),
        (GenerationRequest("a fox", w, h, kind="img2img", init_image="/tmp/x.png", model="flux"), "model",
         "choose another model with --model"),
        (GenerationRequest("a fox", w, h, loras=(("ink", 1.0),), model="flux"), "lora", "remove the <lora:"),
        (GenerationRequest("a fox", w, h, steps=8, model="flux"), "steps", "1, 2 or 4-step"),
    ]
    for request, field, hint in refusals:
        with pytest.raises(InvalidRequest) as info:
            flux.check(request)
        assert info.value.field == field and hint in str(info.value), str(info.value)
    assert flux.check(GenerationRequest("a fox", w, h, model="flux")).model == "flux"
    turbo = expected_caps(ModelConfig(name="tiny-turbo"))
    assert turbo.default_steps == 1 and turbo.family == "sdxl"


def _catalogue() -> Catalogue:
    tiny = expected_caps(ModelConfig(name="tiny"))
    return Catalogue([ModelInfo("tiny", "tiny", tiny, "tiny-random-sdxl", default=True),
                      ModelInfo("flux", "tiny-flux", _flux_caps().__class__(**{**_flux_caps().__dict__, "name": "flux"}),
                                "tiny-random-flux", traffic=0.1)])


def test_the_parser_takes_model_from_text_option_or_saved_default_and_refuses_unknown_names() -> None:
    catalogue = _catalogue()
    tiny = catalogue.caps_for("")
    by_flag = parse_imagine("a fox --model flux --ar 16:9", caps=tiny, models=catalogue)
    assert by_flag.model == "flux" and (by_flag.width, by_flag.height) == catalogue.caps_for("flux").sizes()["16:9"]
    assert by_flag.steps == 4
    assert parse_imagine("a fox", caps=tiny, models=catalogue, model="FLUX").model == "flux"
    assert parse_imagine("a fox", caps=tiny, models=catalogue, defaults=Defaults(model="flux", steps=8)).model == "flux"
    assert parse_imagine("a fox --model tiny", caps=tiny, models=catalogue).model == ""  # the default: ""
    assert parse_imagine("a fox", caps=tiny, models=catalogue, rollout="flux").model == "flux"
    with pytest.raises(InvalidRequest) as info:
        parse_imagine("a fox --model flx", caps=tiny, models=catalogue)
    assert info.value.field == "model" and "this bot has tiny, flux" in str(info.value) and "flux?" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        parse_imagine("a fox --model flux --no blur", caps=tiny, models=catalogue)
    assert "takes no negative prompt" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        parse_imagine("a fox", caps=tiny, models=catalogue, defaults=Defaults(model="gone"))
    assert "saved defaults" in str(info.value) and "/settings model=default" in str(info.value)


# -- rollout: a share of the requests that name no model, sticky per user ---------------------------


def test_a_ten_percent_share_sends_about_a_tenth_of_users_and_each_user_stays() -> None:
    catalogue = _catalogue()
    users = [f"discord:{n}" for n in range(1000)]
    picks = {user: catalogue.pick(user) for user in users}
    share = sum(p == "flux" for p in picks.values()) / len(users)
    assert 0.07 <= share <= 0.13, share  # binomial sd ~0.95 %: 3 sd either side
    assert all(catalogue.pick(user) == picks[user] for user in users)  # sticky
    raised = {user: catalogue.pick(user, {"flux": 0.5}) for user in users}
    assert all(raised[u] == "flux" for u, p in picks.items() if p == "flux")  # raising keeps them
    assert 0.45 <= sum(p == "flux" for p in raised.values()) / len(users) <= 0.55
    assert {catalogue.pick(user, {"flux": 0.0}) for user in users} == {""}


# -- comparing ratings --------------------------------------------------------------------------------


def test_compare_finds_a_real_difference_and_none_between_equal_models() -> None:
    rng = random.Random(25)
    better = [min(5, max(1, round(rng.gauss(4.2, 0.8)))) for _ in range(60)]
    worse = [min(5, max(1, round(rng.gauss(3.4, 0.8)))) for _ in range(60)]
    same_a = [min(5, max(1, round(rng.gauss(3.8, 0.9)))) for _ in range(60)]
    same_b = [min(5, max(1, round(rng.gauss(3.8, 0.9)))) for _ in range(60)]
    differ = welch(better, worse)
    assert differ.significant and differ.difference > 0.5 and differ.p < 0.001
    equal = welch(same_a, same_b)
    assert not equal.significant and equal.p > 0.05
    interval = summary(better)
    assert interval.low < interval.mean < interval.high and interval.high - interval.low < 0.6
    with pytest.raises(ValueError):
        welch([5], [4, 3])


# -- the tiny Flux, and several models on one executor -----------------------------------------------


def test_tiny_flux_makes_one_image_per_seed_the_same_alone_or_batched(loaded: dict[str, Any]) -> None:
    flux = loaded["tiny-flux"]
    w, h = flux.caps.sizes()["16:9"]
    steps: list[int] = []
    both = flux.generate(Batch("txt2img", w, h, 2, (BatchItem("a fox", "", 1), BatchItem("(a owl:1.3)", "", 2))),
                         on_step=lambda i, n: steps.append(i))
    alone = flux.generate(Batch("txt2img", w, h, 2, (BatchItem("(a owl:1.3)", "", 2),)))
    assert [im.size for im in both] == [(w, h), (w, h)] and steps == [1, 2]
    import numpy as np

    drift = np.abs(np.asarray(both[1], dtype=int) - np.asarray(alone[0], dtype=int)).max()
    assert drift <= 2  # the same image alone or batched (float rounding of a batch of 2 moves a level or two)
    assert np.abs(np.asarray(both[0], dtype=int) - np.asarray(both[1], dtype=int)).max() > 20
    assert flux.model_id == "tiny-random-flux" and len(flux.checkpoint_hash) == 64


async def test_two_models_with_a_budget_for_one_load_and_unload_and_both_finish(loaded: dict[str, Any]) -> None:
    calls: list[str] = []
    entries = (ModelEntry("tiny", "tiny", default=True, memory_gb=1.0), ModelEntry("turbo", "tiny-turbo", memory_gb=1.0))
    shelf = shelf_of(loaded, entries, budget_gb=1.5, calls=calls)
    assert calls == ["tiny"] and shelf.resident() == ("tiny",)
    async with Worker(shelf, name="shelf") as worker:
        queue = GenerationQueue(worker, max_batch_images=8)
        queue.start()
        try:
            caps = shelf.caps_for("turbo")
            w, h = caps.sizes()["1:1"]
            jobs = [queue.submit(GenerationRequest("a fox", w, h, steps=1, seed=n, model="turbo" if n % 2 else "",
                                                   user_id=str(n)), job_id=f"job{n}") for n in range(4)]
            results = [await asyncio.wait_for(job.result(), 60) for job in jobs]
        finally:
            await queue.close()
    assert [r.model for r in results] == ["tiny-random-sdxl", "tiny-random-sdxl-turbo"] * 2
    assert all(len(r.images) == 1 for r in results)
    assert shelf.loads["turbo"] >= 1 and shelf.unloads["tiny"] >= 1  # the budget holds one at a time
    assert len(shelf.resident()) == 1 and calls.count("tiny") == shelf.loads["tiny"]
    assert queue.batches_run >= 2  # one model per batch: the four jobs of one shape needed two batches at least


async def test_the_eta_of_a_job_whose_model_is_not_loaded_counts_the_switch(loaded: dict[str, Any]) -> None:
    entries = (ModelEntry("tiny", "tiny", default=True, memory_gb=1.0), ModelEntry("turbo", "tiny-turbo", memory_gb=1.0))
    shelf = shelf_of(loaded, entries, budget_gb=1.5)
    switch = shelf.load_seconds("turbo")  # never loaded yet: its kind's guess (then what it measures)
    assert switch > 0
    worker = Worker(shelf, name="idle")  # not started: the jobs stay queued, only their ETAs are planned
    queue = GenerationQueue(worker)
    w, h = shelf.caps.sizes()["1:1"]
    first = queue.submit(GenerationRequest("a fox", w, h, steps=1, seed=1, user_id="a"), job_id="a")
    other = queue.submit(GenerationRequest("a fox", w, h, steps=1, seed=1, user_id="b", model="turbo"), job_id="b")
    back = queue.submit(GenerationRequest("an owl", w + 64, h, steps=1, seed=1, user_id="c"), job_id="c")
    run = queue.estimator.batch_seconds(first.request.shape, 1)
    assert first.eta < run + switch
    assert other.eta == pytest.approx(run + switch + run)  # after the first batch, turbo loads, then runs
    assert back.eta >= other.eta + shelf.load_seconds("tiny")  # and tiny comes back after it
    assert shelf.switch_seconds("") == 0.0 and shelf.switch_seconds("turbo") == switch


async def test_batches_hold_one_model_while_the_fair_policy_still_decides(loaded: dict[str, Any]) -> None:
    shelf = shelf_of(loaded)
    seen: list[tuple[str, int]] = []
    inner = shelf.generate

    def recording(batch: Batch, on_step: Any = None, should_stop: Any = None) -> list[Any]:
        seen.append((batch.model, len(batch.items)))
        return inner(batch, on_step, should_stop)

    shelf.generate = recording  # type: ignore[method-assign]
    worker = Worker(shelf, name="mixed")
    queue = GenerationQueue(worker, max_batch_images=8)
    w, h = shelf.caps.sizes()["1:1"]
    jobs = [queue.submit(GenerationRequest("a fox", w, h, steps=2, seed=n, model=("", "turbo")[n % 2],
                                           user_id=str(n)), job_id=f"j{n}") for n in range(6)]
    worker.start()
    queue.start()
    try:
        results = [await asyncio.wait_for(job.result(), 60) for job in jobs]
    finally:
        await queue.close()
        await worker.close()
    assert sorted(seen) == [("", 3), ("turbo", 3)]  # same size and steps, yet never one batch
    assert [r.model for r in results] == ["tiny-random-sdxl", "tiny-random-sdxl-turbo"] * 3


def test_png_parameters_carry_the_model_hash_as_a1111_writes_it() -> None:
    import io

    from storage import png_with_metadata

    data = png_with_metadata(Image.new("RGB", (8, 8)), {"prompt": "a fox", "model": "tiny-random-flux",
                                                        "model_hash": "d2add8ef69761d0e40a59af8967f5c65", "seed": 1,
                                                        "loras": [{"name": "ink", "weight": 0.8, "hash": "abcdef0123"}]})
    text = Image.open(io.BytesIO(data)).text["parameters"]
    assert "Model hash: d2add8ef69," in text and "Model: tiny-random-flux" in text
    assert 'Lora hashes: "ink: abcdef0123"' in text  # quoted, as A1111 writes it


def test_the_models_command_lists_promotes_retires_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    config = _toml(tmp_path, f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[model]\nname = "tiny"\n'
                             '[models.tiny]\nkind = "tiny"\ndefault = true\n[models.flux]\nkind = "tiny-flux"\n'
                             'traffic = 0.05\n')
    assert main(["models", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "tiny (tiny, tiny-random-sdxl): default, 95% of requests that name no model" in listing
    assert "flux (tiny-flux, tiny-random-flux): candidate, 5% of requests" in listing and "0 images" in listing
    assert main(["models", "promote", "flux", "0.3", "--config", str(config)]) == 0
    assert "flux now gets 30%" in capsys.readouterr().out
    assert main(["models", "--config", str(config)]) == 0
    assert "candidate, 30% of requests" in capsys.readouterr().out  # the database's share wins over the file's
    assert main(["models", "retire", "flux", "--config", str(config)]) == 0
    assert main(["models", "--config", str(config)]) == 0
    assert "flux (tiny-flux, tiny-random-flux): on request, 0%" in capsys.readouterr().out
    assert main(["models", "compare", "flux", "tiny", "--config", str(config)]) == 0
    assert "Not enough ratings to compare" in capsys.readouterr().out
    assert main(["models", "promote", "tiny", "--config", str(config)]) == 2
    assert "is the default model" in capsys.readouterr().err
    assert main(["models", "promote", "dalle", "--config", str(config)]) == 2
    assert "this bot has tiny, flux" in capsys.readouterr().err


async def test_a_ray_replica_builds_the_same_shelf_and_the_batch_names_its_model(loaded: dict[str, Any]) -> None:
    """What Ray pickles (functools.partial of the module-level shelf_factory) builds the shelf in the
    replica; the model's name travels inside the Batch, and the driver's RayExecutor learns the
    catalogue from describe()."""
    import functools
    import pickle

    from generation.model.shelf import shelf_factory
    from generation.scheduling.ray_backend import ImagineReplica, RayExecutor, _decode

    factory = functools.partial(shelf_factory, entry_configs(CPU, ENTRIES), load_pipeline, 0.0, CPU)
    replica = ImagineReplica(pickle.loads(pickle.dumps(factory)))
    try:
        info = replica.describe()
        executor = RayExecutor(handle=None, info=pickle.loads(pickle.dumps(info)), slots=1)
        assert executor.caps_for("flux").family == "flux" and executor.caps_for("nope") is None
        assert executor.model_id_for("flux") == "tiny-random-flux" and executor.model_id_for("") == "tiny-random-sdxl"
        w, h = executor.caps_for("flux").sizes()["1:1"]
        batch = pickle.loads(pickle.dumps(Batch("txt2img", w, h, 1, (BatchItem("a fox", "", 3),), model="flux")))
        messages = [m async for m in replica.run(batch, None, {})]
        kind, outcomes = messages[-1]
        assert kind == "done" and _decode(outcomes[0]).size == (w, h)
    finally:
        await replica.worker.close()

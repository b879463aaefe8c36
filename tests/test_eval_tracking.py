"""Experiment tracking: an evaluation logged to MLflow in a local ``file:`` store, its model version
registered; the [eval] mlflow_uri setting; evaluation rows in storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from generation.quality.clip_score import EvalSettings
from storage import Database
from storage.model_versions import add_eval, evals, latest_evals, record_seen

REPORT = {"model": "tiny", "model_id": "org/tiny-random", "checkpoint_hash": "0123456789abcdef",
          "prompt_set": "parti-mini", "n": 4, "seed": 0, "extractor": "tiny+clip:tiny", "refs": "/data/refs",
          "figures": {"fid": 12.5, "kid": 0.01, "kid_std": 0.002, "inception_score": 1.7, "inception_std": 0.1,
                      "clip_score": 21.0, "precision": 0.5, "recall": 0.25}}


def test_an_evaluation_is_logged_and_its_version_registered_once(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from generation.quality.tracking import EXPERIMENT, log_evaluation

    grid, report = tmp_path / "grid.png", tmp_path / "report.json"
    grid.write_bytes(b"\x89PNG\r\n\x1a\n")
    report.write_text("{}")
    uri = (tmp_path / "mlruns").as_uri()
    first = log_evaluation(uri, REPORT, artifacts=(grid, report))
    second = log_evaluation(uri, {**REPORT, "figures": {**REPORT["figures"], "fid": 10.0}}, artifacts=(grid,),
                            served=[("org/tiny-random", "0123456789abcdef"), ("org/tiny-random", "fedcba9876543210"),
                                    ("sdxl-lightning", "5555")])

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {first, second}
    run = runs[first]
    assert run.data.metrics == REPORT["figures"]
    assert run.data.params["checkpoint_hash"] == "0123456789abcdef" and run.data.params["n"] == "4"
    assert run.data.params["prompt_set"] == "parti-mini" and run.data.params["model_id"] == "org/tiny-random"
    assert runs[second].data.metrics["fid"] == 10.0
    assert sorted(a.path for a in client.list_artifacts(first)) == ["grid.png", "report.json"]
    versions = client.search_model_versions("name = 'imagine-bot-org-tiny-random'")
    assert sorted((v.tags["checkpoint_hash"], v.run_id or None, v.tags["evaluated"]) for v in versions) == [
        ("0123456789abcdef", first, "yes"), ("fedcba9876543210", None, "not yet")]  # each checkpoint once
    (served,) = client.search_model_versions("name = 'imagine-bot-sdxl-lightning'")
    assert served.tags["checkpoint_hash"] == "5555"


def test_mlflow_uri_is_checked() -> None:
    assert EvalSettings(mlflow_uri="file:///srv/mlruns").mlflow_uri == "file:///srv/mlruns"
    assert EvalSettings().mlflow_uri is None
    with pytest.raises(ValueError, match="tracking URI"):
        EvalSettings(mlflow_uri="  ")


def test_evaluations_are_stored_per_version_and_the_newest_is_shown(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    async def scenario() -> None:
        async with Database.open(tmp_path / "bot.db") as db:
            await record_seen(db, "sdxl", "aaa", datetime(2026, 1, 1, tzinfo=timezone.utc))
            await record_seen(db, "sdxl", "bbb", datetime(2026, 2, 1, tzinfo=timezone.utc))
            old = await add_eval(db, "sdxl", "aaa", prompt_set="parti-mini", n=50, seed=0, extractor="inception",
                                 figures={"fid": 30.0, "clip_score": 25.0},
                                 now=datetime(2026, 1, 2, tzinfo=timezone.utc))
            new = await add_eval(db, "sdxl", "aaa", prompt_set="parti-mini", n=50, seed=0, extractor="inception",
                                 figures={"fid": 28.0, "clip_score": 26.0, "precision": 0.6},
                                 now=datetime(2026, 1, 3, tzinfo=timezone.utc))
            assert new.figures() == {"fid": 28.0, "clip_score": 26.0, "precision": 0.6} and new.kid is None
            # a version evaluated before it served anything is recorded too
            await add_eval(db, "tiny", "unknown", prompt_set="mine.txt", n=4, seed=3, extractor="tiny",
                           figures={"inception_score": 1.0})
            shown = {(v.model_id, v.checkpoint_hash): e for v, e in await latest_evals(db)}
            assert shown[("sdxl", "aaa")] == new and shown[("sdxl", "bbb")] is None
            assert shown[("tiny", "unknown")].prompt_set == "mine.txt"
            assert [e.id for e in await evals(db, "sdxl")] == [old.id, new.id]
            with pytest.raises(ValueError, match="unknown figures"):
                await add_eval(db, "sdxl", "aaa", prompt_set="p", n=5, seed=0, extractor="x", figures={"acc": 1.0})
            with pytest.raises(ValueError, match="`n`"):
                await add_eval(db, "sdxl", "aaa", prompt_set="p", n=0, seed=0, extractor="x", figures={})

    asyncio.run(scenario())


@pytest.mark.slow
def test_eval_with_mlflow_uri_logs_the_run(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("torchmetrics")
    import json

    from mlflow import MlflowClient

    from bot.__main__ import main
    from generation.quality.tracking import EXPERIMENT

    uri = (tmp_path / "mlruns").as_uri()
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n\n[eval]\nmlflow_uri = "{uri}"\n')
    out = tmp_path / "run"
    assert main(["eval", "--model", "tiny", "--n", "2", "--out", str(out), "--config", str(config), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(report["mlflow_run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert run.data.metrics["clip_score"] == pytest.approx(report["figures"]["clip_score"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"grid.png", "report.json"}
    (version,) = client.search_model_versions("name = 'imagine-bot-tiny-random-sdxl'")
    assert version.run_id == run.info.run_id

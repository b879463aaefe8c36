"""Experiment tracking with MLflow (optional: ``[eval] mlflow_uri``).

Each evaluation run becomes an MLflow run of the experiment ``imagine-bot-eval``: its parameters
(model, version, prompt set, n, seed, extractor), its figures as metrics, and the JSON report and
sample grid as artifacts; the evaluated model version is registered as a version of the
registered model of its name, tagged with its checkpoint hash, so the registry lists the versions
the bot has served. MLflow is imported only here, and this module only when a URI is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENT", "log_evaluation"]

logger = logging.getLogger(__name__)

EXPERIMENT = "imagine-bot-eval"


def log_evaluation(uri: str, report: Mapping[str, Any], *, artifacts: tuple[Path, ...] = (),
                   served: Sequence[tuple[str, str]] = ()) -> str:
    """Log one evaluation ``report`` (the JSON report's dict) to the tracking server at ``uri``,
    register its model version and each ``served`` ``(model_id, checkpoint_hash)`` not yet in
    the registry (the versions the bot has run); the MLflow run id."""
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 keeps the file store only on request; naming a folder as the URI is that request
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError:
        raise ImportError("[eval] mlflow_uri is set but MLflow is not installed: "
                          "pip install 'imagine-bot[mlflow]' (or unset mlflow_uri)") from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    model_id, checkpoint = str(report["model_id"]), str(report["checkpoint_hash"])
    with mlflow.start_run(run_name=f"{model_id}@{checkpoint[:12]}") as run:
        mlflow.log_params({"model": report["model"], "model_id": model_id, "checkpoint_hash": checkpoint,
                           "prompt_set": report["prompt_set"], "n": report["n"], "seed": report["seed"],
                           "extractor": report["extractor"], "refs": report.get("refs") or ""})
        mlflow.log_metrics({name: float(value) for name, value in report["figures"].items()})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        run_id = run.info.run_id
        artifact_uri = run.info.artifact_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _register(client, model_id, checkpoint, artifact_uri, run_id)
    for other_id, other_checkpoint in served:
        if (other_id, other_checkpoint) != (model_id, checkpoint):
            _register(client, other_id, other_checkpoint, artifact_uri, None)
    logger.info("logged the evaluation of %s@%s to MLflow run %s", model_id, checkpoint[:12], run_id)
    return run_id


def _register(client: Any, model_id: str, checkpoint: str, source: str, run_id: str | None) -> None:
    """A registry version for this checkpoint of the model, unless it has one."""
    name = _registered_name(model_id)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description="A model imagine-bot serves (its versions: checkpoints)")
    found = client.search_model_versions(filter_string=f"name = '{name}'")
    if not any(v.tags.get("checkpoint_hash") == checkpoint for v in found):
        client.create_model_version(name, source=source, run_id=run_id,
                                    tags={"checkpoint_hash": checkpoint, "model_id": model_id,
                                          "evaluated": "yes" if run_id else "not yet"})


def _registered_name(model_id: str) -> str:
    """A registry name from a model id (repo ids have slashes, which names may not)."""
    return "imagine-bot-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in model_id)

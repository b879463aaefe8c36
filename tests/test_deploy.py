"""Deployment files agree with each other and with the code: compose.yaml, Dockerfile, the
systemd unit, .env.example, constraints.txt. Parsed, not built (no Docker engine here)."""

from __future__ import annotations

import asyncio
import configparser
import json
import re
from pathlib import Path

import yaml

from bot.config import QueueConfig, load_config
from bot.health import HEARTBEAT_FILE, beat

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def _compose_service() -> dict:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    return service


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", value))


def _batch_limit() -> float:
    example = load_config(ROOT / "config.example.toml", env={})
    return max(example.queue.batch_time_limit_s, QueueConfig().batch_time_limit_s)


def test_compose_and_dockerfile_agree_on_volumes_ports_and_stop_signal() -> None:
    docker, service = _dockerfile(), _compose_service()
    (volumes,) = docker["VOLUME"]
    image_volumes = set(json.loads(volumes))
    compose_targets = {v.split(":")[1] for v in service["volumes"] if not v.startswith((".", "/"))}
    assert compose_targets == image_volumes == {"/data", "/models"}
    named = {v.split(":")[0] for v in service["volumes"] if not v.startswith((".", "/"))}
    assert named <= set(yaml.safe_load((ROOT / "compose.yaml").read_text())["volumes"])
    exposed = {int(p.split("/")[0]) for line in docker.get("EXPOSE", []) for p in line.split()}
    published = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    assert published <= exposed
    from bot.frontends.telegram.settings import TelegramSettings
    from bot.frontends.web.settings import WebSettings

    assert exposed == {TelegramSettings.__dataclass_fields__["webhook_port"].default, WebSettings.port}
    assert docker["STOPSIGNAL"] == [service["stop_signal"]] == ["SIGTERM"]


def test_a_stop_never_cuts_a_batch_off() -> None:
    service = _compose_service()
    assert _seconds(service["stop_grace_period"]) > _batch_limit()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((ROOT / "deploy" / "imagine-bot.service").read_text())
    assert float(unit["Service"]["TimeoutStopSec"]) > _batch_limit()
    assert unit["Service"]["KillSignal"] == "SIGTERM"


def test_compose_reserves_a_gpu_restarts_and_reads_dotenv() -> None:
    service = _compose_service()
    assert service["restart"] == "unless-stopped"
    assert service["env_file"] == ".env" and (ROOT / ".env.example").is_file()
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_dockerfile_runs_the_tested_torch_with_container_defaults(tmp_path: Path) -> None:
    docker = _dockerfile()
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    import torch

    assert pins["torch"] == torch.__version__.split("+")[0]  # the version these tests run on
    torch_install = next(r for r in docker["RUN"] if "torch==" in r)
    assert f"torch=={pins['torch']}" in torch_install and "-c constraints.txt" in torch_install
    assert "whl/cu" in " ".join(docker["ARG"]) + torch_install  # a CUDA build
    assert all("-c constraints.txt" in r for r in docker["RUN"] if "pip install" in r)
    assert any("'.[web]'" in r for r in docker["RUN"] if "pip install" in r)  # [web] works in the image
    assert json.loads(docker["HEALTHCHECK"][0].split("CMD", 1)[1]) == ["imagine-bot", "health"]
    assert json.loads(docker["CMD"][0]) == ["run"] and "imagine-bot" in docker["ENTRYPOINT"][0]
    # the image's config: paths on the volumes, and it passes the strict checks
    copied = next(c for c in docker["COPY"] if c.endswith(" ./config.toml"))
    config = load_config(ROOT / copied.split()[0], env={})
    assert config.storage.data_dir == Path("/data") and str(config.output_dir).startswith("/data/")
    assert str(config.model.path).startswith("/models/")
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".env", ".git"} <= ignored  # no venv in the context, no secrets in the image
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "constraints.txt" in (ROOT / ".ci" / "run").read_text()


def test_env_example_names_every_secret_the_config_reads() -> None:
    from bot.config import _all_sections

    names = {line.split("=")[0].lstrip("# ").strip() for line in (ROOT / ".env.example").read_text().splitlines()
             if "=" in line}
    secrets = {var for section in _all_sections().values() for var in section.secrets.values()}
    assert secrets and secrets <= names


async def test_heartbeat_is_written_while_running_and_removed_after(tmp_path: Path) -> None:
    task = asyncio.create_task(beat(tmp_path, state=lambda: {"queued_jobs": 2}, interval=0.01))
    path = tmp_path / HEARTBEAT_FILE
    for _ in range(1000):
        if path.exists():
            break
        await asyncio.sleep(0.01)
    assert json.loads(path.read_text())["queued_jobs"] == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not path.exists()


def _make_plan(target: str, venv: Path) -> list[str]:
    """The commands `make -n TARGET` would run from a fresh clone (no venv yet), comments dropped."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        import pytest

        pytest.skip("make is not installed")
    # --no-print-directory: under `make test` (CI) this is a nested make, which would add
    # "make[1]: Entering/Leaving directory" lines to the plan
    proc = subprocess.run(["make", "-n", "--no-print-directory", target, f"VENV={venv}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [line.split("  #")[0].strip() for line in proc.stdout.splitlines() if line.strip()]


def _extras(plan: list[str]) -> set[str]:
    return {extra for line in plan for group in re.findall(r"-e '\.\[([^\]]*)\]'", line) for extra in group.split(",")}


def test_make_run_installs_what_running_needs_and_make_test_the_rest(tmp_path: Path) -> None:
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for target in ("run", "demo", "download", "install"):
        plan = _make_plan(target, tmp_path / "venv")
        assert _extras(plan) == {"web"}, (target, plan)  # no Ray, Playwright, pytest or matplotlib
        assert any("torch==" in line for line in plan) and all("-c constraints.txt" in line
                                                               for line in plan if "pip install" in line and "--upgrade pip" not in line)
        assert any(f"{tmp_path / 'venv'}/bin/imagine-bot" in line for line in plan)  # where the command is
    assert any(line.endswith(f"imagine-bot run --model tiny --config {'config.toml' if (ROOT / 'config.toml').exists() else 'config.example.toml'}")
               for line in _make_plan("demo", tmp_path / "venv"))
    test_plan = _make_plan("test", tmp_path / "venv")
    # what the suite imports (torchao: CUDA only; docs: `make docs`); mlflow is in, so the tracking
    # tests run against a local file store instead of skipping
    assert _extras(test_plan) == declared - {"quantize", "docs"}
    assert test_plan[-1].startswith("HF_HUB_OFFLINE=1 ") and "-m pytest" in test_plan[-1]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_pyproject_has_no_deprecated_license_table(monkeypatch) -> None:
    """setuptools reads our pyproject without a deprecation warning (an SPDX license string)."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)  # the readme is read relative to it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert [str(w.message) for w in caught if "license" in str(w.message).lower()] == []
    assert dist.metadata.license_expression == "Apache-2.0"

"""[generation]/[ray] config, local devices, and the engine over several local workers."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import engine
from bot.config import ConfigError, GenerationConfig, RayConfig, load_config
from generation.scheduling.local import resolve_devices, start_workers
from generation.model.pipeline import ModelConfig
from generation.scheduling.queue import GenerationQueue
from generation.core.request import GenerationRequest
from tests.fakes import FakePipeline

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_are_one_local_device_and_the_example_matches_them() -> None:
    defaults = load_config(None)
    assert defaults.generation == GenerationConfig(backend="local", devices=())
    assert defaults.queue.scale_max_queued is True and defaults.queue.max_executor_failures == 3
    example = load_config(ROOT / "config.example.toml")
    assert (example.generation, example.ray, example.queue) == (defaults.generation, defaults.ray, defaults.queue)


def test_generation_and_ray_sections_are_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[generation]\nbackend = "ray"\ndevices = "auto"\n'
                                         '[ray]\naddress = "head:6379"\nmin_replicas = 1\nmax_replicas = 4\n'
                                         'gpus_per_replica = 0.5\n'))
    assert config.generation == GenerationConfig(backend="ray", devices=("auto",))
    assert config.ray == RayConfig(address="head:6379", min_replicas=1, max_replicas=4, gpus_per_replica=0.5)
    assert config.ray.slots == 4
    listed = load_config(write(tmp_path, '[generation]\ndevices = ["cuda:0", "cuda:1"]\n'))
    assert listed.generation.devices == ("cuda:0", "cuda:1")


@pytest.mark.parametrize(("text", "words"), [
    ('[generation]\nbackend = "slurm"\n', ["generation.backend", "local", "ray"]),
    ('[generation]\ndevices = "cuda:0"\n', ["generation.devices", "auto"]),
    ("[ray]\nreplicas = 0\n", ["ray.replicas"]),
    ("[ray]\nmin_replicas = 5\nmax_replicas = 2\n", ["ray.min_replicas"]),
    ("[ray]\nadress = 'x'\n", ["ray.adress", "address"]),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    for word in words:
        assert word in str(info.value)


def test_devices_resolve() -> None:
    assert resolve_devices([], "auto") == ["auto"]
    assert resolve_devices(["cuda:0", "cuda:1"], "auto") == ["cuda:0", "cuda:1"]
    assert resolve_devices(["cpu", "cpu"], "auto") == ["cpu", "cpu"]
    import torch

    if not torch.cuda.is_available():
        assert resolve_devices(["auto"], "cpu") == ["cpu"]
    for bad in (["gpu0"], ["cuda:x"], ["cpu:1"], ["cuda:0", "cuda:0"]):
        with pytest.raises(ValueError, match="generation.devices"):
            resolve_devices(bad, "auto")


async def test_one_worker_per_device_behind_one_queue() -> None:
    loaded: list[str] = []

    def loader(model: ModelConfig) -> FakePipeline:
        loaded.append(model.device)
        return FakePipeline()

    workers = start_workers(ModelConfig(name="tiny"), ["cpu", "cpu"], loader=loader)
    assert loaded == ["cpu", "cpu"] and [w.name for w in workers] == ["gpu-worker-0", "gpu-worker-1"]
    queue = GenerationQueue(workers, max_batch_images=1)
    assert queue.executors == 2
    async with queue:
        jobs = [queue.submit(GenerationRequest(prompt=f"p{i}", width=256, height=256, steps=4, seed=i,
                                               user_id=str(i), platform="cli")) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs)), TIMEOUT)
    for worker in workers:
        await worker.close()
    single = start_workers(ModelConfig(name="tiny"), [], loader=loader)
    assert [w.name for w in single] == ["gpu-worker"] and loaded[-1] == "auto"  # the default: unchanged
    await single[0].close()


async def test_the_loaded_line_names_the_device_actually_used(
    tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """model.device = "auto" (the default): the log says where it went, not "auto"."""
    caplog.set_level(logging.INFO, logger="generation.scheduling.local")
    for loader in (lambda model: tiny, lambda model: FakePipeline()):  # with and without a .device
        workers = start_workers(ModelConfig(name="tiny", device="auto"), [], loader=loader)
        await workers[0].close()
    lines = [r.getMessage() for r in caplog.records if "loaded on" in r.getMessage()]
    assert len(lines) == 2 and all("auto" not in line for line in lines), lines
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert "tiny-random-sdxl loaded on cpu (steps 1, 2, 4, 8)" in lines[0]  # the pipeline's own device
    assert f"loaded on {expected}" in lines[1]


@pytest.mark.slow
async def test_engine_runs_the_tiny_model_on_two_local_devices(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[generation]\ndevices = ["cpu", "cpu"]\n[queue]\nmax_batch_images = 1\n'))
    config = replace(config, model=replace(config.model, device="cpu"))
    async with engine(config, model="tiny") as queue:
        assert queue.executors == 2 and queue.max_queued_images == 2 * config.queue.max_queued_images
        jobs = [queue.submit(GenerationRequest(prompt=f"a fox {i}", width=256, height=256, steps=2, seed=i,
                                               user_id=str(i), platform="cli")) for i in range(2)]
        results = await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs)), TIMEOUT)
    assert {r.metadata["executor"] for r in results} == {"gpu-worker-0", "gpu-worker-1"}  # ran side by side


async def test_an_unreachable_ray_cluster_stops_the_engine_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from generation.scheduling.ray_backend import BackendUnavailable

    config = load_config(write(tmp_path, '[generation]\nbackend = "ray"\n[ray]\naddress = "127.0.0.1:1"\n'))
    with pytest.raises(BackendUnavailable) as info:
        async with engine(config, model="tiny"):
            pass
    assert "127.0.0.1:1" in str(info.value) and "\n" not in str(info.value)

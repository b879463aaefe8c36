"""The [model] speed options: validation, refusal on CPU of CUDA-only ones, and same images as eager."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bot.config import ConfigError, load_config
from generation.core.batch import Batch, BatchItem
from generation.core.errors import ModelUnavailable
from generation.model.pipeline import LightningPipeline, ModelConfig, build_tiny_pipeline, load_pipeline
from generation.core.request import STEP_CHOICES
from generation.model.speed import decode_latents, encode_prompts

# Three images, two of them with the same prompt (dedupe_prompts), different seeds.
ITEMS = (
    BatchItem("a red fox in the snow", "blurry", 42),
    BatchItem("a blue whale", "", 7),
    BatchItem("a red fox in the snow", "", 9),
)

# Tolerance against plain eager float32 on CPU, in 8-bit levels (docs/operator/scale-out.md, "Speed options"): layout,
# fusion and batching only reorder float sums, so a pixel may move by a level or two.
MAX_LEVELS = 3
MAX_MEAN = 0.05


def pipeline(**options: Any) -> LightningPipeline:
    """The tiny model with ``options`` (none given: plain eager, every option off)."""
    pipe = build_tiny_pipeline()
    config = ModelConfig(name="tiny", device="cpu", **options) if options else None
    return LightningPipeline(pipe, dict.fromkeys(STEP_CHOICES, pipe.unet), model_id="t", name="tiny",
                             base_resolution=256, config=config)


def images(pipe: LightningPipeline, size: int = 128, steps: int = 4) -> np.ndarray:
    batch = Batch("txt2img", size, size, steps, ITEMS)
    return np.stack([np.asarray(image, dtype=np.int16) for image in pipe.generate(batch)])


@pytest.fixture(scope="module")
def eager() -> np.ndarray:
    return images(pipeline())


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    diff = np.abs(got - expected)
    assert diff.max() <= MAX_LEVELS, f"max difference {diff.max()} levels"
    assert diff.mean() <= MAX_MEAN, f"mean difference {diff.mean():.3f} levels"


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("compile", "yes"),
        ("cuda_graphs", 1),
        ("channels_last", None),
        ("fuse_qkv", "true"),
        ("dedupe_prompts", 0),
        ("compile_mode", "reduce-overhead"),
        ("attention", "xformers"),
        ("vae_decode", "whole"),
        ("quantize", "int4"),
        ("warmup_sizes", ("1024x1024",)),
        ("warmup_batch_sizes", (0,)),
        ("warmup_batch_sizes", ()),
        ("warmup_batch_sizes", (True,)),
    ],
)
def test_bad_option_values_are_named(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"model.{key}"):
        ModelConfig(**{key: value})


def test_cuda_graphs_need_compile() -> None:
    with pytest.raises(ValueError, match="model.cuda_graphs needs model.compile"):
        ModelConfig(cuda_graphs=True)


def test_config_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[model]\nattention = "xformers"\n')
    with pytest.raises(ConfigError, match="model.attention"):
        load_config(path, env={})
    path.write_text("[model]\ncompile = 1\n")
    with pytest.raises(ConfigError, match="model.compile"):
        load_config(path, env={})


def test_config_file_defaults_and_compile_cache_under_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[model]\ncompile = true\nwarmup_sizes = ["1:1", "16:9"]\nwarmup_batch_sizes = [8, 1]\n'
                    '[storage]\ndata_dir = "somewhere"\n')
    model = load_config(path, env={}).model
    assert model.compile and model.warmup_sizes == ("1:1", "16:9") and model.warmup_batch_sizes == (1, 8)
    assert model.compile_cache_dir == str(Path("somewhere") / "torch-compile")
    path.write_text('[model]\ncompile_cache_dir = "/cache/here"\n')
    assert load_config(path, env={}).model.compile_cache_dir == "/cache/here"
    defaults = ModelConfig()
    assert (defaults.compile, defaults.cuda_graphs, defaults.quantize) == (False, False, "none")
    assert (defaults.channels_last, defaults.fuse_qkv, defaults.dedupe_prompts) == (True, True, True)
    assert (defaults.attention, defaults.vae_decode) == ("sdpa", "batch")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"compile": True, "cuda_graphs": True}, "model.cuda_graphs"),
        ({"attention": "flash"}, 'model.attention = "flash"'),
        ({"quantize": "fp8"}, 'model.quantize = "fp8"'),
        ({"quantize": "int8"}, 'model.quantize = "int8"'),
    ],
)
def test_cuda_only_option_is_refused_on_cpu(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ModelUnavailable) as info:
        load_pipeline(ModelConfig(name="tiny", device="cpu", **options))
    message = str(info.value)
    assert named in message and "CUDA" in message and "cpu" in message


# -- same images as eager ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"channels_last": True},
        {"fuse_qkv": True},
        {"vae_decode": "batch"},
        {"vae_decode": "tiled"},
        {"dedupe_prompts": True},
        {"attention": "math"},
        {},  # the defaults together (the tiny fixture's configuration)
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()) or "defaults",
)
def test_option_gives_the_same_images_as_eager(options: dict[str, Any], eager: np.ndarray) -> None:
    if not options:
        pipe = LightningPipeline(**_defaults())
    else:
        off = {"channels_last": False, "fuse_qkv": False, "vae_decode": "sliced", "dedupe_prompts": False}
        pipe = pipeline(**{**off, **options})
    assert_close(images(pipe), eager)


def _defaults() -> dict[str, Any]:
    pipe = build_tiny_pipeline()
    return {"pipe": pipe, "unets": dict.fromkeys(STEP_CHOICES, pipe.unet), "model_id": "t", "name": "tiny",
            "base_resolution": 256, "config": ModelConfig(name="tiny", device="cpu")}


def test_text_encoders_run_once_per_distinct_prompt() -> None:
    pipe = build_tiny_pipeline()
    seen: list[int] = []
    pipe.text_encoder.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
    with torch.inference_mode():
        embeds, pooled = encode_prompts(pipe, [item.prompt for item in ITEMS])
        alone, alone_pooled = encode_prompts(pipe, [ITEMS[1].prompt])
    assert seen == [2, 1]
    assert embeds.shape[0] == pooled.shape[0] == 3
    assert torch.equal(embeds[0], embeds[2]) and torch.allclose(embeds[1], alone[0], atol=1e-5)
    assert torch.allclose(pooled[1], alone_pooled[0], atol=1e-5)


def test_vae_decode_falls_back_to_slices_on_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = build_tiny_pipeline()
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    real = pipe.vae.decode
    calls: list[int] = []

    def decode(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(latents))
        if len(latents) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(latents, *args, **kwargs)

    with torch.inference_mode():
        expected = decode_latents(pipe, latents, "sliced")
        monkeypatch.setattr(pipe.vae, "decode", decode)
        calls.clear()
        got = decode_latents(pipe, latents, "batch")
    assert calls == [3, 1, 1, 1]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got, expected))


def test_vae_decode_out_of_memory_everywhere_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = build_tiny_pipeline()

    def decode(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(pipe.vae, "decode", decode)
    with torch.inference_mode(), pytest.raises(torch.OutOfMemoryError):
        decode_latents(pipe, torch.zeros(2, 4, 8, 8), "batch")
    assert not pipe.vae.use_tiling  # tiling was switched back off


# -- warm-up ---------------------------------------------------------------------------------------


def test_warm_up_runs_each_configured_shape_when_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = build_tiny_pipeline()
    config = ModelConfig(name="tiny", device="cpu", compile=True, warmup_sizes=["1:1", "16:9"],
                         warmup_batch_sizes=[1, 2])
    lightning = LightningPipeline(pipe, {4: pipe.unet}, model_id="t", name="tiny", base_resolution=256,
                                  config=config)
    shapes: list[tuple[int, int, int, int]] = []
    monkeypatch.setattr(lightning, "generate", lambda batch: shapes.append(
        (batch.width, batch.height, len(batch.items), batch.steps)) or [])
    lightning.warm_up()
    assert shapes == [(256, 256, 1, 4), (256, 256, 2, 4), (336, 192, 1, 4), (336, 192, 2, 4)]


def test_warm_up_does_nothing_in_eager_mode(tiny: LightningPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny, "generate", lambda batch: pytest.fail("eager mode has nothing to warm up"))
    tiny.warm_up()


async def test_worker_warms_up_on_its_own_thread_before_the_first_batch() -> None:
    from generation.scheduling.worker import Worker
    from tests.fakes import FakePipeline

    order: list[str] = []

    class Warming(FakePipeline):
        def warm_up(self) -> None:
            order.append(f"warm-up on {threading.current_thread().name}")

        def generate(self, batch: Batch, on_step: Any = None, should_stop: Any = None) -> list[Any]:
            order.append(f"batch on {threading.current_thread().name}")
            return super().generate(batch, on_step, should_stop)

    async with Worker(Warming(), name="gpu-worker-test") as worker:
        await worker.run(Batch("txt2img", 64, 64, 4, (BatchItem("a", "", 1),)))
        assert await worker.call(lambda: threading.current_thread().name) == "gpu-worker-test"
    assert order == ["warm-up on gpu-worker-test", "batch on gpu-worker-test"]


# -- torch.compile on CPU ----------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_gives_the_same_images_as_eager_and_fills_the_cache(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # configure_compile_cache sets them; restored after
    cache = tmp_path / "torch-compile"
    size, steps = 64, 2
    expected = images(pipeline(), size=size, steps=steps)
    torch._dynamo.reset()
    compiled = pipeline(compile=True, compile_cache_dir=str(cache))
    try:
        got = images(compiled, size=size, steps=steps)
        again = images(compiled, size=size, steps=steps)  # the compiled graph, reused
    finally:
        torch._dynamo.reset()
    assert_close(got, expected)
    assert np.array_equal(got, again)  # same seeds, same images
    assert any(cache.rglob("*")), "the inductor cache dir was not used"

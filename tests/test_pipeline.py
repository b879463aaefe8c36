"""The tiny SDXL pipeline, LightningPipeline.generate, and the loaders (all offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from generation.core.batch import Batch, BatchInterrupted, BatchItem
from generation.core.errors import InvalidRequest, ModelUnavailable
from generation.model.pipeline import (
    LightningPipeline,
    ModelConfig,
    build_tiny_pipeline,
    build_tiny_tokenizer,
    describe_device,
    lightning_unet_filename,
    load_pipeline,
    resolve_device,
    resolve_dtype,
)

FOX = BatchItem("a red fox in the snow", "blurry", 42)
OTHERS = (
    BatchItem("a blue whale", "ugly", 7),
    BatchItem("城市の夜景 🌃, ünïcödé", "", 123456),
    BatchItem("x", "", 0),
)


def make_batch(*items: BatchItem, width: int = 256, height: int = 256, steps: int = 4) -> Batch:
    return Batch("txt2img", width, height, steps, tuple(items))


def pixels(image: object) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


# -- tiny pipeline ----------------------------------------------------------------------------


def test_tokenizer_handles_any_unicode() -> None:
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer("ünïcödé 城市 🦊 <|endoftext|> \u200b\t\n" * 20, padding="max_length", truncation=True).input_ids
    assert len(ids) == 77
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id


def test_tiny_caps(tiny: LightningPipeline) -> None:
    assert tiny.caps.name == "tiny"
    assert tiny.caps.base_resolution == 256
    assert tiny.caps.steps == (1, 2, 4, 8)
    assert tiny.caps.sizes()["16:9"] == (336, 192)
    assert tiny.model_id
    assert tiny.pipe.scheduler.config.timestep_spacing == "trailing"


@pytest.mark.parametrize("size", [(256, 256), (336, 192)])
def test_generates_right_sized_images(tiny: LightningPipeline, size: tuple[int, int]) -> None:
    images = tiny.generate(make_batch(FOX, OTHERS[0], width=size[0], height=size[1]))
    assert [image.size for image in images] == [size, size]
    assert all(image.mode == "RGB" for image in images)
    assert pixels(images[0]).std() > 1  # not a blank image


def test_every_step_count_runs(tiny: LightningPipeline) -> None:
    for steps in tiny.caps.steps:
        seen: list[tuple[int, int]] = []
        [image] = tiny.generate(make_batch(FOX, steps=steps), on_step=lambda i, n: seen.append((i, n)))
        assert image.size == (256, 256)
        assert seen == [(i, steps) for i in range(1, steps + 1)]
    assert tiny._schedulers[1].config.prediction_type == "sample"
    assert tiny._schedulers[4].config.prediction_type == "epsilon"


def test_same_seed_same_image_alone_or_in_any_batch(tiny: LightningPipeline) -> None:
    alone = pixels(tiny.generate(make_batch(FOX))[0])
    assert np.array_equal(alone, pixels(tiny.generate(make_batch(FOX))[0]))  # rerun: bitwise
    for position in range(len(OTHERS) + 1):
        items = OTHERS[:position] + (FOX,) + OTHERS[position:]
        inside = pixels(tiny.generate(make_batch(*items))[position])
        # Batched GEMM kernels round the last float bits differently from batch-1 ones (on GPUs
        # too), which can flip a handful of 8-bit values by one level; nothing more is allowed.
        diff = np.abs(alone - inside)
        assert diff.max() <= 1, f"position {position}: max diff {diff.max()}"
        assert (diff > 0).mean() < 1e-3, f"position {position}: {(diff > 0).mean():.2%} differ"


def test_same_seed_same_initial_noise_in_any_batch(tiny: LightningPipeline) -> None:
    captured: list[torch.Tensor] = []
    pipe = tiny.pipe
    for items in ((FOX,), (*OTHERS[:2], FOX)):
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in items]
        shape = (len(items), 4, 32, 32)
        latents = pipe.prepare_latents(len(items), 4, 256, 256, torch.float32, pipe.device, generators)
        assert latents.shape == shape
        captured.append(latents[-1])
    assert torch.equal(captured[0], captured[1])  # the seed alone decides an image's noise


def test_different_seeds_give_different_images(tiny: LightningPipeline) -> None:
    first, second = tiny.generate(make_batch(FOX, BatchItem(FOX.prompt, FOX.negative_prompt, 43)))
    assert np.abs(pixels(first) - pixels(second)).mean() > 5


def test_should_stop_interrupts_after_first_step(tiny: LightningPipeline) -> None:
    seen: list[tuple[int, int]] = []
    with pytest.raises(BatchInterrupted):
        tiny.generate(make_batch(FOX, OTHERS[0]), on_step=lambda i, n: seen.append((i, n)), should_stop=lambda: True)
    assert seen == [(1, 4)]
    # the pipeline is usable again afterwards
    assert len(tiny.generate(make_batch(FOX, steps=2))) == 1


def test_unloaded_step_count_is_refused() -> None:
    pipe = build_tiny_pipeline()
    only_two = LightningPipeline(pipe, {2: pipe.unet}, model_id="t", name="tiny", base_resolution=256)
    with pytest.raises(InvalidRequest) as info:
        only_two.generate(make_batch(FOX, steps=4))
    assert info.value.field == "steps"


def test_out_of_memory_propagates_unchanged(tiny: LightningPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tiny, "pipe", _Wrapped(tiny.pipe, boom))
    with pytest.raises(torch.OutOfMemoryError):
        tiny.generate(make_batch(FOX))


class _Wrapped:
    """The real pipeline with its __call__ replaced."""

    def __init__(self, pipe: object, call: object) -> None:
        self._pipe, self._call = pipe, call

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("_pipe", "_call"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._pipe, name, value)


# -- loading ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pipeline saved like a local model copy, plus a 2-step UNet file of other weights."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("model")
    build_tiny_pipeline(seed=0).save_pretrained(root)
    other = build_tiny_pipeline(seed=1).unet
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(root / lightning_unet_filename(2)))
    return root


def test_local_dir_uses_the_step_file(saved_dir: Path) -> None:
    from safetensors.torch import load_file

    loaded = load_pipeline(ModelConfig(name="sdxl-lightning", path=str(saved_dir), steps=(2,), device="cpu", fuse_qkv=False))
    assert loaded.caps.steps == (2,)
    assert loaded.caps.base_resolution == 1024
    expected = load_file(str(saved_dir / lightning_unet_filename(2)))
    state = loaded.unet_for(2).state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    scheduler = loaded.pipe.scheduler
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    assert scheduler.config.timestep_spacing == "trailing"
    images = loaded.generate(make_batch(FOX, OTHERS[1], width=256, height=128, steps=2))
    assert [image.size for image in images] == [(256, 128)] * 2


def test_local_dir_own_unet_serves_one_step_count(saved_dir: Path) -> None:
    loaded = load_pipeline(
        ModelConfig(name="sdxl-lightning", path=str(saved_dir), steps=(2, 4), device="cpu", fuse_qkv=False)
    )
    assert loaded.caps.steps == (2, 4)
    own = build_tiny_pipeline(seed=0).unet.state_dict()
    assert all(torch.equal(loaded.unet_for(4).state_dict()[k], v) for k, v in own.items())
    assert not torch.equal(
        loaded.unet_for(2).state_dict()["conv_in.weight"], loaded.unet_for(4).state_dict()["conv_in.weight"]
    )


def test_local_dir_in_lightning_subfolder(tmp_path: Path, saved_dir: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(saved_dir, root)
    (root / "lightning").mkdir()
    (root / lightning_unet_filename(2)).rename(root / "lightning" / lightning_unet_filename(2))
    loaded = load_pipeline(ModelConfig(path=str(root), steps=(2,), device="cpu"))
    assert loaded.caps.steps == (2,)


def test_missing_step_files_are_named(saved_dir: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        load_pipeline(ModelConfig(path=str(saved_dir), steps=(1, 4, 8), device="cpu"))
    message = str(info.value)
    assert lightning_unet_filename(1) in message and lightning_unet_filename(8) in message
    assert "model.steps" in message


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelUnavailable, match="model.path") as info:
        load_pipeline(ModelConfig(path=str(missing), device="cpu"))
    assert str(missing) in str(info.value)


def test_dir_without_pipeline_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="model_index.json"):
        load_pipeline(ModelConfig(path=str(tmp_path), device="cpu"))


def test_broken_step_file_is_named(tmp_path: Path, saved_dir: Path) -> None:
    import shutil

    from safetensors.torch import save_file

    root = tmp_path / "copy"
    shutil.copytree(saved_dir, root)
    save_file({"conv_in.weight": torch.zeros(1)}, str(root / lightning_unet_filename(2)))
    with pytest.raises(ModelUnavailable, match=lightning_unet_filename(2)):
        load_pipeline(ModelConfig(path=str(root), steps=(2,), device="cpu"))


def test_hub_offline_without_cache_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        load_pipeline(ModelConfig(cache_dir=str(tmp_path), device="cpu"))
    message = str(info.value)
    assert message.startswith("The SDXL-Lightning weights are not on this machine")
    assert f"Hugging Face cache ({tmp_path})" in message  # where it looked
    assert "model.path" in message and "`imagine-bot download`" in message and "`make demo`" in message


# -- device and dtype ---------------------------------------------------------------------------


def test_device_and_dtype_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("auto", "mps") == torch.float16
    assert describe_device("cpu") == "cpu"
    with pytest.raises(ModelUnavailable, match="model.device"):
        resolve_device("cuda")

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize(
    ("field", "value"), [("device", "gpu"), ("dtype", "fp8"), ("name", "sd15"), ("steps", (3,)), ("steps", ())]
)
def test_invalid_config_values_are_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"model.{field}"):
        ModelConfig(**{field: value})
    if field in ("device", "dtype"):
        resolver = resolve_device if field == "device" else lambda v: resolve_dtype(v, "cpu")
        with pytest.raises(ValueError, match=f"model.{field}"):
            resolver(value)


def test_config_accepts_lists_from_toml() -> None:
    assert ModelConfig(steps=[8, 2, 2]).steps == (2, 8)  # type: ignore[arg-type]

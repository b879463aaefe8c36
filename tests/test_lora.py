"""LoRA: folder scan and refusals, tags in requests, the shape key, switching with an LRU, and
the effect on images (tiny random LoRAs made here with peft for the tiny UNet)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generation.core.batch import Batch, BatchItem
from generation.core.errors import InvalidRequest
from generation.model.lora import LoraManager, adapter_name, LoraSettings, attach_loras, scan_loras
from generation.model.pipeline import ModelConfig, build_tiny_pipeline, load_pipeline
from generation.model.tiny import TINY_CONTEXT_DIM, _tiny_unet
from generation.core.request import GenerationRequest, ModelCaps
from generation.scheduling.policy import FairState, pick_batch


def save_random_lora(folder: Path, name: str, seed: int, metadata: dict[str, str] | None = None,
                     targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")) -> Path:
    """A random-weight LoRA for the tiny UNet in diffusers format: ``folder/name.safetensors``."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = _tiny_unet(UNet2DConditionModel)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=list(targets)))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=layers,
                                                weight_name=f"{name}.safetensors")
    path = folder / f"{name}.safetensors"
    if metadata:  # rewrite with Kohya-style metadata
        from safetensors.torch import load_file, save_file

        save_file(load_file(str(path)), str(path), metadata={"format": "pt", **metadata})
    return path


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("loras")
    save_random_lora(folder, "ink", 1, {"ss_base_model_version": "sdxl_base_v1-0",
                                        "ss_tag_frequency": json.dumps({"set": {"inkwash": 9, "sumi": 3}})})
    save_random_lora(folder, "neon", 2, {"modelspec.trigger_phrase": "neon glow, synthwave"})
    save_random_lora(folder, "pastel", 3)
    # an SD 1.x LoRA: its cross-attention reads 768-wide text
    save_file({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 768),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
               torch.zeros(320, 4)}, str(folder / "sd15.safetensors"))
    save_file({"model.weight": torch.zeros(2, 2)}, str(folder / "checkpoint.safetensors"))
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    save_random_lora(folder, "old", 4, {"ss_base_model_version": "sd_v1"})
    return folder


@pytest.fixture(scope="module")
def pipeline(lora_dir: Path) -> Any:
    """A tiny pipeline of its own (adapters change it) with the folder attached."""
    pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    attach_loras(pipeline, LoraSettings(dir=str(lora_dir), max_loaded=2))
    return pipeline


def picture(pipeline: Any, loras: tuple[tuple[str, float], ...] = ()) -> np.ndarray:
    batch = Batch("txt2img", 128, 128, 1, (BatchItem("a fox", "", 3),), loras=loras)
    return np.asarray(pipeline.generate(batch)[0]).astype(np.int16)


# -- the folder -------------------------------------------------------------------------------


def test_scan_keeps_sdxl_loras_with_metadata_and_refuses_the_rest(lora_dir: Path) -> None:
    catalog = scan_loras(lora_dir, TINY_CONTEXT_DIM)
    assert sorted(catalog.loras) == ["ink", "neon", "pastel"]
    assert catalog.loras["ink"].triggers == ("inkwash", "sumi")
    assert catalog.loras["ink"].base_model == "sdxl_base_v1-0"
    assert catalog.loras["neon"].triggers == ("neon glow", "synthwave")
    assert len(catalog.loras["pastel"].sha256) == 12
    assert catalog.loras["ink"].sha256 != catalog.loras["neon"].sha256
    assert "768" in catalog.refused["sd15.safetensors"] and "SD 1.x" in catalog.refused["sd15.safetensors"]
    assert "no LoRA weights" in catalog.refused["checkpoint.safetensors"]
    assert "readable" in catalog.refused["broken.safetensors"]
    listing = catalog.describe()
    assert "inkwash" in listing and "<lora:neon:0.8>" in listing and "sd15.safetensors: refused" in listing


def test_metadata_naming_another_base_model_is_refused(lora_dir: Path) -> None:
    assert "made for sd_v1" in scan_loras(lora_dir, TINY_CONTEXT_DIM).refused["old.safetensors"]
    wide = scan_loras(lora_dir, 2048)  # a model reading 2048-wide text refuses the tiny LoRAs
    assert "64-wide" in wide.refused["ink.safetensors"] and not wide.loras


def test_attach_tells_the_caps_the_names_and_hashes(pipeline: Any) -> None:
    names = [name for name, _ in pipeline.caps.loras]
    assert names == ["ink", "neon", "pastel"]


# -- requests ---------------------------------------------------------------------------------


def test_unknown_names_are_refused_with_the_closest(pipeline: Any) -> None:
    request = GenerationRequest("a fox", width=256, height=256, loras=(("inc", 0.5),))
    with pytest.raises(InvalidRequest, match="did you mean ink") as caught:
        pipeline.caps.check(request)
    assert caught.value.field == "lora"


def test_check_fills_in_the_hashes(pipeline: Any) -> None:
    request = pipeline.caps.check(GenerationRequest("a fox", width=256, height=256,
                                                    loras=(("neon", 1.0), ("ink", 0.5))))
    assert request.loras == (("ink", 0.5), ("neon", 1.0))  # sorted: one set, one shape
    assert request.lora_hashes == tuple(dict(pipeline.caps.loras)[n] for n in ("ink", "neon"))
    assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


@pytest.mark.parametrize("loras", [(("a", 2.5),), (("a", -3.0),), (("a", float("nan")),),
                                   (("a", 1.0), ("a", 0.5)), tuple((f"l{i}", 1.0) for i in range(5))])
def test_lora_weights_and_counts_are_bounded(loras: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest("a fox", loras=loras)
    assert caught.value.field == "lora"


def test_no_lora_bot_refuses_lora_requests() -> None:
    with pytest.raises(InvalidRequest, match="no LoRAs installed"):
        ModelCaps().check(GenerationRequest("a fox", loras=(("ink", 1.0),)))


@dataclass
class Job:
    user: str
    seq: int
    shape: Any
    priority: bool = False
    images: int = 1


def test_jobs_with_different_loras_or_weights_never_share_a_batch() -> None:
    def shape(loras: Any) -> Any:
        return GenerationRequest("x", loras=loras).shape

    jobs = [Job("a", 0, shape((("ink", 0.8),))), Job("b", 1, shape((("neon", 0.8),))),
            Job("c", 2, shape((("ink", 0.5),))), Job("d", 3, shape(())), Job("e", 4, shape((("ink", 0.8),)))]
    batch, _ = pick_batch(jobs, FairState(), max_images=8, priority_burst=3)
    assert [j.user for j in batch] == ["a", "e"]
    again = Batch.from_shape(jobs[0].shape, [BatchItem("x", "", 1)])
    assert again.loras == (("ink", 0.8),) and again.shape == jobs[0].shape and again.strength is None


def test_img2img_shapes_keep_strength_beside_the_loras() -> None:
    request = GenerationRequest("x", kind="img2img", init_image="/tmp/x.png", strength=0.5,
                                loras=(("ink", 1.0),))
    batch = Batch.from_shape(request.shape, [BatchItem("x", "", 1, "/tmp/x.png")])
    assert batch.strength == 0.5 and batch.loras == (("ink", 1.0),)


# -- images and switching -----------------------------------------------------------------------


def test_a_lora_changes_the_image_and_weight_zero_does_not(pipeline: Any) -> None:
    plain = picture(pipeline)
    assert (picture(pipeline, (("ink", 1.0),)) != plain).any()
    assert np.array_equal(picture(pipeline, (("ink", 0.0),)), plain)
    assert np.array_equal(picture(pipeline), plain)  # back to no LoRA: adapters disabled
    assert (picture(pipeline, (("ink", 1.0),)) != picture(pipeline, (("neon", 1.0),))).any()
    both = picture(pipeline, (("ink", 1.0), ("neon", 1.0)))  # several per prompt
    assert (both != picture(pipeline, (("ink", 1.0),))).any() and (both != picture(pipeline, (("neon", 1.0),))).any()


def test_a_qkv_only_lora_works_on_a_pipeline_with_fused_qkv(tmp_path: Path) -> None:
    save_random_lora(tmp_path, "keys", 5, targets=("to_k",))
    fused = load_pipeline(ModelConfig(name="tiny", device="cpu", fuse_qkv=True))
    attach_loras(fused, LoraSettings(dir=str(tmp_path)))  # undoes the fusion: to_qkv ignores adapters
    assert (picture(fused, (("keys", 1.0),)) != picture(fused)).any()


def test_a_kohya_format_lora_is_accepted_and_changes_the_image(tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    unet = _tiny_unet(UNet2DConditionModel)
    torch.manual_seed(6)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_k", "to_out.0"]))
    kohya = convert_state_dict_to_kohya({"unet." + k: v for k, v in get_peft_model_state_dict(unet).items()})
    assert all(key.startswith("lora_unet_") for key in kohya)
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(tmp_path / "kohya.safetensors"),
              metadata={"ss_base_model_version": "sdxl_base_v1-0", "ss_tag_frequency": '{"a": {"kohya": 2}}'})
    catalog = scan_loras(tmp_path, TINY_CONTEXT_DIM)
    assert list(catalog.loras) == ["kohya"] and catalog.loras["kohya"].triggers == ("kohya",)
    pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    attach_loras(pipeline, LoraSettings(dir=str(tmp_path)))
    assert (picture(pipeline, (("kohya", 1.0),)) != picture(pipeline)).any()


def test_the_lru_evicts_the_least_recently_used(lora_dir: Path) -> None:
    pipe = build_tiny_pipeline()
    manager = LoraManager(pipe, scan_loras(lora_dir, TINY_CONTEXT_DIM), max_loaded=2)
    manager.activate((("ink", 1.0),))
    manager.activate((("neon", 1.0),))
    manager.activate((("ink", 0.5),))  # ink is now the most recent
    assert manager.loaded == ["neon", "ink"] and manager.loads == 2
    manager.activate((("pastel", 1.0),))
    assert manager.loaded == ["ink", "pastel"] and manager.evictions == 1
    assert sorted(pipe.get_list_adapters()["unet"]) == sorted(adapter_name(n) for n in ("ink", "pastel"))
    manager.activate((("pastel", 1.0),))  # same set again: no work
    assert manager.switches == 4


def test_a_batch_with_loras_on_a_bot_without_them_fails_clearly(tiny: Any) -> None:
    batch = Batch("txt2img", 128, 128, 1, (BatchItem("a fox", "", 3),), loras=(("ink", 1.0),))
    with pytest.raises(InvalidRequest, match="no LoRAs"):
        tiny.generate(batch)


def test_the_cli_lists_the_folder(lora_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main

    config = tmp_path / "c.toml"
    config.write_text(f'[lora]\ndir = "{lora_dir}"\n')
    assert main(["loras", "--config", str(config), "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "ink  [sdxl_base_v1-0]  inkwash, sumi" in out and "sd15.safetensors: refused" in out


async def test_every_executor_gets_the_loras_local_workers_and_ray_replicas(lora_dir: Path) -> None:
    import functools
    import pickle

    from generation.scheduling.local import start_workers
    from generation.model.lora import catalog_for, load_with_loras
    from generation.scheduling.queue import GenerationQueue
    from generation.scheduling.ray_backend import ImagineReplica, RayExecutor

    settings = LoraSettings(dir=str(lora_dir))
    catalog = catalog_for(settings, "tiny")
    assert catalog is not None and sorted(catalog.loras) == ["ink", "neon", "pastel"]
    loader = functools.partial(load_with_loras, settings=settings, catalog=catalog)
    workers = start_workers(ModelConfig(name="tiny", device="cpu"), ["cpu", "cpu"], loader=loader)
    queue = GenerationQueue(workers)
    queue.start()
    try:
        assert [n for n, _ in queue.caps.loras] == ["ink", "neon", "pastel"]  # the pool's merged caps
        request = queue.caps.check(GenerationRequest("a fox", width=336, height=192, steps=1, seed=3,
                                                     loras=(("neon", 0.7),)))
        result = await queue.submit(request).result()
        assert len(result.images) == 1
    finally:
        await queue.close()
        for worker in workers:
            await worker.close()
    # a Ray replica loads through the same (picklable) loader and reports the names to the bot
    factory = pickle.loads(pickle.dumps(functools.partial(loader, ModelConfig(name="tiny", device="cpu"))))
    replica = ImagineReplica(factory)
    try:
        executor = RayExecutor(None, replica.describe(), slots=1)
        assert executor.caps.loras == catalog.caps_entries
    finally:
        await replica.worker.close()


async def test_a_model_not_loaded_yet_takes_the_loras_and_runs_them(lora_dir: Path) -> None:
    """Several models: a LoRA request for one not loaded yet is accepted (it was refused until
    that model had loaded once) and runs with the LoRA on it."""
    import functools

    from generation.model.entries import ModelEntry, entry_configs
    from generation.model.lora import catalog_for, load_with_loras
    from generation.model.shelf import load_model, shelf_factory
    from generation.scheduling.local import start_workers
    from generation.scheduling.queue import GenerationQueue

    settings = LoraSettings(dir=str(lora_dir))
    catalog = catalog_for(settings, "tiny")
    assert catalog is not None
    configs = entry_configs(ModelConfig(name="tiny", device="cpu"),
                            (ModelEntry("tiny", "tiny", default=True), ModelEntry("turbo", "tiny-turbo")))
    sdxl = functools.partial(load_with_loras, settings=settings, catalog=catalog)
    loader = functools.partial(shelf_factory, configs, functools.partial(load_model, sdxl_loader=sdxl), 0.0,
                               loras=catalog.caps_entries)
    workers = start_workers(ModelConfig(name="tiny", device="cpu"), ["cpu"], loader=loader)
    queue = GenerationQueue(workers)
    queue.start()
    try:
        caps = queue.pool.caps_for("turbo")
        assert [name for name, _ in caps.loras] == ["ink", "neon", "pastel"]
        request = caps.check(GenerationRequest("a fox", width=256, height=256, steps=1, seed=3, model="turbo",
                                               loras=(("ink", 0.8),)))
        assert request.lora_hashes  # the hashes filled in, as for the default model
        result = await queue.submit(request).result()
        assert len(result.images) == 1 and "turbo" in result.model, result.model
        turbo = workers[0]._pipeline._loaded["turbo"]
        assert turbo.loras is not None and "ink" in turbo.loras.catalog.loras  # attached when it loaded
        with pytest.raises(InvalidRequest, match="ink"):  # an unknown name is still refused, naming the closest
            caps.check(GenerationRequest("a fox", width=256, height=256, steps=1, seed=3, model="turbo",
                                         loras=(("inc", 0.8),)))
    finally:
        await queue.close()
        for worker in workers:
            await worker.close()


def test_a_lora_with_text_encoder_weights_on_two_step_count_unets(tmp_path: Path) -> None:
    """Each step count's UNet loads its own copy (and so do the shared text encoders): the second
    UNet's images equal a one-UNet pipeline's, and switching UNets never mixes the copies."""
    import copy

    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from generation.model.pipeline import LightningPipeline

    unet = _tiny_unet(UNet2DConditionModel)
    torch.manual_seed(7)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_k"]))
    encoder = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                 target_modules=["k_proj"]), build_tiny_pipeline().text_encoder)
    StableDiffusionXLPipeline.save_lora_weights(
        tmp_path, weight_name="both.safetensors",
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(encoder)))

    def pipeline(steps: tuple[int, ...]) -> Any:
        pipe = build_tiny_pipeline()
        unets = {n: pipe.unet if i == 0 else copy.deepcopy(pipe.unet) for i, n in enumerate(steps)}
        made = LightningPipeline(pipe, unets, model_id="t", name="tiny", base_resolution=256,
                                 config=ModelConfig(name="tiny", device="cpu"))
        attach_loras(made, LoraSettings(dir=str(tmp_path)))
        return made

    def image(made: Any, steps: int, loras: Any) -> np.ndarray:
        batch = Batch("txt2img", 128, 128, steps, (BatchItem("a fox", "", 3),), loras=loras)
        return np.asarray(made.generate(batch)[0]).astype(np.int16)

    one, two = pipeline((2,)), pipeline((1, 2))
    expected, plain = image(one, 2, (("both", 1.0),)), image(one, 2, ())
    assert (expected != plain).any()
    first = image(two, 1, (("both", 1.0),))  # loads the copy for the 1-step UNet (and the encoders)
    assert (first != image(two, 1, ())).any()
    assert np.array_equal(image(two, 2, (("both", 1.0),)), expected)
    assert np.array_equal(image(two, 2, ()), plain)
    assert np.array_equal(image(two, 1, (("both", 1.0),)), first)


def test_hub_loras_are_downloaded_checked_and_hashed_at_the_scan(lora_dir: Path, tmp_path: Path) -> None:
    """lora.hub against a fake Hub on 127.0.0.1 (huggingface_hub reads HF_ENDPOINT at import:
    a subprocess); then offline, from the cache."""
    import hashlib
    import os
    import subprocess
    import sys

    from tests.fake_hub import FakeHub, serve

    ink = (lora_dir / "ink.safetensors").read_bytes()
    repos = {"someone/ink-xl": {"pytorch_lora_weights.safetensors": ink, "README.md": b"card"},
             "someone/old-sd15": {"lora.safetensors": (lora_dir / "sd15.safetensors").read_bytes()}}
    config = tmp_path / "c.toml"
    config.write_text('[lora]\nhub = ["someone/ink-xl", "someone/old-sd15", "someone/gone"]\n')
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(root), "HF_HUB_DISABLE_TELEMETRY": "1"}

    def listing(**more: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "bot", "loras", "--config", str(config), "--model", "tiny"],
                              cwd=tmp_path, env={**env, **more}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    with serve(FakeHub(repos)) as hub:
        online = listing(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
    assert "ink-xl  [sdxl_base_v1-0]  inkwash, sumi  (use <lora:ink-xl:0.8>)" in online
    assert "someone/old-sd15: refused: made for SD 1.x" in online
    assert "someone/gone: refused: could not be downloaded from the Hub" in online
    assert hub.fetched("someone/ink-xl") == {"pytorch_lora_weights.safetensors"}  # not the card
    offline = listing(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    assert f"(use <lora:ink-xl:0.8>)  sha256 {hashlib.sha256(ink).hexdigest()[:12]}" in offline

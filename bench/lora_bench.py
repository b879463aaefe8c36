"""LoRA benchmark on the tiny model (CPU): what does switching adapters cost the queue?

32 single-image requests from 8 users through GenerationQueue, twice:
  1. no LoRA: every request shares one shape, batches fill up to ``max_batch_images``;
  2. spread over 3 LoRAs (random, made here with peft): the shape key keeps adapter sets apart,
     so batches are smaller and the worker switches adapters between them (set_adapters; the
     first use of each also loads it).
Reports images/s of both, the number of batches and switches, and the seconds spent switching.
Writes bench/results/lora_bench.json. Not a test: ``python bench/lora_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from generation.lora import LoraSettings, attach_loras  # noqa: E402
from generation.pipeline import ModelConfig, _tiny_unet, load_pipeline  # noqa: E402
from generation.queue import GenerationQueue  # noqa: E402
from generation.request import GenerationRequest  # noqa: E402
from generation.worker import Worker  # noqa: E402

NAMES = ("ink", "neon", "pastel")


def make_loras(folder: Path) -> None:
    """Three random-weight LoRAs for the tiny UNet, in diffusers format."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    for seed, name in enumerate(NAMES, start=1):
        unet = _tiny_unet(UNet2DConditionModel)
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=layers,
                                                    weight_name=f"{name}.safetensors")


async def run(pipeline, n: int, size: int, steps: int, max_batch: int, with_loras: bool) -> dict[str, float]:
    batches: list[int] = []
    worker = Worker(pipeline, on_timing=lambda shape, count, seconds: batches.append(count))
    worker.start()
    queue = GenerationQueue(worker, max_batch_images=max_batch, max_queued_images=n, max_queued_per_user=n)
    queue.start()
    manager = pipeline.loras
    switches, switch_s = manager.switches, manager.switch_seconds
    requests = [
        GenerationRequest(f"a lighthouse at dawn, variant {i}", width=size, height=size, steps=steps, seed=i,
                          user_id=f"user{i % 8}", loras=((NAMES[i % 3], 0.8),) if with_loras else ())
        for i in range(n)
    ]
    start = time.perf_counter()
    jobs = [queue.submit(pipeline.caps.check(r)) for r in requests]
    await asyncio.gather(*(job.result() for job in jobs))
    elapsed = time.perf_counter() - start
    await queue.close(drain=True)
    await worker.close()
    return {"seconds": elapsed, "images_per_s": n / elapsed, "batches": len(batches),
            "switches": manager.switches - switches, "switch_seconds": manager.switch_seconds - switch_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        make_loras(Path(tmp))
        pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
        attach_loras(pipeline, LoraSettings(dir=tmp, max_loaded=4))
        asyncio.run(run(pipeline, 8, args.size, args.steps, args.max_batch, True))  # warm up, load all
        rounds = []
        for _ in range(args.rounds):
            plain = asyncio.run(run(pipeline, args.n, args.size, args.steps, args.max_batch, False))
            lora = asyncio.run(run(pipeline, args.n, args.size, args.steps, args.max_batch, True))
            rounds.append({"no_lora": plain, "three_loras": lora})
    # medians over interleaved rounds: the shared machine's speed drifts between runs
    plain = {k: statistics.median(r["no_lora"][k] for r in rounds) for k in rounds[0]["no_lora"]}
    lora = {k: statistics.median(r["three_loras"][k] for r in rounds) for k in rounds[0]["three_loras"]}
    report = {
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "n": args.n, "size": args.size, "steps": args.steps, "max_batch": args.max_batch,
        "rounds": rounds, "no_lora": plain, "three_loras": lora,
        "slowdown": plain["images_per_s"] / lora["images_per_s"],
        "switch_ms_each": 1000 * lora["switch_seconds"] / max(1, lora["switches"]),
    }
    out = Path(__file__).resolve().parent / "results" / "lora_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"no LoRA:      {plain['images_per_s']:.2f} images/s in {plain['batches']:g} batches")
    print(f"3 LoRAs:      {lora['images_per_s']:.2f} images/s in {lora['batches']:g} batches, "
          f"{lora['switches']:g} switches, {lora['switch_seconds']:.3f} s switching "
          f"({report['switch_ms_each']:.1f} ms each)")
    print(f"slowdown x{report['slowdown']:.2f}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

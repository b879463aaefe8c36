"""LoRA benchmark on the tiny model (CPU): what does switching adapters cost the queue?

32 single-image requests from 8 users through GenerationQueue, in interleaved rounds:
  1. bare: a pipeline with no [lora] at all (fused QKV kept, no adapter layers);
  2. no LoRA: the same requests on the pipeline with the LoRA folder attached (QKV unfused, the
     adapters loaded but disabled): what merely configuring LoRAs costs;
  3. spread over 3 LoRAs (random, made here with peft): the shape key keeps adapter sets apart,
     so batches are smaller and the worker switches adapters between them (set_adapters).
As in the bot, each pipeline is loaded on the main thread and runs on one worker thread kept for
the whole run. Reports images/s, batches, switches and the seconds spent switching (medians), and
what the first use of each adapter cost (loading it). Writes bench/results/lora_bench.json.
Not a test: ``python bench/lora_bench.py``.
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

from generation.model.lora import LoraSettings, attach_loras  # noqa: E402
from generation.model.pipeline import ModelConfig, load_pipeline  # noqa: E402
from generation.scheduling.queue import GenerationQueue  # noqa: E402
from generation.core.request import GenerationRequest  # noqa: E402
from generation.model.tiny import _tiny_unet  # noqa: E402
from generation.scheduling.worker import Worker  # noqa: E402

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


async def run(worker: Worker, pipeline, n: int, size: int, steps: int, max_batch: int,
              with_loras: bool) -> dict[str, float]:
    batches: list[int] = []
    worker.on_timing = lambda shape, count, seconds: batches.append(count)
    queue = GenerationQueue(worker, max_batch_images=max_batch, max_queued_images=n, max_queued_per_user=n)
    queue.start()
    manager = pipeline.loras
    switches, switch_s = (manager.switches, manager.switch_seconds) if manager else (0, 0.0)
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
    worker.on_timing = None
    return {"seconds": elapsed, "images_per_s": n / elapsed, "batches": len(batches),
            "switches": manager.switches - switches if manager else 0,
            "switch_seconds": manager.switch_seconds - switch_s if manager else 0.0}


async def measure(args: argparse.Namespace, folder: str) -> dict:
    bare = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    attach_loras(pipeline, LoraSettings(dir=folder, max_loaded=4))
    torch.ones(1 << 22).add_(1)  # the main thread has an OpenMP team, as in the bot (throttled)
    workers = {"bare": Worker(bare, name="bare"), "lora": Worker(pipeline, name="lora")}
    for worker in workers.values():
        worker.start()
    a = (args.n, args.size, args.steps, args.max_batch)
    first = await run(workers["lora"], pipeline, 6, *a[1:], True)  # first use of each: loads it
    await run(workers["bare"], bare, 8, *a[1:], False)  # warm-up
    rounds = []
    for _ in range(args.rounds):
        rounds.append({"bare": await run(workers["bare"], bare, *a, False),
                       "no_lora": await run(workers["lora"], pipeline, *a, False),
                       "three_loras": await run(workers["lora"], pipeline, *a, True)})
    for worker in workers.values():
        await worker.close()
    return {"first_use": first, "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        make_loras(Path(tmp))
        measured = asyncio.run(measure(args, tmp))
    rounds = measured["rounds"]
    # medians over interleaved rounds: the shared machine's speed drifts between runs
    median = {mode: {k: statistics.median(r[mode][k] for r in rounds) for k in rounds[0][mode]}
              for mode in rounds[0]}
    bare, plain, lora = median["bare"], median["no_lora"], median["three_loras"]
    first = measured["first_use"]
    report = {
        "command": "python bench/lora_bench.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "load_average": [load_before, os.getloadavg()[0]],
        "n": args.n, "size": args.size, "steps": args.steps, "max_batch": args.max_batch,
        "rounds": rounds, "median": median, "first_use": first,
        "slowdown_vs_bare": bare["images_per_s"] / lora["images_per_s"],
        "slowdown_vs_no_lora": plain["images_per_s"] / lora["images_per_s"],
        "switch_ms_each": 1000 * lora["switch_seconds"] / max(1, lora["switches"]),
        "first_use_ms_each": 1000 * first["switch_seconds"] / max(1, first["switches"]),
    }
    out = Path(__file__).resolve().parent / "results" / "lora_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"bare (no [lora]): {bare['images_per_s']:.2f} images/s in {bare['batches']:g} batches")
    print(f"no LoRA:          {plain['images_per_s']:.2f} images/s in {plain['batches']:g} batches")
    print(f"3 LoRAs:          {lora['images_per_s']:.2f} images/s in {lora['batches']:g} batches, "
          f"{lora['switches']:g} switches, {lora['switch_seconds']:.3f} s switching "
          f"({report['switch_ms_each']:.1f} ms each)")
    print(f"first use (load + switch): {report['first_use_ms_each']:.0f} ms each")
    print(f"slowdown x{report['slowdown_vs_bare']:.2f} vs bare, x{report['slowdown_vs_no_lora']:.2f} vs no LoRA; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

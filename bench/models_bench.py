"""Several models on one executor (issue 25), tiny models on CPU: what does mixed traffic cost?

N single-image requests from 8 users through GenerationQueue and one worker holding a ModelShelf,
in interleaved rounds of these modes:
  1. A alone: every request names model A (the tiny SDXL);
  2. B alone: every request names model B (the tiny Flux, or --b tiny-turbo);
  3. A+B, both resident: requests alternate A, B; [generation] model_memory_gb fits both;
  4. A+B, budget for one: the same traffic with a budget that fits one model, so the shelf
     unloads one and loads the other at each switch (least recently used out).
As in the bot, the queue groups one model per batch and the fair policy picks; the pipelines are
loaded on the main thread and run on the one worker thread. Reports images/s (medians of the
rounds), batches, loads, and the measured cost of one switch (unload + load) in mode 4, and the
goal's ratio: mixed images/s over the slower model's alone. Writes bench/results/models_bench.json
and .png. Not a test: ``python bench/models_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from generation.core.request import GenerationRequest  # noqa: E402
from generation.model.entries import ModelEntry, entry_configs  # noqa: E402
from generation.model.model_config import ModelConfig  # noqa: E402
from generation.model.pipeline import load_pipeline  # noqa: E402
from generation.model.shelf import ModelShelf, memory_gb  # noqa: E402
from generation.scheduling.queue import GenerationQueue  # noqa: E402
from generation.scheduling.worker import Worker  # noqa: E402

MODES = ("a_alone", "b_alone", "mixed_resident", "mixed_budget_one")


async def run(shelf: ModelShelf, models: list[str], n: int, steps: int, max_batch: int) -> dict[str, float]:
    """``n`` requests (model ``models[i % len]``) on a fresh worker over ``shelf``; images/s."""
    worker = Worker(shelf, name="bench")
    worker.start()
    queue = GenerationQueue(worker, max_batch_images=max_batch, max_queued_images=4 * n, max_queued_per_user=n)
    queue.start()
    loads_before = sum(shelf.loads.values())
    switch_before = shelf.switch_seconds_total
    started = time.perf_counter()
    jobs = []
    for i in range(n):
        model = models[i % len(models)]
        w, h = shelf.caps_for(model).sizes()["1:1"]
        jobs.append(queue.submit(GenerationRequest(f"a fox number {i}", w, h, steps=steps, seed=i, model=model,
                                                   user_id=str(i % 8))))
    for job in jobs:
        await job.result()
    seconds = time.perf_counter() - started
    batches = queue.batches_run
    await queue.close()
    await worker.close()
    loads = sum(shelf.loads.values()) - loads_before
    return {"images_per_s": n / seconds, "seconds": seconds, "batches": batches, "loads": loads,
            "switch_seconds": shelf.switch_seconds_total - switch_before}


async def measure(args: argparse.Namespace) -> dict:
    cpu = ModelConfig(name="tiny", device="cpu")
    loaded_once = {kind: load_pipeline(ModelConfig(name=kind, device="cpu")) for kind in ("tiny", args.b)}
    sizes = {kind: memory_gb(pipe) for kind, pipe in loaded_once.items()}

    def fresh_loader(config: ModelConfig):  # a real load each time (what a switch costs)
        return load_pipeline(config)

    # declared sizes (as measured here): a kind's guess would not fit the tiny budgets below
    entries = (ModelEntry("a", "tiny", default=True, memory_gb=sizes["tiny"]),
               ModelEntry("b", args.b, memory_gb=sizes[args.b]))
    both = sum(sizes.values()) * 1.5
    one = max(sizes.values()) * 1.2
    rounds = []
    for _ in range(args.rounds):
        result = {}
        resident = ModelShelf(entry_configs(cpu, entries), lambda c: loaded_once[c.name], budget_gb=both)
        result["a_alone"] = await run(resident, [""], args.n, args.steps, args.max_batch)
        result["b_alone"] = await run(resident, ["b"], args.n, args.steps, args.max_batch)
        result["mixed_resident"] = await run(resident, ["", "b"], args.n, args.steps, args.max_batch)
        tight = ModelShelf(entry_configs(cpu, entries), fresh_loader, budget_gb=one)
        result["mixed_budget_one"] = await run(tight, ["", "b"], args.n, args.steps, args.max_batch)
        rounds.append(result)
        print({m: round(r["images_per_s"], 2) for m, r in result.items()}, flush=True)
    return {"rounds": rounds, "model_gb": sizes, "budget_both_gb": both, "budget_one_gb": one}


def plot(median: dict[str, dict[str, float]], path: Path, b: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["tiny alone", f"{b} alone", "alternating,\nboth loaded", "alternating,\nbudget for one"]
    values = [median[m]["images_per_s"] for m in MODES]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(labels, values, color=["#4c72b0", "#55a868", "#8172b2", "#c44e52"])
    ax.set_ylabel("images / s (CPU, tiny models)")
    ax.set_title("Two models on one executor")
    for x, v in enumerate(values):
        ax.text(x, v, f"{v:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="requests per mode")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--b", default="tiny-flux", choices=["tiny-flux", "tiny-turbo"], help="the second model")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    measured = asyncio.run(measure(args))
    rounds = measured["rounds"]
    median = {m: {k: statistics.median(r[m][k] for r in rounds) for k in rounds[0][m]} for m in MODES}
    slower = min(median["a_alone"]["images_per_s"], median["b_alone"]["images_per_s"])
    tight = median["mixed_budget_one"]
    report = {
        "command": "python bench/models_bench.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "load_average": [load_before, os.getloadavg()[0]],
        "n": args.n, "steps": args.steps, "max_batch": args.max_batch, "b": args.b,
        **{k: v for k, v in measured.items() if k != "rounds"},
        "rounds": rounds, "median": median,
        "mixed_resident_vs_slower_alone": median["mixed_resident"]["images_per_s"] / slower,
        "mixed_budget_one_vs_slower_alone": tight["images_per_s"] / slower,
        "switch_seconds_each": tight["switch_seconds"] / max(1, tight["loads"]),  # each load there is a switch
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "models_bench.json").write_text(json.dumps(report, indent=1))
    plot(median, out / "models_bench.png", args.b)
    for mode in MODES:
        m = median[mode]
        print(f"{mode:17s} {m['images_per_s']:.2f} images/s, {m['batches']:g} batches, {m['loads']:g} loads")
    print(f"mixed / slower alone: {report['mixed_resident_vs_slower_alone']:.2f} (both loaded), "
          f"{report['mixed_budget_one_vs_slower_alone']:.2f} (budget for one); one switch "
          f"{report['switch_seconds_each']:.2f} s; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmark on the tiny model: does the fair queue keep the raw pipeline's batching gain?

Measures, at one size (default 256x256, 4 steps):
  1. one by one: N single-image pipeline calls in a row (no queue);
  2. raw batching: the same N images in pipeline calls of ``max_batch_images``;
  3. the queue: N concurrent single-image requests from several users through GenerationQueue
     (worker thread, fair batching up to ``max_batch_images``);
each round times all three back to back (the machine's speed drifts), medians over rounds; plus
the raw pipeline's batch-size curve for the plot.

As in production, the model is loaded on the main thread and every image is made on the one
worker thread, kept for the whole run: the raw calls go through ``Worker.call``. The old bench
timed the raw calls on the main thread and the queue on a new worker thread per round; on CPU
the two ran in different OpenMP regimes (libgomp spin-waits while one thread's team exists,
and sleeps between parallel regions once a second thread has a team), which cost the queue
~+0.17 s per batch of 8 that the raw calls did not pay. ``--legacy`` reproduces that layout;
``--regime`` picks libgomp's regime for the whole run (see :func:`load`).
Goal: (queue - one_by_one) / (raw batched - one_by_one) >= 0.9 in images/s.
Writes bench/results/cpu_bench.json and cpu_bench.png. Not a test: run `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from generation.core.batch import Batch, BatchItem  # noqa: E402
from generation.model.pipeline import ModelConfig, load_pipeline  # noqa: E402
from generation.scheduling.queue import GenerationQueue  # noqa: E402
from generation.core.request import GenerationRequest  # noqa: E402
from generation.scheduling.worker import Worker  # noqa: E402


def batch_of(n: int, size: int, steps: int, seed0: int = 0) -> Batch:
    items = tuple(BatchItem(f"a lighthouse at dawn, variant {i}", "", seed0 + i) for i in range(n))
    return Batch("txt2img", size, size, steps, items)


def time_call(pipeline, batch: Batch, repeats: int) -> float:
    """Median seconds of ``repeats`` pipeline calls for ``batch``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline.generate(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_by_one(pipeline, n: int, size: int, steps: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        pipeline.generate(batch_of(1, size, steps, seed0=i))
    return time.perf_counter() - start


def raw_batched(pipeline, n: int, size: int, steps: int, mb: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, mb):
        pipeline.generate(batch_of(min(mb, n - first), size, steps, seed0=first))
    return time.perf_counter() - start


async def queue_run(worker: Worker, n: int, size: int, steps: int, users: int, max_batch: int) -> tuple[float, list[int]]:
    """Seconds for ``n`` concurrent single-image requests through the queue, and batch sizes."""
    sizes: list[int] = []
    worker.on_timing = lambda shape, count, seconds: sizes.append(count)
    queue = GenerationQueue(
        worker, max_batch_images=max_batch, max_queued_images=n, max_queued_per_user=n
    )
    queue.start()
    requests = [
        GenerationRequest(
            f"a lighthouse at dawn, variant {i}", width=size, height=size, steps=steps,
            seed=i, user_id=f"user{i % users}",
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    jobs = [queue.submit(r) for r in requests]
    results = await asyncio.gather(*(job.result() for job in jobs))
    elapsed = time.perf_counter() - start
    assert all(len(r.images) == 1 for r in results)
    await queue.close(drain=True)
    worker.on_timing = None
    return elapsed, sizes


async def measure(args: argparse.Namespace) -> dict:
    """Interleaved rounds of the three modes, and the raw batch-size curve."""
    pipeline = load(args.regime)
    n, size, steps, mb = args.requests, args.size, args.steps, args.max_batch
    worker = Worker(pipeline)
    worker.start()

    def on_worker(function):
        return function() if args.legacy else worker.call(function)

    async def run(function):
        result = on_worker(function)
        return await result if asyncio.iscoroutine(result) else result

    await run(lambda: pipeline.generate(batch_of(2, size, steps)))  # warm-up
    # The machine's speed drifts; each round times the same n images three ways back to back,
    # and the comparison uses the median of each mode over the rounds.
    rounds: list[dict[str, float]] = []
    batch_sizes: list[int] = []
    for _ in range(args.repeats):
        sequential = await run(lambda: one_by_one(pipeline, n, size, steps))
        raw = await run(lambda: raw_batched(pipeline, n, size, steps, mb))
        if args.legacy:  # a new worker thread per round, as the old bench did
            fresh = Worker(pipeline)
            fresh.start()
            queued, batch_sizes = await queue_run(fresh, n, size, steps, args.users, mb)
            await fresh.close()
        else:
            queued, batch_sizes = await queue_run(worker, n, size, steps, args.users, mb)
        rounds.append({"one_by_one_s": sequential, "raw_batched_s": raw, "queue_s": queued,
                       "retained": _retained(n / sequential, n / raw, n / queued)})
    curve = {}
    for bs in (1, 2, 4, 8, 16):
        if bs > max(mb, 8):
            break
        seconds = await run(lambda bs=bs: time_call(pipeline, batch_of(bs, size, steps), args.repeats))
        curve[bs] = {"seconds_per_call": seconds, "images_per_s": bs / seconds}
    await worker.close()
    return {"model": pipeline.model_id, "rounds": rounds, "batch_sizes": batch_sizes, "curve": curve}


def load(regime: str):
    """The tiny pipeline, leaving libgomp in ``regime`` for the whole run.

    throttled: the main thread runs torch code (as loading the full-size model in bot/app.py
    does), so it keeps an OpenMP team beside the worker's and libgomp sleeps between parallel
    regions: robust when other processes share the cores. spin: loaded on a thread that ends, so
    the worker's is the only team and libgomp spin-waits: fastest on idle cores, but many times
    slower when other processes compete for them.
    """
    if regime == "throttled":
        pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
        torch.ones(1 << 22).add_(1)  # a parallel region on the main thread: its team exists
        return pipeline
    loaded: list = []
    thread = threading.Thread(target=lambda: loaded.append(load_pipeline(ModelConfig(name="tiny", device="cpu"))))
    thread.start()
    thread.join()
    return loaded[0]


def _retained(sequential_ips: float, raw_ips: float, queue_ips: float) -> float | None:
    return (queue_ips - sequential_ips) / (raw_ips - sequential_ips) if raw_ips > sequential_ips else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--regime", choices=("throttled", "spin"), default="throttled",
                        help="libgomp's waiting regime for the whole run (see load())")
    parser.add_argument("--legacy", action="store_true",
                        help="the old layout: raw calls on the main thread, a new Worker per round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    load_before = os.getloadavg()  # other processes on the cores make the timings drift
    measured = asyncio.run(measure(args))
    n, rounds = args.requests, measured["rounds"]
    sequential_s = statistics.median(r["one_by_one_s"] for r in rounds)
    raw_s = statistics.median(r["raw_batched_s"] for r in rounds)
    queue_s = statistics.median(r["queue_s"] for r in rounds)
    sequential_ips, raw_ips, queue_ips = n / sequential_s, n / raw_s, n / queue_s
    retained = _retained(sequential_ips, raw_ips, queue_ips)
    per_round = [r["retained"] for r in rounds if r["retained"] is not None]
    result = {
        "benchmark": "cpu_bench",
        "command": "python bench/cpu_bench.py " + " ".join(sys.argv[1:]),
        "layout": "legacy: raw calls on the main thread, new Worker per round" if args.legacy
        else "one Worker thread for all images",
        "openmp_regime": "mixed (raw: spin, queue: throttled)" if args.legacy else args.regime,
        "device": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "torch": torch.__version__,
        "model": measured["model"],
        "size": [args.size, args.size],
        "steps": args.steps,
        "requests": n,
        "users": args.users,
        "max_batch_images": args.max_batch,
        "rounds": rounds,
        "one_by_one": {"seconds": sequential_s, "images_per_s": sequential_ips},
        "raw_batched": {"seconds": raw_s, "images_per_s": raw_ips},
        "raw_batch_curve": measured["curve"],
        "queue": {"seconds": queue_s, "images_per_s": queue_ips, "batch_sizes": measured["batch_sizes"]},
        "batching_gain_raw": raw_ips / sequential_ips,
        "batching_gain_queue": queue_ips / sequential_ips,
        "gain_retained": retained,
        "gain_retained_per_round_median": statistics.median(per_round) if per_round else None,
        "goal": "gain_retained >= 0.9",
        "goal_met": retained is not None and retained >= 0.9,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "cpu_bench_legacy" if args.legacy else "cpu_bench"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / f"{name}.png")
    for i, r in enumerate(rounds, 1):
        print(f"round {i}: one by one {r['one_by_one_s']:.2f} s, raw {r['raw_batched_s']:.2f} s, "
              f"queue {r['queue_s']:.2f} s, retained {r['retained']:.0%}" if r["retained"] is not None
              else f"round {i}: no raw gain")
    print(json.dumps({k: result[k] for k in ("batching_gain_raw", "batching_gain_queue", "gain_retained",
                                             "gain_retained_per_round_median", "goal_met")}, indent=2))
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["raw_batch_curve"]
    sizes = [int(k) for k in curve]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(sizes, [curve[k]["images_per_s"] for k in curve], "o-", label="raw pipeline, one call per batch")
    ax.axhline(result["one_by_one"]["images_per_s"], color="grey", ls="--", label="one by one (no batching)")
    ax.axhline(result["raw_batched"]["images_per_s"], color="tab:blue", ls=":",
               label=f"raw, {result['requests']} images in calls of {result['max_batch_images']}")
    ax.axhline(result["queue"]["images_per_s"], color="tab:green", ls="-.",
               label=f"queue: {result['requests']} concurrent requests, {result['users']} users")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size (images per pipeline call)")
    ax.set_ylabel("images / s")
    w, h = result["size"]
    retained = result["gain_retained"]
    ax.set_title(f"tiny SDXL on CPU, {w}x{h}, {result['steps']} steps — gain retained "
                 f"{retained:.0%}" if retained is not None else "")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

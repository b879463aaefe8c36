"""Scale-out: images/s through the real service and queue into N executors, local or Ray Serve.

Each executor's pipeline stands in for a GPU: it sleeps what the calibrated cost model
(``bench/cost_model.py``: SDXL on an A100 at 1024², from published figures) gives for the batch,
times ``--time-scale``, with the GIL released, so N executors fit on 2 cores. A batch of 8 costs
2.6x a batch of 1, not the same as before (when every batch slept a fixed time per step). The
requests (64 from 16 users, 4 steps, 64x64 images) go through ``ImagineService.imagine``
(quota, job row), the fair queue, the executors, image storage and delivery bookkeeping.

Two arrivals per run:
- ``backlog``: the 64 requests are accepted before the queue starts; the clock runs from the
  queue's start until the last job is stored and marked delivered. This is the executors'
  throughput under load; ``efficiency`` = images_per_s(N) / (N x images_per_s(1)) uses it.
- ``live``: the queue runs while the 64 requests arrive, so the first idle executors start on
  whatever is queued at that moment (small batches); reported alongside, not used for the goal.

Goal: efficiency >= 0.9 at N = 4 for both backends. Writes bench/results/scale_bench.json and .png.
Not a test: ``python bench/scale_bench.py --backend local ray --replicas 1 2 4 --time-scale 0.25``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from cost_model import CostModel  # noqa: E402
from PIL import Image  # noqa: E402

from bot.service import ImagineService, ServiceSettings, Who  # noqa: E402
from generation.core.batch import Batch  # noqa: E402
from generation.scheduling.queue import GenerationQueue  # noqa: E402
from generation.core.request import ModelCaps  # noqa: E402
from storage import Database, ImageStore  # noqa: E402

REQUESTS, USERS = 64, 16


class SleepPipeline:
    """An ImagePipeline that sleeps the cost model's time for a batch (as if at 1024²) x ``scale``."""

    caps = ModelCaps(name="simulated", base_resolution=64, steps=(1, 2, 4, 8))
    model_id = "simulated-gpu"

    def __init__(self, scale: float, model: CostModel | None = None) -> None:
        self.scale = scale
        self.model = model or CostModel.published()

    def generate(self, batch: Batch, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        full = 1024 // self.caps.base_resolution  # the small images stand for 1024²-class ones
        seconds = self.model.batch_seconds(batch.width * full, batch.height * full, batch.denoising_steps,
                                           len(batch.items)) * self.scale
        for i in range(1, batch.steps + 1):
            time.sleep(seconds / batch.steps)
            if on_step is not None:
                on_step(i, batch.steps)
        return [Image.new("RGB", (batch.width, batch.height), (item.seed % 256, 0, 0)) for item in batch.items]


async def feed(executors: list[Any], data: Path, arrival: str) -> dict[str, Any]:
    """64 requests from 16 users through the service into ``executors``; images/s."""
    queue = GenerationQueue(executors, max_batch_images=8, max_queued_images=10_000, max_queued_per_user=10_000)
    async with Database.open(data / "bench.db") as db:
        service = ImagineService(db, ImageStore(data / "images"), queue,
                                 settings=ServiceSettings(daily_quota=1_000_000, data_dir=data))
        people = [Who("bench", str(i), f"user{i}") for i in range(USERS)]
        tag = f"{arrival}-{time.monotonic_ns()}"

        async def deliver(ticket: Any) -> None:
            delivery = await ticket.delivery()
            assert await service.mark_delivered(delivery.job_id)

        if arrival == "live":
            queue.start()
            start = time.perf_counter()
            tickets = await asyncio.gather(*(
                service.imagine(people[i % USERS], f"a lighthouse {tag} {i} --seed {i} --steps 4")
                for i in range(REQUESTS)))
        else:
            tickets = await asyncio.gather(*(
                service.imagine(people[i % USERS], f"a lighthouse {tag} {i} --seed {i} --steps 4")
                for i in range(REQUESTS)))
            start = time.perf_counter()
            queue.start()
        await asyncio.gather(*(deliver(t) for t in tickets))
        elapsed = time.perf_counter() - start
        delivered = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'delivered'")
        await queue.close()
        await service.close()
    snap = queue.snapshot()
    return {"arrival": arrival, "images": REQUESTS, "seconds": round(elapsed, 3),
            "images_per_s": round(REQUESTS / elapsed, 3), "batches": snap.batches_run,
            "delivered_rows": delivered, "retries": snap.retries}


async def run_local(n: int, scale: float, data: Path) -> list[dict[str, Any]]:
    from generation.scheduling.worker import Worker

    workers = [Worker(SleepPipeline(scale), name=f"sim-{i}") for i in range(n)]
    for worker in workers:
        worker.start()
    try:
        return [await feed(workers, data / arrival, arrival) for arrival in ("backlog", "live")]
    finally:
        for worker in workers:
            await worker.close()


async def run_ray(n: int, scale: float, data: Path) -> list[dict[str, Any]]:
    import cost_model
    import ray.cloudpickle

    from generation.scheduling.ray_backend import RayExecutor

    ray.cloudpickle.register_pickle_by_value(cost_model)  # the replicas do not have bench/ on their path
    executor = RayExecutor.connect(  # blocks the loop while the replicas start: nothing else runs yet
        lambda: SleepPipeline(scale), replicas=n, gpus_per_replica=0, cpus_per_replica=0,
        ray_init={"num_cpus": 2, "num_gpus": 0, "object_store_memory": 200 * 1024**2, "include_dashboard": False,
                  "configure_logging": False})
    runs = [await feed([executor], data / arrival, arrival) for arrival in ("backlog", "live")]
    runs[0]["replicas_used"] = len(executor.replicas_seen)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", choices=("local", "ray"), default=["local"])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--time-scale", type=float, default=0.25,
                        help="real seconds per modelled GPU second (0.25: a full batch of 8 sleeps 0.32 s)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if "ray" in args.backend:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local cluster on 127.0.0.1

    out = Path(args.out)
    path = out / "scale_bench.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    results: dict[str, Any] = previous.get("backends", {})
    for backend in args.backend:
        runner = run_local if backend == "local" else run_ray
        rows = []

        async def all_sizes() -> list[list[dict[str, Any]]]:  # one loop: Ray's handles outlive a run
            measured = []
            for n in args.replicas:
                with tempfile.TemporaryDirectory() as tmp:
                    measured.append(await runner(n, args.time_scale, Path(tmp)))
            return measured

        for n, (backlog, live) in zip(args.replicas, asyncio.run(all_sizes())):
            rows.append({"executors": n, "images_per_s": backlog["images_per_s"], "backlog": backlog, "live": live})
            print(f"{backend} N={n}: backlog {backlog['images_per_s']:.2f} img/s ({backlog['batches']} batches), "
                  f"live {live['images_per_s']:.2f} img/s ({live['batches']} batches)", flush=True)
        base = next((r["images_per_s"] for r in rows if r["executors"] == 1), None)
        for row in rows:
            if base:
                row["efficiency"] = round(row["images_per_s"] / (row["executors"] * base), 3)
                row["live"]["efficiency"] = round(
                    row["live"]["images_per_s"] / (row["executors"] * next(
                        r["live"]["images_per_s"] for r in rows if r["executors"] == 1)), 3)
        results[backend] = {"time_scale": args.time_scale, "cost_model": CostModel.published().to_dict(), "runs": rows,
                            "command": "python bench/scale_bench.py " + " ".join(sys.argv[1:])}
        if backend == "ray":
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    at4 = {b: next((r.get("efficiency") for r in v["runs"] if r["executors"] == 4), None) for b, v in results.items()}
    summary = {
        "benchmark": "scale_bench",
        "command": "python bench/scale_bench.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "requests": REQUESTS, "users": USERS, "steps": 4, "max_batch_images": 8,
        "backends": results,
        "goal": "efficiency >= 0.9 at N = 4 (backlog arrival)",
        "efficiency_at_4": at4,
        "goal_met": {b: (e is not None and e >= 0.9) for b, e in at4.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, out / "scale_bench.png")
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for backend, data in results.items():
        ns = [r["executors"] for r in data["runs"]]
        ax.plot(ns, [r["images_per_s"] for r in data["runs"]], "o-", label=f"{backend} (backlog)")
        ax.plot(ns, [r["live"]["images_per_s"] for r in data["runs"]], "x--", label=f"{backend} (live arrival)")
        base = next((r["images_per_s"] for r in data["runs"] if r["executors"] == 1), None)
        if base and backend == next(iter(results)):
            ax.plot(ns, [n * base for n in ns], ":", color="grey", label="linear")
    ax.set_xlabel("executors (simulated GPUs)")
    ax.set_ylabel("images / s (submit → stored → delivered)")
    ax.set_title("scale-out, 64 requests from 16 users, simulated GPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

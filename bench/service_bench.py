"""Service throughput with a zero-cost pipeline: how many jobs/s does the bookkeeping sustain?

Path measured per job: parse -> prompt check -> quota (atomic) + job row -> queue -> worker thread
-> image check -> PNG encode + content-addressed file + image rows -> done -> delivered.
The pipeline returns 64x64 images at once, so only the bot's own overhead is timed.
Goal: >= 300 jobs/s at 32 in flight on the 2-core CI machine, median of 5 rounds. The rounds are
interleaved (round 1 at every concurrency, then round 2, ...) so a slow minute of a shared
machine lands on all of them alike; the JSON keeps every round, the median and the spread.
``--sqlite inline threaded`` runs each round both ways (SQLite statements on the event loop, or
each on the database's thread as before issue #29) and records the per-round ratio.
``--profile PATH`` also writes a cProfile of one extra round at 32 in flight to PATH (the event
loop's thread only, top 25 by own time, as text). ``--flame PNG`` samples one more round's timed
part with py-spy (``pip install py-spy``; it attaches to this process) and draws the event loop's
thread as a flame graph (bench/flame.py), with the table of the widest frames beside it as JSON.
Writes bench/results/service_bench.json and .png.
Not a test: run `python bench/service_bench.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from bot.service import ImagineService, ServiceSettings, Who  # noqa: E402
from generation.core.batch import Batch  # noqa: E402
from generation.scheduling.queue import GenerationQueue  # noqa: E402
from generation.core.request import ModelCaps  # noqa: E402
from generation.scheduling.worker import Worker  # noqa: E402
from storage import Database, ImageStore  # noqa: E402


class ZeroCostPipeline:
    """An ImagePipeline that returns small distinct images instantly."""

    caps = ModelCaps(name="zero", base_resolution=64, steps=(1, 2, 4, 8))
    model_id = "zero-cost"

    def generate(self, batch: Batch, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        if on_step is not None:
            on_step(batch.steps, batch.steps)
        return [Image.new("RGB", (batch.width, batch.height), (item.seed % 256, 0, 0)) for item in batch.items]


async def run(jobs: int, users: int, concurrency: int, data: Path, sqlite: str = "inline",
              sampler: Any = None) -> dict:
    worker = Worker(ZeroCostPipeline())
    worker.start()
    queue = GenerationQueue(worker, max_batch_images=8, max_queued_images=10_000, max_queued_per_user=10_000)
    queue.start()
    async with Database.open(data / "bench.db", **({"threaded": True} if sqlite == "threaded" else {})) as db:
        service = ImagineService(
            db, ImageStore(data / "images"), queue,
            settings=ServiceSettings(daily_quota=1_000_000, data_dir=data),
        )
        people = [Who("bench", str(i), f"user{i}") for i in range(users)]
        latencies: list[float] = []
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with semaphore:
                start = time.perf_counter()
                ticket = await service.imagine(people[i % users], f"a lighthouse, variant {i} --seed {i}")
                delivery = await ticket.delivery()
                assert await service.mark_delivered(delivery.job_id)
                latencies.append(time.perf_counter() - start)

        try:  # the prompt filter loads its word lists in the background: not during the timing
            from bot.safety import words
        except ImportError:
            pass
        else:
            words.preload(background=False)
        await one(jobs)  # warm-up
        latencies.clear()
        if sampler is not None:
            sampler.start()
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if sampler is not None:
            sampler.stop()
        delivered = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'delivered'")
        await queue.close()
        await service.close()
        await worker.close()
    latencies.sort()
    return {
        "jobs": jobs,
        "sqlite": sqlite,
        "users": users,
        "concurrency": concurrency,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        # CPU seconds of the whole process (every thread) per job: less at the mercy of a shared
        # machine's load than jobs/s, which is wall time
        "cpu_ms_per_job": 1000 * cpu / jobs,
        "delivered_rows": delivered,
        "latency_ms": {
            "p50": 1000 * latencies[len(latencies) // 2],
            "p95": 1000 * latencies[int(len(latencies) * 0.95)],
            "max": 1000 * latencies[-1],
        },
        "batches": queue.batches_run,
    }


def one_round(jobs: int, users: int, concurrency: int, tmpdir: str | None, sqlite: str = "inline",
              sampler: Any = None) -> dict:
    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        return asyncio.run(run(jobs, users, concurrency, Path(tmp), sqlite, sampler))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--sqlite", nargs="+", choices=("inline", "threaded"), default=["inline"],
                        help="where SQLite statements run: inline (on the event loop, the default) and/or "
                             "threaded (each on the database's thread: the path before issue #29); "
                             "both: interleaved in every round, for a before/after")
    parser.add_argument("--tmpdir", default=None, help="where the database and images go (default: the system's)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile (text) of one more round at 32 in flight to this file")
    parser.add_argument("--flame", type=Path, default=None,
                        help="sample one more round at 32 in flight with py-spy and draw the event loop's "
                             "flame graph to this PNG (the widest frames go to a .json beside it)")
    parser.add_argument("--versus", metavar="REF", default=None,
                        help="a before/after against git REF: each round runs this tree and REF (a temporary "
                             "worktree), each in a fresh process, interleaved; writes service_bench_versus.json")
    parser.add_argument("--tag", default="", help="with --versus: write service_bench_versus_TAG.json")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if args.versus is not None:
        return versus(args, argv if argv is not None else sys.argv[1:])

    load_before = os.getloadavg()[0]
    rounds: dict[tuple[str, int], list[dict]] = {(m, c): [] for c in args.concurrency for m in args.sqlite}
    for number in range(1, args.rounds + 1):
        for concurrency in args.concurrency:
            for mode in args.sqlite:
                result = one_round(args.jobs, args.users, concurrency, args.tmpdir, mode)
                rounds[(mode, concurrency)].append(result)
                print(f"round {number}, {mode}, concurrency {concurrency}: {result['jobs_per_s']:.0f} jobs/s, "
                      f"{result['cpu_ms_per_job']:.2f} CPU ms/job, "
                      f"p50 {result['latency_ms']['p50']:.1f} ms, p95 {result['latency_ms']['p95']:.1f} ms",
                      flush=True)
    runs = []
    for (mode, concurrency), results in rounds.items():
        rates = [r["jobs_per_s"] for r in results]
        runs.append({"sqlite": mode, "concurrency": concurrency, "jobs": args.jobs, "users": args.users,
                     "jobs_per_s": statistics.median(rates), "min_jobs_per_s": min(rates),
                     "cpu_ms_per_job": statistics.median(r["cpu_ms_per_job"] for r in results),
                     "max_jobs_per_s": max(rates), "rounds": results})
    at32 = next((r["jobs_per_s"] for r in runs if r["concurrency"] == 32 and r["sqlite"] == "inline"), None)
    summary = {
        "benchmark": "service_bench",
        "command": "python bench/service_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "rounds": args.rounds,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "runs": runs,
        "median_jobs_per_s_at_32": at32,
        "goals": {"jobs_per_s_at_32": {"value": at32, "target": 300, "sense": ">=",
                                       "met": at32 is not None and at32 >= 300}},
    }
    if set(args.sqlite) == {"inline", "threaded"}:  # the before/after, round by round
        for concurrency in args.concurrency:
            ratios = [a["jobs_per_s"] / b["jobs_per_s"] for a, b in zip(rounds[("inline", concurrency)],
                                                                          rounds[("threaded", concurrency)])]
            summary.setdefault("inline_vs_threaded", {})[str(concurrency)] = {
                "median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
                "per_round": ratios}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        summary["profile"] = profile(args, out)
    if args.flame is not None:
        summary["flame"] = flame_round(args)
    (out / "service_bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(runs, out / "service_bench.png")
    return 0


def profile(args: argparse.Namespace, out: Path) -> dict:
    """One more round at 32 in flight under cProfile; the top 25 functions by own time as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = one_round(args.jobs, args.users, 32, args.tmpdir)
    profiler.disable()
    args.profile.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    args.profile.write_text(text.getvalue())
    return {"top": str(args.profile), "jobs_per_s_profiled": result["jobs_per_s"]}


def versus(args: argparse.Namespace, argv: list[str]) -> int:
    """Rounds of this tree and of git ``args.versus``, interleaved, each a fresh ``--rounds 1`` process."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    base = Path(tempfile.mkdtemp(prefix="service-bench-versus-"))
    tree = base / "tree"
    subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(tree), args.versus],
                   check=True, capture_output=True)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    sides = {"this tree": here, f"{args.versus} ({commit})": tree}
    load_before = os.getloadavg()[0]
    rounds: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in args.concurrency} for name in sides}
    try:
        for number in range(1, args.rounds + 1):
            for concurrency in args.concurrency:
                for name, root in sides.items():
                    out = base / f"out-{len(rounds[name][concurrency])}-{concurrency}-{abs(hash(name))}"
                    subprocess.run([sys.executable, str(root / "bench" / "service_bench.py"), "--rounds", "1",
                                    "--jobs", str(args.jobs), "--users", str(args.users),
                                    "--concurrency", str(concurrency), "--out", str(out)],
                                   check=True, capture_output=True, cwd=root)
                    run_ = json.loads((out / "service_bench.json").read_text())["runs"][0]["rounds"][0]
                    rounds[name][concurrency].append(run_)
                    print(f"round {number}, {name}, concurrency {concurrency}: {run_['jobs_per_s']:.0f} jobs/s, "
                          f"{run_['cpu_ms_per_job']:.2f} CPU ms/job", flush=True)
    finally:
        subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tree)], capture_output=True)
    (now, now_rounds), (then, then_rounds) = rounds.items()
    summary: dict[str, Any] = {
        "benchmark": "service_bench --versus",
        "command": "python bench/service_bench.py " + " ".join(argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "sides": [now, then], "by_concurrency": {},
    }
    for concurrency in args.concurrency:
        a, b = now_rounds[concurrency], then_rounds[concurrency]
        ratios = [x["jobs_per_s"] / y["jobs_per_s"] for x, y in zip(a, b)]
        summary["by_concurrency"][str(concurrency)] = {
            side: {"median_jobs_per_s": statistics.median(r["jobs_per_s"] for r in rs),
                   "jobs_per_s": [round(r["jobs_per_s"], 1) for r in rs],
                   "median_cpu_ms_per_job": statistics.median(r["cpu_ms_per_job"] for r in rs),
                   "rounds": rs}
            for side, rs in ((now, a), (then, b))}
        summary["by_concurrency"][str(concurrency)]["ratio"] = {
            "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "per_round": ratios}
        print(f"concurrency {concurrency}: {now} {statistics.median(r['jobs_per_s'] for r in a):.0f} jobs/s, "
              f"{then} {statistics.median(r['jobs_per_s'] for r in b):.0f}; ratio median {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"service_bench_versus_{args.tag}.json" if args.tag else "service_bench_versus.json"
    (out / name).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def flame_round(args: argparse.Namespace) -> dict:
    """One more round at 32 in flight, its timed part sampled by py-spy: the loop's flame graph."""
    import flame

    sampler = flame.PySpy(rate=250)
    result = one_round(args.jobs, args.users, 32, args.tmpdir, sampler=sampler)
    every = sampler.stacks()  # every thread's: the loop, the GPU worker, the PNG and image-check threads
    flame.write_collapsed(every, args.flame.with_suffix(".threads.txt"))
    stacks = flame.loop_stacks(every)
    title = (f"service_bench: the event loop's thread, {args.jobs} jobs at 32 in flight "
             f"({result['jobs_per_s']:.0f} jobs/s while sampled)")
    flame.draw(stacks, args.flame, title=title)
    flame.write_collapsed(stacks, args.flame.with_suffix(".txt"))
    table = flame.widest(stacks, 30)
    args.flame.with_suffix(".json").write_text(json.dumps(
        {"command": "python bench/service_bench.py " + " ".join(sys.argv[1:]),
         "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                    f"{platform.python_version()}",
         "load_average_1min": round(os.getloadavg()[0], 2), "jobs_per_s_sampled": result["jobs_per_s"],
         "samples": sum(stacks.values()),
         "loop_busy_share": sum(stacks.values()) / (sampler.rate * sampler.seconds), "widest": table}, indent=2) + "\n")
    return {"png": str(args.flame), "jobs_per_s_sampled": result["jobs_per_s"], "widest": table[:12]}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [f"{r['concurrency']} · {r['sqlite']}" for r in runs]
    medians = [r["jobs_per_s"] for r in runs]
    spread = [[m - r["min_jobs_per_s"] for m, r in zip(medians, runs)],
              [r["max_jobs_per_s"] - m for m, r in zip(medians, runs)]]
    colors = ["tab:blue" if r["sqlite"] == "inline" else "tab:gray" for r in runs]
    ax.bar(xs, medians, yerr=spread, capsize=4, color=colors, label="median (bars: min..max of rounds)")
    ax.axhline(300, color="tab:red", ls="--", label="goal: 300 jobs/s")
    ax.set_xlabel("requests in flight · where SQLite runs")
    ax.set_ylabel("jobs / s (parse → stored → delivered)")
    ax.set_title(f"service overhead, zero-cost pipeline, {runs[0]['jobs']} jobs, "
                 f"{len(runs[0]['rounds'])} interleaved rounds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

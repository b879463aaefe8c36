"""bench/queue_bench.py's parts: the cost model, the traces, the virtual clock, the baseline
policies, and the whole bench in a tiny configuration (no timing assertions: time is virtual)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from cost_model import PUBLISHED, CostModel, fit_published  # noqa: E402
from queue_policies import FifoGreedy, FifoOne, FixedWindow  # noqa: E402
from traces import MIX, poisson, rate_for_load, with_burst  # noqa: E402
from virtual_time import run_virtual  # noqa: E402

from generation.scheduling.policy import FairState  # noqa: E402


# -- the cost model ---------------------------------------------------------------------------------


def test_the_published_fit_reproduces_each_figure_within_three_percent() -> None:
    model, residuals = fit_published()
    assert [r["figure"] for r in residuals] == [f.name for f in PUBLISHED]
    assert all(abs(r["error"]) < 0.03 for r in residuals), residuals
    assert model.a > 0 and model.b > 0 and model.c > 0 and model.v > 0
    # the figure the fit was given, predicted back from the model's own formula
    sdxl = next(f for f in PUBLISHED if f.name == "sdxl-fp16-sdpa-4")
    px = 1.0
    predicted = model.c + sdxl.steps * (model.a + model.b * sdxl.unet_batch * px) + model.v * sdxl.images * px
    assert predicted == pytest.approx(sdxl.seconds, rel=0.03)


def test_batching_pays_and_cost_grows_with_steps_and_pixels() -> None:
    model = CostModel.published()
    one, eight = model.batch_seconds(1024, 1024, 4, 1), model.batch_seconds(1024, 1024, 4, 8)
    assert one < eight < 8 * one  # a batch of 8 costs more than 1 image, far less than 8 calls
    assert model.images_per_second(1024, 1024, 4, 8) > 2.5 * model.images_per_second(1024, 1024, 4, 1)
    assert model.batch_seconds(1024, 1024, 8, 4) > model.batch_seconds(1024, 1024, 4, 4)
    assert model.batch_seconds(512, 512, 4, 4) < model.batch_seconds(1024, 1024, 4, 4)
    with pytest.raises(ValueError, match="at least one image"):
        model.batch_seconds(1024, 1024, 4, 0)


def test_a_gpu_bench_json_calibrates_a_model_that_predicts_its_batches(tmp_path: Path) -> None:
    truth = CostModel(a=0.02, b=0.01, c=0.05, v=0.015)
    rows = [{"batch": n, "seconds_per_batch": truth.batch_seconds(1024, 1024, 4, n)} for n in (1, 4, 8)]
    path = tmp_path / "gpu_bench_h100.json"
    path.write_text(json.dumps({"device": "NVIDIA H100", "resolution": [1024, 1024], "steps": 4,
                                "flops_per_1024_image": {"unet_step": 2.0, "vae_decode": 3.0},
                                "modes": {"ours": rows}}))
    model = CostModel.from_gpu_bench(path)
    assert model.source == "gpu_bench: NVIDIA H100"
    for row in rows:
        assert model.batch_seconds(1024, 1024, 4, row["batch"]) == pytest.approx(row["seconds_per_batch"])
    assert model.v == pytest.approx(1.5 * model.b)


# -- traces -------------------------------------------------------------------------------------------


def test_a_seed_gives_the_same_trace_and_another_seed_another() -> None:
    assert poisson(2.0, 200, seed=5) == poisson(2.0, 200, seed=5)
    assert poisson(2.0, 200, seed=5) != poisson(2.0, 200, seed=6)
    assert with_burst(poisson(2.0, 50, 1), 3) == with_burst(poisson(2.0, 50, 1), 3)


def test_traces_mix_heavy_and_light_users_and_realistic_shapes() -> None:
    trace = poisson(2.0, 400, seed=11)
    assert [a.at for a in trace] == sorted(a.at for a in trace)
    per_user: dict[str, int] = {}
    for a in trace:
        per_user[a.user] = per_user.get(a.user, 0) + 1
    heavy = {u: n for u, n in per_user.items() if u.startswith("heavy")}
    light = {u: n for u, n in per_user.items() if not u.startswith("heavy")}
    assert len(heavy) == 4 and min(heavy.values()) >= 10
    assert light and set(light.values()) == {1}
    aspects = [a.aspect for a in trace]
    assert aspects.count("1:1") > aspects.count("16:9") > 0 and aspects.count("9:16") > 0
    assert {a.count for a in trace} == {1, 2, 3, 4} and {a.steps for a in trace} == {4, 8}
    # mean gap near 1 / rate
    assert trace[-1].at / len(trace) == pytest.approx(0.5, rel=0.15)
    assert "--ar 16:9" in next(a for a in trace if a.aspect == "16:9").text(3)


def test_a_burst_is_fifteen_members_of_one_group_within_twenty_seconds() -> None:
    base = poisson(1.0, 100, seed=2)
    trace = with_burst(base, seed=9)
    burst = [a for a in trace if a.kind == "burst"]
    assert len(trace) == 115 and len(burst) == 15
    assert {a.group for a in burst} == {"group-1"} and len({a.user for a in burst}) == 15
    assert max(a.at for a in burst) - min(a.at for a in burst) <= 20.0


def test_rate_for_load_scales_with_load_and_executors() -> None:
    model = CostModel.published()
    one = rate_for_load(0.5, model)
    assert rate_for_load(1.0, model) == pytest.approx(2 * one)
    assert rate_for_load(0.5, model, executors=4) == pytest.approx(4 * one)
    # at load 1 with full batches, images asked per second == images the GPU makes per second
    full = model.images_per_second(1024, 1024, 4, 8)
    assert rate_for_load(1.0, model) * MIX.mean_count() < full


# -- the virtual clock ----------------------------------------------------------------------------------


def test_virtual_time_jumps_over_sleeps_but_stands_still_while_a_thread_works() -> None:
    async def main() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        after_sleep = loop.time()
        await asyncio.to_thread(time.sleep, 0.05)  # real work in a thread: no virtual time passes
        after_thread = loop.time()
        both = await asyncio.gather(asyncio.sleep(10, "late"), asyncio.to_thread(time.sleep, 0.05))
        assert both[0] == "late"
        return after_sleep, after_thread, loop.time()

    started = time.perf_counter()
    after_sleep, after_thread, end = run_virtual(main)
    assert time.perf_counter() - started < 30
    assert after_sleep == pytest.approx(3600)
    assert after_thread == pytest.approx(3600)
    assert end == pytest.approx(3610)


# -- baseline policies ----------------------------------------------------------------------------------


class Cand:
    def __init__(self, user: str, seq: int, shape: tuple = (1,), images: int = 1, at: float = 0.0) -> None:
        self.user, self.seq, self.shape, self.images = user, seq, shape, images
        self.priority, self.submitted_at = False, at


def test_fifo_baselines_pick_the_oldest_and_greedy_adds_same_shape_that_fits() -> None:
    jobs = [Cand("a", 3, (2,)), Cand("b", 1, (1,), 3), Cand("a", 2, (1,), 4), Cand("c", 4, (1,), 2)]
    assert [j.seq for j in FifoOne().pick(jobs, FairState(), max_images=8, priority_burst=3)[0]] == [1]
    # 1 (3 images) + 2 (4) = 7; 4 (2 images) no longer fits
    assert [j.seq for j in FifoGreedy().pick(jobs, FairState(), max_images=8, priority_burst=3)[0]] == [1, 2]
    assert FifoGreedy().pick([], FairState(), max_images=8, priority_burst=3)[0] == []


def test_fixed_window_holds_until_the_oldest_waited_its_delay_unless_the_batch_is_full() -> None:
    policy = FixedWindow(0.5)
    jobs = [Cand("a", 1, at=10.0), Cand("b", 2, at=10.2)]
    batch, _ = policy.pick(jobs, FairState(), max_images=8, priority_burst=3)
    assert policy.hold(batch, jobs, now=10.1, max_images=8) == pytest.approx(0.4)
    assert policy.hold(batch, jobs, now=10.6, max_images=8) == 0.0
    full = [Cand("a", 1, images=4, at=10.0), Cand("b", 2, images=4, at=10.0)]
    assert policy.hold(full, full, now=10.0, max_images=8) == 0.0
    with pytest.raises(ValueError, match="delay"):
        FixedWindow(-1)


# -- the bench, tiny ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_bench_runs_every_policy_and_writes_goals_and_a_plot(tmp_path: Path) -> None:
    import queue_bench

    assert queue_bench.main(["--requests", "12", "--loads", "0.8", "--executors", "1", "4",
                             "--delays", "0.1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "queue_bench.json").read_text())
    assert (tmp_path / "queue_bench.png").stat().st_size > 0
    assert result["policies"] == ["fair", "fair-unbounded", "fifo-one", "fifo-greedy", "fixed-window-100ms"]
    poisson_runs = [r for r in result["runs"] if r["trace"] == "poisson"]
    assert {(r["policy"], r["executors"]) for r in poisson_runs} == {
        (p, n) for p in result["policies"] for n in (1, 4) if n == 1 or p != "fifo-one"}
    for run in result["runs"]:  # every request of every trace was delivered
        assert run["requests"] == (12 if run["trace"] == "poisson" else 27)
        assert run["p50_s"] <= run["p99_s"] <= run["max_s"]
        assert 0 < run["jain_stretch"] <= 1
    burst = [r for r in result["runs"] if r["trace"] == "burst"]
    assert all(r["burst"]["requests"] == 15 for r in burst)
    assert set(result["goals"]) == {"p99_vs_fifo_one_at_80", "throughput_vs_best_at_80",
                                    "light_behind_heavy_p99_s_at_80", "p99_4_gpus_vs_1_at_80"}
    for goal in result["goals"].values():
        assert set(goal) == {"value", "target", "sense", "met"}
        within = goal["value"] <= goal["target"] if goal["sense"] == "<=" else goal["value"] >= goal["target"]
        assert goal["met"] == within
    # the patience sweep is a mode of its own, with a file of its own
    assert queue_bench.main(["--requests", "12", "--loads", "0.8", "--sweep-patience", "2", "--sweep-seeds", "1",
                             "--out", str(tmp_path)]) == 0
    sweep = json.loads((tmp_path / "queue_bench_patience.json").read_text())
    assert [(r["seed"], r["patience"]) for r in sweep["runs"]] == [(1, None), (1, 2)]
    assert all(r["p50_s"] <= r["p99_s"] for r in sweep["runs"])


@pytest.mark.slow
def test_the_service_bench_interleaves_rounds_and_reports_medians_with_their_spread(tmp_path: Path) -> None:
    import service_bench

    assert service_bench.main(["--jobs", "6", "--users", "3", "--rounds", "3", "--concurrency", "2", "32",
                               "--profile", str(tmp_path / "profile.txt"), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "service_bench.json").read_text())
    assert [r["concurrency"] for r in result["runs"]] == [2, 32]
    for run in result["runs"]:
        rates = sorted(r["jobs_per_s"] for r in run["rounds"])
        assert len(rates) == 3 and all(r["delivered_rows"] == 7 for r in run["rounds"])  # 6 + the warm-up
        assert (run["min_jobs_per_s"], run["jobs_per_s"], run["max_jobs_per_s"]) == (rates[0], rates[1], rates[2])
    goal = result["goals"]["jobs_per_s_at_32"]
    assert goal["value"] == result["runs"][1]["jobs_per_s"] and goal["met"] == (goal["value"] >= 300)
    assert "function calls" in (tmp_path / "profile.txt").read_text()


@pytest.mark.slow
def test_the_light_bound_and_eta_modes_write_their_files(tmp_path: Path) -> None:
    import queue_bench

    assert queue_bench.main(["--requests", "16", "--loads", "0.8", "--light-bound", "--sweep-seeds",
                             "--out", str(tmp_path)]) == 0
    bound = json.loads((tmp_path / "queue_bench_light_bound.json").read_text())
    runs = {(r["trace"], r["policy"]): r for r in bound["runs"]}
    assert set(runs) == {(t, p) for t in ("full", "light only") for p in ("fair", "fifo-greedy")}
    full, light = runs[("full", "fair")], runs[("light only", "fair")]
    assert light["requests"] < full["requests"] == 16  # the heavy users' requests are gone
    assert light["gpu_busy_s"] < full["gpu_busy_s"]
    assert bound["light_target_s"] > 0
    assert queue_bench.main(["--requests", "16", "--loads", "0.5", "--executors", "1", "--eta", "--sweep-seeds",
                             "--out", str(tmp_path)]) == 0
    eta = json.loads((tmp_path / "queue_bench_eta.json").read_text())
    assert [r["estimator"] for r in eta["runs"]] == ["per-image", "shape-aware"]
    for run in eta["runs"]:
        assert run["requests"] == 8  # the second half of the trace
        assert 0 <= run["median_abs_rel"] <= run["p90_abs_rel"] and 0 <= run["within_25_percent"] <= 1


def test_eta_error_compares_what_was_told_with_what_it_took() -> None:
    import queue_bench

    records = [{"index": i, "eta": told, "eta_actual": took}
               for i, (told, took) in enumerate([(9, 1), (9, 1), (1.0, 1.0), (1.5, 1.0), (0.5, 1.0), (2.0, 1.0)])]
    error = queue_bench.eta_error(records)  # the first half (the estimator learning) is left out
    assert error["requests"] == 3
    assert error["median_abs_rel"] == pytest.approx(0.5) and error["p90_abs_rel"] == pytest.approx(1.0)
    assert error["within_25_percent"] == 0
    assert error["median_told_over_took"] == pytest.approx(1.5)


def test_flame_keeps_the_loop_stacks_and_draws_them(tmp_path: Path) -> None:
    import flame

    raw = {
        ("Thread._bootstrap (threading.py)", "_worker (thread.py)", "put (images.py)"): 5,
        ("<module> (b.py)", "run_forever (base_events.py)", "Handle._run (events.py)", "imagine (jobs.py)",
         "_fetch (db.py)"): 3,
        ("<module> (b.py)", "run_forever (base_events.py)", "Handle._run (events.py)", "imagine (jobs.py)"): 1,
        ("<module> (b.py)", "run_forever (base_events.py)", "Handle._run (events.py)", "_drain (group.py)"): 4,
    }
    from collections import Counter

    loop = flame.loop_stacks(Counter(raw))
    assert sum(loop.values()) == 8 and all(stack[0] == "Handle._run (events.py)" for stack in loop)
    table = {row["frame"]: row for row in flame.widest(loop)}
    assert table["Handle._run (events.py)"]["share"] == 1.0
    assert table["imagine (jobs.py)"]["share"] == 0.5 and table["imagine (jobs.py)"]["own_share"] == 0.125
    assert table["_fetch (db.py)"]["own_share"] == 0.375
    path = tmp_path / "stacks.txt"
    flame.write_collapsed(loop, path)
    assert flame.read_collapsed(path) == loop
    assert flame._name("imagine (/work/bot/service/jobs.py:120)") == "imagine (jobs.py)"
    flame.draw(loop, tmp_path / "flame.png", title="test")
    assert (tmp_path / "flame.png").read_bytes()[:4] == b"\x89PNG"

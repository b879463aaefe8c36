"""Prompt-filter benchmark on the project's tables: catch rate per family, false refusals, speed.

Reads tests/data/safety_disguised.tsv (family, category, prompt: must be refused) and
tests/data/safety_innocent.tsv (family, prompt: must be allowed), checks every prompt with the
shipped BlocklistChecker, and prints the catch rate per family, every miss, every false
refusal and prompts per second on one core over the tables' prompts: "cold" passes start with
every cache emptied (token lookups, word splits, language guesses; the word lists and models
stay loaded, as in a running bot), "warm" passes reuse them; medians of ``--rounds`` passes,
interleaved, in wall-clock time and in CPU time of the process (which a busy machine does not
distort). Goal: >= 95 % caught, 0 false refusals, >= 10,000 prompts/s.
Writes bench/results/safety_bench.json. Not a test: run `python bench/safety_bench.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.safety import BlocklistChecker  # noqa: E402
from bot.safety import words  # noqa: E402
from bot.safety.lexicon import collapse  # noqa: E402

DATA = ROOT / "tests" / "data"


def read_table(path: Path) -> list[list[str]]:
    """Rows of a tab-separated table, comments and blank lines skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def clear_caches(checker: BlocklistChecker) -> None:
    """Forget every per-token result, as if the process had only just loaded its lists."""
    checker.matcher.index._seen.clear()
    checker.matcher._seen.clear()
    collapse.cache_clear()
    words.segment.cache_clear()
    words.language.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="cold and warm passes over both tables for speed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "safety_bench.json")
    args = parser.parse_args()

    disguised = read_table(DATA / "safety_disguised.tsv")
    innocent = read_table(DATA / "safety_innocent.tsv")
    started = time.perf_counter()
    checker = BlocklistChecker.default()
    words.count("warm")  # load the word frequencies and the language model (once per process)
    words.language("warm up")
    setup_s = time.perf_counter() - started

    families: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses, wrong_category, false_refusals = [], [], []
    tiers: dict[str, int] = defaultdict(int)
    for family, category, prompt in disguised:
        verdict = checker.check(prompt)
        families[family][1] += 1
        if verdict.allowed:
            misses.append({"family": family, "prompt": prompt})
            continue
        families[family][0] += 1
        tiers[verdict.tier or "high"] += 1
        if verdict.category != category:
            wrong_category.append({"prompt": prompt, "expected": category, "got": verdict.category})
    for family, prompt in innocent:
        verdict = checker.check(prompt)
        if not verdict.allowed:
            false_refusals.append({"family": family, "prompt": prompt, "category": verdict.category,
                                   "tier": verdict.tier, "rule": verdict.rule})
    prompts = [row[-1] for row in disguised] + [row[-1] for row in innocent]

    cold, warm, cold_cpu, warm_cpu = [], [], [], []
    for _ in range(args.rounds):
        clear_caches(checker)
        for times, cpu in ((cold, cold_cpu), (warm, warm_cpu)):
            t, c = time.perf_counter(), time.process_time()
            for prompt in prompts:
                checker.check(prompt)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    cold_rate = len(prompts) / statistics.median(cold)
    warm_rate = len(prompts) / statistics.median(warm)
    cold_cpu_rate = len(prompts) / statistics.median(cold_cpu)
    warm_cpu_rate = len(prompts) / statistics.median(warm_cpu)

    caught = sum(c for c, _ in families.values())
    rate = caught / len(disguised)
    print(f"{'family':<28} caught")
    for family, (c, n) in families.items():
        print(f"{family:<28} {c:>3}/{n:<3} {100 * c / n:5.1f} %")
    print(f"\ncaught {caught}/{len(disguised)} = {100 * rate:.1f} % (tiers: {dict(tiers)}); "
          f"false refusals {len(false_refusals)}/{len(innocent)}; wrong category {len(wrong_category)}")
    for miss in misses:
        print(f"  MISS   [{miss['family']}] {miss['prompt']!r}")
    for wrong in false_refusals:
        print(f"  REFUSED [{wrong['family']}] {wrong['prompt']!r} -> {wrong['category']} ({wrong['tier']}, {wrong['rule']})")
    for wrong in wrong_category:
        print(f"  CATEGORY {wrong['prompt']!r}: expected {wrong['expected']}, got {wrong['got']}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nspeed (wall clock): {cold_rate:,.0f} prompts/s cold caches, {warm_rate:,.0f} prompts/s warm; "
          f"per CPU second of one core: {cold_cpu_rate:,.0f} cold, {warm_cpu_rate:,.0f} warm "
          f"(medians of {args.rounds} passes over {len(prompts)} prompts; load average {load:.1f} on "
          f"{os.cpu_count()} cores); setup {setup_s:.2f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python bench/safety_bench.py " + " ".join(sys.argv[1:]),
        "disguised": len(disguised), "innocent": len(innocent), "caught": caught, "catch_rate": round(rate, 4),
        "false_refusals": false_refusals, "misses": misses, "wrong_category": wrong_category,
        "families": {f: {"caught": c, "total": n} for f, (c, n) in families.items()}, "tiers": dict(tiers),
        "prompts_per_s_cold": round(cold_rate), "prompts_per_s_warm": round(warm_rate),
        "prompts_per_cpu_s_cold": round(cold_cpu_rate), "prompts_per_cpu_s_warm": round(warm_cpu_rate),
        "load_average": round(load, 1), "cpu_count": os.cpu_count(), "setup_s": round(setup_s, 2),
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
    }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()

"""Image toolbox benchmark on the tiny model (CPU): upscale (subtle, creative), zoom out and pan,
each against a plain generation of the same output size.

Each case runs in a fresh process (so its peak resident memory is its own), loads the tiny
pipeline, runs once to warm up, then ``--repeat`` times; ``--rounds`` rounds run every case once
each, interleaved, so a change in the machine's load hits all cases alike. It reports the median
seconds, each action's median ratio to the plain generation of its size in the same round, and
the largest peak RSS above what the process held after loading the model:

  plain      txt2img at the upscaled size (2x the base bucket: 512x512 on the tiny model), 4 steps
  subtle     ⬆️ Upscale (Subtle): Lanczos (or --upscaler FILE) 2x, then the tiled img2img pass at 0.3
  creative   ⬆️ Upscale (Creative): the same at 0.55
  network    Subtle with a small random compact Real-ESRGAN network instead of Lanczos
  zoom       🔍 Zoom out 2x of a base-size image: the canvas at the nearest bucket (256x256 on the
             tiny model), the border inpainted at strength 1, as the service asks for it
  plain_zoom txt2img at zoom's output size
  pan        ↔️ Pan left: the canvas 1.5x as wide, at its nearest bucket (304x208 on the tiny model)
  plain_pan  txt2img at pan's output size

``relative_to_plain`` divides each case by the plain generation of its own output size. Writes
bench/results/toolbox_bench.json. Not a test: ``python bench/toolbox_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = ("plain", "subtle", "creative", "network", "plain_zoom", "zoom", "plain_pan", "pan")
PLAIN_OF = {"subtle": "plain", "creative": "plain", "network": "plain", "zoom": "plain_zoom", "pan": "plain_pan"}
RESULTS = Path(__file__).resolve().parent / "results" / "toolbox_bench.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(case: str, repeat: int, steps: int) -> dict[str, float]:
    """One case in this process: median seconds and peak RSS growth (MiB) after loading."""
    import numpy as np
    import torch
    from PIL import Image

    from generation.core.batch import Batch, BatchItem
    from generation.model.pipeline import ModelConfig, load_pipeline
    from generation.tools.upscale import SRVGGNetCompact, load_upscaler

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    base = pipeline.caps.base_resolution
    scratch = Path(tempfile.mkdtemp())
    source = scratch / "source.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (base, base, 3), dtype=np.uint8)).save(source)
    if case == "network":
        torch.manual_seed(0)
        path = scratch / "srvgg.pth"
        torch.save(SRVGGNetCompact(num_feat=16, num_conv=4, upscale=4).state_dict(), path)
        pipeline.upscaler = load_upscaler(path)
    from generation.core.request import nearest_bucket
    from generation.tools.outpaint import canvas_ratio

    outpaint = {"zoom": ("zoom", "2"), "pan": ("pan", "left")}
    kind, mode = outpaint.get(case.removeprefix("plain_"), ("upscale", None))
    width, height = ((2 * base, 2 * base) if kind == "upscale"
                     else nearest_bucket(*canvas_ratio(kind, mode, base, base), base))
    if case.startswith("plain"):
        batch = Batch("txt2img", width, height, steps, (BatchItem("a harbour at dawn", "", 1),))
    elif kind != "upscale":  # as ToolboxPart.outpaint asks for it: strength 1, the request's steps
        batch = Batch(kind, width, height, steps, (BatchItem("a harbour at dawn", "", 1, str(source), mode),),
                      strength=1.0)
    else:
        strength = 0.55 if case == "creative" else 0.3
        batch = Batch("upscale", 2 * base, 2 * base, 8 if int(steps * strength) < 1 else steps,
                      (BatchItem("a harbour at dawn", "", 1, str(source)),), strength=strength)
    loaded = _rss_mb()
    pipeline.generate(batch)  # warm-up
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        (image,) = pipeline.generate(batch)
        seconds.append(time.perf_counter() - started)
    assert image.size == (width, height)
    return {"seconds": statistics.median(seconds), "peak_rss_growth_mb": _rss_mb() - loaded,
            "size": f"{width}x{height}", "steps": batch.steps,
            "denoising_steps": batch.denoising_steps, "strength": batch.strength or 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per case in each round (median)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs every case once, interleaved, so load drifts hit all alike")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)  # a child process's case
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.repeat, args.steps)))
        return 0
    rounds: list[dict[str, dict[str, float]]] = []
    load_before = os.getloadavg()[0]
    for number in range(args.rounds):
        found = {}
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--one", case, "--repeat", str(args.repeat),
                                  "--steps", str(args.steps)], check=True, capture_output=True, text=True)
            found[case] = json.loads(out.stdout.strip().splitlines()[-1])
        rounds.append(found)
        print(f"round {number + 1}: " + ", ".join(f"{c} {r['seconds']:.2f} s" for c, r in found.items()), flush=True)
        write_report(args, rounds, load_before)  # what is measured so far survives an interrupted run
    write_report(args, rounds, load_before, final=True)
    return 0


def write_report(args: argparse.Namespace, rounds: list[dict[str, dict[str, float]]], load_before: float, *,
                 final: bool = False) -> None:
    results = {}
    for case in CASES:
        runs = [r[case] for r in rounds]
        results[case] = {**runs[0], "seconds": statistics.median(r["seconds"] for r in runs),
                         "peak_rss_growth_mb": max(r["peak_rss_growth_mb"] for r in runs),
                         "per_round_s": [round(r["seconds"], 3) for r in runs]}
    # each action against the plain generation of its size in the same round, then the median
    relative = {case: round(statistics.median(r[case]["seconds"] / r[PLAIN_OF[case]]["seconds"] for r in rounds), 2)
                for case in CASES if case in PLAIN_OF}
    for case, ratio in (relative.items() if final else ()):
        print(f"{case:9s} {results[case]['seconds']:.2f} s, {ratio:.2f}x {PLAIN_OF[case]} "
              f"(+{results[case]['peak_rss_growth_mb']:.0f} MiB)")
    report = {
        "bench": "toolbox_bench",
        "model": "tiny (random weights, 256 base)",
        "device": "cpu",
        "threads": os.cpu_count(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "rounds": len(rounds),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": "python bench/toolbox_bench.py " + " ".join(sys.argv[1:]),
        "cases": results,
        "relative_to_plain": relative,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    if final:
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())

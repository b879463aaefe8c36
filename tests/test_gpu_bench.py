"""bench/gpu_bench.py stays runnable without a GPU: --dry-run-cpu runs its whole harness on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_cpu_runs_every_mode_and_counts_full_size_flops(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--dry-run-cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_bench_cpu-dry-run.json").read_text())
    assert (tmp_path / "gpu_bench_cpu-dry-run.png").stat().st_size > 0
    assert set(result["modes"]) == {"naive", "ours", "service"}
    assert [row["batch"] for row in result["modes"]["naive"]] == [1, 2]
    assert [row["batch"] for row in result["modes"]["ours"]] == [1, 2]
    assert result["modes"]["service"][0]["batch_sizes"] == [2]  # the queue made one batch of 2
    assert all(row["images_per_s"] > 0 for rows in result["modes"].values() for row in rows)
    # SDXL at 1024²: the UNet pass is several TFLOP; four of them dominate an image
    flops = result["flops_per_1024_image"]
    assert 3e12 < flops["unet_step"] < 3e13
    assert flops["image"] > 4 * flops["unet_step"]
    check = result["check_ours_vs_eager_same_dtype"]
    assert check["max"] <= 3 and check["mean"] <= 0.05
    assert result["goals"] is None  # a CPU dry run claims nothing about the GPU goals

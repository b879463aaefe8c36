"""Why the queue lost its batching gain on CPU: libgomp's two waiting regimes, measured.

One thread ("A") owns the tiny pipeline and times generate() on a batch of 8, alternating:
  alone      no other thread has run torch: A's OpenMP team is the only one, and libgomp
             spin-waits between parallel regions (fast on idle cores, very slow on busy ones)
  + team B   a second thread has run one torch op and waits: two teams now exist, so libgomp
             "throttles" (sleeps between regions) for the whole process, A included
B ends after each round, and with it its team. Prints the medians and every call.

    python bench/omp_regime.py --rounds 8
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from generation.core.batch import Batch, BatchItem  # noqa: E402


class Thread:
    """A thread that runs the functions it is given, one at a time, and returns their results."""

    def __init__(self) -> None:
        self._tx: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._rx: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (function := self._tx.get()) is not None:
            self._rx.put(function())

    def __call__(self, function: Callable[[], Any]) -> Any:
        self._tx.put(function)
        return self._rx.get()

    def stop(self) -> None:
        self._tx.put(None)
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    a = Thread()

    def load() -> Any:
        from generation.model.pipeline import ModelConfig, load_pipeline

        return load_pipeline(ModelConfig(name="tiny", device="cpu"))

    pipeline = a(load)
    batch = Batch("txt2img", args.size, args.size, 4, tuple(BatchItem(f"a lighthouse {i}", "", i) for i in range(8)))

    def timed() -> float:
        start = time.perf_counter()
        pipeline.generate(batch)
        return time.perf_counter() - start

    a(timed)
    alone, shared = [], []
    for _ in range(args.rounds):
        alone += [a(timed), a(timed)]
        b = Thread()
        b(lambda: torch.ones(1 << 22).add_(1))  # B's OpenMP team exists from here on
        shared += [a(timed), a(timed)]
        b.stop()
    for label, times in (("alone (spin)", alone), ("+ team B (throttled)", shared)):
        print(f"{label:22s} median {statistics.median(times):.3f} s  min {min(times):.3f}  max {max(times):.3f}  "
              + " ".join(f"{t:.2f}" for t in times))
    a.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs ``imagine-bot`` with every denoising step slowed down, so a test can kill it mid-batch.

Usage: python tests/slow_bot.py SECONDS_PER_STEP run --config ... (the rest as for imagine-bot)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.__main__ import main  # noqa: E402
from generation.pipeline import LightningPipeline  # noqa: E402

delay = float(sys.argv[1])
_generate = LightningPipeline.generate


def slow_generate(self, batch, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
    def step(i: int, n: int) -> None:
        time.sleep(delay)
        if on_step is not None:
            on_step(i, n)

    return _generate(self, batch, step, should_stop)


LightningPipeline.generate = slow_generate  # type: ignore[method-assign]
sys.exit(main(sys.argv[2:]))

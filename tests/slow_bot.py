"""Runs ``imagine-bot`` with every denoising step slowed down, so a test can kill it mid-batch.

Usage: python tests/slow_bot.py SECONDS_PER_STEP run --config ... (the rest as for imagine-bot)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.__main__ import main  # noqa: E402
from tests.slow_steps import slow_down  # noqa: E402

slow_down(float(sys.argv[1]))
sys.exit(main(sys.argv[2:]))

"""Slows every denoising step of the real pipeline (and fails chosen prompts): shared by the bot
scripts the kill tests start.

``slow_down(seconds)`` patches ``LightningPipeline.generate`` so each step sleeps first, so a test
can kill the process mid-batch (tests/slow_bot.py, tests/kill_bot.py, tests/discord_bot.py).
"""

from __future__ import annotations

import time

from generation.model.pipeline import LightningPipeline

__all__ = ["fail_on", "slow_down"]


def slow_down(delay: float) -> None:
    """Every denoising step of every later generate() call sleeps ``delay`` seconds first."""
    _generate = LightningPipeline.generate

    def slow_generate(self, batch, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        def step(i: int, n: int, *previews: object) -> None:  # previews: the live previews of that step, if any
            time.sleep(delay)
            if on_step is not None:
                on_step(i, n, *previews)

        return _generate(self, batch, step, should_stop)

    LightningPipeline.generate = slow_generate  # type: ignore[method-assign]


def fail_on(word: str) -> None:
    """Every later generate() call whose batch has a prompt containing ``word`` raises (a failure
    the user must be told); nothing changes when ``word`` is empty."""
    if not word:
        return
    _generate = LightningPipeline.generate

    def failing_generate(self, batch, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        if any(word in item.prompt for item in batch.items):
            raise RuntimeError(f"injected failure for prompts with {word!r}")
        return _generate(self, batch, on_step, should_stop)

    LightningPipeline.generate = failing_generate  # type: ignore[method-assign]

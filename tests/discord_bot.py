"""Runs ``imagine-bot`` slowed down (as tests/slow_bot.py) and, on request, kills itself inside a window.

Usage: python tests/discord_bot.py SECONDS_PER_STEP run --config ... (the rest as for imagine-bot)

The image classifier finds nothing (loading NudeNet costs half a minute per start on a busy
machine, and the images of the tiny random model are noise anyway).

``IMAGINE_KILL_AT=<point>:<n>`` SIGKILLs the process the n-th time it reaches ``point``:

    after_defer    a job-making interaction was stored and its deferral answered by Discord,
                   nothing else done yet (the job row is not written)
    before_commit  the job row is inserted inside its transaction; the COMMIT has not run
    after_failed   a job's failure and refund committed; nothing was told yet

``FAIL_PROMPT=WORD``: a batch whose prompt contains WORD fails in the pipeline.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import discord  # noqa: E402

import bot.safety.moderation  # noqa: E402
import storage.jobs  # noqa: E402
from bot.safety.images import AllowAllImages  # noqa: E402
from bot.__main__ import main  # noqa: E402
from tests.slow_steps import fail_on, slow_down  # noqa: E402

point, _, nth = os.environ.get("IMAGINE_KILL_AT", "").partition(":")
_left = int(nth or 1)


def _reached(name: str) -> None:
    global _left
    if point != name:
        return
    _left -= 1
    if _left == 0:
        print(f"discord_bot: SIGKILL at {name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


_defer = discord.InteractionResponse.defer
_create = storage.jobs.create
_settle = storage.jobs.settle


async def defer(self: discord.InteractionResponse, *args: Any, **kwargs: Any) -> Any:
    result = await _defer(self, *args, **kwargs)
    if kwargs.get("thinking"):
        _reached("after_defer")
    return result


async def create(*args: Any, **kwargs: Any) -> Any:
    row = await _create(*args, **kwargs)
    _reached("before_commit")
    return row


async def settle(*args: Any, **kwargs: Any) -> Any:
    outcome = await _settle(*args, **kwargs)
    if (args[2] if len(args) > 2 else kwargs.get("status")) == "failed" and outcome[0]:
        _reached("after_failed")
    return outcome


discord.InteractionResponse.defer = defer  # type: ignore[method-assign]
storage.jobs.create = create  # type: ignore[assignment]
storage.jobs.settle = settle  # type: ignore[assignment]
slow_down(float(sys.argv[1]))
fail_on(os.environ.get("FAIL_PROMPT") or "")
bot.safety.moderation.NudityClassifier = lambda settings: AllowAllImages()  # type: ignore[assignment,misc]
sys.exit(main(sys.argv[2:]))

"""Runs ``imagine-bot`` slowed down and, when asked, kills itself with SIGKILL inside a window.

Usage: python tests/kill_bot.py SECONDS_PER_STEP run --config ... (the rest as for imagine-bot)

``KILL_BEFORE_JOB_COMMIT=N`` in the environment: the process SIGKILLs itself inside the Nth job
transaction, after the job row (and its quota charge) is written and before COMMIT; the
platform request is stored and not yet confirmed (the window between acknowledging a request
and committing its job). Kills at the platform seam (after Telegram applied an edit, before the
bot heard back) are done by the fake server, which knows when it applied it.

``FAIL_PROMPT=WORD``: a batch whose prompt contains WORD fails in the pipeline (a failure the
user must be told). ``KILL_AFTER_FAILED=N``: the process SIGKILLs itself right after the Nth
failure (and its refund) committed, before any front end told the user: the window between
"failed" and "told".

``KILL_AFTER_REFS=KEY:N``: the process SIGKILLs itself right after the Nth write of delivery refs
naming KEY into a job's target committed (e.g. ``sending:1``: a busy group's result is about to
be sent directly; ``result_id:2``: it was sent and recorded, the job not yet marked delivered).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.__main__ import main  # noqa: E402
from bot.safety import AllowAllImages, moderation  # noqa: E402
from storage import jobs  # noqa: E402
from tests.slow_steps import fail_on, slow_down  # noqa: E402

_create = jobs.create
_kill_at = int(os.environ.get("KILL_BEFORE_JOB_COMMIT") or 0)
_created = 0
_settle = jobs.settle
_kill_after_failed = int(os.environ.get("KILL_AFTER_FAILED") or 0)
_failed = 0


async def create_then_maybe_die(*args: Any, **kwargs: Any) -> Any:
    global _created
    row = await _create(*args, **kwargs)
    _created += 1
    if _created == _kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return row


async def settle_then_maybe_die(db: Any, job_id: str, status: str, error: str = "", now: Any = None) -> Any:
    global _failed
    outcome = await _settle(db, job_id, status, error, now)
    if status == "failed" and outcome[0]:
        _failed += 1
        if _failed == _kill_after_failed:
            os.kill(os.getpid(), signal.SIGKILL)
    return outcome


_update_target = jobs.update_target
_refs_key, _, _refs_nth = (os.environ.get("KILL_AFTER_REFS") or ":0").partition(":")
_refs_seen = 0


async def update_target_then_maybe_die(db: Any, job_id: str, changes: dict[str, Any]) -> Any:
    global _refs_seen
    target = await _update_target(db, job_id, changes)
    if _refs_key and _refs_key in changes:
        _refs_seen += 1
        if _refs_seen == int(_refs_nth):
            os.kill(os.getpid(), signal.SIGKILL)
    return target


slow_down(float(sys.argv[1]))
jobs.update_target = update_target_then_maybe_die  # type: ignore[assignment]
fail_on(os.environ.get("FAIL_PROMPT") or "")
jobs.settle = settle_then_maybe_die  # type: ignore[assignment]
# the image checker's model takes longer to load than the whole test: no image is explicit here
moderation.NudityClassifier = lambda *args, **kwargs: AllowAllImages()  # type: ignore[assignment,misc]
jobs.create = create_then_maybe_die  # type: ignore[assignment]
sys.exit(main(sys.argv[2:]))

"""Back-pressure: whether the queue takes a request, and the message that says why not.

Pure rules over the queued jobs, used by :meth:`GenerationQueue.submit
<generation.scheduling.queue.GenerationQueue.submit>`: one request may not ask for more images
than a batch holds; a user may have at most ``per_user`` images queued, and the queue
``total`` (both counted on queued, not yet running, images). Priority jobs skip the caps (the
queue does not call :func:`check_caps` for them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from generation.core.errors import InvalidRequest, QueueFull

__all__ = ["check_caps", "check_count"]


def check_count(count: int, max_batch_images: int) -> None:
    """InvalidRequest when one request asks for more images than one batch makes."""
    if count > max_batch_images:
        raise InvalidRequest("count", f"This bot makes at most {max_batch_images} images per request, not {count}.")


def check_caps(queued: Iterable[Any], user: str, count: int, *, per_user: int, total: int) -> None:
    """InvalidRequest or QueueFull when ``count`` more images of ``user`` would pass a cap."""
    jobs = list(queued)
    mine = sum(j.images for j in jobs if j.user == user)
    if count > per_user:
        raise InvalidRequest("count", f"You can queue at most {per_user} images at once; ask for fewer.")
    if mine + count > per_user:
        raise QueueFull(f"You already have {mine} images queued (limit {per_user}); wait for them or /cancel one.")
    waiting = sum(j.images for j in jobs)
    if waiting + count > total:
        raise QueueFull(f"The queue is full ({waiting} images waiting); try again in a minute.")

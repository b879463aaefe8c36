"""Errors whose message is shown to the user as is.

    ImagineError                 base: ``str(err)`` is a complete sentence for the user
    ├── InvalidRequest           bad options or prompt; ``field`` names what to fix
    ├── QueueFull                back-pressure: global or per-user cap on queued images
    ├── JobCancelled             the job was cancelled before it finished
    ├── GenerationFailed         the pipeline could not make this job (e.g. out of memory at 1 image)
    └── ModelUnavailable         weights cannot be found or downloaded; says what to do

Anything that is not an ``ImagineError`` is a bug: front ends log it with its traceback and show
a short apology with a reference id.
"""

from __future__ import annotations

__all__ = [
    "GenerationFailed",
    "ImagineError",
    "InvalidRequest",
    "JobCancelled",
    "ModelUnavailable",
    "QueueFull",
]


class ImagineError(Exception):
    """An error whose message is meant for the user."""


class InvalidRequest(ImagineError):
    """The request's options or prompt are not acceptable; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class QueueFull(ImagineError):
    """The queue refuses more work right now (global or per-user cap)."""


class JobCancelled(ImagineError):
    """The job was cancelled."""


class GenerationFailed(ImagineError):
    """The pipeline could not produce this job's images."""


class ModelUnavailable(ImagineError):
    """The model's weights cannot be loaded; the message says how to get them."""

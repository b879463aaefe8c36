"""Liveness for containers: the running bot rewrites ``<data_dir>/heartbeat.json`` every few
seconds from its event loop; ``imagine-bot health`` says healthy while that file is fresh.

A stuck event loop, a crashed process or a bot that never finished starting all leave the file
stale (or absent), so Docker's HEALTHCHECK and systemd see it without a web server. With the
web front end on, ``imagine-bot health`` asks its ``/healthz`` instead (:func:`check_http`),
which also says whether the model is loaded and the database writable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT_FILE", "HealthError", "beat", "check", "check_http", "healthz_url"]

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"
INTERVAL_S = 10.0


class HealthError(Exception):
    """Not healthy; the message says why."""


def _write(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


async def beat(
    data_dir: Path, *, state: Callable[[], dict[str, Any]] | None = None, interval: float = INTERVAL_S
) -> None:
    """Rewrite the heartbeat every ``interval`` seconds until cancelled; remove it on the way out."""
    path = Path(data_dir) / HEARTBEAT_FILE
    try:
        while True:
            extra: dict[str, Any] = {}
            if state is not None:
                try:
                    extra = state()
                except Exception:  # the heartbeat must not die with a status reader
                    log.exception("heartbeat state failed")
            try:
                await asyncio.to_thread(_write, path, {"time": time.time(), "pid": os.getpid(), **extra})
            except OSError as exc:
                log.warning("cannot write %s: %s", path, exc)
            await asyncio.sleep(interval)
    finally:
        with suppress(OSError):
            path.unlink()


def check(data_dir: Path, *, max_age_s: float = 60.0, now: float | None = None) -> str:
    """A one-line "healthy" summary, or HealthError saying what is wrong."""
    path = Path(data_dir) / HEARTBEAT_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HealthError(f"no heartbeat at {path}: the bot is not running (or still starting)") from None
    except (OSError, ValueError) as exc:
        raise HealthError(f"unreadable heartbeat {path}: {exc}") from None
    age = (time.time() if now is None else now) - float(state.get("time", 0))
    if age > max_age_s:
        raise HealthError(f"the heartbeat is {age:.0f} s old (limit {max_age_s:g} s): the bot is stuck or gone")
    queued = state.get("queued_jobs")
    return f"healthy: heartbeat {age:.0f} s ago" + (f", {queued} job(s) queued" if queued is not None else "")


def healthz_url(web: dict[str, Any]) -> str | None:
    """``/healthz`` of the web front end a [web] table describes; None when it is not enabled."""
    if web.get("enabled") is not True:
        return None
    host = str(web.get("listen", "127.0.0.1"))
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # "any": ask locally
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(web.get('port', 8080))}/healthz"


def check_http(url: str, *, timeout: float = 10.0) -> str:
    """A one-line "healthy" summary when ``url`` answers 200, else HealthError with the reason."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read().decode("utf-8", "replace")).get("reason") or exc.reason
        except (ValueError, AttributeError, OSError):
            reason = exc.reason
        raise HealthError(f"{url} answered {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise HealthError(f"cannot reach {url}: {why}") from None
    if status != 200:
        raise HealthError(f"{url} answered {status}")
    return f"healthy: {url} answered 200"

"""Health and metrics: is the bot ready (model loaded, database writable), and Prometheus counters.

:class:`ServiceMetrics` keeps its own registry (one per service, so tests do not share counters)::

    imagine_queue_images / imagine_queue_jobs        queued now (gauges read at scrape time)
    imagine_batches_total, imagine_batch_size        batches run and their sizes in images
    imagine_images_generated_total                   images made (rate() gives images/s)
    imagine_images_per_second                        images made in the last minute / 60
    imagine_queue_seconds, imagine_generation_seconds   time in queue and on the GPU, per job
    imagine_requests_total{frontend}                 accepted requests
    imagine_refusals_total{frontend,reason}          refused ones (quota, blocked_prompt, …)
    imagine_delivery_failures_total{frontend,reason} results that could not be sent

:class:`MetricsPart` counts at the service's doors (accept, follow, DM failures), so every
front end is counted the same way; a front end reports its own delivery failures with
:meth:`MetricsPart.delivery_failed`.
"""

from __future__ import annotations

import collections
import re
import time
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.service.context import ServiceContext
from bot.service.tickets import Ticket, Who
from generation.scheduling.events import Done, Started
from generation.scheduling.job import Job as QueueJob
from generation.scheduling.queue import GenerationQueue
from generation.core.errors import ImagineError
from storage import links

__all__ = ["MetricsPart", "ServiceMetrics", "frontend_of"]

_SECONDS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


def frontend_of(who: Who, target: dict[str, Any] | None) -> str:
    """The front end a request came through: "web" for the HTTP API, else the platform."""
    return "web" if target and target.get("web") else who.platform


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # Restricted: blocked, cooldown, too_soon
    if isinstance(reason, str) and reason:
        return reason
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


class ServiceMetrics:
    """The Prometheus metrics of one service."""

    def __init__(self, queue: GenerationQueue) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("imagine_queue_images", "Images waiting in the queue", registry=r).set_function(
            lambda: queue.queued_images)
        Gauge("imagine_queue_jobs", "Jobs waiting in the queue", registry=r).set_function(
            lambda: queue.snapshot().queued_jobs)
        self.batches = Counter("imagine_batches", "Batches run", registry=r)
        self.batch_size = Histogram("imagine_batch_size", "Images per batch", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
        self.images = Counter("imagine_images_generated", "Images generated", registry=r)
        Gauge("imagine_images_per_second", "Images generated per second over the last minute",
              registry=r).set_function(self._recent_rate)
        self.queue_seconds = Histogram("imagine_queue_seconds", "Seconds a job waited in the queue",
                                       registry=r, buckets=_SECONDS)
        self.generation_seconds = Histogram("imagine_generation_seconds", "Seconds a job's batch ran",
                                            registry=r, buckets=_SECONDS)
        self.requests = Counter("imagine_requests", "Requests accepted", ["frontend"], registry=r)
        self.refusals = Counter("imagine_refusals", "Requests refused", ["frontend", "reason"], registry=r)
        self.delivery_failures = Counter("imagine_delivery_failures", "Results that could not be delivered",
                                         ["frontend", "reason"], registry=r)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._seen_batches: weakref.WeakSet[Any] = weakref.WeakSet()

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    def watch(self, qjob: QueueJob) -> None:
        """Observe one queue job's events (time in queue, its batch, its images)."""
        submitted = time.monotonic()

        def on_event(event: Any) -> None:
            if isinstance(event, Started):
                self.queue_seconds.observe(time.monotonic() - submitted)
                if event not in self._seen_batches:  # the jobs of one batch share this event
                    self._seen_batches.add(event)
                    self.batches.inc()
                    self.batch_size.observe(event.batch_size)
            elif isinstance(event, Done):
                self.generation_seconds.observe(event.result.seconds)
                count = len(event.result.images)
                self.images.inc(count)
                self._recent.append((time.monotonic(), count))

        qjob.subscribe(on_event)

    def _recent_rate(self) -> float:
        cutoff = time.monotonic() - 60
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        return sum(n for _, n in self._recent) / 60


class MetricsPart(ServiceContext):
    """Counts requests, refusals and delivery failures; answers the health check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = ServiceMetrics(self.queue)

    async def health(self) -> tuple[bool, str]:
        """(ready, reason): ready when the model serves the queue and the database takes writes."""
        if not self.queue.accepting:
            return False, "the model is not loaded or the queue is stopping"
        thread = getattr(self.queue.executor, "thread", None)  # a local Worker's GPU thread
        if thread is not None and not thread.is_alive():
            return False, "the model's worker thread has stopped"
        try:
            await links.probe(self.db, self.clock())
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return False, f"the database is not writable: {exc}"
        return True, "ok"

    def delivery_failed(self, frontend: str, reason: str) -> None:
        self.metrics.delivery_failures.labels(frontend, reason).inc()

    async def imagine(self, who: Who, text: str, *, target: dict[str, Any] | None = None,
                      **kwargs: Any) -> Ticket:
        return await self._counted(who, target, super().imagine(who, text, target=target, **kwargs))  # type: ignore[misc]

    async def reroll(self, who: Who, job_id: str, *, target: dict[str, Any] | None = None,
                     **kwargs: Any) -> Ticket:
        return await self._counted(who, target, super().reroll(who, job_id, target=target, **kwargs))  # type: ignore[misc]

    async def variation(self, who: Who, job_id: str, index: int, *, target: dict[str, Any] | None = None,
                        **kwargs: Any) -> Ticket:
        return await self._counted(
            who, target, super().variation(who, job_id, index, target=target, **kwargs))  # type: ignore[misc]

    async def set_dm_closed(self, who: Who, closed: bool = True) -> None:
        if closed:
            self.delivery_failed(who.platform, "dm_closed")
        await super().set_dm_closed(who, closed)  # type: ignore[misc]

    def _follow(self, job_id: str, request: Any, qjob: QueueJob, target: dict[str, Any]) -> Ticket:
        self.metrics.watch(qjob)
        return super()._follow(job_id, request, qjob, target)  # type: ignore[misc]

    async def _counted(self, who: Who, target: dict[str, Any] | None, call: Any) -> Ticket:
        frontend = frontend_of(who, target)
        try:
            ticket = await call
        except ImagineError as err:
            self.metrics.refusals.labels(frontend, _reason(err)).inc()
            raise
        self.metrics.requests.labels(frontend).inc()
        return ticket

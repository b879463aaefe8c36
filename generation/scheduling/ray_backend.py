"""Ray Serve backend: the queue's batches run on replicas of one Serve deployment.

Fairness, quotas and durability stay in the bot process; a replica only runs whole batches.

    bot process                                          Ray cluster
    GenerationQueue ── N slots ──> RayExecutor.run ──>  Serve router ──> ImagineReplica (x N)
                                     <── stream: ("replica", id), ("step", i, n)..., ("done", outcomes)

- Each replica loads the pipeline once (``factory()``) and runs batches on its own
  :class:`~generation.scheduling.worker.Worker` thread, so cancel, time limits and out-of-memory splitting
  behave exactly as on a local GPU. ``max_ongoing_requests = 1``: one batch per replica; the
  queue keeps one batch in flight per replica (``slots``), so Serve's router spreads them out.
- Progress streams back after every step. Images come back as PNG bytes, errors as their
  messages; init images of img2img batches travel as bytes too (replicas may be other machines).
- Cancelling :meth:`RayExecutor.run` cancels the Serve request; the replica interrupts its
  batch at the next step and takes no other batch until then.
- A replica that dies, or sends nothing for ``progress_timeout`` seconds once it has the batch
  (``start_timeout`` before: an autoscaled replica may be loading the model), makes ``run()`` raise
  :class:`ReplicaLost` (not an ``ImagineError``): the queue runs the batch once more (Serve's
  router has dropped a dead replica by then and restarts it) and fails its jobs on a second loss.
- A replica whose batches keep failing fails Serve's health check, so Serve replaces it (and
  logs it). A cluster that cannot be reached at start raises :class:`BackendUnavailable` with
  one line that names the address.

Ray is optional (``pip install 'imagine-bot[ray]'``): nothing here imports it until used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from generation.core.batch import Batch, ImagePipeline, ItemOutcome, StepCallback
from generation.core.catalogue import Catalogue
from generation.core.errors import GenerationFailed, ImagineError
from generation.core.request import ModelCaps

__all__ = ["BackendUnavailable", "ImagineReplica", "RayExecutor", "ReplicaLost"]

logger = logging.getLogger(__name__)

APP_NAME = "imagine-bot"
_INTERNAL_ERROR = "Image generation failed because of an internal error; it has been logged."
_UNHEALTHY_AFTER = 3  # batches in a row that failed as a whole


class BackendUnavailable(ImagineError):
    """The Ray cluster cannot be reached or Ray is not installed; the message says which."""


class ReplicaLost(RuntimeError):
    """The replica running a batch died or went silent; the batch did not finish."""


# -- the replica (runs inside Ray) ----------------------------------------------------------------


class ImagineReplica:
    """One Serve replica: one pipeline, one worker thread, one batch at a time."""

    def __init__(self, factory: Callable[[], ImagePipeline]) -> None:
        from generation.scheduling.worker import Worker

        pipeline = factory()
        self.caps, self.model_id = pipeline.caps, pipeline.model_id
        self.worker = Worker(pipeline, name="replica-worker")
        self.worker.start()
        self.failed_in_a_row = 0
        self.replica_id = _replica_id()
        self._inits = Path(tempfile.mkdtemp(prefix="imagine-init-"))

    def describe(self) -> dict[str, Any]:
        caps = self.caps
        return {"model_id": self.model_id, "name": caps.name, "base_resolution": caps.base_resolution,
                "steps": tuple(caps.steps), "loras": tuple(caps.loras), "replica": self.replica_id,
                "pid": os.getpid(), "catalogue": self.worker.catalogue}  # several models: a ModelShelf's

    async def run(self, batch: Batch, time_limit: float | None, inits: dict[str, bytes]) -> AsyncIterator[tuple]:
        """Stream ("replica", id), then ("step", i, n) per step, then ("done", encoded outcomes)."""
        yield ("replica", self.replica_id, os.getpid())
        batch, written = self._localize(batch, inits)
        steps: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        task = asyncio.ensure_future(self.worker.run(
            # live previews stay on the replica: only the step counts cross to the bot (docs/operator/scale-out.md)
            batch, on_step=lambda i, n, previews=None: steps.put_nowait((i, n)), time_limit=time_limit))
        try:
            while not task.done() or not steps.empty():
                if steps.empty():
                    getter = asyncio.ensure_future(steps.get())
                    await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    step = getter.result()
                else:
                    step = steps.get_nowait()
                yield ("step", *step)
            outcomes = task.result()
        finally:
            if not task.done():  # the caller cancelled: stop at the next step, then free the GPU
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            for path in written:
                path.unlink(missing_ok=True)
        failed = all(isinstance(o, GenerationFailed) and str(o) == _INTERNAL_ERROR for o in outcomes)
        self.failed_in_a_row = self.failed_in_a_row + 1 if failed and outcomes else 0
        yield ("done", [_encode(o) for o in outcomes])

    def check_health(self) -> None:
        """Serve replaces a replica whose batches keep failing as a whole."""
        if self.failed_in_a_row >= _UNHEALTHY_AFTER:
            raise RuntimeError(f"replica {self.replica_id}: {self.failed_in_a_row} batches in a row failed")

    def _localize(self, batch: Batch, inits: dict[str, bytes]) -> tuple[Batch, list[Path]]:
        """Write the init images that came as bytes here and point the batch at them."""
        if not inits:
            return batch, []
        paths: dict[str, Path] = {}
        for original, data in inits.items():
            path = Path(tempfile.mkstemp(dir=self._inits, suffix=Path(original).suffix)[1])
            path.write_bytes(data)
            paths[original] = path
        items = tuple(replace(i, init_image=str(paths.get(i.init_image, i.init_image))) if i.init_image else i
                      for i in batch.items)
        return replace(batch, items=items), list(paths.values())


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with one line: ``ray.init`` itself retries an unreachable address for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendUnavailable(
            f"Cannot reach the Ray cluster at {address}: {exc.strerror or exc}; is `ray start --head` "
            "running there, and is ray.address right?") from None


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside Serve (unit use)
        return f"pid-{os.getpid()}"


def _encode(outcome: ItemOutcome) -> tuple[str, Any]:
    if isinstance(outcome, BaseException):
        return ("error", str(outcome) if isinstance(outcome, ImagineError) else _INTERNAL_ERROR)
    buffer = io.BytesIO()
    outcome.save(buffer, format="PNG")
    return ("png", buffer.getvalue())


def _decode(encoded: tuple[str, Any]) -> ItemOutcome:
    kind, value = encoded
    if kind == "error":
        return GenerationFailed(value)
    from PIL import Image

    image = Image.open(io.BytesIO(value))
    image.load()
    return image


# -- the bot side ---------------------------------------------------------------------------------


class RayExecutor:
    """A BatchExecutor over a Serve deployment; ``slots`` batches may run at once."""

    def __init__(self, handle: Any, info: dict[str, Any], *, slots: int, progress_timeout: float = 120.0,
                 start_timeout: float = 900.0, owns_cluster: bool = False, app_name: str = APP_NAME) -> None:
        self.handle = handle
        self.slots = slots
        self.name = "ray"
        self.model_id: str = info["model_id"]
        self.caps = ModelCaps(name=info["name"], base_resolution=info["base_resolution"], steps=tuple(info["steps"]),
                              loras=tuple((str(n), str(h)) for n, h in info.get("loras", ())))
        # several models (issue 25): each replica holds a ModelShelf; a batch's model travels in the batch
        self.catalogue: Catalogue | None = info.get("catalogue")
        self.progress_timeout = progress_timeout
        self.start_timeout = start_timeout  # waiting for a free replica (autoscaling may load one)
        self.replicas_seen: dict[str, int] = {}  # replica id -> batches started there
        self._owns_cluster = owns_cluster
        self._app_name = app_name

    @classmethod
    def connect(
        cls,
        factory: Callable[[], ImagePipeline],
        *,
        address: str = "",
        replicas: int = 1,
        min_replicas: int = 0,
        max_replicas: int = 0,
        gpus_per_replica: float = 1.0,
        cpus_per_replica: float = 1.0,
        progress_timeout: float = 120.0,
        app_name: str = APP_NAME,
        ray_init: dict[str, Any] | None = None,
    ) -> RayExecutor:
        """Join (``address``) or start a Ray cluster, deploy the replicas, wait until they serve."""
        try:
            import ray
            from ray import serve
        except ImportError:
            raise BackendUnavailable(
                "generation.backend is \"ray\" but Ray is not installed: pip install 'imagine-bot[ray]'.") from None
        where = address or "a new local cluster"
        if address:
            _check_reachable(address)
        try:
            if not ray.is_initialized():
                ray.init(address=address or None, logging_level=logging.WARNING, **(ray_init or {}))
            serve.start(proxy_location="Disabled")
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(f"Cannot reach the Ray cluster at {where}: {reason}") from None
        options: dict[str, Any] = {
            "max_ongoing_requests": 1,
            "ray_actor_options": {"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica},
            "health_check_period_s": 5,
        }
        if max_replicas:
            options["autoscaling_config"] = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                                             "target_ongoing_requests": 1}
        else:
            options["num_replicas"] = replicas
        deployment = serve.deployment(ImagineReplica, name="ImagineReplica").options(**options)
        handle = serve.run(deployment.bind(factory), name=app_name, route_prefix=None)
        # A handle's blocking result() refuses to run on an event loop's thread (the bot's engine
        # starts executors there), so the first call waits on a helper thread.
        with concurrent.futures.ThreadPoolExecutor(1) as helper:
            info = helper.submit(lambda: handle.describe.remote().result()).result()
        slots = max_replicas or replicas
        logger.info("Ray Serve app %s on %s: %d replica(s) of %s", app_name, where, slots, info["model_id"])
        return cls(handle, info, slots=slots, progress_timeout=progress_timeout,
                   owns_cluster=not address, app_name=app_name)

    def caps_for(self, name: str) -> ModelCaps | None:
        """Model ``name``'s caps ("" = the default); None when the replicas lack it."""
        if not name:
            return self.caps
        return self.catalogue.caps_for(name) if self.catalogue is not None and name in self.catalogue else None

    def model_id_for(self, name: str) -> str:
        if not name or self.catalogue is None or name not in self.catalogue:
            return self.model_id
        return self.catalogue.models[name].model_id

    async def run(
        self, batch: Batch, on_step: StepCallback | None = None, time_limit: float | None = None
    ) -> list[ItemOutcome]:
        """One outcome per item; raises ReplicaLost when the replica dies or goes silent."""
        inits = {i.init_image: Path(i.init_image).read_bytes() for i in batch.items
                 if i.init_image and Path(i.init_image).is_file()}
        stream = self.handle.options(stream=True).run.remote(batch, time_limit, inits)
        replica = "?"
        try:
            while True:
                timeout = self.start_timeout if replica == "?" else self.progress_timeout
                try:
                    message = await asyncio.wait_for(stream.__anext__(), timeout)
                except StopAsyncIteration:
                    raise ReplicaLost(f"replica {replica} ended the stream without a result") from None
                except asyncio.TimeoutError:
                    stream.cancel()
                    raise ReplicaLost(f"replica {replica} sent nothing for {timeout:g} s") from None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # ActorDiedError, RayActorError, ... : the replica is gone
                    raise ReplicaLost(f"replica {replica} failed: {type(exc).__name__}: {exc}") from exc
                kind = message[0]
                if kind == "replica":
                    replica = message[1]
                    self.replicas_seen[replica] = self.replicas_seen.get(replica, 0) + 1
                elif kind == "step" and on_step is not None:
                    on_step(message[1], message[2])
                elif kind == "done":
                    return [_decode(o) for o in message[1]]
        except asyncio.CancelledError:
            stream.cancel()  # the replica interrupts the batch at its next step
            raise

    async def close(self) -> None:
        """Delete the app; stop the cluster too when this process started it."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        if self._owns_cluster:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(self._app_name)

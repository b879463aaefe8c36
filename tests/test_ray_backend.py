"""The Ray Serve backend on a real local cluster (127.0.0.1 only): two replicas of the tiny model
on CPU behind the one fair queue; a replica killed mid-batch; cancel of a remote batch."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

# Before Ray is imported: a local cluster on 127.0.0.1 only (Ray otherwise binds the node's own
# address), and no usage statistics sent anywhere.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'imagine-bot[ray]'")

from generation.core.errors import JobCancelled  # noqa: E402
from generation.scheduling.queue import GenerationQueue  # noqa: E402
from generation.scheduling.ray_backend import BackendUnavailable, RayExecutor, _decode, _encode  # noqa: E402
from generation.core.request import GenerationRequest  # noqa: E402
from tests.ray_support import KillOnce  # noqa: E402

pytestmark = pytest.mark.slow
TIMEOUT = 120.0
START_TIMEOUT = 240


def test_an_unreachable_cluster_is_one_clear_line() -> None:
    with pytest.raises(BackendUnavailable) as info:
        RayExecutor.connect(lambda: None, address="127.0.0.1:1")
    message = str(info.value)
    assert "127.0.0.1:1" in message and "\n" not in message


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray cluster and a 2-replica Serve app; shut down afterwards."""
    marker = tmp_path_factory.mktemp("ray") / "killed"

    def too_slow(signum: int, frame: object) -> None:
        raise TimeoutError(f"the local Ray Serve cluster did not start within {START_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(START_TIMEOUT)
    try:
        executor = _connect(marker)
    except BaseException:
        ray.shutdown()
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    try:
        yield executor, marker
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def _connect(marker: Path) -> RayExecutor:
    return RayExecutor.connect(
        functools.partial(KillOnce, str(marker), 0.2), replicas=2, gpus_per_replica=0, cpus_per_replica=0.5,
        progress_timeout=60.0,
        ray_init={"num_cpus": 2, "num_gpus": 0, "object_store_memory": 100 * 1024**2, "include_dashboard": False,
                  "configure_logging": False},
    )


def req(user: str, prompt: str, *, count: int = 1, steps: int = 4) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=256, height=256, steps=steps, count=count, seed=7,
                             user_id=user, platform="telegram")


async def test_two_replicas_serve_eight_requests_from_four_users_once_each(cluster) -> None:
    executor, _ = cluster
    assert executor.slots == 2 and executor.caps.name == "tiny"
    queue = GenerationQueue(executor, max_batch_images=2, max_queued_per_user=4)
    queue.start()
    jobs = [queue.submit(req(f"u{i % 4}", f"a lighthouse {i}")) for i in range(8)]
    finals: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    for job in jobs:
        job.subscribe(lambda e, j=job: finals.update([j.id]) if e.final else None, replay=False)
        job.subscribe(lambda e, j=job: steps.update([j.id]) if type(e).__name__ == "Step" else None, replay=False)
    results = await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs)), TIMEOUT)
    await asyncio.wait_for(queue.close(), TIMEOUT)
    assert all(j.status == "done" for j in jobs) and all(finals[j.id] == 1 for j in jobs)
    assert all(steps[j.id] >= 4 for j in jobs)  # progress after every step
    for result in results:
        (image,) = result.images
        assert image.size == (256, 256) and result.metadata["attempt"] == 1
    assert len(executor.replicas_seen) == 2  # both replicas ran batches
    assert queue.snapshot().batches_run == 4


async def test_a_replica_killed_mid_batch_has_its_jobs_finish_on_the_other(cluster) -> None:
    executor, marker = cluster
    queue = GenerationQueue(executor, max_batch_images=2, max_queued_per_user=4)
    queue.start()
    victims = [queue.submit(req("a", "kill me softly")), queue.submit(req("b", "kill the lights"))]
    others = [queue.submit(req(u, f"{u} calm sea", steps=2)) for u in "cd"]
    done = await asyncio.wait_for(asyncio.gather(*(j.result() for j in victims + others)), TIMEOUT)
    await asyncio.wait_for(queue.close(), TIMEOUT)
    assert marker.exists()  # a replica really died
    assert all(j.status == "done" for j in victims + others)
    assert [r.metadata["attempt"] for r in done[:2]] == [2, 2]
    assert queue.snapshot().retries == 1


async def test_cancelling_a_job_interrupts_its_remote_batch(cluster) -> None:
    executor, marker = cluster
    queue = GenerationQueue(executor, max_batch_images=1)
    queue.start()
    job = queue.submit(req("a", "a long voyage", steps=8))
    seen: list = []
    job.subscribe(seen.append, replay=False)
    for _ in range(int(TIMEOUT * 10)):
        if any(type(e).__name__ == "Step" for e in seen):
            break
        await asyncio.sleep(0.1)
    assert job.cancel() is True
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(job.result(), TIMEOUT)
    after = queue.submit(req("b", "next in line"))
    result = await asyncio.wait_for(after.result(), TIMEOUT)  # both replicas take work again
    assert result.images
    assert int(Path(f"{marker}.a long voyage").read_text()) < 8  # the remote batch stopped early
    await asyncio.wait_for(queue.close(), TIMEOUT)


def test_images_cross_the_wire_as_png_bytes() -> None:
    from PIL import Image

    from generation.core.errors import GenerationFailed

    image = Image.new("RGB", (8, 8), (1, 2, 3))
    kind, data = _encode(image)
    assert kind == "png" and isinstance(data, bytes) and data[:4] == b"\x89PNG"
    assert _decode((kind, data)).getpixel((0, 0)) == (1, 2, 3)
    assert isinstance(_decode(_encode(GenerationFailed("too big"))), GenerationFailed)
    assert str(_decode(_encode(RuntimeError("secret internals")))).startswith("Image generation failed")

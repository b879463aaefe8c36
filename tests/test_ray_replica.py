"""The Ray replica's protocol without a cluster: the stream it sends, images as PNG bytes, init
images that arrive as bytes (the bot's path does not exist on a GPU machine), cancel mid-batch."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from generation.core.batch import Batch, BatchItem
from generation.core.errors import GenerationFailed
from generation.scheduling.ray_backend import ImagineReplica, _decode
from tests.fakes import FakePipeline, fake_color

TIMEOUT = 10.0


async def collect(replica: ImagineReplica, batch: Batch, inits: dict[str, bytes]) -> list[tuple]:
    return [message async for message in replica.run(batch, None, inits)]


async def test_stream_is_replica_then_every_step_then_encoded_outcomes(tmp_path: Path) -> None:
    pipe = FakePipeline(fail_prompt="boom")
    replica = ImagineReplica(lambda: pipe)
    try:
        assert replica.describe()["model_id"] == "fake" and replica.describe()["steps"] == (1, 2, 4, 8)
        batch = Batch("txt2img", 64, 64, 4, (BatchItem("a fox", "", 1), BatchItem("an owl", "", 2)))
        messages = await asyncio.wait_for(collect(replica, batch, {}), TIMEOUT)
        assert messages[0][0] == "replica"
        assert messages[1:5] == [("step", i, 4) for i in range(1, 5)]
        kind, outcomes = messages[5]
        assert kind == "done" and [o[0] for o in outcomes] == ["png", "png"]
        assert _decode(outcomes[1]).getpixel((0, 0)) == fake_color("an owl", 2)
        bad = Batch("txt2img", 64, 64, 1, (BatchItem("boom", "", 1),))
        *_, (_, failed) = await asyncio.wait_for(collect(replica, bad, {}), TIMEOUT)
        assert isinstance(_decode(failed[0]), GenerationFailed) and replica.failed_in_a_row == 1
        replica.check_health()  # one failure is not yet unhealthy
    finally:
        await replica.worker.close()


async def test_init_images_travel_as_bytes(tmp_path: Path) -> None:
    replica = ImagineReplica(FakePipeline)
    try:
        source = Image.new("RGB", (64, 64), (9, 8, 7))
        data = io.BytesIO()
        source.save(data, format="PNG")
        gone = "/nowhere/on/this/machine/init.png"
        batch = Batch("img2img", 64, 64, 4, (BatchItem("a fox", "", 1, init_image=gone),), strength=0.5)
        *_, (kind, outcomes) = await asyncio.wait_for(collect(replica, batch, {gone: data.getvalue()}), TIMEOUT)
        assert kind == "done" and outcomes[0][0] == "png"
        assert _decode(outcomes[0]).getpixel((0, 0)) == fake_color("a fox", 1, source)
        assert list(replica._inits.iterdir()) == []  # the copies are removed after the batch
    finally:
        await replica.worker.close()


async def test_cancelling_the_stream_interrupts_the_batch_at_the_next_step() -> None:
    pipe = FakePipeline()
    replica = ImagineReplica(lambda: pipe)
    try:
        pipe.pause()
        stream = replica.run(Batch("txt2img", 64, 64, 8, (BatchItem("slow", "", 1),)), None, {})
        assert (await stream.__anext__())[0] == "replica"
        waiting = asyncio.ensure_future(stream.__anext__())
        assert await asyncio.to_thread(pipe.wait_entered, TIMEOUT)
        waiting.cancel()  # what Serve does when the bot cancels the request
        for _ in range(20):  # the cancel reaches the worker's stop flag within a few loop turns
            await asyncio.sleep(0)
        pipe.resume()
        try:
            await asyncio.wait_for(waiting, TIMEOUT)
        except asyncio.CancelledError:
            pass
        assert pipe.calls[0].outcome == "interrupted" and pipe.calls[0].steps_run == 0
    finally:
        pipe.resume()
        await replica.worker.close()

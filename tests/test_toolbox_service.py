"""Upscale as a job (issue 23, items 2 and 5): owned by the clicker, charged upscale_cost, recovered after a crash;
the toolbox acts on another's job only through a click on one of its messages (trust's authority check)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from PIL import Image

from bot.service import Finished, NotFound, QuotaExceeded, Via
from generation.core.errors import InvalidRequest
from storage import jobs, read_png_metadata
from tests.service_support import ADA, BOB, service_env
from tests.test_upscale import tiny_srvgg

TIMEOUT = 120.0


async def _made(env, who=ADA) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    ticket = await env.service.imagine(who, "a harbour --seed 3 --steps 2")
    return ticket.job_id, await asyncio.wait_for(ticket.delivery(), TIMEOUT)


@pytest.mark.slow
async def test_upscale_is_a_job_of_its_own_at_twice_the_size(tmp_path: Path, tiny) -> None:
    from generation.tools.upscale import load_upscaler

    tiny.upscaler = load_upscaler(tiny_srvgg(tmp_path, 4))
    try:
        async with service_env(tmp_path, tiny, upscale_cost=2, daily_quota=4) as env:
            job_id, made = await _made(env)
            await env.service.remember_message(job_id, "discord", None, 7001, index=0)  # U1 posted in a channel
            ticket = await env.service.upscale(BOB, job_id, 0, "creative", via=Via(None, 7001))  # a click on it
            delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
            (image,) = delivery.images
            assert (image.width, image.height) == (2 * made.images[0].width, 2 * made.images[0].height)
            assert Image.open(image.path).size == (512, 512)
            row = await jobs.get(env.db, ticket.job_id)
            assert row.request["kind"] == "upscale" and row.request["mode"] == "creative"
            assert row.request["strength"] == env.service.config.upscale_creative and row.charged == 2
            assert "upscale (creative) of image 1 of " + job_id in delivery.text
            meta = read_png_metadata(image.path.read_bytes())
            assert meta["kind"] == "upscale" and meta["mode"] == "creative" and meta["source"] == f"{job_id}#1"
            assert (await env.service.quota(BOB)).used == 2  # the clicker pays, and owns the new job
            assert (await env.service.history(BOB)).entries[0].job_id == ticket.job_id
    finally:
        tiny.upscaler = load_upscaler(None)


async def test_upscale_refusals_cost_nothing(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, upscale_cost=3, daily_quota=3) as env:
        job_id, _ = await _made(env)
        with pytest.raises(QuotaExceeded):  # 1 used, 3 more needed
            await env.service.upscale(ADA, job_id, 0)
        with pytest.raises(NotFound):
            await env.service.upscale(ADA, job_id, 3)
        with pytest.raises(NotFound):
            await env.service.upscale(ADA, "nosuchjob", 0)
        with pytest.raises(InvalidRequest, match="subtle or creative"):
            await env.service.upscale(ADA, job_id, 0, "wild")
        assert (await env.service.quota(ADA)).used == 1


async def test_toolbox_on_anothers_job_needs_a_click_on_one_of_its_messages(tmp_path: Path, tiny) -> None:
    """Upscale, zoom and pan follow trust's authority check, as reroll and variation do."""
    async with service_env(tmp_path, tiny, daily_quota=10) as env:
        job_id, _ = await _made(env)
        other_id, _ = await _made(env)
        await env.service.remember_message(job_id, "discord", None, 8001, index=0)  # U1 of a grid of 4  # shows image 1 of job_id
        await env.service.remember_message(other_id, "discord", None, 8002)  # another job's message
        refused = [
            env.service.upscale(BOB, job_id, 0),  # a typed id of another's job
            env.service.upscale(BOB, job_id, 0, via=Via(None, 8002)),  # a message of another job
            env.service.upscale(BOB, job_id, 0, via=Via(None, 9999)),  # a forged message
            env.service.outpaint(BOB, job_id, 0, "zoom", "2"),
            env.service.outpaint(BOB, job_id, 0, "pan", "left", via=Via(None, 8002)),
        ]
        for attempt in refused:
            with pytest.raises(NotFound, match="that you can use"):
                await attempt
        with pytest.raises(NotFound):  # the message shows image 1 only
            await env.service.upscale(BOB, job_id, 1, via=Via(None, 8001))
        assert (await env.service.quota(BOB)).used == 0  # refused: nothing charged
        # a click on the message showing it is allowed (and paid by the clicker): the slow
        # test_upscale_is_a_job_of_its_own_at_twice_the_size runs one to the end


class Gate:
    """Holds the worker inside an upscale until released (the process 'crashes' meanwhile)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    @property
    def caps(self):  # type: ignore[no-untyped-def]
        return self.inner.caps

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, batch, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        if batch.kind == "upscale":
            self.entered.set()
            self.release.wait(TIMEOUT)
        return self.inner.generate(batch, on_step, should_stop)


@pytest.mark.slow
async def test_crash_during_an_upscale_is_delivered_once_after_restart(tmp_path: Path, tiny) -> None:
    gate = Gate(tiny)
    async with service_env(tmp_path, gate, settle_timeout_s=0.05) as env:
        job_id, _ = await _made(env)
        ticket = await env.service.upscale(ADA, job_id, 0)
        await asyncio.wait_for(asyncio.to_thread(gate.entered.wait, TIMEOUT), TIMEOUT)
        assert (await jobs.get(env.db, ticket.job_id)).status == "running"
        # the process stops while the upscale runs: its follower is gone before the result is stored
        threading.Timer(1.0, gate.release.set).start()
    assert (await _status(tmp_path, ticket.job_id)) in ("running", "done")
    async with service_env(tmp_path, tiny) as env:
        recovered = await env.service.recover()
        running = [t for t in recovered.tickets if t.job_id == ticket.job_id]
        owed = [d for d in recovered.deliveries if d.job_id == ticket.job_id]
        assert len(running) + len(owed) == 1  # run again or delivered from what was stored: one of them
        delivery = await asyncio.wait_for(running[0].delivery(), TIMEOUT) if running else owed[0]
        assert delivery.request.kind == "upscale" and len(delivery.images) == 1
        assert (delivery.images[0].width, delivery.images[0].height) == (512, 512)
        assert await env.service.mark_delivered(ticket.job_id) is True
        assert await env.service.mark_delivered(ticket.job_id) is False  # once
        assert (await env.service.quota(ADA)).used == 2  # charged once, not again on recovery
        later = await env.service.recover()
        assert ticket.job_id not in {t.job_id for t in later.tickets} | {d.job_id for d in later.deliveries}


async def _status(root: Path, job_id: str) -> str:
    from storage import Database
    async with await Database.open(root / "bot.db") as db:
        return (await jobs.get(db, job_id)).status


@pytest.mark.slow
async def test_zoom_and_pan_are_jobs_that_keep_the_original(tmp_path: Path, tiny) -> None:
    import numpy as np

    from generation.tools.outpaint import outpaint_canvas

    async with service_env(tmp_path, tiny, daily_quota=5) as env:
        job_id, made = await _made(env)
        source = Image.open(made.images[0].path).convert("RGB")
        await env.service.remember_message(job_id, "discord", None, 7002)  # the result, posted in a channel
        clicked = Via(None, 7002)
        zoom = await env.service.outpaint(BOB, job_id, 0, "zoom", "2", prompt="a harbour at night, wide view",
                                          via=clicked)
        pan = await env.service.outpaint(BOB, job_id, 0, "pan", "left", via=clicked)
        for ticket, size in ((zoom, (256, 256)), (pan, (304, 208))):
            delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
            (image,) = delivery.images
            assert (image.width, image.height) == size
            request = delivery.request
            canvas, _, keep = outpaint_canvas(source, request.kind, request.mode, size)
            kept = np.asarray(keep) == 255
            got = np.asarray(Image.open(image.path).convert("RGB"), dtype=float)[kept]
            assert np.abs(got - np.asarray(canvas, dtype=float)[kept]).max() <= 3
        assert zoom.request.prompt == "a harbour at night, wide view" and pan.request.prompt == "a harbour"
        assert "zoom out 2x of image 1" in (await env.service.job_delivery(BOB, zoom.job_id)).text
        assert (await env.service.quota(BOB)).used == 2
        with pytest.raises(InvalidRequest, match="pan left"):
            await env.service.outpaint(BOB, job_id, 0, "pan", "sideways")
        assert (await env.service.quota(BOB)).used == 2

"""The inbox: a request is stored before it is acknowledged, and processing it twice makes one job."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from bot.service import AlreadyAccepted, QuotaExceeded
from storage import inbox, jobs, quotas, users
from tests.service_support import ADA, service_env

TIMEOUT = 30.0


async def _charged(env) -> int:
    user = await users.get_by_platform(env.db, ADA.platform, ADA.user_id)
    window = quotas.window_start(env.clock(), "daily")
    return await quotas.used(env.db, user.id, window)


async def test_receive_stores_once_and_unhandled_lists_what_is_open(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        service = env.service
        assert await service.receive("telegram", 10, {"text": "/imagine a fox"})
        assert not await service.receive("telegram", 10, {"text": "re-sent"})  # the platform repeated it
        assert await service.receive("telegram", 11, {"text": "/imagine an owl"})
        assert await service.receive("discord", 10, {"text": "other platform, same key"})
        pending = await service.unhandled("telegram")
        assert [(i.key, i.payload["text"], i.attempts) for i in pending] == [
            ("10", "/imagine a fox", 1), ("11", "/imagine an owl", 1)]
        assert await service.handled("telegram", 11)
        assert not await service.handled("telegram", 11)
        again = await service.unhandled("telegram")
        assert [(i.key, i.attempts) for i in again] == [("10", 2)]


async def test_the_job_row_and_handled_commit_together_and_a_replay_makes_no_second_job(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        service = env.service
        await service.receive("telegram", 42, {"text": "/imagine a fox"})
        ticket = await service.imagine(ADA, "a fox --steps 1", origin=("telegram", "42"))
        assert await service.unhandled("telegram") == []
        row = await jobs.get(env.db, ticket.job_id)
        assert row is not None and row.origin == "telegram:42"
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        with pytest.raises(AlreadyAccepted) as err:
            await service.imagine(ADA, "a fox --steps 1", origin=("telegram", "42"))
        assert err.value.job_id == ticket.job_id
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 1
        assert await _charged(env) == 1


async def test_a_replayed_cached_request_is_also_recognised(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        service = env.service
        first = await service.imagine(ADA, "a fox --seed 3 --steps 1")
        await asyncio.wait_for(first.delivery(), TIMEOUT)
        await service.receive("telegram", 7, {})
        cached = await service.imagine(ADA, "a fox --seed 3 --steps 1", origin=("telegram", "7"))
        assert (await asyncio.wait_for(cached.delivery(), TIMEOUT)).cached
        assert await service.unhandled("telegram") == []
        with pytest.raises(AlreadyAccepted):
            await service.imagine(ADA, "a fox --seed 3 --steps 1", origin=("telegram", "7"))


async def test_a_refused_request_stays_open_until_the_front_end_closes_it(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, daily_quota=1) as env:
        service = env.service
        await service.receive("telegram", 5, {})
        with pytest.raises(QuotaExceeded):
            await service.imagine(ADA, "a fox --n 2 --steps 1", origin=("telegram", "5"))
        assert [i.key for i in await service.unhandled("telegram")] == ["5"]
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 0  # nothing charged or written
        assert await service.handled("telegram", 5)
        assert await service.unhandled("telegram") == []


async def test_two_concurrent_processings_of_one_request_make_one_job(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        service = env.service
        await service.receive("discord", "i-1", {})
        outcomes = await asyncio.gather(
            service.imagine(ADA, "a fox --steps 1", origin=("discord", "i-1")),
            service.imagine(ADA, "a fox --steps 1", origin=("discord", "i-1")),
            return_exceptions=True)
        made = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, AlreadyAccepted)]
        assert len(made) == 1 and len(refused) == 1 and refused[0].job_id == made[0].job_id
        await asyncio.wait_for(made[0].delivery(), TIMEOUT)
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 1
        assert await _charged(env) == 1


async def test_prune_keeps_open_requests(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        await env.service.receive("telegram", 1, {})
        await env.service.receive("telegram", 2, {})
        await env.service.handled("telegram", 1)
        assert await inbox.prune(env.db, env.clock() + timedelta(days=1)) == 1
        assert [i.key for i in await env.service.unhandled("telegram")] == ["2"]

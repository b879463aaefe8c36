"""Accepting requests under load: the charge and job row of requests that arrive together share
one transaction (the service's GroupWriter), a refusal in the group touches nobody else, and a
caller who goes away while its charge is being committed still gets its job made."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.service import QuotaExceeded, Who
from storage import jobs
from tests.service_support import service_env

TIMEOUT = 30.0


async def _wait_for_status(db, job_id: str, status: str) -> str:
    for _ in range(600):
        row = await jobs.get(db, job_id)
        if row is not None and row.status == status:
            return row.status
        await asyncio.sleep(0.05)
    row = await jobs.get(db, job_id)
    return row.status if row else "missing"


async def test_requests_arriving_together_share_one_transaction(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, daily_quota=1) as env:
        people = [Who("discord", str(i), f"user{i}") for i in range(6)]
        await env.service.imagine(people[5], "warm-up --steps 1")  # user rows exist; quota of 5 spent
        begun = 0
        transaction = env.db.transaction

        def counting():
            nonlocal begun
            begun += 1
            return transaction()

        env.db.transaction = counting
        outcomes = await asyncio.gather(
            *(env.service.imagine(who, f"a lighthouse {i} --steps 1") for i, who in enumerate(people)),
            return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        tickets = [o for o in outcomes if not isinstance(o, BaseException)]
        # the five with quota left are accepted; the sixth (quota spent) is refused, alone
        assert len(tickets) == 5 and len(refused) == 1 and isinstance(refused[0], QuotaExceeded)
        assert "no images left of your 1 today" in str(refused[0])
        env.db.transaction = transaction
        # fewer transactions than requests: the charges shared them (and the refusal, a value
        # returned by its write, did not roll the group back to be retried one by one)
        assert begun < 6, begun
        for ticket in tickets:
            row = await jobs.get(env.db, ticket.job_id)
            assert row is not None and row.charged == 1
            delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
            assert delivery.job_id == ticket.job_id
        assert int(await env.db.fetchval("SELECT count(*) FROM jobs")) == 6
        used = await env.db.fetchall("SELECT user_id, used FROM quota_usage ORDER BY user_id")
        assert [r["used"] for r in used] == [1] * 6  # the refused one was not charged twice


async def test_a_caller_cancelled_while_its_charge_commits_still_gets_its_job(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        writes = env.service.writes
        reached, release = asyncio.Event(), asyncio.Event()
        commit = writes._commit

        async def slow_commit(group):  # the shared transaction is committing: hold it there
            reached.set()
            await release.wait()
            await commit(group)

        writes._commit = slow_commit
        who = Who("discord", "42", "ada")
        caller = asyncio.create_task(env.service.imagine(who, "a fox in snow --steps 1"))
        await asyncio.wait_for(reached.wait(), TIMEOUT)
        caller.cancel()  # e.g. the HTTP client went away
        await asyncio.sleep(0)
        writes._commit = commit
        release.set()
        try:
            await caller
        except asyncio.CancelledError:
            pass
        await writes.flush()
        row = await env.db.fetchone("SELECT id FROM jobs")
        assert row is not None  # it was committed: charged, so it must be made, not left behind
        assert await _wait_for_status(env.db, row["id"], "done") == "done"
        assert env.queue.job(row["id"]) is None  # ran: nothing stuck in the queue


async def test_a_caller_cancelled_before_its_charge_leaves_nothing(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        who = Who("discord", "7", "bob")
        await env.service.imagine(who, "warm-up --steps 1")
        async with env.db.transaction():  # the database is busy: the charge cannot start
            caller = asyncio.create_task(env.service.imagine(who, "a fox in snow --steps 1"))
            await asyncio.sleep(0.05)
            caller.cancel()
        try:
            await caller
        except asyncio.CancelledError:
            pass
        await env.service.writes.flush()
        # either nothing was written, or what was written is made: never a charged orphan
        rows = await env.db.fetchall("SELECT id, status FROM jobs ORDER BY created_at")
        for row in rows[1:]:
            assert await _wait_for_status(env.db, row["id"], "done") == "done"
        assert int(await env.db.fetchval("SELECT coalesce(sum(used), 0) FROM quota_usage")) == len(rows)


async def test_the_same_platform_request_twice_in_one_group_makes_one_job(tmp_path: Path, tiny) -> None:
    """A platform request delivered twice at once (a retry racing the first): both reach the
    charge together; the second's job row breaks the origin's uniqueness, the shared transaction
    is retried one write at a time, and the others in it are charged exactly once."""
    from bot.service import AlreadyAccepted

    async with service_env(tmp_path, tiny) as env:
        people = [Who("telegram", str(i), f"user{i}") for i in range(3)]
        for who in people:
            await env.service.imagine(who, "warm-up --steps 1")
        origin = ("telegram", "update-77")
        calls = [env.service.imagine(people[0], "a boat --steps 1", origin=origin),
                 env.service.imagine(people[0], "a boat --steps 1", origin=origin),
                 env.service.imagine(people[1], "a tree --steps 1"),
                 env.service.imagine(people[2], "a cloud --steps 1")]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        repeated = [o for o in outcomes[:2] if isinstance(o, AlreadyAccepted)]
        made = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(repeated) == 1 and len(made) == 3
        kept = next(o for o in outcomes[:2] if not isinstance(o, BaseException))
        assert repeated[0].job_id == kept.job_id  # the repeat is answered with the first one's job
        for ticket in made:
            await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        used = {r["user_id"]: r["used"] for r in await env.db.fetchall("SELECT user_id, used FROM quota_usage")}
        assert sorted(used.values()) == [2, 2, 2]  # warm-up + one each: nobody charged twice
        assert int(await env.db.fetchval("SELECT count(*) FROM jobs WHERE origin = 'telegram:update-77'")) == 1

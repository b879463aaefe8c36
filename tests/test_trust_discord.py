"""Issue #22, item 1 on Discord (the real discord.py client against the fake Discord): a forged
button naming another user's private result grants nothing; in a channel, a member may vary,
upscale and reroll a result posted there, charged to themselves."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import jobs, quotas, users
from tests.fake_discord import FakeDiscord, RecordedRequest, fake_discord_server
from tests.fakes import FakePipeline
from tests.test_discord import custom_ids, eventually, result_of, running

TIMEOUT = 30.0
DENIED = ("that you can use", "There is no image")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with fake_discord_server() as server:
        yield server


async def _answer(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    """The text this bot answered a click with (its callback, a follow-up or an edit)."""
    token = re.escape(inter["token"])
    pattern = rf"(/interactions/{inter['id']}/{token}/callback|/webhooks/{fake.app_id}/{token}(/messages/@original)?)"

    def says(rec: RecordedRequest) -> bool:
        return any(d in json.dumps(rec.json or {}) for d in DENIED) or any(
            d in (rec.json or {}).get("content", "") for d in DENIED)

    found = await fake.wait_for_request("*", pattern, TIMEOUT, predicate=says)
    return json.dumps(found.json)


def forged(fake: FakeDiscord, message: dict[str, Any], old: str, new: str, *, same_id: bool = False) -> dict[str, Any]:
    """A copy of ``message`` whose buttons say ``new`` where they said ``old``.

    discord.py (like Discord) only runs a click on a button the message carries, so a forging
    client is modelled by a message in the channel with forged buttons: a new message (not one of
    the job's recorded messages), or ``same_id``: the recorded message itself with forged buttons.
    """
    copy = json.loads(json.dumps(message).replace(old, new))
    if not same_id:
        copy["id"] = str(fake.snowflake())
    fake.messages[int(copy["id"])] = copy
    return copy


async def _jobs_of(env: Any, user: dict[str, Any]) -> list[Any]:
    row = await users.get_by_platform(env.db, "discord", str(user["id"]))
    return [] if row is None else list((await jobs.history(env.db, row.id, limit=50)).jobs)


async def _used(env: Any, user: dict[str, Any]) -> int:
    row = await users.get_by_platform(env.db, "discord", str(user["id"]))
    return 0 if row is None else await quotas.used(env.db, row.id, quotas.window_start(env.clock(), "daily"))


async def test_forged_buttons_naming_a_private_result_grant_nothing(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running(fake, tmp_path, FakePipeline()) as (env, front):
        alice, bob = fake.user, fake.make_user("bob")
        # Alice's result in the NSFW-allowed channel, which Bob does not see
        _, private = await result_of(fake, await fake.send_interaction(
            fake.slash("imagine", {"prompt": "a secret garden --n 2"}, alice, fake.nsfw_channel_id)))
        alice_job = custom_ids(private)[0][0].split(":")[2]
        # and one in the channel, where Bob sees it
        _, public = await result_of(fake, await fake.send_interaction(fake.slash("imagine", {"prompt": "an owl"}, alice)))

        public_job = custom_ids(public)[0][0].split(":")[2]
        # the public result's buttons, changed to name the private job
        fake_message = forged(fake, public, public_job, alice_job)
        for custom_id in (f"imagine:reroll:{alice_job}", f"imagine:var:{alice_job}:0", f"imagine:share:{alice_job}:0"):
            said = await _answer(fake, await fake.send_interaction(fake.button(custom_id, fake_message, bob)))
            assert any(d in said for d in DENIED), (custom_id, said)
        # U on a single image (the message has no U row): forged on the grid of two
        _, grid = await result_of(fake, await fake.send_interaction(
            fake.slash("imagine", {"prompt": "two owls --n 2"}, alice)))
        grid_job = custom_ids(grid)[0][0].split(":")[2]
        said = await _answer(fake, await fake.send_interaction(
            fake.button(f"imagine:up:{alice_job}:0", forged(fake, grid, grid_job, alice_job), bob)))
        assert "that you can use" in said

        await asyncio.sleep(0.2)
        assert await _jobs_of(env, bob) == []
        assert await _used(env, bob) == 0
        uploads = [f.filename for r in fake.requests if r.files for f in r.files]
        assert sum(name.startswith(alice_job) for name in uploads) == 1  # her own result only


async def test_a_channel_member_may_vary_upscale_and_reroll_a_result_posted_there(fake: FakeDiscord,
                                                                                  tmp_path: Path) -> None:
    async with running(fake, tmp_path, FakePipeline()) as (env, front):
        alice, bob = fake.user, fake.make_user("bob")
        _, grid = await result_of(fake, await fake.send_interaction(
            fake.slash("imagine", {"prompt": "a harbour at dawn --n 2"}, alice)))
        alice_job = custom_ids(grid)[0][0].split(":")[2]
        alice_used = await _used(env, alice)

        edit, single = await result_of(fake, await fake.send_interaction(fake.button(f"imagine:up:{alice_job}:1",
                                                                                     grid, bob)))
        assert edit.files and "image #2" in single["content"]
        for custom_id in (f"imagine:var:{alice_job}:0", f"imagine:reroll:{alice_job}"):
            await result_of(fake, await fake.send_interaction(fake.button(custom_id, grid, bob)))
        # V on the upscaled message (it shows image 2 only) is fine for image 2 …
        await result_of(fake, await fake.send_interaction(fake.button(f"imagine:var:{alice_job}:1", single, bob)))
        # … not for another image of the job (a forged index on the same message)
        wrong = forged(fake, single, f"imagine:var:{alice_job}:1", f"imagine:var:{alice_job}:0", same_id=True)
        said = await _answer(fake, await fake.send_interaction(fake.button(f"imagine:var:{alice_job}:0", wrong, bob)))
        assert "that you can use" in said

        made = await eventually(lambda: _delivered(env, bob, 3))
        assert sorted(j.request.get("kind", "txt2img") for j in made) == ["img2img", "img2img", "txt2img"]
        assert await _used(env, bob) == 6 and await _used(env, alice) == alice_used


async def _delivered(env: Any, user: dict[str, Any], n: int) -> list[Any] | None:
    found = await _jobs_of(env, user)
    return found if sum(j.status == "delivered" for j in found) == n else None

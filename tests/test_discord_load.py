"""Discord with many users at once: every interaction deferred in time, progress edits coalesced.

Timing goals live in bench/load_bench.py; here only what must hold: no interaction missed
Discord's 3 s (the fake answers 10062 "Unknown interaction" to a late callback), one message per
request (the deferred response, edited), and a result never waits for progress.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from bot.frontends.common import Coalescer
from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
from tests.fake_discord import FakeDiscord
from tests.service_support import service_env
from tests.test_discord import fake  # noqa: F401  (the fixture)

TIMEOUT = 120.0


async def test_coalescer_sends_the_newest_text_once_per_interval() -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    progress = Coalescer(send, 0.2)
    for n in range(10):
        progress.show(f"step {n}")
        await asyncio.sleep(0)
    await asyncio.sleep(0.3)
    assert sent == ["step 0", "step 9"] and progress.coalesced >= 8
    progress.show("late")
    await progress.settle()  # the result is ready: the waiting text is dropped
    await asyncio.sleep(0.3)
    assert sent == ["step 0", "step 9"]


async def test_coalescer_counts_the_interval_from_when_an_edit_was_answered() -> None:
    loop = asyncio.get_running_loop()
    spans: list[tuple[float, float]] = []

    async def slow_send(text: str) -> None:  # a platform that takes a while to answer each edit
        started = loop.time()
        await asyncio.sleep(0.15)
        spans.append((started, loop.time()))

    progress = Coalescer(slow_send, 0.2, clock=loop.time)
    for n in range(3):
        progress.show(f"step {n}")
        await asyncio.sleep(0.05)
    while progress.edits < 2:
        await asyncio.sleep(0.02)
    (_, first_answered), (second_started, _) = spans[0], spans[1]
    assert second_started - first_answered >= 0.2 - 1e-3  # not 0.2 after the first *started*
    await progress.settle()


async def test_thirty_users_at_once_all_deferred_in_time_one_message_each(
        fake: FakeDiscord, tmp_path: Path, tiny: Any) -> None:  # noqa: F811
    async with service_env(tmp_path, tiny) as env:
        front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                             progress_edit_interval=0.5))
        await asyncio.wait_for(front.start(timeout=10), 15)
        try:
            users = [fake.make_user(f"user{n}") for n in range(30)]
            inters = await asyncio.gather(*(fake.send_interaction(
                fake.slash("imagine", {"prompt": f"a comet {n} --steps 1"}, user)) for n, user in enumerate(users)))

            def done() -> bool:
                return all(any(r.files for r in fake.requests_to("PATCH", _original(fake, i))) for i in inters)

            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while not done():
                assert loop.time() < deadline, "not every result arrived"
                await asyncio.sleep(0.1)
            for inter in inters:
                callbacks = fake.requests_to("POST", rf"/interactions/{inter['id']}/{re.escape(inter['token'])}/callback")
                assert [c.status for c in callbacks] == [200] and callbacks[0].json == {"type": 5}
            # one message per request: nothing posted to the channel, only the responses edited
            assert not fake.requests_to("POST", r"/channels/\d+/messages")
            for inter in inters:
                edits = [r for r in fake.requests_to("PATCH", _original(fake, inter)) if not r.files]
                assert all(b.received_at - a.received_at >= 0.45 for a, b in zip(edits, edits[1:]))
        finally:
            await asyncio.wait_for(front.close(), 15)


def _original(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    return rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}/messages/@original"


async def test_fake_discord_enforces_the_global_limit_but_not_on_interactions() -> None:
    import aiohttp

    from tests.fake_discord import fake_discord_server

    async with fake_discord_server(global_per_second=3) as fake, aiohttp.ClientSession() as http:
        url = f"{fake.api_base}/channels/{fake.text_channel_id}/messages"
        statuses = []
        for n in range(5):
            async with http.post(url, json={"content": f"m{n}"}, headers={"Authorization": "Bot x"}) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["X-RateLimit-Global"] == "true" and "Via" in response.headers
        assert statuses == [200, 200, 200, 429, 429]


async def test_no_progress_edit_lands_after_the_apology_when_following_fails() -> None:
    from types import SimpleNamespace

    from bot.frontends.discord.delivery import Delivering
    from bot.service import Queued, Running

    said: list[str] = []

    class Ticket:
        job_id = "j1"
        request = SimpleNamespace(prompt="a comet")

        async def updates(self):  # type: ignore[no-untyped-def]
            yield Queued(position=1, eta=2.0)
            await asyncio.sleep(0.05)  # the first edit goes at once
            yield Running(step=1, steps=4)  # waits: the interval has not passed
            raise RuntimeError("the ticket broke")

    class Front(Delivering):
        settings = SimpleNamespace(progress_edit_interval=0.3)

        async def _progress(self, reply, text):  # type: ignore[no-untyped-def]
            said.append(text)

        async def _post(self, reply, text, **kwargs):  # type: ignore[no-untyped-def]
            said.append(text)

    await Front()._follow(Ticket(), SimpleNamespace(private=False))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)  # past the interval: a waiting edit would have gone by now
    assert said[0].startswith("⏳") and said[-1].startswith("Sorry, your images could not be sent")
    assert not any(text.startswith("🎨") for text in said)

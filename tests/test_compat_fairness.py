"""Fairness across interfaces: a burst on one API key does not push a chat user back in the queue.

The burst comes through the OpenAI-compatible route (the official client), the chat user types
into the terminal chat front end; both reach the one fair queue through ``service.imagine``.
With one image per batch, the chat user (not served yet) must lead the very next batch after
the one running, ahead of the burst's other jobs, as the fair policy promises.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import openai

from bot.frontends.console import run_console
from bot.service import Who
from tests.compat_support import served, user_jobs
from tests.fakes import FakePipeline
from tests.service_support import ADA
from tests.web_support import key_for

CHAT = Who("console", "carol", "carol")


async def test_a_key_burst_does_not_delay_a_chat_users_request(tmp_path: Path) -> None:
    pipeline = FakePipeline()
    pipeline.pause()
    async with served(tmp_path, pipeline, queue_options={"max_batch_images": 1}) as app:
        client = openai.AsyncOpenAI(base_url=f"{app.base_url}/v1", api_key=await key_for(app.env, ADA),
                                    max_retries=0, timeout=60)
        burst = [asyncio.create_task(client.images.generate(prompt=f"burst picture {i}")) for i in range(5)]
        assert await asyncio.to_thread(pipeline.wait_entered)  # the burst's first job holds the GPU
        for _ in range(200):
            if len(await user_jobs(app.env, ADA)) == 5:
                break
            await asyncio.sleep(0.02)
        assert len(await user_jobs(app.env, ADA)) == 5  # four more wait in line

        async def lines() -> AsyncIterator[str]:
            yield "/imagine a lone chat request"

        out = io.StringIO()
        chat = asyncio.create_task(run_console(app.env.service, who=CHAT, output_dir=tmp_path / "out",
                                               lines=lines(), out=out))
        for _ in range(200):
            if await user_jobs(app.env, CHAT):
                break
            await asyncio.sleep(0.02)
        pipeline.resume()
        results = await asyncio.wait_for(asyncio.gather(*burst), 60)
        await asyncio.wait_for(chat, 60)
        await client.close()  # on this loop: left to the garbage collector it fails in a later test's log

        order = [call.prompts[0] for call in pipeline.calls]
        assert len(order) == 6 and all(len(call.prompts) == 1 for call in pipeline.calls)
        assert order[0].startswith("burst picture") and order[1] == "a lone chat request", order
        assert all(len(r.data) == 1 for r in results)
        assert "done" in out.getvalue()

"""Issue #22, item 1 on the console and the HTTP API: every action that names a job or image,
tried with another user's ids, grants nothing (and costs nothing); a public share id grants
viewing and rating only."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

from bot.frontends.console import run_console
from bot.service import Who
from storage import jobs, quotas, ratings, users
from tests.fakes import FakePipeline
from tests.service_support import service_env
from tests.web_support import auth, key_for, web_env

ALICE = Who("console", "alice", "alice")
MALLORY = Who("console", "mallory", "mallory")
TIMEOUT = 60.0


async def _console(env, who: Who, lines: list[str], out: Path) -> str:  # type: ignore[no-untyped-def]
    buffer = io.StringIO()
    await asyncio.wait_for(run_console(env.service, who=who, output_dir=out, lines=lines, out=buffer), TIMEOUT)
    return buffer.getvalue()


async def _used(env, who: Who) -> int:  # type: ignore[no-untyped-def]
    user = await users.get_by_platform(env.db, who.platform, who.user_id)
    return 0 if user is None else await quotas.used(env.db, user.id, quotas.window_start(env.clock(), "daily"))


async def test_console_actions_on_another_users_job_grant_nothing(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        text = await _console(env, ALICE, ["a private lighthouse --n 2"], tmp_path / "alice")
        job = re.search(r"^(\w+): done", text, re.M).group(1)  # type: ignore[union-attr]
        image_id = int(re.search(r"\[1\] image (\d+)", text).group(1))  # type: ignore[union-attr]

        text = await _console(env, MALLORY, [f"/reroll {job}", f"/variation {job} 1", f"/rate {image_id} 5",
                                             f"/cancel {job}", f"/share {job} 1"], tmp_path / "mallory")
        assert text.count(f"There is no request {job} that you can use") == 2, text
        assert f"There is no image {image_id} that you can rate" in text
        assert f"You have no request {job}" in text
        assert f"There is no image {job}-1" in text  # /share
        mallory = await users.get_by_platform(env.db, "console", "mallory")
        assert mallory is None or (await jobs.history(env.db, mallory.id)).total == 0
        assert await _used(env, MALLORY) == 0
        assert not (tmp_path / "mallory").exists() or not list((tmp_path / "mallory").iterdir())
        assert mallory is None or await ratings.get(env.db, image_id, mallory.id) is None


async def test_http_api_actions_on_another_users_ids_are_404(tmp_path: Path) -> None:
    async with web_env(tmp_path) as w:
        alice, mallory = Who("telegram", "1001", "alice"), Who("telegram", "6666", "mallory")
        alice_key, mallory_key = await key_for(w.env, alice), await key_for(w.env, mallory)
        made = await w.client.post("/v1/images", json={"prompt": "a private lighthouse"}, headers=auth(alice_key))
        job = made.json()["job_id"]
        await asyncio.wait_for(w.env.service.ticket(job).delivery(), TIMEOUT)  # type: ignore[union-attr]
        ref = f"{job}-1"
        tries = [("GET", f"/v1/jobs/{job}", None), ("GET", f"/v1/jobs/{job}/events", None),
                 ("DELETE", f"/v1/jobs/{job}", None), ("GET", f"/v1/images/{ref}", None),
                 ("GET", f"/v1/images/{ref}?format=jpeg", None), ("POST", f"/v1/images/{ref}/rating", {"stars": 5}),
                 ("POST", f"/v1/images/{ref}/share", None)]
        for method, url, body in tries:
            answer = await w.client.request(method, url, json=body, headers=auth(mallory_key))
            assert answer.status_code == 404, (method, url, answer.status_code, answer.text)
            assert job in answer.json()["detail"], answer.json()
        assert (await w.client.get(f"/v1/images/{ref}", headers=auth(alice_key))).status_code == 200

        # shared: anyone may view and rate it through the API, nothing more
        shared = await w.client.post(f"/v1/images/{ref}/share", headers=auth(alice_key))
        assert shared.status_code == 200
        assert (await w.client.get(f"/v1/images/{ref}", headers=auth(mallory_key))).status_code == 200
        assert (await w.client.post(f"/v1/images/{ref}/rating", json={"stars": 4},
                                    headers=auth(mallory_key))).status_code == 200
        for method, url in (("GET", f"/v1/jobs/{job}"), ("DELETE", f"/v1/jobs/{job}")):
            assert (await w.client.request(method, url, headers=auth(mallory_key))).status_code == 404
        assert await _used(w.env, mallory) == 0

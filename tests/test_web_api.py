"""The HTTP API against a real service (SQLite, queue, fake GPU), driven in-process by httpx."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bot.frontends.web import WebSettings
from storage import jobs, read_metadata
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB
from tests.web_support import auth, key_for, web_env

TIMEOUT = 30.0


async def _wait_done(client, job_id: str, headers: dict[str, str]) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(300):  # bounded: 30 s
        body = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def _events(text: str) -> list[tuple[int, str, dict]]:
    found = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return found


async def test_make_watch_fetch_rate_with_a_key(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        key = await key_for(web.env, ADA)
        h = auth(key)
        r = await web.client.post("/v1/images", json={"prompt": "a red fox --ar 16:9", "count": 2, "seed": 7},
                                  headers=h)
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert set(accepted) >= {"job_id", "position", "eta_s"} and accepted["position"] >= 0
        job_id = accepted["job_id"]
        assert re.fullmatch(r"[0-9a-f]{12}", job_id)
        row = await jobs.get(web.env.db, job_id)
        assert row is not None and row.charged == 2  # acknowledged only once stored and charged

        done = await _wait_done(web.client, job_id, h)
        assert done["status"] == "done" and len(done["images"]) == 2
        assert done["prompt"].startswith("a red fox --ar 16:9")
        for _ in range(50):
            if (await jobs.get(web.env.db, job_id)).status == "delivered":
                break
            await asyncio.sleep(0.05)
        assert (await jobs.get(web.env.db, job_id)).status == "delivered"

        ref = done["images"][0]["id"]
        assert ref == f"{job_id}-1" and done["images"][0]["url"] == f"/v1/images/{ref}"
        png = await web.client.get(f"/v1/images/{ref}", headers=h)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        jpeg = await web.client.get(f"/v1/images/{ref}?format=jpeg", headers=h)
        assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
        assert read_metadata(jpeg.content) == read_metadata(png.content) != {}  # settings travel along
        webp = await web.client.get(f"/v1/images/{ref}?format=webp", headers=h)
        assert webp.headers["content-type"] == "image/webp" and webp.content[8:12] == b"WEBP"
        svg = await web.client.get(f"/v1/images/{ref}?format=svg", headers=h)
        assert svg.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(svg.content)
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and len(root) >= 1
        assert (await web.client.get(f"/v1/images/{ref}?format=gif", headers=h)).status_code == 422

        r = await web.client.post(f"/v1/images/{ref}/rating", json={"stars": 4}, headers=h)
        assert r.status_code == 200 and r.json() == {"image": ref, "stars": 4, "comment": None}
        bad = await web.client.post(f"/v1/images/{ref}/rating", json={"stars": 9}, headers=h)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "stars"]

        # the chat's number for the same image works on every image route too
        number = done["images"][1]["image_id"]
        assert isinstance(number, int) and number != done["images"][0]["image_id"]
        by_number = await web.client.get(f"/v1/images/{number}", headers=h)
        assert by_number.status_code == 200 and by_number.content == (
            await web.client.get(f"/v1/images/{job_id}-2", headers=h)).content
        r = await web.client.post(f"/v1/images/{number}/rating", json={"stars": 2}, headers=h)
        assert r.status_code == 200 and r.json()["stars"] == 2
        bob = auth(await key_for(web.env, BOB))
        assert (await web.client.get(f"/v1/images/{number}", headers=bob)).status_code == 404  # not shared

        history = (await web.client.get("/v1/history", headers=h)).json()
        assert history["total"] == 1 and history["jobs"][0]["job_id"] == job_id
        assert [i["my_stars"] for i in history["jobs"][0]["images"]] == [4, 2]
        quota = (await web.client.get("/v1/quota", headers=h)).json()
        assert quota["used"] == 2 and quota["limit"] == 50 and quota["remaining"] == 48


async def test_keys_owners_and_bad_json(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        ada, bob = auth(await key_for(web.env, ADA)), auth(await key_for(web.env, BOB))
        for headers in ({}, auth("ib_wrong"), {"Authorization": "Basic abc"}):
            assert (await web.client.get("/v1/quota", headers=headers)).status_code == 401
            assert (await web.client.post("/v1/images", json={"prompt": "x"}, headers=headers)).status_code == 401
        job_id = (await web.client.post("/v1/images", json={"prompt": "ada's owl"}, headers=ada)).json()["job_id"]
        await _wait_done(web.client, job_id, ada)
        # someone else's job or image is 404, the same as one that does not exist
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events", f"/v1/images/{job_id}-1",
                     "/v1/jobs/000000000000", "/v1/images/000000000000-1", "/v1/images/1"):
            assert (await web.client.get(path, headers=bob)).status_code == 404, path
        assert (await web.client.delete(f"/v1/jobs/{job_id}", headers=bob)).status_code == 404
        assert (await web.client.post(f"/v1/images/{job_id}-1/rating", json={"stars": 5},
                                      headers=bob)).status_code == 404
        assert (await web.client.post(f"/v1/images/{job_id}-1/share", headers=bob)).status_code == 404

        # bad JSON: 422 naming the fields
        r = await web.client.post("/v1/images", content=b"{not json", headers={**ada, "Content-Type": "application/json"})
        assert r.status_code == 422
        r = await web.client.post("/v1/images", json={"count": 9, "colour": "red"}, headers=ada)
        assert r.status_code == 422
        fields = {tuple(d["loc"]) for d in r.json()["detail"]}
        assert {("body", "prompt"), ("body", "count"), ("body", "colour")} <= fields
        r = await web.client.post("/v1/images", json={"prompt": "a fox", "aspect": "2:9"}, headers=ada)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "aspect"]
        r = await web.client.post("/v1/images", json={"prompt": "a fox --ar 2:9"}, headers=ada)
        assert r.status_code == 422 and "2:9" in r.json()["detail"][0]["msg"]

        # a revoked key stops working
        keys = await web.env.service.api_keys(BOB)
        await web.env.service.revoke_api_key(BOB, keys[0].id)
        assert (await web.client.get("/v1/quota", headers=bob)).status_code == 401


async def test_sse_progress_in_order_and_cancel(tmp_path: Path) -> None:
    fake = FakePipeline(step_seconds=0.05)
    async with web_env(tmp_path, fake) as web:
        h = auth(await key_for(web.env, ADA))
        fake.pause()  # the first job holds the GPU, so the watched one starts in line
        accepted = (await web.client.post("/v1/images", json={"prompt": "a first fox"}, headers=h)).json()
        first = accepted["job_id"]
        assert accepted["eta_measured"] is False  # nothing timed on this bot yet: eta_s is a guess
        job_id = (await web.client.post("/v1/images", json={"prompt": "a slow fox", "steps": 4},
                                        headers=h)).json()["job_id"]
        watching = asyncio.create_task(web.client.get(f"/v1/jobs/{job_id}/events", headers=h))
        await asyncio.sleep(0.2)
        fake.resume()
        r = await asyncio.wait_for(watching, TIMEOUT)
        await _wait_done(web.client, first, h)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        names = [name for _, name, _ in events]
        assert [n for n, _, _ in events] == list(range(1, len(events) + 1))
        assert names[0] == "queued" and names[-1] == "done" and "running" in names
        steps = [data["step"] for _, name, data in events if name == "running"]
        assert steps == sorted(steps) and steps[-1] == 4
        assert events[-1][2]["images"][0]["id"] == f"{job_id}-1"
        # after the job: its recorded history, replayed as the same sequence (marked so, with times)
        again = _events((await web.client.get(f"/v1/jobs/{job_id}/events", headers=h)).text)
        assert [(n, name) for n, name, _ in again] == [(1, "queued"), (2, "running"), (3, "done")]
        assert all(data["replayed"] is True and data["at"] for _, _, data in again)
        assert again[1][2]["step"] == again[1][2]["steps"] == 4
        assert again[2][2]["images"] == events[-1][2]["images"]
        stored = await jobs.get(web.env.db, job_id)
        assert [data["at"] for _, _, data in again] == [stored.created_at, stored.started_at, stored.finished_at]

        fake.pause()
        running = (await web.client.post("/v1/images", json={"prompt": "a stuck fox"}, headers=h)).json()["job_id"]
        waiting = (await web.client.post("/v1/images", json={"prompt": "a waiting fox"}, headers=h)).json()
        assert waiting["position"] >= 1 and waiting["eta_measured"] is True
        r = await web.client.delete(f"/v1/jobs/{waiting['job_id']}", headers=h)
        assert r.status_code == 200 and r.json() == {"job_id": waiting["job_id"], "status": "cancelled", "refunded": 1}
        assert (await web.client.get(f"/v1/jobs/{waiting['job_id']}", headers=h)).json()["status"] == "cancelled"
        assert (await web.client.delete(f"/v1/jobs/{waiting['job_id']}", headers=h)).status_code == 403
        cancelled = _events((await web.client.get(f"/v1/jobs/{waiting['job_id']}/events", headers=h)).text)
        assert [name for _, name, _ in cancelled] == ["queued", "cancelled"]  # it never ran
        fake.resume()
        await _wait_done(web.client, running, h)
        assert (await web.client.get("/v1/quota", headers=h)).json()["used"] == 3


async def test_idempotency_key_makes_one_job(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        h = {**auth(await key_for(web.env, ADA)), "Idempotency-Key": "req-1"}
        first = await web.client.post("/v1/images", json={"prompt": "one fox"}, headers=h)
        second = await web.client.post("/v1/images", json={"prompt": "one fox"}, headers=h)
        assert first.status_code == second.status_code == 202
        assert first.json()["job_id"] == second.json()["job_id"]
        assert (await web.env.service.quota(ADA)).used == 1


async def test_a_retry_with_a_known_idempotency_key_is_answered_before_any_limit(tmp_path: Path) -> None:
    """The chats' request spacing (3 s) does not apply to API keys; the per-key rate limit does,
    and a repeat with a known Idempotency-Key gets its job even when that limit is spent."""
    from bot.safety import AllowAllImages, BlocklistChecker, Moderation, ModerationSettings, Restricted
    from tests.service_support import ROOT as ADMIN

    async with web_env(tmp_path, settings=WebSettings(enabled=True, rate_limit=2)) as web:
        web.env.service.moderation = Moderation(  # the shipped default spacing, as `make run` has it
            web.env.db, ModerationSettings(request_interval_s=3.0), prompt_checker=BlocklistChecker.default(),
            image_classifier=AllowAllImages(), admins={ADMIN.key}, clock=web.env.clock)
        h = auth(await key_for(web.env, ADA))
        first = await web.client.post("/v1/images", json={"prompt": "a fox"}, headers={**h, "Idempotency-Key": "a"})
        again = await web.client.post("/v1/images", json={"prompt": "a fox"}, headers={**h, "Idempotency-Key": "a"})
        other = await web.client.post("/v1/images", json={"prompt": "an owl"}, headers={**h, "Idempotency-Key": "b"})
        assert [r.status_code for r in (first, again, other)] == [202, 202, 202], [first.text, again.text, other.text]
        assert again.json()["job_id"] == first.json()["job_id"] != other.json()["job_id"]
        assert (await web.env.service.quota(ADA)).used == 2  # the repeat cost nothing
        # the key's 2 requests a minute are spent (the repeat took none): a new request is refused…
        spent = await web.client.post("/v1/images", json={"prompt": "a hare"}, headers={**h, "Idempotency-Key": "c"})
        assert spent.status_code == 429 and "Retry-After" in spent.headers and "this key" in spent.json()["detail"]
        # …while repeats of both known keys are still answered with their jobs
        for key, made in (("a", first), ("b", other)):
            r = await web.client.post("/v1/images", json={"prompt": "x"}, headers={**h, "Idempotency-Key": key})
            assert r.status_code == 202 and r.json()["job_id"] == made.json()["job_id"]
            assert r.headers["Location"] == f"/v1/jobs/{made.json()['job_id']}"
        assert (await web.env.service.quota(ADA)).used == 2
        # the chat's spacing still holds in the chat, for the same user
        await web.env.service.imagine(ADA, "a chat fox")
        with pytest.raises(Restricted, match="wait 3 s"):
            await web.env.service.imagine(ADA, "another chat fox")


async def test_same_rules_as_chat_quota_safety_and_rate_limit(tmp_path: Path) -> None:
    async with web_env(tmp_path, daily_quota=2,
                       settings=WebSettings(enabled=True, rate_limit=6)) as web:
        h = auth(await key_for(web.env, ADA))
        r = await web.client.post("/v1/images", json={"prompt": "three foxes", "count": 3}, headers=h)
        assert r.status_code == 429 and "left" in r.json()["detail"]
        r = await web.client.post("/v1/images", json={"prompt": "a GORY battle"}, headers=h)
        assert r.status_code == 403 and r.json()["error"] == "BlockedPrompt"
        codes = [(await web.client.get("/v1/quota", headers=h)).status_code for _ in range(6)]
        assert codes[-1] == 429 and codes.count(429) >= 1
        assert "Retry-After" in (await web.client.get("/v1/quota", headers=h)).headers


async def test_typed_lora_and_refine_options(tmp_path: Path) -> None:
    from tests.test_refine import ScriptedRefiner

    async with web_env(tmp_path) as web:
        h = auth(await key_for(web.env, ADA))
        # no LoRA folder on this bot: the typed option is refused by name, like any bad option
        r = await web.client.post("/v1/images", json={"prompt": "a fox", "lora": "pixel-art:0.8"}, headers=h)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lora"], r.text
        # refine without a model configured: told which key to set
        r = await web.client.post("/v1/images", json={"prompt": "a fox", "refine": True}, headers=h)
        assert r.status_code == 422 and "refine.model" in r.json()["detail"][0]["msg"]
        # with a refiner: the refined prompt is drawn and named in the answer's notes
        web.env.service.refiner = ScriptedRefiner("a fox, golden hour, detailed fur")
        try:
            r = await web.client.post("/v1/images", json={"prompt": "a fox", "refine": True, "seed": 3}, headers=h)
            assert r.status_code == 202, r.text
            assert r.json()["notes"] == ["Refined prompt: a fox, golden hour, detailed fur"]
            done = await _wait_done(web.client, r.json()["job_id"], h)
            assert done["status"] == "done" and done["prompt"].startswith("a fox, golden hour")
            plain = await web.client.post("/v1/images", json={"prompt": "a hare"}, headers=h)
            assert plain.status_code == 202 and plain.json()["notes"] == []
        finally:
            web.env.service.refiner.close()
        # both in the prompt and typed: which one to keep is said
        r = await web.client.post("/v1/images", json={"prompt": "a fox --refine", "refine": False}, headers=h)
        assert r.status_code == 422 and "set twice" in r.json()["detail"][0]["msg"]

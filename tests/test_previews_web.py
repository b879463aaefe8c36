"""Live previews on the web: the /v1 job events and the studio's (SSE ``preview`` events), and the
A1111 ``/sdapi/v1/progress`` ``current_image``; the real app and service, the tiny pipeline with a
tiny TAESD (a preview after every step) slowed to a GPU's pace."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.compat_support import basic, served
from tests.preview_support import SlowSteps, previewing_pipeline
from tests.service_support import ADA
from tests.studio_support import sign_in
from tests.web_support import auth, key_for, web_env

pytestmark = pytest.mark.slow

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def previewing() -> Any:
    return previewing_pipeline(every_steps=1)


def _frames(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    found = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return found


def _jpeg(b64: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        assert image.format == "JPEG"
        return image.size


async def _api_events(tmp_path: Path, pipeline: Any) -> list[tuple[int, str, dict[str, Any]]]:
    async with web_env(tmp_path, SlowSteps(pipeline, 0.3)) as web:
        h = auth(await key_for(web.env, ADA))
        job = (await web.client.post("/v1/images", json={"prompt": "a lighthouse at dusk", "steps": 4, "seed": 2},
                                     headers=h)).json()["job_id"]
        r = await asyncio.wait_for(web.client.get(f"/v1/jobs/{job}/events", headers=h), TIMEOUT)
    assert r.status_code == 200
    return _frames(r.text)


async def test_api_job_events_carry_the_preview(tmp_path: Path, previewing: Any) -> None:
    events = await _api_events(tmp_path, previewing)
    assert [n for n, _, _ in events] == list(range(1, len(events) + 1))
    assert events[-1][1] == "done"
    previews = [(i, data) for i, (_, name, data) in enumerate(events) if name == "preview"]
    assert [data["step"] for _, data in previews] == [1, 2, 3]  # not after the last step: the image follows
    for i, data in previews:  # right after the running event of its step
        assert events[i - 1][1] == "running" and events[i - 1][2]["step"] == data["step"]
        assert data["steps"] == 4 and data["media_type"] == "image/jpeg" and _jpeg(data["image"]) == (256, 256)


async def test_no_preview_events_when_previews_are_off(tmp_path: Path, tiny: Any) -> None:
    events = await _api_events(tmp_path, tiny)
    names = [name for _, name, _ in events]
    assert "running" in names and names[-1] == "done" and "preview" not in names


async def test_studio_shows_the_preview_while_the_job_runs(tmp_path: Path, previewing: Any) -> None:
    async with web_env(tmp_path, SlowSteps(previewing, 0.3)) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        r = await web.client.post("/studio/generate", json={"prompt": "a lighthouse at dusk", "steps": 4},
                                  headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert r.status_code == 202, r.text
        events = _frames((await asyncio.wait_for(web.client.get(r.json()["events"]), TIMEOUT)).text)
        page = (await web.client.get("/studio")).text
        script = (await web.client.get("/static/studio.js")).text
    previews = [data for _, name, data in events if name == "preview"]
    assert previews and all(_jpeg(p["image"]) == (256, 256) for p in previews)
    assert events[-1][1] == "done"
    # the page has the place the script puts it in
    assert 'id="preview"' in page and 'addEventListener("preview"' in script


async def test_a1111_progress_current_image_is_the_latest_preview(tmp_path: Path, previewing: Any) -> None:
    async with served(tmp_path, SlowSteps(previewing, 0.5)) as app:
        headers = basic(await key_for(app.env, ADA))
        async with httpx.AsyncClient(base_url=app.base_url, timeout=TIMEOUT) as http:
            call = asyncio.create_task(http.post("/sdapi/v1/txt2img", json={"prompt": "a long night", "steps": 4,
                                                                            "width": 256, "height": 256},
                                                 headers=headers))
            seen: list[dict[str, Any]] = []
            while not call.done():
                state = (await http.get("/sdapi/v1/progress", headers=headers)).json()
                seen.append(state)
                await asyncio.sleep(0.1)
            assert (await call).status_code == 200
    images = [s for s in seen if s["current_image"]]
    assert images, seen
    for state in images:  # base64 of a JPEG, while the call runs, with the step it belongs to
        assert _jpeg(state["current_image"]) == (256, 256) and state["state"]["sampling_step"] >= 1
    assert seen[-1]["current_image"] is None or seen[-1]["state"]["sampling_step"] >= 1
    before = [s for s in seen if s["state"]["sampling_step"] == 0]
    assert all(s["current_image"] is None for s in before)  # nothing before the first preview

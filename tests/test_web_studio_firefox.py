"""The studio in Firefox: Debian's firefox-esr, driven over WebDriver BiDi by puppeteer-core (a Node
script, tests/browser/studio_firefox.mjs), against the real service and the tiny pipeline. The
Chromium test (tests/test_web_studio_browser.py) covers every action; this one proves the page's
core path in the other engine: sign in, make an image, watch it finish, rate it, CSRF refused."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.web import WebFrontEnd, WebSettings
from tests.service_support import ADA, service_env
from tests.test_web_studio_browser import SlowSteps, _console_link

BROWSER = Path(__file__).resolve().parent / "browser"
FIREFOX = next((p for p in (os.environ.get("FIREFOX"), shutil.which("firefox-esr"), shutil.which("firefox")) if p), None)
NODE = shutil.which("node")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(FIREFOX is None or NODE is None or not (BROWSER / "node_modules" / "puppeteer-core").is_dir(),
                                 reason="needs Firefox ESR, Node.js and `npm ci --prefix tests/browser` (.ci/run does all three)")]


async def test_studio_in_firefox(tmp_path: Path, tiny: Any) -> None:
    async with service_env(tmp_path, SlowSteps(tiny, 0.05)) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        try:
            link = await _console_link(env.service, ADA, tmp_path)
            driver = await asyncio.create_subprocess_exec(
                NODE, str(BROWSER / "studio_firefox.mjs"), f"http://127.0.0.1:{front.port}", link, "ada",
                cwd=BROWSER, env={**os.environ, "FIREFOX": str(FIREFOX)},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(driver.communicate(), 240)
        finally:
            await front.close()
        lines = stdout.decode().strip().splitlines()
        assert driver.returncode == 0 and lines, stderr.decode()[-2000:]
        seen = json.loads(lines[-1])
        assert "error" not in seen, seen["error"]
        assert seen["signedIn"] and seen["imageLoaded"] and seen["rated"] and "firefox" in seen["userAgent"].lower()
        assert seen["noToken"] == 403  # a POST without the CSRF token is refused in Firefox too
        entry = (await env.service.history(ADA)).entries[0]  # made and rated as the chat account
        assert entry.images[0].my_stars == 4 and seen["ref"].startswith(entry.job_id)

"""The studio's brush (issue 24, item 4) in a real browser (Chromium, Playwright): paint over part of
an image, say what goes there, and the edit job repaints only what was painted (the tiny SDXL, the
real service and SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.frontends.web import WebFrontEnd, WebSettings
from storage import jobs
from tests.service_support import ADA, service_env
from tests.test_web_studio_browser import CHROMIUM, _sign_in

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive: `apt-get install chromium` "
                                                         "(.ci/run installs it) or set CHROMIUM=/path/to/chromium")]


async def test_paint_a_region_and_repaint_it(tmp_path: Path, tiny: Any) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with service_env(tmp_path, tiny) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        base = f"http://127.0.0.1:{front.port}"
        made = await (await env.service.imagine(ADA, "a harbour at dusk --seed 4 --steps 2")).delivery()
        ref = f"{made.job_id}-1"
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
                try:
                    page = await (await browser.new_context(viewport={"width": 1280, "height": 1400})).new_page()
                    page.set_default_timeout(30_000)
                    await _sign_in(page, base, await env.service.web_signin_link(ADA), "ada")
                    await page.goto(base + f"/me/{ref}")
                    await page.get_by_role("button", name="Vary (Region)").click()
                    canvas = page.get_by_role("img", name="Paint over the part to change")

                    # nothing painted or named: told so, nothing sent
                    await page.get_by_label("Paint there instead").fill("a lighthouse")
                    await page.get_by_role("button", name="Repaint region").click()
                    await page.wait_for_selector("#message:has-text('Paint over the part to change, or name it')")
                    await canvas.scroll_into_view_if_needed()
                    box = await canvas.bounding_box()  # where it is now (below the message), in the viewport
                    assert box is not None and box["width"] > 100

                    # paint a stroke down the left quarter of the picture
                    await page.get_by_label("Brush size").fill("30")
                    x = box["x"] + box["width"] * 0.15
                    await page.mouse.move(x, box["y"] + 5)
                    await page.mouse.down()
                    for step in range(1, 11):
                        await page.mouse.move(x, box["y"] + box["height"] * step / 10 - 5)
                    await page.mouse.up()
                    await page.get_by_role("button", name="Repaint region").click()
                    await page.wait_for_url("**/studio?watch=*")
                    await page.wait_for_selector("#results li img")
                    await page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')")
                finally:
                    await browser.close()
        finally:
            await front.close()
        entry = (await env.service.history(ADA)).entries[0]
        row = await jobs.get(env.db, entry.job_id)
        assert row.request["kind"] == "edit" and row.request["mode"] == "mask" and row.charged == 1
        original = np.asarray(Image.open(made.images[0].path).convert("RGB")).astype(int)
        result = np.asarray(Image.open(entry.images[0].image.path).convert("RGB")).astype(int)
        assert np.abs(result[:, 128:] - original[:, 128:]).max() <= 2  # the right half: untouched
        assert np.abs(result[:, 20:60] - original[:, 20:60]).mean() > 2  # under the stroke: repainted
        assert (await env.service.quota(ADA)).used == 2

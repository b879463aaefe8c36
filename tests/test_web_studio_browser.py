"""The web studio in a real browser (Chromium from Debian packages, driven by Playwright), over the
real service, the tiny random-weight SDXL pipeline and SQLite: sign in with a link the bot made,
make an image while watching its progress, download every format, rate, share, find it in the
gallery and in My images, sign out; used and expired links, CSRF and another account's image refused.
Also takes the docs' screenshots: with IMAGINE_DOCS_SCREENSHOTS=1 they replace docs/img/studio.png
and docs/img/history.png (otherwise they stay in the test's temporary folder)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.frontends.web import WebFrontEnd, WebSettings
from storage.rating_stats import recent_comments
from tests.service_support import ADA, BOB, service_env

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def _shots(tmp_path: Path) -> Path:
    return DOCS_IMG if os.environ.get("IMAGINE_DOCS_SCREENSHOTS") == "1" else tmp_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive: `apt-get install chromium` "
                                                         "(.ci/run installs it) or set CHROMIUM=/path/to/chromium")]


class SlowSteps:
    """The real pipeline, each denoising step a little slower, so a person (and this test) sees progress."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    @property
    def caps(self) -> Any:
        return self.inner.caps

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, batch: Any, on_step: Any = None, should_stop: Any = None) -> Any:
        def step(i: int, n: int, *previews: Any) -> None:
            time.sleep(self.delay)
            if on_step is not None:
                on_step(i, n, *previews)

        return self.inner.generate(batch, step, should_stop)


async def _console_link(service: Any, who: Any, root: Path) -> str:
    """/web in the terminal chat: the link the bot answers."""
    from bot.frontends.console import run_console

    out = io.StringIO()
    await asyncio.wait_for(run_console(service, who=who, output_dir=root / "out", lines=["/web"], out=out), 30)
    return re.search(r"(/signin/[\w-]+)", out.getvalue()).group(1)  # type: ignore[union-attr]


async def _sign_in(page: Any, base: str, link: str, name: str) -> None:
    await page.goto(base + link)
    await page.get_by_role("button", name=f"Sign in as {name}").click()
    await page.wait_for_url("**/studio")


async def test_studio_in_chromium(tmp_path: Path, tiny: Any) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    assert CHROMIUM is not None
    async with service_env(tmp_path, SlowSteps(tiny, 0.15)) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        base = f"http://127.0.0.1:{front.port}"
        link = await _console_link(env.service, ADA, tmp_path)
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
                try:
                    context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
                    page = await context.new_page()
                    page.set_default_timeout(30_000)
                    await _sign_in(page, base, link, "ada")
                    cookie = next(c for c in await context.cookies() if c["name"] == "ib_session")
                    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

                    # the link is used: opening it again is refused in words
                    used = await browser.new_page()
                    await used.goto(base + link)
                    assert "used or expired" in await used.locator("[role=alert]").inner_text()
                    await used.close()

                    # keyboard: the skip link comes first; the form is filled and sent by keys alone
                    await page.keyboard.press("Tab")
                    assert await page.evaluate("document.activeElement.className") == "skip"
                    await page.focus("#prompt")
                    await page.keyboard.type("a lighthouse at dusk")
                    await page.get_by_label("Random").uncheck()
                    await page.get_by_label("Seed number").fill("11")
                    await page.get_by_label("Steps").select_option("2")
                    await page.evaluate("""() => { window.seen = [];
                        new MutationObserver(() => window.seen.push(document.getElementById('status').textContent))
                          .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true}); }""")
                    await page.focus("#negative")
                    await page.keyboard.press("Enter")  # submits the form
                    await page.wait_for_selector("#results li img")
                    await page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')")
                    await page.wait_for_selector("#quota:has-text('49 of 50 images left')")  # charged once
                    seen = await page.evaluate("window.seen")
                    assert any(s.startswith("Queued: position") for s in seen), seen
                    assert any(re.match(r"Making it: step \d of 2", s) for s in seen), seen
                    image = page.locator("#results li img").first
                    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
                    ref = (await page.locator("#results .actions").first.get_attribute("data-ref"))
                    assert ref and (await env.service.history(ADA)).entries[0].images[0].image.seed == 11

                    # every download format decodes
                    for fmt, kind in (("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WEBP"), ("SVG", None)):
                        async with page.expect_download() as waiting:
                            await page.locator("#results .downloads").get_by_role("link", name=fmt).click()
                        download = await waiting.value
                        saved = tmp_path / download.suggested_filename
                        await download.save_as(saved)
                        assert saved.suffix in (".png", ".jpg", ".webp", ".svg")
                        if kind is None:
                            assert b"<svg" in saved.read_bytes()[:500]
                        else:
                            with Image.open(saved) as decoded:
                                decoded.load()
                                assert decoded.format == kind and decoded.size[0] > 0

                    # rate it: stored as the chat account's rating
                    await page.get_by_role("button", name="Rate 4 stars").click()
                    await page.wait_for_selector("#results button[aria-label='Rate 4 stars'][aria-pressed=true]")
                    assert (await env.service.history(ADA)).entries[0].images[0].my_stars == 4
                    # the comment box opens once rated; what is written is kept beside the stars
                    await page.locator("#results form.comment textarea").first.fill("the sky is right")
                    await page.locator("#results").get_by_role("button", name="Save comment").first.click()
                    await page.wait_for_selector("#message:has-text('Comment saved')")
                    assert [c.comment for c in await recent_comments(env.service.db)] == ["the sky is right"]
                    await page.screenshot(path=str(_shots(tmp_path) / "studio.png"))

                    # a POST without the CSRF token is refused, and in words
                    answer = await page.evaluate("""() => fetch('/studio/generate', {method: 'POST',
                        headers: {'Content-Type': 'application/json', 'Accept': 'application/json'},
                        body: JSON.stringify({prompt: 'no token'})}).then(r => r.json().then(j => [r.status, j.detail]))""")
                    assert answer[0] == 403 and "security token" in answer[1]

                    # a refusal shows in the page (never raw JSON): a prompt the chat refuses
                    await page.fill("#prompt", "a GORY battle")
                    await page.click("#generate")
                    await page.wait_for_selector("#message:not([hidden])")
                    refusal = await page.locator("#message").inner_text()
                    assert refusal and "{" not in refusal and "detail" not in refusal

                    # share it, then find it in the public gallery
                    await page.locator("#results").get_by_role("button", name="Share to the gallery").click()
                    public = await page.locator("#results a.public").get_attribute("href")
                    assert public and "/i/" in public
                    assert await page.locator("#results .share-to a", has_text="Share to Reddit").count() == 1
                    await page.goto(base + "/")
                    assert await page.locator("ul.grid li", has_text="a lighthouse at dusk").count() == 1
                    await page.goto(public)
                    assert (await page.locator('meta[property="og:image"]').get_attribute("content")).endswith("/image.png")

                    # My images: search, open one, its parameters, reuse them in the studio
                    await page.goto(base + "/me")
                    await page.fill("#mq", "zebra")
                    await page.get_by_role("button", name="Search").click()
                    await page.wait_for_url("**/me?q=zebra*")
                    assert await page.locator("ul.mine li").count() == 0
                    await page.fill("#mq", "lighthouse")
                    await page.get_by_role("button", name="Search").click()
                    await page.wait_for_url("**/me?q=lighthouse*")
                    assert await page.locator("ul.mine li").count() == 1
                    await page.screenshot(path=str(_shots(tmp_path) / "history.png"))
                    await page.locator("ul.mine li a").first.click()
                    await page.wait_for_url(f"**/me/{ref}")
                    assert await page.locator(".params dt:has-text('Seed') + dd").inner_text() == "11"
                    await page.get_by_role("link", name="Use these settings in the studio").click()
                    await page.wait_for_url(f"**/studio?from={ref}")
                    assert await page.input_value("#prompt") == "a lighthouse at dusk"
                    assert await page.input_value("#seed") == "11" and not await page.is_checked("#random")

                    # on a phone: the form fits the width (no sideways scrolling)
                    await page.set_viewport_size({"width": 390, "height": 844})
                    assert await page.evaluate("document.documentElement.scrollWidth <= 390")
                    await page.set_viewport_size({"width": 1280, "height": 900})

                    # another account: Ada's unshared image is not reachable by its URL
                    private = await (await env.service.imagine(ADA, "a private diary --seed 5")).delivery()
                    ref = f"{private.job_id}-1"
                    bob_context = await browser.new_context()
                    bob = await bob_context.new_page()
                    await _sign_in(bob, base, await env.service.web_signin_link(BOB), "bob")
                    response = await bob.goto(base + f"/me/{ref}")
                    assert response is not None and response.status == 404
                    assert "a private diary" not in await bob.content()
                    response = await bob.goto(base + f"/studio/images/{ref}")
                    assert response is not None and response.status == 404
                    await bob_context.close()

                    # from an image's page: variations are watched in the studio; delete asks first
                    lighthouse = (await env.service.history(ADA, search="lighthouse")).entries[0]
                    mine = f"{lighthouse.job_id}-1"
                    await page.goto(base + f"/me/{mine}")
                    await page.get_by_role("button", name="Variations").click()
                    await page.wait_for_url("**/studio?watch=*")
                    await page.wait_for_selector("#results li img")
                    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                    await page.goto(base + f"/me/{mine}")
                    await page.get_by_role("button", name="Delete").click()
                    await page.wait_for_url("**/me")
                    assert await page.locator(f'a[href="/me/{mine}"]').count() == 0
                    assert (await page.goto(public)).status == 404  # its share went with it

                    # sign out: the studio asks to sign in again
                    await page.goto(base + "/studio")
                    await page.get_by_role("button", name="Sign out").click()
                    await page.wait_for_url("**/signed-out")
                    await page.goto(base + "/studio")
                    assert "send /web" in (await page.content()).replace("<code>", "").replace("</code>", "")

                    # an unused link expires after 10 minutes
                    late = await env.service.web_signin_link(ADA)
                    env.clock.advance(minutes=11)
                    await page.goto(base + late)
                    assert "used or expired" in await page.locator("[role=alert]").inner_text()
                finally:
                    await browser.close()
        finally:
            await front.close()


async def test_start_image_and_toolbox_in_chromium(tmp_path: Path, tiny: Any) -> None:
    """A picture to start from (chosen in the form, strength on a slider) goes through the API's
    upload checks and POST path; then ⬆️ Upscale, 🔍 Zoom out and ⬅️ Pan on a result, each a job
    of the signed-in account watched in the page; a file that is not a picture is refused in words."""
    playwright_api = pytest.importorskip("playwright.async_api")
    from storage import inputs, jobs
    from tests.upload_support import photo

    assert CHROMIUM is not None
    async with service_env(tmp_path, tiny) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        base = f"http://127.0.0.1:{front.port}"
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
                try:
                    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                    page.set_default_timeout(60_000)
                    await _sign_in(page, base, await _console_link(env.service, ADA, tmp_path), "ada")

                    # not a picture: refused in the page, in words, and nothing is charged
                    await page.fill("#prompt", "a harbour")
                    await page.set_input_files("#image", files=[{"name": "notes.png", "mimeType": "image/png",
                                                                 "buffer": b"these are not pixels"}])
                    await page.click("#generate")
                    await page.wait_for_selector("#message:not([hidden])")
                    refusal = await page.locator("#message").inner_text()
                    assert "image" in refusal.lower() and "{" not in refusal
                    assert (await env.service.quota(ADA)).used == 0

                    # a picture, its strength on the slider; the size follows the picture (3:2)
                    assert await page.is_enabled("#strength")
                    await page.set_input_files("#image", files=[{"name": "harbour.png", "mimeType": "image/png",
                                                                 "buffer": photo(300, 200)}])
                    await page.locator("#strength").fill("0.5")
                    assert await page.locator("#strength-value").inner_text() == "0.50"
                    await page.get_by_label("Steps").select_option("2")
                    await page.click("#generate")
                    await page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')")
                    ref = await page.locator("#results .actions").first.get_attribute("data-ref")
                    assert ref
                    started = await jobs.get(env.db, ref.rpartition("-")[0])
                    assert started.request["kind"] == "img2img" and started.request["strength"] == 0.5
                    assert (started.request["width"], started.request["height"]) == (304, 208)
                    assert await inputs.for_job(env.db, started.id) is not None

                    async def use(button: str, kind: str, size: tuple[int, int]) -> str:
                        before = await page.locator("#results .actions").first.get_attribute("data-ref")
                        await page.locator("#results").get_by_role("button", name=button).first.click()
                        await page.wait_for_function(
                            f"(() => {{ const a = document.querySelector('#results .actions');"
                            f" return a && a.dataset.ref !== '{before}'"
                            f" && document.getElementById('status').textContent.startsWith('Done'); }})()")
                        made = await page.locator("#results .actions").first.get_attribute("data-ref")
                        row = await jobs.get(env.db, made.rpartition("-")[0])
                        assert row.request["kind"] == kind and row.request["source"] == before.replace("-", "#")
                        image = page.locator("#results li img").first
                        assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == list(size)
                        return made

                    await use("⬆️ Upscale (Subtle)", "upscale", (608, 416))
                    await use("🔍 Zoom out 2x", "zoom", (304, 208))
                    await use("⬅️ Pan left", "pan", (368, 176))  # 1.5x as wide: the nearest bucket
                    assert (await env.service.quota(ADA)).used == 4  # each action charged once

                    # My images shows the picture the first one started from
                    await page.goto(base + "/me")
                    assert await page.locator(f"ul.mine img[src='/studio/jobs/{started.id}/input.jpg']").count() == 1
                    assert await page.locator("ul.mine img[src$='/input.jpg']").evaluate(
                        "img => img.complete && img.naturalWidth > 0")
                    # from an image's page: the toolbox's job is watched in the studio
                    await page.goto(base + f"/me/{ref}")
                    assert await page.locator(".params img.from").count() == 1  # "Started from"
                    await page.get_by_role("button", name="🔍 Zoom out 1.5x").click()
                    await page.wait_for_url("**/studio?watch=*")
                    await page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')")
                    zoomed = await page.locator("#results .actions").first.get_attribute("data-ref")
                    row = await jobs.get(env.db, zoomed.rpartition("-")[0])
                    assert row.request["kind"] == "zoom" and row.request["mode"] == "1.5"
                finally:
                    await browser.close()
        finally:
            await front.close()


async def test_studio_shows_the_live_preview_in_chromium(tmp_path: Path) -> None:
    """The preview image appears under the progress bar while the job runs, then makes way for the result."""
    from tests.preview_support import previewing_pipeline

    playwright_api = pytest.importorskip("playwright.async_api")
    assert CHROMIUM is not None
    async with service_env(tmp_path, SlowSteps(previewing_pipeline(every_steps=1), 0.8)) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        base = f"http://127.0.0.1:{front.port}"
        link = await _console_link(env.service, ADA, tmp_path)
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
                try:
                    page = await browser.new_page(viewport={"width": 1100, "height": 900})
                    page.set_default_timeout(60_000)
                    await _sign_in(page, base, link, "ada")
                    await page.fill("#prompt", "a lighthouse at dusk")
                    await page.get_by_label("Steps").select_option("4")
                    await page.click("#generate")
                    preview = page.locator("img#preview")
                    await preview.wait_for(state="visible")
                    assert (await preview.get_attribute("src") or "").startswith("data:image/jpeg;base64,")
                    assert await preview.evaluate("img => img.complete && img.naturalWidth === 256")
                    assert "Preview at step" in (await preview.get_attribute("alt") or "")
                    await page.screenshot(path=str(_shots(tmp_path) / "previews.png"))
                    await page.wait_for_selector("#results li img")
                    await page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')")
                    assert not await preview.is_visible()  # the result took its place
                finally:
                    await browser.close()
        finally:
            await front.close()

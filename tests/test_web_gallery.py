"""The public gallery in a real browser (Chromium from Debian packages, driven by Playwright),
and its HTML without a browser: shared images only, search, the image page, no JavaScript needed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bot.frontends.web import WebFrontEnd, WebSettings
from bot.service import NotFound
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, ROOT, service_env
from tests.web_support import auth, key_for, web_env

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)


async def _made(env, who, prompt: str) -> str:  # type: ignore[no-untyped-def]
    ticket = await env.service.imagine(who, prompt)
    delivery = await ticket.delivery()
    return f"{delivery.job_id}-1"


async def test_gallery_html_shows_only_shared_images(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        svc = web.env.service
        shared = await _made(web.env, ADA, "a shared lighthouse --seed 5")
        private = await _made(web.env, ADA, "a private diary --seed 6")
        h = auth(await key_for(web.env, ADA))
        r = await web.client.post(f"/v1/images/{shared}/share", headers=h)
        assert r.status_code == 200
        share_id = r.json()["share_id"]
        assert r.json()["url"] == f"http://test/i/{share_id}" and len(share_id) >= 12  # no public_url: the address asked

        page = (await web.client.get("/")).text
        assert "a shared lighthouse" in page and "a private diary" not in page
        assert f'src="/i/{share_id}/thumb.jpg"' in page and 'loading="lazy"' in page
        assert 'alt="AI-generated image: a shared lighthouse"' in page
        assert "<script src=\"/static/copy.js\" defer>" in page
        assert "a shared lighthouse" not in (await web.client.get("/?q=diary")).text
        assert "a shared lighthouse" in (await web.client.get("/?q=lighth&order=top")).text

        detail = (await web.client.get(f"/i/{share_id}")).text
        assert 'value="/imagine a shared lighthouse --ar 1:1 --seed 5"' in detail
        assert "fake" in detail and "not rated yet" in detail and "Seed</dt><dd>5" in detail
        thumb = await web.client.get(f"/i/{share_id}/thumb.jpg")
        assert thumb.headers["content-type"] == "image/jpeg" and len(thumb.content) < 40_000
        assert (await web.client.get(f"/i/{share_id}/image.png")).content[:4] == b"\x89PNG"
        assert (await web.client.get("/i/nothing-here")).status_code == 404

        # rated by someone else: shows on the page; the private image stays unreachable to them
        bob = auth(await key_for(web.env, BOB))
        assert (await web.client.post(f"/v1/images/{shared}/rating", json={"stars": 5}, headers=bob)).status_code == 200
        assert "★ 5.0 from 1 rating" in (await web.client.get(f"/i/{share_id}")).text
        assert (await web.client.get(f"/v1/images/{private}", headers=bob)).status_code == 404
        assert (await web.client.get(f"/v1/images/{shared}", headers=bob)).status_code == 200

        # only the owner or an admin unshares
        assert (await web.client.delete(f"/v1/images/{shared}/share", headers=bob)).status_code == 404
        assert await svc.unshare(ROOT, shared) is True
        assert "a shared lighthouse" not in (await web.client.get("/")).text
        assert (await web.client.get(f"/i/{share_id}")).status_code == 404
        with pytest.raises(NotFound):
            await svc.share(BOB, private)
        again = (await web.client.post(f"/v1/images/{shared}/share", headers=h)).json()["share_id"]
        r = await web.client.delete(f"/v1/images/{shared}/share", headers=h)
        assert r.status_code == 200 and r.json()["was_shared"] is True
        assert (await web.client.get(f"/i/{again}")).status_code == 404


async def test_gallery_pages_answer_errors_with_a_page_and_the_api_with_json(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        for path, status, words in [("/i/nothere", 404, "This image is not shared."),
                                    ("/?page=abc", 422, "page"),
                                    ("/?order=worst", 422, "order"),
                                    ("/i/nothere/image.png", 404, "This image is not shared.")]:
            r = await web.client.get(path)
            assert r.status_code == status, path
            assert r.headers["content-type"].startswith("text/html"), path
            assert r.text.lstrip().startswith("<!doctype html>") and words in r.text, (path, r.text)
            assert '<a href="/">Back to the gallery</a>' in r.text and '"detail"' not in r.text
        # a browser at an unknown address gets a page; an API client still gets JSON
        r = await web.client.get("/nowhere", headers={"Accept": "text/html,application/xhtml+xml"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        for path, headers in [("/v1/jobs/nothere", auth(await key_for(web.env, ADA))), ("/v1/quota", {}),
                              ("/nowhere", {})]:
            r = await web.client.get(path, headers={**headers, "Accept": "text/html,*/*"} if path.startswith("/v1") else headers)
            assert r.headers["content-type"] == "application/json" and "detail" in r.json(), path
        assert (await web.client.get("/v1/quota")).status_code == 401


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive: `apt-get install chromium` "
                                             "(.ci/run installs it) or set CHROMIUM=/path/to/chromium")
async def test_gallery_in_chromium(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    assert CHROMIUM is not None
    async with service_env(tmp_path, FakePipeline()) as env:
        shared = await _made(env, ADA, "a shared lighthouse at dusk --seed 5")
        await _made(env, ADA, "a private diary page --seed 6")
        share_id = await env.service.share(ADA, shared)
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        base = f"http://127.0.0.1:{front.port}"
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
                try:
                    context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
                    page = await context.new_page()
                    page.set_default_timeout(15_000)
                    await page.goto(base + "/")
                    cards = page.locator("ul.grid li")
                    assert await cards.count() == 1
                    image = cards.first.locator("img")
                    assert await image.get_attribute("alt") == "AI-generated image: a shared lighthouse at dusk"
                    assert await image.get_attribute("loading") == "lazy"
                    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
                    assert "private diary" not in await page.content()

                    await page.fill("#q", "diary")
                    await page.click("header button[type=submit]")
                    await page.wait_for_url("**/?q=diary*")
                    assert await page.locator("ul.grid li").count() == 0
                    await page.goto(base + "/")

                    await cards.first.locator("a").click()
                    await page.wait_for_url(f"**/i/{share_id}")
                    command = "/imagine a shared lighthouse at dusk --ar 1:1 --seed 5"
                    assert await page.input_value("#command") == command
                    button = page.get_by_role("button", name="Copy the /imagine command")
                    await button.click()
                    await page.wait_for_selector("#copied:has-text('Copied')")
                    assert await page.evaluate("navigator.clipboard.readText()") == command

                    # without JavaScript: the same pages, the command still there to select
                    plain = await browser.new_context(java_script_enabled=False)
                    nojs = await plain.new_page()
                    await nojs.goto(base + f"/i/{share_id}")
                    assert await nojs.input_value("#command") == command
                    assert not await nojs.locator("button[data-copy]").is_visible()
                    await nojs.goto(base + "/")
                    assert await nojs.locator("ul.grid li").count() == 1
                finally:
                    await browser.close()
        finally:
            await front.close()

"""The web studio without a browser (httpx in-process, real service on SQLite, fake GPU): signing in
with a link from the chat, sessions and CSRF, making and acting on images, My images, refusals."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
from PIL import Image

from bot.frontends.web import WebSettings
from bot.frontends.web.social import share_links
from storage.rating_stats import recent_comments
from tests.service_support import ADA, BOB
from tests.studio_support import sign_in
from tests.web_support import web_env


async def _events(client: httpx.AsyncClient, url: str) -> list[tuple[str, dict]]:
    frames = []
    async with client.stream("GET", url) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                frames.append((name, json.loads(line[6:])))
    return frames


async def _make(client: httpx.AsyncClient, csrf: str, **body: object) -> dict:
    r = await client.post("/studio/generate", json={"prompt": "a lighthouse at dusk", **body},
                          headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
    assert r.status_code == 202, r.text
    frames = await _events(client, r.json()["events"])
    assert frames[-1][0] in ("done", "status"), frames
    return frames[-1][1]


async def test_sign_in_link_is_one_time_and_expires(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        link = await web.env.service.web_signin_link(ADA)
        token = link.rpartition("/signin/")[2]
        assert len(token) >= 40 and link == f"/signin/{token}"
        # stored hashed: the token itself is nowhere in the database
        rows = await web.env.db.fetchall("SELECT * FROM web_signins")
        assert len(rows) == 1 and token not in json.dumps([list(r) for r in rows])

        # opening the link (as a chat's link preview does) does not use it
        page = await web.client.get(link)
        assert page.status_code == 200 and "Sign in as ada" in page.text
        page = await web.client.get(link)  # the newest page's nonce is the one that counts
        assert page.status_code == 200
        # a POST without the page's nonce cookie (another site's form) is refused
        bare = httpx.AsyncClient(transport=web.client._transport, base_url="http://test")
        async with bare:
            r = await bare.post(link, data={"nonce": "guess"})
            assert r.status_code == 403 and "ib_session" not in r.headers.get("set-cookie", "")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = await web.client.post(link, data={"nonce": nonce})
        assert r.status_code == 303 and r.headers["location"] == "/studio"
        cookie = r.headers["set-cookie"].lower()
        assert "ib_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert "secure" not in cookie  # web.public_url is not https here
        # used: refused, with what to do instead
        again = await web.client.get(link)
        assert again.status_code == 410 and "used or expired" in again.text and "/web" in again.text
        r = await web.client.post(link, data={"nonce": nonce})
        assert r.status_code in (403, 410) and "ib_session=" not in r.headers.get("set-cookie", "")

        # expired after 10 minutes, unused
        late = await web.env.service.web_signin_link(ADA)
        web.env.clock.advance(minutes=10, seconds=1)
        assert (await web.client.get(late)).status_code == 410
        assert await web.env.service.web_sign_in(late.rpartition("/")[2]) is None


async def test_secure_cookie_behind_https(tmp_path: Path) -> None:
    settings = WebSettings(enabled=True, rate_limit=1000, public_url="https://imagine.example.org")
    async with web_env(tmp_path, settings=settings, public_url="https://imagine.example.org") as web:
        link = await web.env.service.web_signin_link(ADA)
        assert link.startswith("https://imagine.example.org/signin/")
        path = link.removeprefix("https://imagine.example.org")
        client = httpx.AsyncClient(transport=web.client._transport, base_url="https://test")
        async with client:
            page = await client.get(path)
            nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            r = await client.post(path, data={"nonce": nonce})
            assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


async def test_make_watch_download_rate_share_and_delete(tmp_path: Path) -> None:
    async with web_env(tmp_path, daily_quota=10) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        studio = (await web.client.get("/studio")).text
        assert '<label for="prompt">Prompt</label>' in studio and 'id="random"' in studio
        assert '<option value="16:9"' in studio and "10 of 10 images left" in studio

        # a POST without the CSRF token is refused and costs nothing
        r = await web.client.post("/studio/generate", json={"prompt": "a fox"}, headers={"Accept": "application/json"})
        assert r.status_code == 403 and "security token" in r.json()["detail"]
        r = await web.client.post("/studio/generate", json={"prompt": "a fox"},
                                  headers={"X-CSRF-Token": "wrong", "Accept": "application/json"})
        assert r.status_code == 403
        assert (await web.env.service.quota(ADA)).used == 0

        done = await _make(web.client, csrf, aspect="16:9", seed=7, count=2, negative="fog")
        images = done["images"]
        assert [i["seed"] for i in images] == [7, 8] and images[0]["width"] > images[0]["height"]
        assert (await web.env.service.quota(ADA)).used == 2  # the chat account's quota
        assert (await web.client.get("/studio/quota")).json()["remaining"] == 8
        history = await web.env.service.history(ADA)
        assert history.entries[0].images[0].image.seed == 7  # the chat account's history
        ref = images[0]["id"]

        for fmt, kind in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
            r = await web.client.get(f"/studio/images/{ref}?format={fmt}&download=1")
            assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
            with Image.open(io.BytesIO(r.content)) as decoded:
                assert decoded.format == kind and decoded.size == (images[0]["width"], images[0]["height"])
        svg = await web.client.get(f"/studio/images/{ref}?format=svg&download=1")
        assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content[:500]

        h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        assert (await web.client.post(f"/studio/images/{ref}/rating", json={"stars": 4}, headers=h)).status_code == 200
        assert (await web.env.service.history(ADA)).entries[0].images[0].my_stars == 4
        # a comment beside the rating: checked like a prompt, kept with the stars
        said = await web.client.post(f"/studio/images/{ref}/rating", json={"stars": 4, "comment": "lovely light"},
                                     headers=h)
        assert said.json() == {"image": ref, "stars": 4, "comment": "lovely light"}
        assert [(c.stars, c.comment) for c in await recent_comments(web.env.service.db)] == [(4, "lovely light")]
        refused = await web.client.post(f"/studio/images/{ref}/rating", json={"stars": 2, "comment": "so GORY"},
                                        headers=h)
        assert refused.status_code in (400, 422) and "comment" in refused.text.lower()
        assert (await web.env.service.history(ADA)).entries[0].images[0].my_stars == 4  # nothing half-saved
        shared = (await web.client.post(f"/studio/images/{ref}/share", headers=h)).json()
        assert shared["url"].endswith(f"/i/{shared['share_id']}")
        assert {s["name"] for s in shared["share_to"]} >= {"X", "Reddit", "Mastodon", "Telegram"}
        assert "a lighthouse at dusk" in (await web.client.get("/")).text

        # My images: the grid, search, one image with its parameters and the link to reuse them
        mine = (await web.client.get("/me")).text
        assert f'href="/me/{ref}"' in mine and f'src="/studio/images/{ref}/thumb.jpg"' in mine
        assert "lighthouse" not in (await web.client.get("/me?q=zebra")).text.split("<h1>My images</h1>")[1]
        assert f'href="/me/{ref}"' in (await web.client.get("/me?q=lighthouse")).text
        detail = (await web.client.get(f"/me/{ref}")).text
        assert "<dt>Seed</dt><dd>7</dd>" in detail and "<dt>Negative</dt><dd>fog</dd>" in detail
        assert f'href="/studio?from={ref}"' in detail and 'aria-pressed="true" aria-label="Rate 4 stars"' in detail
        refill = (await web.client.get(f"/studio?from={ref}")).text
        assert "There is no image nope-x" in (await web.client.get("/studio?from=nope-x")).text
        assert 'value="7"' in refill and '<option value="16:9" selected' in refill and ">a lighthouse at dusk<" in refill

        # reroll and variation are jobs like any other
        r = await web.client.post(f"/studio/images/{ref}/variation", headers=h)
        assert r.status_code == 202, r.text
        frames = await _events(web.client, r.json()["events"])
        assert frames[-1][0] in ("done", "status")

        # delete: gone from My images and unreachable
        second = images[1]["id"]
        assert (await web.client.post(f"/studio/images/{second}/delete", headers=h)).status_code == 200
        assert (await web.client.get(f"/studio/images/{second}")).status_code == 404
        assert (await web.client.get(f"/me/{second}")).status_code == 404
        assert (await web.client.post(f"/studio/images/{second}/delete", headers=h)).status_code == 404


async def test_another_accounts_image_is_not_reachable(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        ada_csrf = await sign_in(web.client, web.env.service, ADA)
        ref = (await _make(web.client, ada_csrf, seed=1))["images"][0]["id"]
        job = ref.rpartition("-")[0]
        bob = httpx.AsyncClient(transport=web.client._transport, base_url="http://test")
        async with bob:
            bob_csrf = await sign_in(bob, web.env.service, BOB)
            h = {"X-CSRF-Token": bob_csrf, "Accept": "application/json"}
            assert (await bob.get(f"/studio/images/{ref}")).status_code == 404
            assert (await bob.get(f"/studio/images/{ref}/thumb.jpg")).status_code == 404
            assert (await bob.get(f"/studio/jobs/{job}")).status_code == 404
            assert (await bob.get(f"/studio/jobs/{job}/events")).status_code == 404
            page = await bob.get(f"/me/{ref}")
            assert page.status_code == 404 and "a lighthouse" not in page.text
            assert "a lighthouse" not in (await bob.get("/me")).text
            for url in (f"/studio/images/{ref}/delete", f"/studio/images/{ref}/share",
                        f"/studio/jobs/{job}/reroll"):
                assert (await bob.post(url, headers=h)).status_code == 404, url
            # signed out: the pages say how to sign in; the script gets JSON
            await bob.post("/signout", data={"csrf": bob_csrf})
            page = await bob.get("/studio")
            assert page.status_code == 401 and "/web" in page.text and "{" not in page.text.split("<main")[1][:300]
            r = await bob.get(f"/studio/jobs/{job}", headers={"Accept": "application/json"})
            assert r.status_code == 401 and "/web" in r.json()["detail"]
        assert (await web.client.get(f"/studio/images/{ref}")).status_code == 200


async def test_refusals_are_the_chats_words_and_cost_nothing(tmp_path: Path) -> None:
    async with web_env(tmp_path, daily_quota=2) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        r = await web.client.post("/studio/generate", json={"prompt": "three foxes", "count": 3}, headers=h)
        assert r.status_code == 429 and "left" in r.json()["detail"]
        r = await web.client.post("/studio/generate", json={"prompt": "a GORY battle"}, headers=h)
        assert r.status_code == 403 and isinstance(r.json()["detail"], str) and r.json()["detail"]
        r = await web.client.post("/studio/generate", json={"prompt": "a fox", "aspect": "5:1"}, headers=h)
        assert r.status_code == 422 and "aspect" in json.dumps(r.json()["detail"])
        assert (await web.env.service.quota(ADA)).used == 0


async def test_queue_full_is_said_in_words(tmp_path: Path) -> None:
    async with web_env(tmp_path, start_queue=False, queue_options={"max_queued_images": 1}) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        assert (await web.client.post("/studio/generate", json={"prompt": "one"}, headers=h)).status_code == 202
        r = await web.client.post("/studio/generate", json={"prompt": "two"}, headers=h)
        assert r.status_code == 503 and isinstance(r.json()["detail"], str) and r.json()["detail"]
        assert (await web.env.service.quota(ADA)).used == 1


async def test_sessions_listed_ended_and_forget_ends_them(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        other = httpx.AsyncClient(transport=web.client._transport, base_url="http://test",
                                  headers={"User-Agent": "phone-browser"})
        async with other:
            await sign_in(other, web.env.service, ADA)
            listed = await web.env.service.web_sessions(ADA)
            assert len(listed) == 2 and listed[0].agent == "phone-browser"
            page = (await web.client.get("/sessions")).text
            assert "phone-browser" in page and "(this one)" in page
            # ending a session needs the CSRF token; then that browser is signed out
            r = await web.client.post(f"/sessions/{listed[0].id}/end", data={"csrf": "nope"})
            assert r.status_code == 403 and "security token" in r.text and "<html" in r.text
            r = await web.client.post(f"/sessions/{listed[0].id}/end", data={"csrf": csrf})
            assert r.status_code == 303
            assert (await other.get("/studio")).status_code == 401
            # another account cannot end mine
            assert (await web.client.post(f"/sessions/{listed[0].id}/end", data={"csrf": csrf})).status_code == 404

            # /forget ends every session (and unused links)
            await sign_in(other, web.env.service, ADA)
            unused = await web.env.service.web_signin_link(ADA)
            await web.env.service.forget(ADA)
            assert (await web.client.get("/studio")).status_code == 401
            assert (await other.get("/studio")).status_code == 401
            assert (await web.client.get(unused)).status_code == 410
            assert await web.env.service.web_sessions(ADA) == []


async def test_shared_page_has_card_tags_and_share_links(tmp_path: Path) -> None:
    async with web_env(tmp_path, public_url="https://imagine.example.org",
                       settings=WebSettings(enabled=True, rate_limit=1000, public_url="https://imagine.example.org")) as web:
        ticket = await web.env.service.imagine(ADA, "a red kite over hills --seed 3 --ar 16:9")
        delivery = await ticket.delivery()
        share_id = await web.env.service.share(ADA, f"{delivery.job_id}-1")
        page = (await web.client.get(f"/i/{share_id}")).text
        url = f"https://imagine.example.org/i/{share_id}"
        image = delivery.images[0]
        for tag in (f'<meta property="og:url" content="{url}">',
                    f'<meta property="og:image" content="{url}/image.png">',
                    f'<meta property="og:image:width" content="{image.width}">',
                    f'<meta property="og:image:height" content="{image.height}">',
                    '<meta property="og:type" content="article">',
                    '<meta name="twitter:card" content="summary_large_image">',
                    f'<meta name="twitter:image" content="{url}/image.png">'):
            assert tag in page, tag
        assert '<meta property="og:title" content="a red kite over hills' in page
        for name, link in share_links(url, "a red kite over hills"):
            assert f'href="{link.replace("&", "&amp;")}"' in page, name


async def test_form_offers_what_the_model_can_do(tmp_path: Path) -> None:
    from generation.core.request import ModelCaps
    from tests.fakes import FakePipeline
    from tests.test_refine import ScriptedRefiner

    caps = ModelCaps(name="fake", base_resolution=256, steps=(2, 4), loras=(("ink", "a" * 12), ("neon", "b" * 12)))
    async with web_env(tmp_path, FakePipeline(caps=caps)) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        page = (await web.client.get("/studio")).text
        steps = re.findall(r'<option value="(\d)"', page.split('id="steps"')[1].split("</select>")[0])
        assert steps == ["2", "4"]
        assert 'name="lora" value="ink"' in page and 'name="lora" value="neon"' in page
        assert 'id="refine"' not in page  # no refiner configured: not offered
        web.env.service.refiner = ScriptedRefiner("a fox, detailed")
        assert 'id="refine"' in (await web.client.get("/studio")).text
        web.env.service.refiner = None
        done = await _make(web.client, csrf, lora="ink, neon:0.5", steps=2, seed=4)
        job = (await web.env.service.job_view(ADA, done["images"][0]["job_id"])).request
        assert [name for name, _ in job["loras"]] == ["ink", "neon"] and job["steps"] == 2
        r = await web.client.post("/studio/generate", json={"prompt": "a fox", "steps": 8},
                                  headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert r.status_code == 422 and "2, 4" in json.dumps(r.json()["detail"]).replace(" and ", ", ")


async def test_start_picture_and_toolbox_routes(tmp_path: Path) -> None:
    """POST /studio/generate takes a picture as multipart (the API's parsing and upload checks);
    upscale, zoom and pan need the CSRF token and act only on the session's own images."""
    from storage import inputs, jobs
    from tests.upload_support import photo

    async with web_env(tmp_path) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        r = await web.client.post("/studio/generate", data={"prompt": "a harbour", "strength": "0.4", "count": "1"},
                                  files={"image": ("harbour.png", photo(300, 200), "image/png")}, headers=h)
        assert r.status_code == 202, r.text
        frames = await _events(web.client, r.json()["events"])
        ref = frames[-1][1]["images"][0]["id"]
        row = await jobs.get(web.env.db, r.json()["job_id"])
        assert row.request["kind"] == "img2img" and row.request["strength"] == 0.4
        assert await inputs.for_job(web.env.db, row.id) is not None
        r = await web.client.post("/studio/generate", data={"prompt": "a harbour"},
                                  files={"image": ("x.png", b"not a picture", "image/png")}, headers=h)
        assert r.status_code == 422 and "image" in json.dumps(r.json()["detail"])
        made = {}
        for action, body in (("upscale", {"mode": "creative"}), ("zoom", {"factor": "1.5"}), ("pan", {"direction": "up"})):
            assert (await web.client.post(f"/studio/images/{ref}/{action}", json=body)).status_code == 403  # no token
            r = await web.client.post(f"/studio/images/{ref}/{action}", json=body, headers=h)
            assert r.status_code == 202, r.text
            made[action] = await jobs.get(web.env.db, r.json()["job_id"])
        assert made["upscale"].request["mode"] == "creative" and made["zoom"].request["mode"] == "1.5"
        assert made["pan"].request["kind"] == "pan" and made["pan"].request["source"] == ref.replace("-", "#")
        r = await web.client.post(f"/studio/images/{ref}/pan", json={"direction": "sideways"}, headers=h)
        assert r.status_code == 422
        used = (await web.env.service.quota(ADA)).used
        bob = httpx.AsyncClient(transport=web.client._transport, base_url="http://test")
        async with bob:
            bob_h = {"X-CSRF-Token": await sign_in(bob, web.env.service, BOB), "Accept": "application/json"}
            for action, body in (("upscale", {}), ("zoom", {}), ("pan", {"direction": "left"})):
                assert (await bob.post(f"/studio/images/{ref}/{action}", json=body, headers=bob_h)).status_code == 404
        assert (await web.env.service.quota(ADA)).used == used and (await web.env.service.quota(BOB)).used == 0

"""Choosing the model per request (issue 25), from the service and from every front end: the real
discord.py and python-telegram-bot clients against the fakes, the terminal chat, the HTTP API and the
OpenAI/A1111 routes; live rollout shares; the ratings comparison over the real database."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from bot.frontends.console import run_console
from bot.service import Who
from generation.core.errors import InvalidRequest
from generation.model.entries import ModelEntry, entry_configs
from generation.model.model_config import ModelConfig
from generation.model.pipeline import load_pipeline
from generation.model.shelf import ModelShelf
from storage import images, jobs, ratings, read_metadata, users
from tests.compat_support import basic, served
from tests.fake_discord import FakeDiscord, fake_discord_server
from tests.fake_telegram import FakeTelegram
from tests.service_support import ADA, BOB, ROOT, service_env
from tests.telegram_support import running as telegram_running
from tests.web_support import key_for

TIMEOUT = 60.0
ENTRIES = (ModelEntry("tiny", "tiny", default=True), ModelEntry("flux", "tiny-flux"))


@pytest.fixture(scope="module")
def loaded() -> dict[str, Any]:
    return {kind: load_pipeline(ModelConfig(name=kind, device="cpu")) for kind in ("tiny", "tiny-flux")}


@pytest.fixture
def shelf(loaded: dict[str, Any]) -> ModelShelf:
    return ModelShelf(entry_configs(ModelConfig(name="tiny", device="cpu"), ENTRIES), lambda c: loaded[c.name])


async def _model_of(env: Any, job_id: str) -> str:
    row = await jobs.get(env.db, job_id)
    return row.model_id


# -- the service ------------------------------------------------------------------------------------------


async def test_a_flux_request_runs_on_flux_and_its_png_names_the_model_and_hash(tmp_path: Path, shelf: ModelShelf) -> None:
    async with service_env(tmp_path, shelf) as env:
        ticket = await env.service.imagine(ADA, "a red fox --model flux --ar 16:9 --seed 5")
        delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        assert await _model_of(env, ticket.job_id) == "tiny-random-flux"
        image = delivery.images[0]
        assert (image.width, image.height) == shelf.caps_for("flux").sizes()["16:9"]
        assert "--model flux" in delivery.text
        with Image.open(image.path) as png:
            text = png.text["parameters"]
        assert f"Model hash: {shelf.checkpoint_hash_for('flux')[:10]}," in text and "Model: tiny-random-flux" in text
        assert read_metadata(image.path.read_bytes())["model"] == "tiny-random-flux"
        plain = await env.service.imagine(ADA, "a red fox --seed 5")  # names none: the default
        await asyncio.wait_for(plain.delivery(), TIMEOUT)
        assert await _model_of(env, plain.job_id) == "tiny-random-sdxl"
        # reroll keeps the model; a variation of a Flux image is made by the SDXL default (Flux has no img2img)
        again = await env.service.reroll(ADA, ticket.job_id)
        await asyncio.wait_for(again.delivery(), TIMEOUT)
        assert await _model_of(env, again.job_id) == "tiny-random-flux"
        # Flux's 21:9 is no SDXL size: the variation takes the SDXL default's nearest (it was refused)
        wide = await env.service.imagine(ADA, "a long bridge --model flux --ar 21:9 --seed 6")
        source = (await asyncio.wait_for(wide.delivery(), TIMEOUT)).images[0]
        sdxl = shelf.caps_for("")
        assert (source.width, source.height) not in sdxl.buckets()
        varied = await env.service.variation(ADA, wide.job_id, 0)
        made = (await asyncio.wait_for(varied.delivery(), TIMEOUT)).images[0]
        assert await _model_of(env, varied.job_id) == "tiny-random-sdxl"
        assert (made.width, made.height) in sdxl.buckets()
        assert made.width / made.height == pytest.approx(source.width / source.height, rel=0.15)  # still as wide
        upscaled = await env.service.upscale(ADA, wide.job_id, 0)  # the same for an upscale (was refused)
        bigger = (await asyncio.wait_for(upscaled.delivery(), TIMEOUT)).images[0]
        assert (bigger.width // 2, bigger.height // 2) in sdxl.buckets() and bigger.width > 2 * bigger.height


async def test_refusals_name_what_to_change_and_cost_no_quota(tmp_path: Path, shelf: ModelShelf) -> None:
    async with service_env(tmp_path, shelf) as env:
        for text, says in (("a fox --model dalle", "Unknown model 'dalle'; this bot has tiny, flux"),
                           ("a fox --model flux --no blur", "takes no negative prompt: remove --no"),
                           ("a fox <lora:ink:1> --model flux", "takes no LoRAs"),
                           ("a fox --model flux --steps 8", "--steps must be one of 1, 2, 4")):
            with pytest.raises(InvalidRequest) as info:
                await env.service.imagine(ADA, text)
            assert says in str(info.value), str(info.value)
        assert (await env.service.quota(ADA)).used == 0


async def test_settings_model_is_a_per_user_default(tmp_path: Path, shelf: ModelShelf) -> None:
    async with service_env(tmp_path, shelf) as env:
        shown = await env.service.settings(ADA, model="flux")
        assert shown["model"] == "flux"
        ticket = await env.service.imagine(ADA, "a lighthouse")
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        assert await _model_of(env, ticket.job_id) == "tiny-random-flux"
        other = await env.service.imagine(BOB, "a lighthouse")  # Bob's default is the bot's
        await asyncio.wait_for(other.delivery(), TIMEOUT)
        assert await _model_of(env, other.job_id) == "tiny-random-sdxl"
        with pytest.raises(InvalidRequest) as info:
            await env.service.settings(ADA, model="nope")
        assert "this bot has tiny, flux" in str(info.value)
        assert (await env.service.settings(ADA, model="default"))["model"] == "tiny"


async def test_promote_and_retire_change_traffic_live_for_admins_only(tmp_path: Path, shelf: ModelShelf) -> None:
    async with service_env(tmp_path, shelf) as env:
        with pytest.raises(Exception) as info:
            await env.service.models_command(ADA, "promote flux 1")
        assert "admins" in str(info.value)
        assert "flux now gets 100%" in await env.service.models_command(ROOT, "promote flux 100%")
        first = await env.service.imagine(ADA, "a boat")  # names no model: the candidate has everyone
        await asyncio.wait_for(first.delivery(), TIMEOUT)
        assert await _model_of(env, first.job_id) == "tiny-random-flux"
        with_image_rule = await env.service.imagine(BOB, "a boat --no fog")  # flux cannot: the default takes it
        await asyncio.wait_for(with_image_rule.delivery(), TIMEOUT)
        assert await _model_of(env, with_image_rule.job_id) == "tiny-random-sdxl"
        await env.service.models_command(ROOT, "retire flux")
        second = await env.service.imagine(ADA, "a boat")
        await asyncio.wait_for(second.delivery(), TIMEOUT)
        assert await _model_of(env, second.job_id) == "tiny-random-sdxl"
        with pytest.raises(InvalidRequest) as info:
            await env.service.models_command(ROOT, "promote tiny 0.5")
        assert "is the default model" in str(info.value)
        listing = await env.service.models_command(ADA, "")
        assert "tiny (tiny, tiny-random-sdxl" in listing and "flux (tiny-flux, tiny-random-flux" in listing
        assert "1 images" in listing.split("flux (")[1]


async def test_compare_over_the_database_says_significant_or_not(tmp_path: Path, shelf: ModelShelf) -> None:
    async with service_env(tmp_path, shelf) as env:
        made = {}
        for model in ("tiny", "flux"):
            ticket = await env.service.imagine(ADA, f"a kite --n 4 --model {model} --steps 1")
            delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
            made[model] = [image.image_id for image in delivery.images]
        raters = [await users.get_or_create(env.db, "discord", str(n)) for n in range(12)]

        async def rate(stars: dict[str, list[int]]) -> str:
            for model, values in stars.items():
                for n, value in enumerate(values):
                    await ratings.upsert(env.db, made[model][n % 4], raters[n].id, value, "button")
            return await env.service.models_command(ROOT, "compare flux tiny")

        differ = await rate({"flux": [5, 5, 4, 5, 5, 4, 5, 5, 4, 5, 5, 5], "tiny": [2, 3, 2, 1, 2, 3, 2, 2, 3, 2, 1, 2]})
        assert "Significant at the 5 % level: flux is rated higher" in differ
        same = await rate({"flux": [4, 3, 5, 4, 3, 4, 5, 3, 4, 4, 3, 5], "tiny": [3, 4, 4, 5, 3, 4, 4, 3, 5, 4, 3, 4]})
        assert "Not significant" in same
        listing = await env.service.models_text()
        assert "95 %" in listing and "12 ratings" in listing


# -- the chat front ends ---------------------------------------------------------------------------------


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with fake_discord_server() as server:
        yield server


async def test_discord_model_option_autocomplete_and_models(discord_fake: FakeDiscord, tmp_path: Path,
                                                            shelf: ModelShelf) -> None:
    from tests.test_discord import callback, result_of, running

    fake = discord_fake
    async with running(fake, tmp_path, shelf) as (env, front):
        put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/commands")[0]
        imagine = next(c for c in put.json if c["name"] == "imagine")
        option = next(o for o in imagine["options"] if o["name"] == "model")
        assert option["type"] == 3 and option.get("autocomplete") is True
        assert {"models"} <= {c["name"] for c in put.json}

        payload = fake.slash("imagine", [{"name": "prompt", "type": 3, "value": "a fox"},
                                         {"name": "model", "type": 3, "value": "fl", "focused": True}])
        payload["type"] = 4
        inter = await fake.send_interaction(payload)
        reply = await fake.wait_for_request("POST", callback(inter), 5)
        assert [c["value"] for c in reply.json["data"]["choices"]] == ["flux"]

        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a red fox --seed 3", "model": "flux"}))
        edit, message = await result_of(fake, inter, TIMEOUT)
        (upload,) = edit.files
        assert Image.open(io.BytesIO(upload.data)).size == shelf.caps_for("flux").sizes()["1:1"]
        [row] = await env.db.fetchall("SELECT model_id FROM jobs")
        assert row["model_id"] == "tiny-random-flux"

        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fox", "model": "dalle"}))
        refusal = await fake.wait_for_request("POST", callback(inter), 5)
        assert "Unknown model 'dalle'; this bot has tiny, flux" in refusal.json["data"]["content"]


async def test_telegram_model_in_the_text_settings_and_models(tmp_path: Path, shelf: ModelShelf) -> None:
    async with FakeTelegram() as fake, telegram_running(tmp_path, shelf, fake) as r:
        commands = fake.calls("setMyCommands")[0].params["commands"]
        assert "models" in {c["command"] for c in commands}
        fake.push(fake.message_update("/imagine a red fox --model flux --seed 2"))
        result = await fake.wait_for_call("editMessageMedia", timeout=TIMEOUT)
        assert "--model flux" in result.params["media"]["caption"]
        [row] = await r.env.db.fetchall("SELECT model_id FROM jobs")
        assert row["model_id"] == "tiny-random-flux"
        mark = fake.mark()
        fake.push(fake.message_update("/models"))
        listing = await fake.wait_for_call("sendMessage", since=mark)
        assert "flux (tiny-flux" in listing.params["text"] and "1 images" in listing.params["text"]
        mark = fake.mark()
        fake.push(fake.message_update("/settings model=flux"))
        saved = await fake.wait_for_call("sendMessage", since=mark)
        assert "model=flux" in saved.params["text"]


async def test_console_models_and_model_flag(tmp_path: Path, shelf: ModelShelf) -> None:
    async with service_env(tmp_path, shelf) as env:
        out = io.StringIO()
        me = Who("console", "root", "root")  # an admin (service_env's admins)
        await asyncio.wait_for(run_console(env.service, who=me, output_dir=tmp_path / "out", out=out, lines=[
            "a red fox --model flux --steps 2", "/models", "/models promote flux 0.25", "/models", "/quit"]), TIMEOUT)
        text = out.getvalue()
        assert "flux now gets 25% of the requests that name no model (live, no restart)" in text
        assert "flux (tiny-flux, tiny-random-flux" in text and "candidate, 25% of requests that name no model" in text
        assert "--model flux" in text


# -- the HTTP interfaces ---------------------------------------------------------------------------------


async def test_http_openai_and_a1111_take_catalogue_names(tmp_path: Path, shelf: ModelShelf) -> None:
    async with served(tmp_path, shelf) as app:
        key = await key_for(app.env, ADA)
        client = openai.AsyncOpenAI(base_url=f"{app.base_url}/v1", api_key=key, max_retries=0, timeout=60)
        try:
            listed = await client.models.list()
            assert [m.id for m in listed.data] == ["tiny", "flux"]
            result = await client.images.generate(prompt="a red fox", model="flux", size="1024x1024",
                                                  response_format="b64_json")
            image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
            assert image.size == shelf.caps_for("flux").sizes()["1:1"]
            with pytest.raises(openai.BadRequestError) as info:
                await client.images.generate(prompt="a red fox", model="midjourney-v7")
            assert "'tiny', 'flux'" in str(info.value)
        finally:
            await client.close()
        async with httpx.AsyncClient(base_url=app.base_url, timeout=60) as http:
            auth = basic(key)
            models = (await http.get("/sdapi/v1/sd-models", headers=auth)).json()
            assert [m["title"] for m in models] == ["tiny", "flux"]
            assert models[1]["hash"] == shelf.checkpoint_hash_for("flux")[:10]
            res = (await http.post("/sdapi/v1/txt2img", headers=auth, json={
                "prompt": "a cabin", "steps": 4, "width": 256, "height": 256,
                "override_settings": {"sd_model_checkpoint": "flux"}})).json()
            info = json.loads(res["info"])
            assert info["sd_model_name"] == "flux" and info["sd_model_hash"] == shelf.checkpoint_hash_for("flux")[:10]
            assert "Model: tiny-random-flux" in info["infotexts"][0]
            # Open WebUI switches models by posting the options back: the caller's default changes
            r = await http.post("/sdapi/v1/options", headers=auth, json={"sd_model_checkpoint": "flux"})
            assert r.status_code == 200 and (await app.env.service.settings(ADA))["model"] == "flux"
            posted = await http.post("/v1/images", headers={"Authorization": f"Bearer {key}"},
                                     json={"prompt": "an owl", "model": "tiny"})
            assert posted.status_code == 202, posted.text
        rows = await app.env.db.fetchall("SELECT model_id FROM jobs ORDER BY created_at, rowid")
        assert [r["model_id"] for r in rows][:2] == ["tiny-random-flux", "tiny-random-flux"]
        assert rows[-1]["model_id"] == "tiny-random-sdxl"


async def test_the_studio_offers_the_models_and_draws_with_the_chosen_one(tmp_path: Path, shelf: ModelShelf) -> None:
    from tests.studio_support import sign_in
    from tests.web_support import web_env

    async with web_env(tmp_path, shelf) as web:
        csrf = await sign_in(web.client, web.env.service, ADA)
        page = (await web.client.get("/studio")).text
        assert '<select id="model" name="model">' in page
        assert re.search(r'<option value="tiny"( selected)?>tiny</option>', page)
        assert '<option value="flux">flux</option>' in page
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        r = await web.client.post("/studio/generate", json={"prompt": "a heron", "model": "flux", "steps": 4},
                                  headers=headers)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        for _ in range(600):
            state = (await web.client.get(f"/studio/jobs/{job_id}")).json()
            if state["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.1)
        assert state["status"] == "done" and await _model_of(web.env, job_id) == "tiny-random-flux"
        # a model's limits are said in the page's words: Flux takes no negative prompt
        refused = await web.client.post("/studio/generate", json={"prompt": "a heron", "model": "flux",
                                                                   "negative": "fog"}, headers=headers)
        assert refused.status_code in (400, 422) and "takes no negative prompt" in refused.text, refused.text
        # your saved default model is the form's choice next time
        await web.env.service.settings(ADA, model="flux")
        assert '<option value="flux" selected>' in (await web.client.get("/studio")).text

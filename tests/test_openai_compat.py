"""The OpenAI Images API, driven by the official ``openai`` client against the app on 127.0.0.1.

The real service runs underneath (SQLite, the fair queue, the worker thread, a fake GPU at the
pipeline seam), so quotas, moderation, history and metadata are the ones every interface shares.
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from storage import read_metadata
from tests.compat_support import png_bytes, served, user_jobs
from tests.fakes import FakePipeline, fake_color
from tests.service_support import ADA, BOB
from tests.web_support import key_for


_OPEN: list[openai.AsyncOpenAI] = []  # closed after each test, on its own event loop


@pytest.fixture(autouse=True)
async def _close_clients():
    """An AsyncOpenAI client left open is closed by the garbage collector later, on a closed loop:
    "Task exception was never retrieved" then lands in another test's log."""
    yield
    while _OPEN:
        await _OPEN.pop().close()


def _client(base_url: str, key: str) -> openai.AsyncOpenAI:
    # max_retries=0: a refusal must surface as the error the client maps, not be retried
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=30)
    _OPEN.append(client)
    return client


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


async def test_generate_b64_and_url_with_the_official_client(tmp_path: Path) -> None:
    async with served(tmp_path) as app:
        key = await key_for(app.env, ADA)
        client = _client(app.base_url, key)
        caps = app.env.service.caps

        result = await client.images.generate(prompt="a red fox in snow", n=2, size="1792x1024",
                                              response_format="b64_json", model="fake", user="owui-42")
        assert result.created > 0 and len(result.data) == 2
        first = result.data[0]
        assert first.revised_prompt == "a red fox in snow" and first.url is None
        image = _image(first.b64_json)
        assert image.format == "PNG" and image.size == caps.size_for("16:9")  # 1792x1024 -> nearest bucket
        meta = read_metadata(base64.b64decode(first.b64_json))
        assert meta["prompt"] == "a red fox in snow" and meta["width"] == image.size[0]
        # the same service call as chat: a stored, charged, delivered job with the caller's end user noted
        [job] = await user_jobs(app.env, ADA)
        assert job.charged == 2 and job.target["end_user"] == "owui-42"
        for _ in range(50):
            if (await user_jobs(app.env, ADA))[0].status == "delivered":
                break
            await asyncio.sleep(0.05)
        assert (await user_jobs(app.env, ADA))[0].status == "delivered"
        assert (await app.env.service.quota(ADA)).used == 2
        pixel = image.convert("RGB").getpixel((0, 0))
        assert pixel == fake_color("a red fox in snow", meta["seed"])

        by_url = await client.images.generate(prompt="an owl at night", response_format="url", size="auto",
                                              output_format="jpeg", quality="hd")
        url = by_url.data[0].url
        assert url.startswith(app.base_url + "/v1/images/") and url.endswith("?format=jpeg")
        async with httpx.AsyncClient() as http:
            fetched = await http.get(url, headers={"Authorization": f"Bearer {key}"})
            assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"
            other = await http.get(url, headers={"Authorization": f"Bearer {await key_for(app.env, BOB)}"})
            assert other.status_code == 404  # a URL only its own key can fetch
        assert (await user_jobs(app.env, ADA))[-1].request["steps"] == max(caps.steps)  # hd: the most steps

        history = await app.env.service.history(ADA)  # what /history shows in any chat
        assert history.total == 2 and {e.text.split(" --")[0] for e in history.entries} == {
            "a red fox in snow", "an owl at night"}

        models = await client.models.list()
        assert [m.id for m in models.data] == ["fake"]
        assert (await client.models.retrieve("fake")).id == "fake"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("dall-e-3")


async def test_errors_map_to_the_clients_exceptions(tmp_path: Path) -> None:
    async with served(tmp_path, daily_quota=3) as app:
        key = await key_for(app.env, ADA)
        client = _client(app.base_url, key)

        with pytest.raises(openai.AuthenticationError) as wrong:
            await _client(app.base_url, "ib_not-a-key").images.generate(prompt="a fox")
        assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"

        with pytest.raises(openai.BadRequestError) as unknown:
            await client.images.generate(prompt="a fox", model="stable-diffusion-3")
        assert unknown.value.param == "model" and "'fake'" in unknown.value.message

        with pytest.raises(openai.BadRequestError) as bad_size:
            await client.images.generate(prompt="a fox", size="huge")
        assert bad_size.value.param == "size"

        with pytest.raises(openai.BadRequestError) as bad_n:
            await client.images.generate(prompt="a fox", n=9)
        assert bad_n.value.param == "n"

        with pytest.raises(openai.BadRequestError) as blocked:
            await client.images.generate(prompt="a GORY battle")
        assert blocked.value.code == "content_policy_violation" and "safety filter" in blocked.value.message

        with pytest.raises(openai.RateLimitError) as quota:
            await client.images.generate(prompt="four foxes", n=4)
        assert quota.value.code == "insufficient_quota" and "left" in quota.value.message
        assert int(quota.value.response.headers["Retry-After"]) > 0
        assert quota.value.response.headers["x-should-retry"] == "false"
        assert (await app.env.service.quota(ADA)).used == 0  # refusals cost nothing
        assert await user_jobs(app.env, ADA) == []


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # create_variation (dall-e-2 only at OpenAI)
async def test_variation_and_edit_of_an_uploaded_image(tmp_path: Path) -> None:
    async with served(tmp_path) as app:
        key = await key_for(app.env, ADA)
        client = _client(app.base_url, key)
        made = await client.images.generate(prompt="a lighthouse at dusk", response_format="b64_json")
        ours = base64.b64decode(made.data[0].b64_json)

        varied = await client.images.create_variation(image=("mine.png", ours, "image/png"), n=2,
                                                      response_format="b64_json")
        assert len(varied.data) == 2
        assert varied.data[0].revised_prompt == "a lighthouse at dusk"  # the prompt stored in the image
        job = (await user_jobs(app.env, ADA))[-1]
        assert job.request["kind"] == "img2img" and job.charged == 2 and Path(job.request["init_image"]).is_file()
        seed = read_metadata(base64.b64decode(varied.data[0].b64_json))["seed"]
        pixel = _image(varied.data[0].b64_json).convert("RGB").getpixel((0, 0))
        assert pixel != fake_color("a lighthouse at dusk", seed)  # made from the image, not from text alone

        photo = png_bytes((10, 120, 200), (400, 300))  # a 4:3 picture with no metadata
        edited = await client.images.edit(image=("photo.png", photo, "image/png"), prompt="as a watercolor",
                                          response_format="b64_json")
        image = _image(edited.data[0].b64_json)
        assert image.size == app.env.service.caps.size_for("4:3")  # the upload's own aspect
        assert (await user_jobs(app.env, ADA))[-1].request["prompt"] == "as a watercolor"

        used = (await app.env.service.quota(ADA)).used
        with pytest.raises(openai.BadRequestError) as masked:
            await client.images.edit(image=("photo.png", photo, "image/png"), prompt="add a boat",
                                     mask=("mask.png", png_bytes((0, 0, 0), (400, 300)), "image/png"))
        assert masked.value.param == "mask" and "not supported yet" in masked.value.message
        with pytest.raises(openai.BadRequestError) as junk:
            await client.images.edit(image=("notes.png", b"not an image at all", "image/png"), prompt="x")
        assert junk.value.param == "image" and "not an image I can read" in junk.value.message
        with pytest.raises(openai.BadRequestError) as no_prompt:
            await client.images.edit(image=("photo.png", photo, "image/png"), prompt=" ")
        assert no_prompt.value.param == "prompt"
        assert (await app.env.service.quota(ADA)).used == used  # refused uploads cost nothing


async def test_a_client_that_hangs_up_cancels_its_job_and_is_refunded(tmp_path: Path) -> None:
    pipeline = FakePipeline()
    pipeline.pause()
    async with served(tmp_path, pipeline) as app:
        key = await key_for(app.env, ADA)
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            call = asyncio.create_task(http.post("/v1/images/generations", json={"prompt": "a slow fox", "n": 2},
                                                 headers={"Authorization": f"Bearer {key}"}))
            assert await asyncio.to_thread(pipeline.wait_entered)  # running on the (paused) GPU
            assert (await app.env.service.quota(ADA)).used == 2
            call.cancel()  # the client goes away: its connection closes
            await asyncio.gather(call, return_exceptions=True)
        for _ in range(100):
            [job] = await user_jobs(app.env, ADA)
            if job.status == "cancelled":
                break
            await asyncio.sleep(0.05)
        pipeline.resume()
        assert job.status == "cancelled" and job.refunded
        assert (await app.env.service.quota(ADA)).used == 0


async def test_open_webui_openai_engine(tmp_path: Path) -> None:
    """open-webui backend/open_webui/routers/images.py, engine "openai": image_generations posts JSON
    {model, prompt, n, size, response_format}; image_edits posts multipart fields plus `image[]` files
    for a list of images; an answer's `url` is fetched with the same Authorization header."""
    async with served(tmp_path) as app:
        key = await key_for(app.env, ADA)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            data = {"model": "fake", "prompt": "a quiet harbour", "n": 1, "size": "512x512",
                    "response_format": "b64_json"}
            res = (await http.post("/v1/images/generations", json=data, headers=headers)).json()
            png = base64.b64decode(res["data"][0]["b64_json"])  # get_image_data(image['b64_json'])
            assert Image.open(io.BytesIO(png)).size == app.env.service.caps.size_for("1:1")

            # a model whose name matches IMAGE_URL_RESPONSE_MODELS_REGEX_PATTERN gets no response_format
            res = (await http.post("/v1/images/generations", json={**data, "response_format": "url"},
                                   headers=headers)).json()
            fetched = await http.get(res["data"][0]["url"],
                                     headers={k: v for k, v in headers.items() if k != "Content-Type"})
            assert fetched.status_code == 200 and fetched.headers["content-type"].split("/")[0] == "image"

            form = {"model": "fake", "prompt": "the harbour at night", "n": "1", "size": "1024x1024",
                    "background": "auto", "response_format": "b64_json"}
            files = [("image[]", ("a.png", png, "image/png"))]
            edited = await http.post("/v1/images/edits", data=form, files=files,
                                     headers={"Authorization": f"Bearer {key}"})
            assert edited.status_code == 200, edited.text
            assert Image.open(io.BytesIO(base64.b64decode(edited.json()["data"][0]["b64_json"]))).format == "PNG"
            assert (await user_jobs(app.env, ADA))[-1].request["kind"] == "img2img"
            two = [("image[]", ("a.png", png, "image/png")), ("image[]", ("b.png", png, "image/png"))]
            refused = await http.post("/v1/images/edits", data=form, files=two,
                                      headers={"Authorization": f"Bearer {key}"})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "image"
            assert "One image" in refused.json()["error"]["message"]


async def test_queue_full_is_503_and_a_busy_key_429(tmp_path: Path) -> None:
    pipeline = FakePipeline()
    pipeline.pause()
    async with served(tmp_path, pipeline, rate_limit=3, queue_options={"max_queued_images": 2}) as app:
        key = await key_for(app.env, ADA)
        client = _client(app.base_url, key)
        try:
            waiting = asyncio.create_task(client.images.generate(prompt="two foxes", n=2))
            assert await asyncio.to_thread(pipeline.wait_entered)  # running: out of the queue
            queued = asyncio.create_task(client.images.generate(prompt="two owls", n=2))  # fills it
            for _ in range(100):
                if len(await user_jobs(app.env, ADA)) == 2:
                    break
                await asyncio.sleep(0.02)
            with pytest.raises(openai.InternalServerError) as full:
                await client.images.generate(prompt="one more")
            assert full.value.status_code == 503 and full.value.code == "queue_full"
            assert int(full.value.response.headers["Retry-After"]) > 0
            with pytest.raises(openai.RateLimitError) as busy:  # the key's 4th request: over 3 a minute
                await client.models.list()
            assert busy.value.code == "rate_limit_exceeded" and "Retry-After" in busy.value.response.headers
        finally:
            pipeline.resume()
        assert [len(r.data) for r in await asyncio.gather(waiting, queued)] == [2, 2]
        assert (await app.env.service.quota(ADA)).used == 4  # the refused one cost nothing


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # create_variation (dall-e-2 only at OpenAI)
async def test_openais_own_model_names_mean_the_default_model(tmp_path: Path) -> None:
    """LibreChat's DALL·E tool (and "OpenAI Image Tools") hard-code dall-e-3 / gpt-image-1 (and
    dall-e-2 for variations): the official client's calls with them make images with this bot's model."""
    async with served(tmp_path) as app:
        client = _client(app.base_url, await key_for(app.env, ADA))
        for name in ("dall-e-3", "gpt-image-1"):
            made = await client.images.generate(prompt=f"a fox by {name}", model=name, size="1024x1024",
                                                response_format="b64_json")
            assert len(made.data) == 1 and _image(made.data[0].b64_json).format == "PNG"
        edited = await client.images.edit(image=("fox.png", png_bytes(), "image/png"), prompt="a fox in a hat",
                                          model="gpt-image-1", response_format="b64_json")
        assert len(edited.data) == 1
        varied = await client.images.create_variation(image=("fox.png", png_bytes(), "image/png"), model="dall-e-2",
                                                      response_format="b64_json")
        assert len(varied.data) == 1
        made_jobs = await user_jobs(app.env, ADA)
        assert len(made_jobs) == 4 and {job.model_id for job in made_jobs} == {"fake"}
        assert [m.id for m in (await client.models.list()).data] == ["fake"]  # the list names only ours

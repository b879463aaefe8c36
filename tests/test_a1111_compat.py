"""The A1111 API (/sdapi/v1) with the requests Open WebUI, SillyTavern and LibreChat send.

Each client's request bodies and the fields it reads back are copied from its public source
(named at each test), and sent over HTTP to the app served on 127.0.0.1 with the real service
underneath (SQLite, the fair queue, the worker thread, a fake GPU at the pipeline seam).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import httpx
from PIL import Image

from tests.compat_support import b64_png, basic, served, user_jobs
from tests.fakes import FakePipeline
from tests.service_support import ADA
from tests.web_support import key_for


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


async def test_open_webui(tmp_path: Path) -> None:
    """open-webui backend/open_webui/routers/images.py: get_image_model, set_image_model, get_models,
    image_generations (engine "automatic1111"); AUTOMATIC1111_API_AUTH "user:password" sent as Basic."""
    async with served(tmp_path) as app:
        auth = basic(await key_for(app.env, ADA), "openwebui")
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            assert (await http.get("/sdapi/v1/options")).status_code == 401  # verify_url fails without the key
            bearer = {"Authorization": auth["Authorization"].replace("Basic ", "Bearer ")}
            assert (await http.get("/sdapi/v1/options", headers=bearer)).status_code == 401  # not a key
            key = base64.b64decode(auth["Authorization"].split()[1]).decode().partition(":")[2]
            assert (await http.get("/sdapi/v1/options", headers={"Authorization": f"Bearer {key}"})).status_code == 200
            options = (await http.get("/sdapi/v1/options", headers=auth)).json()
            model = options["sd_model_checkpoint"]
            assert model == "fake"
            models = (await http.get("/sdapi/v1/sd-models", headers=auth)).json()
            assert [{"id": m["title"], "name": m["model_name"]} for m in models] == [{"id": "fake", "name": "fake"}]
            # set_image_model: GET options, change sd_model_checkpoint, POST them all back
            r = await http.post("/sdapi/v1/options", json={**options, "sd_model_checkpoint": models[0]["title"]},
                                headers=auth)
            assert r.status_code == 200
            r = await http.post("/sdapi/v1/options", json={**options, "sd_model_checkpoint": "sd_xl_base_1.0"},
                                headers=auth)
            assert r.status_code == 400 and "'fake'" in r.json()["detail"]  # one model: refused, naming ours

            data = {"prompt": "a cabin in the woods", "batch_size": 2, "width": 512, "height": 512,
                    "steps": 20, "negative_prompt": "blurry"}
            res = (await http.post("/sdapi/v1/txt2img", json=data, headers=auth)).json()
            assert len(res["images"]) == 2
            for image in res["images"]:  # get_image_data: base64 without a data: prefix is PNG
                assert _decode(image).format == "PNG"
            info = json.loads(res["info"])  # stored alongside each image as metadata
            assert info["all_seeds"] == [info["seed"], info["seed"] + 1]
            assert (info["width"], info["height"]) == app.env.service.caps.size_for("1:1")
            assert info["steps"] == 8 and any(n.startswith("steps 20 -> 8") for n in info["adjustments"])
            assert any("width 512" in n for n in info["adjustments"])
            assert info["negative_prompt"] == "blurry"
            [job] = await user_jobs(app.env, ADA)
            assert job.charged == 2 and job.request["negative_prompt"] == "blurry"


async def test_sillytavern(tmp_path: Path) -> None:
    """SillyTavern src/endpoints/stable-diffusion.js (ping, upscalers, vaes, samplers, schedulers, models,
    get-model, set-model, generate with interrupt on close) and the body of generateAutoImage in
    public/scripts/extensions/stable-diffusion/index.js (with the url/auth of getSdRequestBody)."""
    async with served(tmp_path) as app:
        key = await key_for(app.env, ADA)
        auth = basic(key, "st")
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            assert (await http.get("/sdapi/v1/options", headers=auth)).status_code == 200  # /ping
            upscalers = [x["name"] for x in (await http.get("/sdapi/v1/upscalers", headers=auth)).json()]
            latent = [x["name"] for x in (await http.get("/sdapi/v1/latent-upscale-modes", headers=auth)).json()]
            upscalers[1:1] = latent  # "0 = None, then Latent Upscalers, then Upscalers"
            assert upscalers[0] == "None" and "Lanczos" in upscalers
            vaes = (await http.get("/sdapi/v1/sd-vae", headers=auth)).json()
            assert isinstance(vaes, list) and [x["model_name"] for x in vaes] == []
            assert [x["name"] for x in (await http.get("/sdapi/v1/samplers", headers=auth)).json()] == ["Euler"]
            assert [x["name"] for x in (await http.get("/sdapi/v1/schedulers", headers=auth)).json()] == ["sgm_uniform"]
            models = [{"value": x["title"], "text": x["title"]}
                      for x in (await http.get("/sdapi/v1/sd-models", headers=auth)).json()]
            current = (await http.get("/sdapi/v1/options", headers=auth)).json()["sd_model_checkpoint"]
            assert models == [{"value": current, "text": current}]
            # /set-model: POST options, then wait until progress says 0 and no jobs
            r = await http.post("/sdapi/v1/options", json={"sd_model_checkpoint": current}, headers=auth)
            assert r.status_code == 200
            state = (await http.get("/sdapi/v1/progress", headers=auth)).json()
            assert state["progress"] == 0.0 and state["state"]["job_count"] == 0

            body = {
                "url": app.base_url, "auth": f"st:{key}",  # getSdRequestBody(); never echoed back
                "prompt": "best quality, absurdres, aesthetic, a knight on a horse",
                "negative_prompt": "lowres, bad anatomy, bad hands, text, error",
                "sampler_name": "DDIM", "scheduler": "normal", "steps": 20, "cfg_scale": 7,
                "width": 512, "height": 768, "restore_faces": False, "enable_hr": True, "hr_upscaler": "Latent",
                "hr_scale": 2.0, "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 1234,
                "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic"},
                "override_settings_restore_afterwards": True,
                "save_images": True, "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False,
            }
            res = (await http.post("/sdapi/v1/txt2img", json=body, headers=auth)).json()
            image = _decode(res["images"][0])  # { format: 'png', data: data.images[0] }
            assert image.size == app.env.service.caps.size_for("2:3")  # 512x768 -> nearest bucket
            assert key not in json.dumps(res)  # the auth field is not echoed
            info = json.loads(res["info"])
            assert info["seed"] == 1234 and res["parameters"]["seed"] == 1234
            notes = " | ".join(info["adjustments"])
            for said in ("sampler DDIM -> Euler", "cfg_scale 7 -> 0", "scheduler normal", "enable_hr",
                         "override_settings.CLIP_stop_at_last_layers"):
                assert said in notes, said
            assert res["parameters"]["cfg_scale"] == 0.0 and res["parameters"]["sampler_name"] == "Euler"


async def test_sillytavern_interrupt_and_progress(tmp_path: Path) -> None:
    """SillyTavern polls /progress and, when its user stops, POSTs /interrupt (stable-diffusion.js)."""
    pipeline = FakePipeline()
    pipeline.pause()
    async with served(tmp_path, pipeline) as app:
        auth = basic(await key_for(app.env, ADA))
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            call = asyncio.create_task(http.post("/sdapi/v1/txt2img", json={"prompt": "a long night", "steps": 4},
                                                 headers=auth))
            assert await asyncio.to_thread(pipeline.wait_entered)
            for _ in range(100):
                state = (await http.get("/sdapi/v1/progress", headers=auth)).json()
                if state["state"]["job_count"] == 1 and state["state"]["sampling_steps"]:
                    break
                await asyncio.sleep(0.05)
            assert state["state"]["job_count"] == 1 and state["state"]["sampling_steps"] == 4
            assert state["current_image"] is None and 0.0 <= state["progress"] < 1.0
            assert (await app.env.service.quota(ADA)).used == 1
            assert (await http.post("/sdapi/v1/interrupt", headers=auth)).status_code == 200
            pipeline.resume()
            res = (await call).json()
            assert res["images"] == [] and json.loads(res["info"])["interrupted"] is True
            [job] = await user_jobs(app.env, ADA)
            assert job.status == "cancelled" and job.refunded
            assert (await app.env.service.quota(ADA)).used == 0
            assert (await http.post("/sdapi/v1/skip", headers=auth)).status_code == 200  # nothing left: fine


async def test_librechat(tmp_path: Path) -> None:
    """LibreChat api/app/clients/tools/structured/StableDiffusion.js: axios.post(`${url}/sdapi/v1/txt2img`,
    payload) with no auth header of its own, so the key rides in SD_WEBUI_URL as user:key@host."""
    async with served(tmp_path) as app:
        key = await key_for(app.env, ADA)
        payload = {"prompt": "photo of a man in black clothes, half body, coastline, overcast weather",
                   "negative_prompt": "semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime",
                   "cfg_scale": 4.5, "steps": 22, "width": 1024, "height": 1024}
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.post(f"{app.base_url}/sdapi/v1/txt2img", json=payload)).status_code == 401
            url = app.base_url.replace("http://", f"http://librechat:{key}@")
            response = await http.post(f"{url}/sdapi/v1/txt2img", json=payload)
        assert response.status_code == 200
        data = response.json()
        image = data["images"][0]
        buffer = base64.b64decode(image.split(",", 1)[0])
        info = json.loads(data["info"])
        assert Image.open(io.BytesIO(buffer)).size == (info["width"], info["height"])
        assert isinstance(info["seed"], int)
        generation_info = info["infotexts"][0].split("\n").pop()
        assert generation_info.startswith("Steps: 8, Sampler: Euler, CFG scale: 0, Seed: ")
        assert f"Seed: {info['seed']}" in generation_info


async def test_img2img_png_info_and_extras(tmp_path: Path) -> None:
    async with served(tmp_path) as app:
        auth = basic(await key_for(app.env, ADA))
        caps = app.env.service.caps
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            made = (await http.post("/sdapi/v1/txt2img", json={"prompt": "a red barn", "seed": 5},
                                    headers=auth)).json()
            r = await http.post("/sdapi/v1/img2img", headers=auth, json={
                "init_images": ["data:image/png;base64," + b64_png(size=(400, 300))], "prompt": "a barn in winter",
                "denoising_strength": 0.05, "steps": 4})
            assert r.status_code == 200, r.text
            res = r.json()
            info = json.loads(res["info"])
            assert _decode(res["images"][0]).size == caps.size_for("4:3")  # no size given: the image's own
            assert any(n.startswith("denoising_strength 0.05 -> 0.125") for n in info["adjustments"])
            assert not any(n.startswith(("width", "height")) for n in info["adjustments"])  # none were asked for
            assert info["denoising_strength"] == 0.125 and info["steps"] == 8  # one step at least must run
            job = (await user_jobs(app.env, ADA))[-1]
            assert job.request["kind"] == "img2img" and job.request["strength"] == 0.125

            used = (await app.env.service.quota(ADA)).used
            r = await http.post("/sdapi/v1/img2img", headers=auth, json={
                "init_images": [b64_png()], "mask": b64_png(color=(255, 255, 255)), "prompt": "a door"})
            assert r.status_code == 422 and "not supported yet" in r.json()["detail"]
            r = await http.post("/sdapi/v1/img2img", headers=auth, json={"init_images": [], "prompt": "a door"})
            assert r.status_code == 422 and "init_images" in r.json()["detail"]
            assert (await app.env.service.quota(ADA)).used == used

            info = (await http.post("/sdapi/v1/png-info", json={"image": made["images"][0]}, headers=auth)).json()
            assert info["info"].startswith("a red barn\n") and info["parameters"]["Prompt"] == "a red barn"
            assert info["parameters"]["Seed"] == "5" and info["parameters"]["Sampler"] == "Euler"
            assert info["items"]["imagine"]["seed"] == 5
            ref = f"{json.loads(made['info'])['job_id']}-1"
            jpeg = (await http.get(f"/v1/images/{ref}?format=jpeg", headers=auth)).content  # Basic works on /v1 too
            assert jpeg[:2] == b"\xff\xd8"
            info = (await http.post("/sdapi/v1/png-info", json={"image": base64.b64encode(jpeg).decode()},
                                    headers=auth)).json()
            assert info["parameters"]["Prompt"] == "a red barn" and info["parameters"]["Seed"] == "5"  # from EXIF

            upscaled = (await http.post("/sdapi/v1/extra-single-image", headers=auth, json={
                "image": made["images"][0], "upscaling_resize": 2, "upscaler_1": "Lanczos"})).json()
            small = _decode(made["images"][0])
            assert _decode(upscaled["image"]).size == (small.width * 2, small.height * 2)
            r = await http.post("/sdapi/v1/extra-single-image", headers=auth,
                                json={"image": made["images"][0], "upscaler_1": "R-ESRGAN 4x+"})
            assert r.status_code == 422 and "Lanczos" in r.json()["detail"]


async def test_extra_single_image_runs_the_toolbox_upscaler(tmp_path: Path) -> None:
    """extra-single-image is an `enlarge` job in the fair queue: the pipeline's upscaler (here a tiny
    random Real-ESRGAN compact network, as upscale.model would load) makes the picture 2x, the
    adapter brings it to upscaling_resize; charged quota.upscale_cost, stored with the job."""
    import numpy as np
    import torch

    from generation.model.pipeline import ModelConfig, load_pipeline
    from generation.tools.inputs import check_upload, fit_image
    from generation.tools.upscale import LanczosUpscaler, NetworkUpscaler, SRVGGNetCompact
    from storage import inputs
    from tests.upload_support import photo

    pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))  # its own: the shared one stays as it is
    torch.manual_seed(0)
    pipeline.upscaler = NetworkUpscaler(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2), 2, name="tiny-x2")
    picture = photo(100, 60)
    async with served(tmp_path, pipeline, upscale_cost=2, upscaler="tiny-x2") as app:
        auth = basic(await key_for(app.env, ADA))
        async with httpx.AsyncClient(base_url=app.base_url, timeout=120) as http:
            listed = [u["name"] for u in (await http.get("/sdapi/v1/upscalers", headers=auth)).json()]
            assert listed == ["None", "tiny-x2"]
            sent = base64.b64encode(picture).decode()
            r = await http.post("/sdapi/v1/extra-single-image", headers=auth,
                                json={"image": sent, "upscaler_1": "tiny-x2", "upscaling_resize": 2})
            assert r.status_code == 200, r.text
            assert r.json()["html_info"] == "<p>tiny-x2 x2</p>"
            made = np.asarray(_decode(r.json()["image"]).convert("RGB")).astype(int)
            assert made.shape == (120, 200, 3)  # twice the picture sent
            # what the network makes of the stored picture (its sides cut to multiples of 8: 96x56)
            fitted = fit_image(check_upload(picture).image, (96, 56))
            ours = pipeline.upscaler.enlarge(fitted).resize((200, 120), Image.Resampling.LANCZOS)
            lanczos = LanczosUpscaler().enlarge(fitted).resize((200, 120), Image.Resampling.LANCZOS)
            assert np.abs(made - np.asarray(ours).astype(int)).mean() < 1
            assert np.abs(made - np.asarray(lanczos).astype(int)).mean() > 5  # not Lanczos: the network
            (job,) = await user_jobs(app.env, ADA)
            assert job.request["kind"] == "enlarge" and (job.request["width"], job.request["height"]) == (192, 112)
            assert job.charged == 2 and (await inputs.for_job(app.env.db, job.id)) is not None

            r = await http.post("/sdapi/v1/extra-single-image", headers=auth, json={"image": sent, "upscaling_resize": 4})
            assert r.status_code == 200 and _decode(r.json()["image"]).size == (400, 240)  # the default upscaler
            r = await http.post("/sdapi/v1/extra-single-image", headers=auth, json={"image": sent, "upscaler_1": "None"})
            assert r.status_code == 200 and base64.b64decode(r.json()["image"]) == picture
            r = await http.post("/sdapi/v1/extra-single-image", headers=auth, json={"image": sent, "upscaling_resize": 5})
            assert r.status_code == 422 and "1 to 4" in r.json()["detail"]
            r = await http.post("/sdapi/v1/extra-single-image", headers=auth, json={"image": sent, "upscaler_1": "SwinIR"})
            assert r.status_code == 422 and "tiny-x2" in r.json()["detail"]
            tiny = base64.b64encode(photo(20, 20)).decode()
            r = await http.post("/sdapi/v1/extra-single-image", headers=auth, json={"image": tiny})
            assert r.status_code == 400 and "at least 32 pixels" in r.json()["detail"]  # the service's refusal
            assert (await app.env.service.quota(ADA)).used == 4  # two enlargements; refusals cost nothing

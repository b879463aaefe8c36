"""🖌️ Vary (Region) and /describe through the real discord.py client against the fake Discord (issue 24)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bot.service import Who
from generation.model.segment import MaskModel
from storage import inputs, jobs
from tests.fake_discord import FakeDiscord
from tests.test_describe import ScriptedDescriber
from tests.test_discord import callback, custom_ids, eventually, fake, result_of, running  # noqa: F401
from tests.test_discord_uploads import _ephemeral_text
from tests.test_edit import PARTIAL
from tests.upload_support import photo


def _who(user: dict[str, Any]) -> Who:
    return Who("discord", str(user["id"]))


async def test_vary_region_opens_a_modal_and_edits_the_named_region(fake: FakeDiscord, tmp_path: Path,
                                                                   tiny: Any) -> None:
    async with running(fake, tmp_path, tiny, edit=PARTIAL, daily_quota=10) as (env, front):
        env.service.segmenter = MaskModel(PARTIAL)
        inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a harbour --steps 1 --seed 2"}))
        _, single = await result_of(fake, inter)
        job_id = custom_ids(single)[0][0].split(":")[2]
        assert f"imagine:tool:vr:{job_id}:0" in custom_ids(single)[1]

        bob = fake.make_user("bob")  # in the channel: a click on the result is his own edit, charged to him
        click = await fake.send_interaction(fake.button(f"imagine:tool:vr:{job_id}:0", single, bob))
        opened = await fake.wait_for_request("POST", callback(click), 5)
        assert opened.json["type"] == 9  # MODAL, the first answer
        form = opened.json["data"]
        assert form["custom_id"] == f"imagine:editform:{job_id}:0"
        assert [f["component"]["custom_id"] for f in form["components"]] == ["words", "prompt"]

        submit = await fake.send_interaction(fake.modal_submit(
            form["custom_id"], {"words": "the boat", "prompt": "a red sail"}, bob, message=single))
        assert (await fake.wait_for_request("POST", callback(submit), 5)).json == {"type": 5}
        edit, result = await result_of(fake, submit, 120)
        assert "vary (region) of image 1 of " + job_id in result["content"] and "“the boat”" in result["content"]
        assert "region that was repainted" in result["content"]
        names = [a["filename"] for a in result["attachments"]]
        new_id = custom_ids(result)[0][0].split(":")[3]
        assert names == [f"{new_id}.png", f"{new_id}-mask.jpg"]
        overlay = Image.open(io.BytesIO(edit.files[1].data))
        assert overlay.format == "JPEG" and max(overlay.size) <= 320
        row = await jobs.get(env.db, new_id)
        assert row.request["kind"] == "edit" and row.request["prompt"] == "a red sail" and row.charged == 1
        assert (await inputs.for_job(env.db, new_id)).source == "edit"
        assert (await env.service.quota(_who(bob))).used == 1
        result_pixels = np.asarray(Image.open(io.BytesIO(edit.files[0].data)).convert("RGB")).astype(int)
        source = Image.open(env.store.path_for((await inputs.for_job(env.db, new_id)).path)).convert("RGBA")
        keep = np.asarray(source.getchannel("A")) == 255
        assert np.abs(result_pixels - np.asarray(source.convert("RGB")).astype(int))[keep].max() <= 2

        # a mask of nothing: told so, nothing charged
        env.service.config = replace(env.service.config, edit=replace(PARTIAL, threshold=1.0))
        click = await fake.send_interaction(fake.button(f"imagine:tool:vr:{job_id}:0", single, bob))
        await fake.wait_for_request("POST", callback(click), 5)
        empty = await fake.send_interaction(fake.modal_submit(
            form["custom_id"], {"words": "a unicorn", "prompt": "a dragon"}, bob, message=single))
        told = await _ephemeral_text(fake, empty)
        assert "Nothing matching “a unicorn” was found" in told and "nothing was charged" in told
        assert (await env.service.quota(_who(bob))).used == 1


async def test_describe_answers_with_four_prompts_and_their_buttons(fake: FakeDiscord, tmp_path: Path,
                                                                    tiny: Any) -> None:
    async with running(fake, tmp_path, tiny) as (env, front):
        env.service.describer = ScriptedDescriber("arafed harbour with boats at dusk")
        put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/commands")[0]
        describe = next(c for c in put.json if c["name"] == "describe")
        assert [(o["name"], o["type"]) for o in describe["options"]] == [("image", 11)]
        attachment = fake.user_attachment(photo(300, 200), "harbour.png")
        inter = await fake.send_interaction(fake.slash_with_attachment("describe", {}, attachment))
        _, answer = await result_of(fake, inter)
        assert "I see: harbour with boats at dusk" in answer["content"]
        assert "1. harbour with boats at dusk --ar 3:2" in answer["content"]
        assert custom_ids(answer) == [[f"imagine:desc:{n}" for n in range(1, 5)],
                                      [f"imagine:desc:{n}:img" for n in range(1, 5)]]
        assert (await env.service.quota(_who(inter["member"]["user"] if "member" in inter else inter["user"]))
                ).used == 0

        pick = await fake.send_interaction(fake.button("imagine:desc:2", answer))
        _, made = await result_of(fake, pick, 60)
        job = await jobs.get(env.db, custom_ids(made)[0][0].split(":")[2])
        assert job.request["prompt"].startswith("harbour with boats at dusk, natural light")
        assert job.request["style"] == "photo" and job.request["kind"] == "txt2img"

        start = await fake.send_interaction(fake.button("imagine:desc:3:img", answer))
        _, made = await result_of(fake, start, 60)
        job = await jobs.get(env.db, custom_ids(made)[0][0].split(":")[2])
        assert job.request["kind"] == "img2img" and job.request["style"] == "cinematic"
        assert await inputs.for_job(env.db, job.id) is not None  # the described picture is the start

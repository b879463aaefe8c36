"""Prompt power from every entry point: Discord (typed lora/refine options, lora autocomplete,
/loras, the refined prompt told ephemerally), Telegram (/loras, --refine note), the console, and
``imagine-bot generate`` with LoRA tags, weighting and --refine on the tiny model."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.console import run_console
from bot.frontends.discord.commands import lora_choices
from bot.service import Who
from generation.model.lora import LoraCatalog, LoraInfo
from generation.prompts.refine import PromptRefiner, RefineSettings
from generation.core.request import ModelCaps
from storage import read_png_metadata
from tests.fake_discord import FakeDiscord, fake_discord_server
from tests.fake_telegram import FakeTelegram, make_user
from tests.fakes import FakePipeline
from tests.service_support import ROOT, service_env
from tests.telegram_support import running as telegram_running
from tests.test_discord import callback, result_of
from tests.test_discord import running as discord_running

TIMEOUT = 30.0
CAPS = ModelCaps(name="fake", base_resolution=256, steps=(1, 2, 4, 8),
                 loras=(("ink", "0123456789ab"), ("neon", "ba9876543210")))
CATALOG = LoraCatalog(
    loras={"ink": LoraInfo("ink", "/loras/ink.safetensors", "0123456789ab", ("inkwash", "sumi"), "sdxl_base_v1-0"),
           "neon": LoraInfo("neon", "/loras/neon.safetensors", "ba9876543210", ("neon glow",), "SDXL")},
    refused={"sd15.safetensors": "made for SD 1.x"})


class Scripted(PromptRefiner):
    """The real refiner (thread, time limit, cache) with a scripted model answer."""

    def __init__(self) -> None:
        super().__init__(RefineSettings(model="scripted"))

    def generate(self, prompt: str, deadline: float | None = None) -> str:
        self.calls += 1
        return f"Prompt: {prompt}, intricate detail, golden hour"


def pipeline() -> FakePipeline:
    return FakePipeline(caps=CAPS)


def test_lora_autocomplete_completes_the_last_name_of_a_list() -> None:
    names = ["ink", "neon", "pastel"]
    assert [c.value for c in lora_choices(names, "")] == names
    assert [c.value for c in lora_choices(names, "n")] == ["neon", "ink"]  # prefix matches first
    assert [c.value for c in lora_choices(names, "ink:0.8, pa")] == ["ink:0.8, pastel"]
    assert lora_choices(names, "zzz") == []


# -- Discord ------------------------------------------------------------------------------------


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with fake_discord_server() as server:
        yield server


async def test_discord_lora_and_refine_options_loras_and_autocomplete(discord: FakeDiscord, tmp_path: Path) -> None:
    fake = discord
    async with discord_running(fake, tmp_path, pipeline()) as (env, front):
        env.service.lora_catalog = CATALOG
        env.service.refiner = Scripted()
        put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/commands")[0]
        imagine = next(c for c in put.json if c["name"] == "imagine")
        assert {"lora", "refine"} <= {o["name"] for o in imagine["options"]}
        assert "loras" in {c["name"] for c in put.json}

        listing = await fake.send_interaction(fake.slash("loras"))
        reply = await fake.wait_for_request("POST", callback(listing), 5)
        assert reply.json["data"]["flags"] == 64 and "inkwash" in reply.json["data"]["content"]
        assert "sd15.safetensors: refused" in reply.json["data"]["content"]

        payload = fake.slash("imagine", [{"name": "prompt", "type": 3, "value": "a fox"},
                                         {"name": "lora", "type": 3, "value": "ink:0.5, n", "focused": True}])
        payload["type"] = 4
        auto = await fake.send_interaction(payload)
        reply = await fake.wait_for_request("POST", callback(auto), 5)
        assert [c["value"] for c in reply.json["data"]["choices"]] == ["ink:0.5, neon"]

        bad = await fake.send_interaction(fake.slash("imagine", {"prompt": "a fox", "lora": "inc"}))
        reply = await fake.wait_for_request("POST", callback(bad), 5)
        assert reply.json["data"]["flags"] == 64 and "did you mean ink" in reply.json["data"]["content"]

        inter = await fake.send_interaction(fake.slash(
            "imagine", {"prompt": "a (red:1.2) fox --steps 1", "lora": "ink:0.5", "refine": True}))
        note = await fake.wait_for_request("POST", rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}", TIMEOUT)
        assert note.json["flags"] == 64 and "Refined prompt: a (red:1.2) fox, intricate detail" in note.json["content"]
        await result_of(fake, inter)
        rows = await env.db.fetchall("SELECT request FROM jobs")
        request = json.loads(rows[-1]["request"])
        assert request["loras"] == [["ink", 0.5]] and request["lora_hashes"] == ["0123456789ab"]
        assert request["original_prompt"] == "a (red:1.2) fox" and request["prompt"].endswith("golden hour")


# -- Telegram -----------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def test_telegram_loras_and_a_refined_imagine(telegram: FakeTelegram, tmp_path: Path) -> None:
    fake, alice = telegram, make_user(1001, "Alice", "alice")
    async with telegram_running(tmp_path, pipeline(), fake) as run:
        run.env.service.lora_catalog = CATALOG
        run.env.service.refiner = Scripted()
        mark = fake.mark()
        fake.push(fake.message_update("/loras", alice))
        listing = await fake.wait_for_call("sendMessage", since=mark)
        assert "<lora:ink:0.8>" in listing.params["text"] and "neon glow" in listing.params["text"]

        mark = fake.mark()
        fake.push(fake.message_update("/imagine a kite <lora:neon:0.7> --refine --steps 1", alice))
        note = await fake.wait_for_call("sendMessage", since=mark, timeout=TIMEOUT)
        assert note.params["text"] == "Refined prompt: a kite, intricate detail, golden hour"
        await fake.wait_for_call("editMessageMedia", since=mark, timeout=TIMEOUT)
        rows = await run.env.db.fetchall("SELECT request FROM jobs")
        request = json.loads(rows[-1]["request"])
        assert request["loras"] == [["neon", 0.7]] and request["original_prompt"] == "a kite"


# -- the console --------------------------------------------------------------------------------


async def test_console_loras_refine_setting_and_notes(tmp_path: Path) -> None:
    me = Who("console", "me", "me")
    async with service_env(tmp_path, pipeline()) as env:
        out = io.StringIO()
        lines = ["/loras", "/settings refine=on"]
        await asyncio.wait_for(run_console(env.service, who=me, output_dir=tmp_path / "out", lines=lines,
                                           out=out), TIMEOUT)
        assert "refine" in out.getvalue() and "not set up" in out.getvalue()  # no refiner: refused
        assert "no LoRAs installed" in out.getvalue()
        env.service.lora_catalog = CATALOG
        env.service.refiner = Scripted()
        out = io.StringIO()
        lines = ["/loras", "/settings refine=on", "a lamp <lora:ink> --steps 1", "/quit"]
        await asyncio.wait_for(run_console(env.service, who=me, output_dir=tmp_path / "out", lines=lines,
                                           out=out), TIMEOUT)
        text = out.getvalue()
        assert "inkwash, sumi" in text and "Refined prompt: a lamp, intricate detail" in text
        assert re.search(r"^\w+: done — a lamp, intricate detail", text, re.M)
        image_id = int(re.search(r"\[1\] image (\d+)", text).group(1))
        out = io.StringIO()
        lines = [f"/rate {image_id} 4", "/admin stats"]
        await asyncio.wait_for(run_console(env.service, who=ROOT, output_dir=tmp_path / "out", lines=lines,
                                           out=out), TIMEOUT)
        assert re.search(r"^  ratings by lora: ink: 4.00★ \(1 rating\)$", out.getvalue(), re.M)
        assert re.search(r"^  ratings by style: none: 4.00★", out.getvalue(), re.M)


# -- imagine-bot generate -------------------------------------------------------------------------


def test_generate_takes_lora_tags_weights_and_refine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main
    from tests.test_lora import save_random_lora

    folder = tmp_path / "loras"
    folder.mkdir()
    save_random_lora(folder, "ink", 1)
    config = tmp_path / "c.toml"
    config.write_text(f'[lora]\ndir = "{folder}"\n[refine]\nmodel = "tiny"\nmax_new_tokens = 8\n'
                      f'timeout_s = 120.0\n[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    out = tmp_path / "fox.png"
    code = main(["generate", "a (red:1.3) fox <lora:ink:0.6> --refine --seed 3 --steps 1", "--model", "tiny",
                 "--config", str(config), "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    metadata = read_png_metadata(out.read_bytes())
    assert metadata["loras"] == [{"name": "ink", "weight": 0.6, "hash": metadata["loras"][0]["hash"]}]
    assert len(metadata["loras"][0]["hash"]) == 12
    if "Refined prompt:" in err:  # the tiny random LM's nonsense, when it cleans to some text
        assert metadata["original_prompt"] == "a (red:1.3) fox"
    else:
        assert "your own prompt was used" in err and metadata["prompt"] == "a (red:1.3) fox"

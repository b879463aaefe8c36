"""Image metadata that travels: A1111's text under ``parameters`` (read back here by a parser
written from A1111's format), our JSON under ``imagine``; no server paths; variations say so."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

from PIL import Image

from bot.__main__ import main
from bot.service import Who
import numpy as np
import pytest

from storage.files import exif_parameters, fit_under, png_with_metadata, read_metadata, read_png_metadata
from tests.service_support import service_env

TIMEOUT = 120.0
ADA = Who("discord", "1", "ada")

# A1111 modules/infotext_utils.py: "Key: value" pairs, a value quoted when it holds , or :
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict[str, str]:
    """prompt / negative / the key-value line, as A1111 and Civitai read a ``parameters`` chunk."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines, last = [*lines, last], ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        result[key.strip()] = value
    return result


def _chunks(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.text)


def test_a1111_text_round_trip_with_quoting_style_and_lora() -> None:
    params = {
        "prompt": "a red fox, in snow", "negative_prompt": "blur, watermark", "seed": 7, "steps": 4,
        "width": 1344, "height": 768, "model": "local:my, model", "model_hash": "abc123def0",
        "style": "photo", "lora": "foxes:0.8", "styled_prompt": "photo of a red fox, in snow, 35mm",
        "command": "a red fox, in snow --ar 16:9 --seed 7", "init_image": "/srv/secret/path.png",
        "user_id": "1234",
    }
    data = png_with_metadata(Image.new("RGB", (32, 32)), params)
    parsed = parse_a1111(_chunks(data)["parameters"])
    assert parsed["Prompt"] == "photo of a red fox, in snow, 35mm"  # what the model saw
    assert parsed["Negative prompt"] == "blur, watermark"
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"]) == ("4", "Euler", "0", "7")
    assert parsed["Size"] == "1344x768" and parsed["Model"] == "local:my, model"
    assert parsed["Model hash"] == "abc123def0" and parsed["Lora"] == "foxes:0.8" and parsed["Style"] == "photo"
    own = read_png_metadata(data)
    assert own["command"] == params["command"] and own["prompt"] == "a red fox, in snow"
    assert "init_image" not in own and "user_id" not in own
    assert "/srv/secret" not in json.dumps(_chunks(data)) and "1234" not in json.dumps(_chunks(data))


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_a_reencoded_image_keeps_its_parameters_in_exif(fmt: str) -> None:
    params = {"prompt": "a 猫 on a mat, \"quoted\" 🐱", "negative_prompt": "blur", "seed": 7, "steps": 4,
              "width": 256, "height": 256, "model": "local:m", "command": "a 猫 on a mat --seed 7"}
    noise = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    data = png_with_metadata(Image.fromarray(noise), params)
    small, ext = fit_under(data, len(data) // 3, formats=(fmt,))
    assert ext == ("jpg" if fmt == "jpeg" else fmt) and len(small) <= len(data) // 3
    assert read_metadata(small) == read_metadata(data)  # our JSON, unicode intact
    text = exif_parameters(small)
    assert text == _chunks(data)["parameters"]  # A1111's text, as A1111 reads a JPEG/WebP
    assert parse_a1111(text)["Seed"] == "7"


def test_an_image_without_parameters_gets_no_exif() -> None:
    noise = np.random.default_rng(2).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    small, _ = fit_under(buffer.getvalue(), len(buffer.getvalue()) // 3)
    assert read_metadata(small) == {} and exif_parameters(small) is None


def test_generate_writes_the_same_a1111_text(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    assert main(["generate", "a red fox --ar 16:9 --seed 7 --no blur", "-o", str(out), "--model", "tiny", "-q"]) == 0
    parsed = parse_a1111(_chunks(out.read_bytes())["parameters"])
    assert parsed["Prompt"] == "a red fox" and parsed["Negative prompt"] == "blur"
    assert parsed["Steps"] == "4" and parsed["Sampler"] == "Euler" and parsed["CFG scale"] == "0"
    assert parsed["Seed"] == "7" and parsed["Size"] == "336x192" and parsed["Model"] == "tiny-random-sdxl"
    assert read_png_metadata(out.read_bytes())["command"] == "a red fox --ar 16:9 --seed 7 --no blur"


async def test_service_images_and_variations_carry_their_settings_without_paths(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        service = env.service
        first = await asyncio.wait_for((await service.imagine(ADA, "a fox --seed 5 --steps 2")).delivery(), TIMEOUT)
        chunks = _chunks(first.images[0].path.read_bytes())
        parsed = parse_a1111(chunks["parameters"])
        assert parsed["Prompt"] == "a fox" and parsed["Seed"] == "5" and parsed["Steps"] == "2"
        assert json.loads(chunks["imagine"])["command"] == first.text

        ticket = await service.variation(ADA, first.job_id, 0)
        varied = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        chunks = _chunks(varied.images[0].path.read_bytes())
        assert str(tmp_path) not in json.dumps(chunks)  # no server paths in what users download
        own = json.loads(chunks["imagine"])
        assert own["kind"] == "img2img" and own["variation_of"] == {
            "job": first.job_id, "image": 1, "command": f"/variation {first.job_id} 1"}
        parsed = parse_a1111(chunks["parameters"])
        assert parsed["Variation of"] == f"image 1 of {first.job_id}" and parsed["Denoising strength"] == "0.6"
        # the done line and history say it is a variation (how to make another is each front
        # end's to say: buttons on a chat, the command on the console)
        assert varied.text.startswith(f"variation of image 1 of {first.job_id} (a fox")
        assert varied.text.endswith(")") and "V1" not in varied.text
        history = await service.history(ADA)
        assert [e.text for e in history.entries if e.job_id == varied.job_id] == [varied.text]

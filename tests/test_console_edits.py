"""The terminal chat's /edit and /describe (issue 24): real service, tiny models."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

from PIL import Image

from bot.frontends.console import run_console
from bot.service import Who
from generation.model.segment import MaskModel
from tests.service_support import service_env
from tests.test_describe import ScriptedDescriber
from tests.test_edit import PARTIAL

ME = Who("console", "me", "me")


async def _run(env, lines: list[str], out_dir: Path, timeout: float = 120.0) -> str:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    await asyncio.wait_for(run_console(env.service, who=ME, output_dir=out_dir, lines=lines, out=out), timeout)
    return out.getvalue()


async def test_edit_and_describe_commands(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, edit=PARTIAL) as env:
        env.service.segmenter = MaskModel(PARTIAL)
        env.service.describer = ScriptedDescriber("a harbour at dusk")
        text = await _run(env, ["a harbour --steps 1 --seed 2"], tmp_path / "out")
        (job_id,) = re.findall(r"^(\w+): done", text, re.M)
        text = await _run(env, [f"/edit {job_id} 1 the boat -> a red sail", f"/edit {job_id} 1 the boat",
                                "/edit x"], tmp_path / "out")
        (edited,) = re.findall(r"^(\w+): done — 🖌️ vary \(region\) of image 1 of \w+: “the boat” → a red sail", text,
                               re.M)
        assert Image.open(tmp_path / "out" / f"{edited}-1.png").size == (256, 256)
        assert f"the region repainted (red): {(tmp_path / 'out' / f'{edited}-mask.jpg').resolve()}" in text
        assert text.count("Usage: /edit JOB N WHAT -> NEW") == 2
        picture = tmp_path / "photo.png"
        Image.new("RGB", (256, 256), (1, 2, 3)).save(picture)
        text = await _run(env, [f"/describe {picture}", "/describe", f"/describe {tmp_path / 'none.png'}"],
                          tmp_path / "out")
        assert "🔎 I see: a harbour at dusk" in text and "4. a harbour at dusk" in text
        assert "Usage: /describe PATH" in text and "There is no file" in text

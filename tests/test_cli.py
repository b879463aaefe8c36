"""The command line, end to end on the tiny model: parse -> queue -> worker -> PNG with metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.__main__ import main
from storage.files import read_png_metadata

ROOT = Path(__file__).resolve().parents[1]


def test_generate_writes_png_with_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fox.png"
    code = main(["generate", "a red fox --ar 16:9 --seed 7", "-o", str(out), "--model", "tiny", "-q"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    image = Image.open(out)
    assert image.size == (336, 192)  # 16:9 at the tiny model's 256 base
    params = read_png_metadata(out.read_bytes())
    assert params["seed"] == 7
    assert params["prompt"] == "a red fox"
    assert params["width"] == 336 and params["height"] == 192
    assert "--ar 16:9" in params["command"] and "--seed 7" in params["command"]


def test_same_seed_same_pixels_count_makes_numbered_files(tmp_path: Path) -> None:
    assert main(["generate", "a cat --seed 11 --n 2", "-o", str(tmp_path / "cat.png"), "--model", "tiny", "-q"]) == 0
    assert main(["generate", "a cat --seed 12", "-o", str(tmp_path / "one.png"), "--model", "tiny", "-q"]) == 0
    second = Image.open(tmp_path / "cat-2.png")
    alone = Image.open(tmp_path / "one.png")
    assert (tmp_path / "cat-1.png").exists()
    assert read_png_metadata((tmp_path / "cat-2.png").read_bytes())["seed"] == 12
    # Batched float math differs from single-image math by ~1e-6: at most one colour level.
    diff = np.abs(np.asarray(second, dtype=np.int16) - np.asarray(alone, dtype=np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_bad_flag_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "a fox --ar 5:4", "-o", str(tmp_path / "x.png"), "--model", "tiny", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "5:4" in err and "16:9" in err
    assert not (tmp_path / "x.png").exists()


def test_real_model_offline_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\ncache_dir = "{tmp_path / "empty-cache"}"\n')
    code = main(["generate", "a fox", "--config", str(config), "-o", str(tmp_path / "x.png"), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.path" in err and "make demo" in err


def test_styles_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["styles"]) == 0
    out = capsys.readouterr().out
    for name in ("photo", "anime", "cinematic", "watercolor", "pixel-art", "3d-render", "sticker"):
        assert name in out


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "a lighthouse --seed 3", "--model", "tiny", "-q",
         "-o", str(tmp_path / "l.png")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(json.dumps(read_png_metadata((tmp_path / "l.png").read_bytes())))["seed"] == 3

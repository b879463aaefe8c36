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


def test_generate_from_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.upload_support import photo, truncated_jpeg

    (tmp_path / "in.jpg").write_bytes(photo(300, 200, fmt="JPEG"))
    (tmp_path / "cut.jpg").write_bytes(truncated_jpeg())
    base = ["--model", "tiny", "-q"]
    assert main(["generate", "a harbour --seed 5", "-o", str(tmp_path / "plain.png"), *base]) == 0
    assert main(["generate", "a harbour --seed 5", "--image", str(tmp_path / "in.jpg"), "--strength", "0.5",
                 "-o", str(tmp_path / "from.png"), *base]) == 0
    made = Image.open(tmp_path / "from.png")
    assert made.size == (304, 208)  # the bucket nearest the picture's 3:2
    params = read_png_metadata((tmp_path / "from.png").read_bytes())
    assert params["kind"] == "img2img" and params["strength"] == 0.5 and "init_image" not in params
    plain = np.asarray(Image.open(tmp_path / "plain.png").resize(made.size), dtype=np.int16)
    assert np.abs(np.asarray(made, dtype=np.int16) - plain).mean() > 1
    capsys.readouterr()
    assert main(["generate", "a harbour", "--image", str(tmp_path / "cut.jpg"), *base]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main(["generate", "a harbour", "--strength", "0.5", *base]) == 2
    assert "needs an image" in capsys.readouterr().err


def test_bad_flag_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "a fox --ar 5:1", "-o", str(tmp_path / "x.png"), "--model", "tiny", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "5:1" in err and "4:1" in err
    assert not (tmp_path / "x.png").exists()


@pytest.fixture
def empty_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HOME is an empty folder: no weights in the Hugging Face cache."""
    import huggingface_hub.constants

    from generation.model import loader

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))  # read at import
    monkeypatch.setattr(loader, "_offline_because", None)
    return home


def _says_weights_are_missing(err: str, home: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagine-bot: The SDXL-Lightning weights are not on this machine")
    assert str(home / "hub") in lines[0]
    assert "`imagine-bot download`" in lines[0] and "`make demo`" in lines[0]
    assert ".." not in lines[0]


def test_real_model_with_hf_hub_offline_says_the_weights_are_missing(
    tmp_path: Path, empty_hf_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user set HF_HUB_OFFLINE (conftest does, as a user would): the message may name it."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    (tmp_path / "c.toml").write_text("")  # the defaults: SDXL-Lightning from the Hub
    code = main(["generate", "a fox", "--config", str(tmp_path / "c.toml"), "-o", str(tmp_path / "x.png"), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    _says_weights_are_missing(err, empty_hf_home)
    assert "HF_HUB_OFFLINE is set in your environment" in err


def test_real_model_without_hf_hub_offline_never_blames_it(
    tmp_path: Path, empty_hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody set HF_HUB_OFFLINE and the Hub is unreachable: the loader says what is missing and
    why (the Hub), at once, never the variable it sets itself to stop retrying."""
    import socket
    import time

    import huggingface_hub.constants

    from generation.core.errors import ModelUnavailable
    from generation.model.pipeline import ModelConfig, load_pipeline

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the socket is
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as caught:
        load_pipeline(ModelConfig(device="cpu"))
    assert time.monotonic() - started < 10  # no retries
    message = str(caught.value)
    _says_weights_are_missing(f"imagine-bot: {message}", empty_hf_home)
    assert "HF_HUB_OFFLINE" not in message
    assert f"The Hub is unreachable: cannot connect to 127.0.0.1:{port}" in message


def test_generate_checks_the_prompt_before_loading_the_model(
    tmp_path: Path, empty_hf_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real model, no weights: a bad option is reported (not the missing weights)."""
    (tmp_path / "c.toml").write_text("[model]\nsteps = [4, 8]\n")
    base = ["--config", str(tmp_path / "c.toml"), "-o", str(tmp_path / "x.png"), "-q"]
    assert main(["generate", "a fox --ar 2:9", *base]) == 2  # any whole-number W:H up to 4:1 is taken
    err = capsys.readouterr().err
    assert "2:9" in err and "4:1" in err and "weights" not in err
    assert main(["generate", "a fox", "--image", str(tmp_path / "missing.png"), *base]) == 2  # read before the load
    err = capsys.readouterr().err
    assert "missing.png" in err and "weights" not in err
    assert main(["generate", "a fox --steps 2", *base]) == 2  # checked against model.steps
    err = capsys.readouterr().err
    assert "--steps must be one of 4, 8" in err and "weights" not in err
    assert main(["generate", "a fox --steps 8 --ar 16:9", *base]) == 2  # a good prompt reaches the loader
    _says_weights_are_missing(capsys.readouterr().err, empty_hf_home)
    assert not (tmp_path / "x.png").exists()


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


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("imagine-bot: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["run", "generate"])
def test_unknown_model_is_one_line_and_exit_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [command, "--model", "foo"] + (["a fox"] if command == "generate" else [])
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--model" in line and "'foo'" in line and "tiny" in line


def test_missing_model_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\npath = "{tmp_path / "no-such-folder"}"\n')
    assert main(["generate", "a fox", "--config", str(config), "-o", str(tmp_path / "x.png"), "-q"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "model.path" in line and "no-such-folder" in line


def test_missing_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "config.example.toml" in _one_error_line(capsys.readouterr().err)


def test_unwritable_data_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")  # root may write anywhere; nobody makes a folder in a file
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nname = "tiny"\n[storage]\ndata_dir = "{tmp_path / "a-file" / "data"}"\n')
    assert main(["run", "--config", str(config)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "storage.data_dir" in line and "not writable" in line


def test_bad_command_line_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "frobnicate" in _one_error_line(capsys.readouterr().err)


def test_generate_reads_config_toml_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text('[model]\nname = "tiny"\n[output]\ndir = "pictures"\n')
    assert main(["generate", "a red fox --seed 7", "-q"]) == 0  # no --model: the tiny model is from the file
    first = tmp_path / "pictures" / "imagine-7.png"
    assert capsys.readouterr().out.split() == [str(Path("pictures") / "imagine-7.png")]
    before = first.read_bytes()
    assert main(["generate", "a blue fox --seed 7", "-q"]) == 0
    assert main(["generate", "a green fox --seed 7", "-q"]) == 0
    assert first.read_bytes() == before
    names = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert names == ["imagine-7-1.png", "imagine-7-2.png", "imagine-7.png"]
    prompts = [read_png_metadata((tmp_path / "pictures" / n).read_bytes())["prompt"] for n in names]
    assert prompts == ["a blue fox", "a green fox", "a red fox"]
    (tmp_path / "fox.png").write_bytes(b"mine")
    assert main(["generate", "a fox --seed 8", "-o", "fox.png", "-q"]) == 0
    assert (tmp_path / "fox.png").read_bytes() == b"mine" and (tmp_path / "fox-1.png").exists()


def test_cli_logs_each_line_once_and_silences_known_deprecations(capsys: pytest.CaptureFixture[str]) -> None:
    import logging
    import warnings

    from bot.cli import _setup_logging

    with warnings.catch_warnings(record=True) as caught:
        _setup_logging(verbose=False)
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        warnings.warn_explicit("audioop is deprecated", DeprecationWarning, "player.py", 30, module="discord.player")
        warnings.warn_explicit("our own", DeprecationWarning, "x.py", 1, module="bot.something")
    logging.basicConfig(force=True)  # leave logging as pytest expects it
    assert capsys.readouterr().err.count("Retrying in 1s") == 1
    assert [str(w.message) for w in caught] == ["our own"]


async def test_a_server_start_logs_no_scheduler_chatter(capsys: pytest.CaptureFixture[str]) -> None:
    """`run` logs INFO for a server; APScheduler's per-job INFO lines are not part of it."""
    import logging

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.cli import _setup_logging

    _setup_logging(verbose=False)
    logging.getLogger().setLevel(logging.INFO)  # what `run` does with a chat token or [web]
    try:
        scheduler = AsyncIOScheduler()
        scheduler.add_job(lambda: None, "interval", minutes=5)
        scheduler.start()
        scheduler.shutdown(wait=False)
        logging.getLogger("bot.app").info("WebFrontEnd started")
        logging.getLogger("apscheduler.scheduler").warning("a real scheduler problem")
    finally:
        logging.basicConfig(force=True)  # leave logging as pytest expects it
        logging.getLogger("apscheduler").setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "WebFrontEnd started" in err and "a real scheduler problem" in err
    assert "Adding job" not in err and "Scheduler started" not in err and "Added job" not in err


def test_health_follows_the_heartbeat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from bot.health import HEARTBEAT_FILE

    assert main(["health", "--data-dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().err
    (tmp_path / HEARTBEAT_FILE).write_text(json.dumps({"time": time.time(), "queued_jobs": 3}))
    assert main(["health", "--data-dir", str(tmp_path)]) == 0
    assert "3 job(s) queued" in capsys.readouterr().out
    (tmp_path / HEARTBEAT_FILE).write_text(json.dumps({"time": time.time() - 3600}))
    assert main(["health", "--data-dir", str(tmp_path), "--max-age", "60"]) == 1
    assert "old" in capsys.readouterr().err

"""Config loading: defaults, every documented key, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_file() -> None:
    config = load_config(None)
    assert config.model.name == "sdxl-lightning"
    assert config.model.steps == (4,)
    assert config.queue.max_batch_images == 8


def test_example_config_loads_and_matches_defaults() -> None:
    config = load_config(ROOT / "config.example.toml")
    defaults = load_config(None)
    assert config.queue == defaults.queue
    assert config.model.steps == (4,)
    assert config.output_dir == Path("out")


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "tiny"\nsteps = [2, 4]\n[queue]\nmax_batch_images = 4\n'
                    'batch_time_limit_s = 30\n[output]\ndir = "imgs"\n')
    config = load_config(path)
    assert config.model.name == "tiny"
    assert config.model.steps == (2, 4)
    assert config.queue.max_batch_images == 4
    assert config.queue.batch_time_limit_s == 30
    assert config.output_dir == Path("imgs")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[model]\nnmae = 'tiny'\n", ["model.nmae", "name"]),
        ("[queue]\nmax_batch_images = 'eight'\n", ["queue.max_batch_images", "int"]),
        ("[model]\nsteps = 4\n", ["model.steps", "list"]),
        ("[discrod]\ntoken = 1\n", ["[discrod]"]),
        ("[model\n", ["not valid TOML"]),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for word in words:
        assert word in str(info.value)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.example.toml"):
        load_config(tmp_path / "nope.toml")

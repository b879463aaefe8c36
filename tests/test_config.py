"""Config loading: defaults, every documented key, and errors that name the key."""

from __future__ import annotations

import re
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


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, env=env or {})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # front-end sections are checked without their tokens
        ("[telegram]\nfoo = 1\n", ["telegram.foo", "poll_timeout"]),
        ("[discord]\nprogress_edit_interval = 'fast'\n", ["discord.progress_edit_interval", "number", "'fast'"]),
        ("[discord]\ndev_guild_ids = ['abc']\n", ["discord.dev_guild_ids[0]", "whole number"]),
        ("[telegram.webhook]\nport = '8443'\n", ["telegram.webhook.port", "whole number (int)"]),
        ("[telegram.webhook]\nport = 70000\n", ["webhook_port", "65535"]),
        ("[telegram]\nwebhook_url = 'https://x'\n", ["telegram.webhook_url", "webhook.url"]),
        ("[telegram]\nwebhook = 3\n", ["[telegram.webhook]", "table"]),
        # every other section, every type
        ("[moderation]\nexplicit_labels = 'X'\n", ["moderation.explicit_labels", "list of strings"]),
        ('[moderation.policies."discord:guild:1"]\nexplicit = 3\n', ['moderation.policies."discord:guild:1".explicit', "string"]),
        ('[moderation.policies."discord:guild:1"]\nblock = true\n', ["explicit", "allow", "block"]),
        ("[maintenance]\nbackup_dir = 3\n", ["maintenance.backup_dir", "path"]),
        ("[maintenance]\nbackups = 'yes'\n", ["maintenance.backups", "true or false"]),
        ("[queue]\nbatch_time_limit_s = true\n", ["queue.batch_time_limit_s", "number (float)"]),
        ("[safety]\nwords = [1]\n", ["safety.words[0]", "string"]),
        ("[admin]\nusers = ['bob']\n", ["admin.users", "discord:1234"]),
        ("[output]\ndir = 5\n", ["output.dir", "path"]),
        ("queue = 3\n", ["[queue]", "table"]),
    ],
)
def test_every_section_is_checked_and_errors_name_key_and_type(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("text", "variable"),
    [
        ("[discord]\ntoken = 'x'\n", "DISCORD_TOKEN"),
        ("[telegram]\nwebhook_secret = 'x'\n", "TELEGRAM_WEBHOOK_SECRET"),
        ("[telegram.webhook]\nsecret = 'x'\n", "TELEGRAM_WEBHOOK_SECRET"),
        ("[model]\nhf_token = 'x'\n", "HF_TOKEN"),
        ("[storage]\napi_key = 'x'\n", "STORAGE_API_KEY"),
        ("[queue]\npassword = 'x'\n", "QUEUE_PASSWORD"),
        ('[moderation.policies."discord:guild:1"]\nsecret = "x"\n', "MODERATION_POLICIES_DISCORD_GUILD_1_SECRET"),
    ],
)
def test_no_secret_is_read_from_the_file_under_any_name(tmp_path: Path, text: str, variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, env={"DISCORD_TOKEN": "t", "TELEGRAM_TOKEN": "1:t"})
    assert variable in str(info.value) and "environment" in str(info.value)


def test_secrets_come_from_the_environment_and_reach_the_front_ends(tmp_path: Path) -> None:
    config = _load(tmp_path, "[telegram.webhook]\nurl = 'https://bot.example/tg'\nport = 9000\n",
                   env={"TELEGRAM_TOKEN": "1:abc", "TELEGRAM_WEBHOOK_SECRET": "s3cret"})
    assert config.telegram is not None and config.telegram.token == "1:abc"
    assert config.telegram.webhook_secret == "s3cret" and config.telegram.webhook_port == 9000
    assert config.discord is None
    without = _load(tmp_path, "[telegram.webhook]\nurl = 'https://bot.example/tg'\n")
    assert without.telegram is None


def _example_keys() -> set[str]:
    """Keys of config.example.toml, the commented-out ones included."""
    keys, section = set(), ""
    for line in (ROOT / "config.example.toml").read_text().splitlines():
        header = re.match(r"^#?\s*\[([^\]]+)\]\s*$", line)
        if header:
            section = header.group(1)
            if '."' in section:  # [moderation.policies."<scope>"]: one key, its table is free-form
                keys.add(section.split('."')[0])
                section = ""
            continue
        key = re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)
        if key and section:
            keys.add(f"{section}.{key.group(1)}")
    return keys


def test_example_and_code_know_the_same_keys() -> None:
    """config.example.toml names every key; the docs' configuration reference is generated from
    the code (tests/test_docs.py checks it lists every key with a meaning)."""
    from bot.config import config_keys

    code = set(config_keys())
    assert len(code) > 40
    assert _example_keys() == code, (sorted(code - _example_keys()), sorted(_example_keys() - code))

"""Configuration: one TOML file (see config.example.toml); secrets only from the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.frontends.discord import DiscordSettings
    from bot.frontends.telegram import TelegramSettings

from bot.maintenance import MaintenanceSettings
from bot.safety.moderation import ModerationSettings
from generation.errors import ImagineError
from generation.lora import LoraSettings
from generation.pipeline import ModelConfig
from generation.refine import RefineSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "ConfigError",
    "QueueConfig",
    "QuotaConfig",
    "SafetyConfig",
    "StorageConfig",
    "load_config",
]


class ConfigError(ImagineError):
    """The config file is missing, unreadable or has a bad value; the message names the key."""


@dataclass(frozen=True)
class QueueConfig:
    """[queue]: batching and back-pressure."""

    max_batch_images: int = 8
    max_queued_images: int = 64
    max_queued_per_user: int = 8
    priority_burst: int = 3
    batch_time_limit_s: float = 120.0


@dataclass(frozen=True)
class StorageConfig:
    """[storage]: where the database and image files live."""

    data_dir: Path = Path("data")

    @property
    def database(self) -> Path:
        return self.data_dir / "imagine.db"

    @property
    def images(self) -> Path:
        return self.data_dir / "images"


@dataclass(frozen=True)
class QuotaConfig:
    """[quota]: images per user per window (admins can override per user)."""

    images: int = 50
    window: str = "daily"

    def __post_init__(self) -> None:
        if self.window not in ("hourly", "daily", "weekly"):
            raise ValueError(f"quota.window must be hourly, daily or weekly, not {self.window!r}")
        if self.images < 0:
            raise ValueError(f"quota.images must be 0 or more, not {self.images}")


@dataclass(frozen=True)
class SafetyConfig:
    """[safety]: the prompt blocklist (words and regular expressions)."""

    default_blocklist: bool = True
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    check_negative_prompt: bool = True
    blocklist_file: Path | None = None  # extra categories, in the format of bot/safety/blocklist.txt


@dataclass(frozen=True)
class Config:
    """The whole configuration, after defaults and validation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    admins: frozenset[str] = frozenset()
    output_dir: Path = Path("out")
    discord: DiscordSettings | None = None  # None: no DISCORD_TOKEN, Discord not started
    telegram: TelegramSettings | None = None  # None: no TELEGRAM_TOKEN
    source: Path | None = None
    # prompt power (issue 14): [lora] adapters folder, [refine] prompt-refining LLM
    lora: LoraSettings = field(default_factory=LoraSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read ``path`` (defaults when None) and tokens from ``env`` (default os.environ).

    Unknown keys and bad types are errors that name the key. Tokens are never read from the
    file: DISCORD_TOKEN / TELEGRAM_TOKEN, or DISCORD_TOKEN_FILE / TELEGRAM_TOKEN_FILE naming a
    file that holds one (e.g. a Docker secret).
    """
    env = os.environ if env is None else env
    if path is None:
        return replace(Config(), **_front_ends({}, env))
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {str(path)!r} not found; copy config.example.toml to it and edit."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}") from None
    sections = {
        "model": ModelConfig,
        "queue": QueueConfig,
        "storage": StorageConfig,
        "quota": QuotaConfig,
        "safety": SafetyConfig,
        "maintenance": MaintenanceSettings,
        "lora": LoraSettings,
        "refine": RefineSettings,
    }
    known = {*sections, "output", "admin", "discord", "telegram", "moderation"}
    for key in data:
        if key not in known:
            raise ConfigError(f"Unknown config section [{key}] in {path}; known: {', '.join(sorted(known))}.")
    parsed = {name: _section(cls, data.get(name, {}), name) for name, cls in sections.items()}
    moderation = data.get("moderation", {})
    if not isinstance(moderation, dict):
        raise ConfigError("[moderation] must be a table.")
    try:
        parsed["moderation"] = ModerationSettings.from_mapping(moderation)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[moderation]: {exc}") from None
    output = _table(data, "output", {"dir"})
    admin = _table(data, "admin", {"users"})
    admins = admin.get("users", [])
    if not isinstance(admins, list) or not all(
        isinstance(a, str) and a.count(":") == 1 and all(a.split(":")) for a in admins
    ):
        raise ConfigError('admin.users must be a list like ["discord:1234", "telegram:5678"].')
    return Config(
        **parsed,
        admins=frozenset(admins),
        output_dir=Path(output.get("dir", "out")),
        source=path,
        **_front_ends(data, env),
    )


def _front_ends(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Settings of each chat front end whose token is in the environment."""
    found: dict[str, Any] = {}
    discord = _table(
        data, "discord", {"api_base_url", "gateway_url", "dev_guild_ids", "progress_edit_interval"},
        secret="DISCORD_TOKEN",
    )
    token = _secret(env, "DISCORD_TOKEN")
    if token:
        from bot.frontends.discord import DiscordSettings

        if "dev_guild_ids" in discord and not isinstance(discord["dev_guild_ids"], list):
            raise ConfigError("discord.dev_guild_ids must be a list of guild ids, like [123456789].")
        try:
            found["discord"] = DiscordSettings(token=token, **discord)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[discord]: {exc}") from None
    telegram = data.get("telegram", {})
    if not isinstance(telegram, dict):
        raise ConfigError("[telegram] must be a table.")
    if "token" in telegram or "secret" in telegram.get("webhook", {}):
        raise ConfigError(
            "Secrets do not belong in the config file: set TELEGRAM_TOKEN and "
            "TELEGRAM_WEBHOOK_SECRET in the environment instead."
        )
    token = _secret(env, "TELEGRAM_TOKEN")
    if token:
        from bot.frontends.telegram import TelegramSettings

        secrets = {"TELEGRAM_TOKEN": token}
        webhook_secret = _secret(env, "TELEGRAM_WEBHOOK_SECRET")
        if webhook_secret:
            secrets["TELEGRAM_WEBHOOK_SECRET"] = webhook_secret
        try:
            found["telegram"] = TelegramSettings.from_mapping(telegram, secrets)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[telegram]: {exc}") from None
    return found


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``env[name]``, or the stripped contents of the file named by ``env[name + "_FILE"]``."""
    if env.get(name):
        return env[name].strip()
    file = env.get(f"{name}_FILE")
    if not file:
        return None
    try:
        return Path(file).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}_FILE names {file!r}, which cannot be read: {exc.strerror}.") from None


def _table(
    data: dict[str, Any], name: str, keys: set[str], *, secret: str | None = None
) -> dict[str, Any]:
    """A small free-form table whose keys must be among ``keys``."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table.")
    if secret and "token" in table:
        raise ConfigError(
            f"Secrets do not belong in the config file: remove {name}.token and set {secret} "
            "in the environment instead."
        )
    for key in table:
        if key not in keys:
            raise ConfigError(f"Unknown key {name}.{key}; known keys: {', '.join(sorted(keys))}.")
    return table


def _section(cls: type, values: dict[str, Any], name: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, naming any bad key or value."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table.")
    allowed = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(
                f"Unknown key {name}.{key}; known keys: {', '.join(sorted(allowed))}."
            )
        default = getattr(cls(), key)
        if isinstance(default, Path) or (default is None and key.endswith(("_dir", "_file"))):
            if not isinstance(value, str):
                raise ConfigError(f"{name}.{key} must be a path (a string), not {value!r}.")
            value = Path(value)
        elif isinstance(default, tuple):
            if not isinstance(value, list):
                raise ConfigError(f"{name}.{key} must be a list, like {list(default)}.")
            value = tuple(value)
        elif isinstance(default, bool) != isinstance(value, bool) or (
            default is not None
            and not isinstance(value, type(default))
            and not (isinstance(default, float) and isinstance(value, int))
        ):
            raise ConfigError(
                f"{name}.{key} must be a {type(default).__name__}, not {value!r}."
            )
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from None

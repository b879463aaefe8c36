"""Configuration: one TOML file (see config.example.toml); secrets only from the environment."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bot.maintenance import MaintenanceSettings
from generation.errors import ImagineError
from generation.pipeline import ModelConfig

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


@dataclass(frozen=True)
class Config:
    """The whole configuration, after defaults and validation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    admins: frozenset[str] = frozenset()
    output_dir: Path = Path("out")
    source: Path | None = None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or return defaults when None); unknown keys and bad types are errors."""
    if path is None:
        return Config()
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
    }
    known = {*sections, "output", "admin"}
    for key in data:
        if key not in known:
            raise ConfigError(f"Unknown config section [{key}] in {path}; known: {', '.join(sorted(known))}.")
    parsed = {name: _section(cls, data.get(name, {}), name) for name, cls in sections.items()}
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
    )


def _table(data: dict[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    """A small free-form table whose keys must be among ``keys``."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table.")
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
        if isinstance(default, Path) or (default is None and key.endswith("_dir")):
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

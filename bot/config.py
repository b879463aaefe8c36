"""Configuration: one TOML file (see config.example.toml); secrets only from the environment."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from generation.errors import ImagineError
from generation.pipeline import ModelConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "QueueConfig", "load_config"]


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
class Config:
    """The whole configuration, after defaults and validation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
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
    known = {"model", "queue", "output"}
    for key in data:
        if key not in known:
            raise ConfigError(f"Unknown config section [{key}] in {path}; known: {', '.join(sorted(known))}.")
    model = _section(ModelConfig, data.get("model", {}), "model")
    queue = _section(QueueConfig, data.get("queue", {}), "queue")
    output = data.get("output", {})
    output_dir = Path(output.get("dir", "out"))
    return Config(model=model, queue=queue, output_dir=output_dir, source=path)


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
        if isinstance(default, tuple):
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

"""[web] settings: where the HTTP front end listens and what it serves (secrets from the environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WebSettings"]


@dataclass(frozen=True)
class WebSettings:
    """[web]: the HTTP API, the public gallery, /healthz and /metrics."""

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # e.g. "https://imagine.example.org"; links in chat replies use it
    gallery: bool = True  # serve the public gallery of shared images at /
    rate_limit: int = 60  # API requests per minute per key (bursts up to this many)
    metrics_token_required: bool = False  # /metrics needs "Authorization: Bearer $IMAGINE_METRICS_TOKEN"
    metrics_token: str | None = field(default=None, repr=False)  # from the environment only

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, not {self.port!r}")
        if not isinstance(self.rate_limit, int) or self.rate_limit < 1:
            raise ValueError(f"rate_limit must be 1 or more requests per minute, not {self.rate_limit!r}")
        if self.metrics_token_required and not self.metrics_token:
            raise ValueError("metrics_token_required is set: put the token in IMAGINE_METRICS_TOKEN "
                             "(or IMAGINE_METRICS_TOKEN_FILE) in the environment")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], metrics_token: str | None = None) -> WebSettings:
        """From the [web] table; unknown keys and wrong types raise ValueError naming the key."""
        known = {f for f in cls.__dataclass_fields__ if f != "metrics_token"}
        for key, value in table.items():
            if key not in known:
                raise ValueError(f"unknown key web.{key}; known keys: {', '.join(sorted(known))}")
            default = getattr(cls, key)
            if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
                raise ValueError(f"web.{key} must be a {type(default).__name__}, not {value!r}")
        return cls(**table, metrics_token=metrics_token)

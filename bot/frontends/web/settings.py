"""[web] settings: where the HTTP front end listens and what it serves (secrets from the environment)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

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
    max_keys_per_user: int = 5  # live API keys per account (each key has its own rate limit)
    gallery_rate_limit: int = 120  # public gallery requests per minute per client address
    auth_failures_free: int = 10  # failed API keys per client address before each try waits
    # /metrics needs "Authorization: Bearer $IMAGINE_METRICS_TOKEN" when this is set, when a token
    # is set, and always unless the server listens on loopback only
    metrics_token_required: bool = False
    metrics_token: str | None = field(default=None, repr=False)  # from the environment only

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, not {self.port!r}")
        if not isinstance(self.rate_limit, int) or self.rate_limit < 1:
            raise ValueError(f"rate_limit must be 1 or more requests per minute, not {self.rate_limit!r}")
        for name in ("max_keys_per_user", "gallery_rate_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be 1 or more, not {value!r}")
        if not isinstance(self.auth_failures_free, int) or self.auth_failures_free < 0:
            raise ValueError(f"auth_failures_free must be 0 or more, not {self.auth_failures_free!r}")
        if self.metrics_token_required and not self.metrics_token:
            raise ValueError("metrics_token_required is set: put the token in IMAGINE_METRICS_TOKEN "
                             "(or IMAGINE_METRICS_TOKEN_FILE) in the environment")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    @property
    def url(self) -> str:
        """Where the web front end answers, for links in chat replies: ``public_url``, else the
        address it listens on (all addresses: this machine's loopback)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.listen in ("", "0.0.0.0", "::") else self.listen
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        """Whether the server listens on a loopback address only (127.0.0.0/8, ::1, localhost)."""
        if self.listen == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.listen).is_loopback
        except ValueError:
            return False

"""[web] settings: where the HTTP front end listens and what it serves (secrets from the environment)."""

from __future__ import annotations

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

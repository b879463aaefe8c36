"""What the operator configures for the Discord front end (the ``[discord]`` table)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DiscordSettings"]


@dataclass(frozen=True)
class DiscordSettings:
    """[discord] config: the token comes from the environment (DISCORD_TOKEN) and is never shown."""

    token: str = field(repr=False)
    api_base_url: str | None = None  # e.g. an API proxy; None: https://discord.com/api/v10
    gateway_url: str | None = None  # None: Discord's gateway
    dev_guild_ids: tuple[int, ...] = ()  # sync commands to these guilds at start (else globally)
    progress_edit_interval: float = 1.5  # seconds between progress edits, at least
    guild_ready_timeout: float = 2.0  # discord.py's wait for GUILD_CREATEs after READY
    connect_timeout_s: float = 30.0  # one login attempt at most this long
    retry_initial_s: float = 2.0  # Discord unreachable at start: first retry after this, doubling…
    retry_max_s: float = 300.0  # …up to this

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("`discord.token` is empty: set DISCORD_TOKEN")
        object.__setattr__(self, "dev_guild_ids", tuple(int(g) for g in self.dev_guild_ids))
        if self.progress_edit_interval < 0:
            raise ValueError(f"`progress_edit_interval` must be 0 or more, not {self.progress_edit_interval}")


"""What the operator configures for the Telegram front end."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["TelegramSettings"]

_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class TelegramSettings:
    """Token, Bot API server, long polling or webhook, and pacing. The token is never shown."""

    token: str = field(repr=False)
    base_url: str | None = None  # self-hosted Bot API server, e.g. "http://127.0.0.1:8081/bot"
    base_file_url: str | None = None
    local_mode: bool = False  # a self-hosted server in --local mode (bigger uploads)
    webhook_url: str | None = None  # set: webhook mode; unset: long polling
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8443
    webhook_secret: str | None = field(default=None, repr=False)  # None: a random one per start
    poll_timeout: float = 10.0  # long-poll seconds
    drop_pending_updates: bool = False
    status_edit_interval_private: float = 1.5  # seconds between status edits in a private chat
    status_edit_interval_group: float = 3.0  # …in a group (20 messages/min per group)
    overall_per_second: int = 30  # flood limits kept in every sliding window (pacing.py); 0: off
    group_per_minute: int = 20  # messages (sends and edits) per group per minute
    private_interval: float = 1.0  # seconds per message in a private chat
    group_status_share: float = 0.5  # share of a group's minute that status edits may use
    group_previews: bool = True  # live previews in groups too (private chats always), within the status edits' budget
    ack_reaction: str = "👀"  # set on an /imagine message at once, removed on delivery; "": none
    max_retries: int = 2  # retries after a 429 (the pacer waits retry_after; pacing.py)
    send_retries: int = 4  # retries of a call that failed with a 5xx or a network error
    send_retry_backoff: float = 0.5  # seconds before the first of them; doubles each time
    history_per_page: int = 5
    upload_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.token or ":" not in self.token:
            raise ValueError("`token` must be a bot token like 123456:ABC… (from @BotFather)")
        if self.webhook_secret is not None and not _SECRET.fullmatch(self.webhook_secret):
            raise ValueError("`webhook_secret` must be 1-256 characters A-Z, a-z, 0-9, _ or -")
        if not 1 <= self.webhook_port <= 65535:
            raise ValueError(f"`webhook_port` must be from 1 to 65535, not {self.webhook_port}")
        if self.max_retries < 0:
            raise ValueError(f"`max_retries` must be 0 or more, not {self.max_retries}")
        if self.send_retries < 0 or self.send_retry_backoff < 0:
            raise ValueError("`send_retries` and `send_retry_backoff` must be 0 or more")
        if self.overall_per_second < 0 or self.group_per_minute < 0 or self.private_interval < 0:
            raise ValueError("`overall_per_second`, `group_per_minute` and `private_interval` must be 0 or more")
        if not 0 < self.group_status_share <= 1:
            raise ValueError(f"`group_status_share` must be above 0 and at most 1, not {self.group_status_share}")
        if not 1 <= self.history_per_page <= 10:
            raise ValueError(f"`history_per_page` must be from 1 to 10, not {self.history_per_page}")

    @property
    def webhook(self) -> bool:
        return bool(self.webhook_url)

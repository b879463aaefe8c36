"""An offline fake of Discord (REST + gateway) on 127.0.0.1 for running the real discord.py client.

The fake is an ``aiohttp.web`` server that speaks enough of Discord's API v10 for a bot built on
``discord.Client`` / ``commands.Bot`` with an ``app_commands.CommandTree`` to log in, connect to
the gateway, receive interactions and reactions, answer them (defer, edit the original response
with files and views, follow-ups, channel messages, DMs, reactions), and hit the failures that
matter (429, DMs closed, expired interaction tokens). Every REST request is recorded.

Typical use in a test::

    from tests.fake_discord import FakeDiscord, running_client

    async def test_ping() -> None:
        async with FakeDiscord() as fake:            # starts the server and patches discord.py
            bot = MyBot(intents=discord.Intents.default(), guild_ready_timeout=0.05)
            async with running_client(bot):          # login, connect, READY; close + await on exit
                inter = await fake.send_interaction(fake.slash("ping", {"text": "hi"}))
                defer = await fake.wait_for_request("POST", r"/interactions/\\d+/[^/]+/callback")
                assert defer.json == {"type": 5}
                edit = await fake.wait_for_request("PATCH", r"/webhooks/\\d+/[^/]+/messages/@original")
                assert edit.files[0].filename == "pong.png"
                message = fake.original_response(inter["token"])   # the stored message dict
                await fake.send_interaction(fake.button("again", message, fake.make_user("bob")))
                await fake.add_reaction("👍", message)              # MESSAGE_REACTION_ADD

The default world: ``fake.guild_id`` with ``fake.text_channel_id`` and an NSFW
``fake.nsfw_channel_id``, a member ``fake.user`` ("alice"); ``fake.dm_channel_for(user_id)`` is a DM
channel; ``fake.channel_messages(channel_id)`` / ``fake.dm_messages(user_id)`` are what the bot posted.

``fake_discord_server()`` is the same as an async context manager and ``fake_discord`` a ready-made
pytest fixture (import it into a test module to use it).

What discord.py needs from a fake (all checked against discord.py 2.7's source):

- ``discord.http.Route.BASE`` is read whenever a ``Route`` is built, so patching the class attribute
  redirects REST *and* the interaction/webhook adapter. ``Client.connect`` does not ask
  ``/gateway/bot``: it connects straight to ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``
  (a ``yarl.URL``), then to READY's ``resume_gateway_url`` on resume. ``patch_discord()`` sets both.
- ``login()`` calls ``GET /users/@me`` *and* ``GET /oauth2/applications/@me``.
- JSON is only parsed when ``Content-Type`` is exactly ``application/json``
  (``web.json_response`` would add ``; charset=utf-8`` and break it), so replies are built by hand.
- A 429 is only retried when the response carries a ``Via`` header (otherwise discord.py assumes a
  Cloudflare ban and raises ``HTTPException``); the wait is the JSON body's ``retry_after``.
- ``on_ready`` fires ``guild_ready_timeout`` (default 2 s) after the last GUILD_CREATE; pass
  ``guild_ready_timeout=0.05`` to the client in tests.
- Interactions need ``attachment_size_limit``, ``version``, ``token``, ``application_id``; component
  clicks are routed to a view by ``(component_type, message.id, custom_id)``, so the click payload
  carries the stored message whose id discord.py saw in the PATCH @original response.
- The callback is sent with ``?with_response=1`` and parsed as an ``InteractionCallbackResponse``
  (``{"interaction": {...}, "resource": {"type": .., "message": {...}}}``).
- aiohttp's server rejects bodies over 1 MiB by default; the fake allows 64 MiB and answers
  413 / code 40005 itself above ``upload_limit`` (10 MiB), like Discord.

Idempotent sends: a channel message with ``nonce`` and ``enforce_nonce`` whose nonce the same
channel saw within ``nonce_window`` (5 minutes) is answered with the first message, not a new
one (``nonce_hits`` counts them), as Discord does. ``before_answer(rec)`` runs after a request
was handled and before its answer goes out: a kill test stops the bot there.

Failures on demand: ``fail_next`` (any status/code), ``rate_limit_next`` (429 + ``retry_after``),
``close_dms`` (403 / 50007 on sends to that user's DM channel), ``expire_interaction`` (404 / 10015
on the token's webhook routes, 10062 on its callback). Interactions answered later than
``initial_response_timeout`` (3 s) get 10062 "Unknown interaction", as on Discord.
``FakeDiscord(global_per_second=50)`` enforces Discord's documented global limit in every
sliding second (interaction callbacks and interaction-token webhooks are exempt, as on
Discord): a request over it gets a global 429 (``X-RateLimit-Global``, ``Via``), recorded.
``FakeDiscord(edits_per_message=(5, 5.0))`` enforces a per-message edit bucket: more PATCHes of
one message (text or attachment edits of the interaction's @original, or a channel message) in
any sliding window of that many seconds get a bucket 429 (``edit_refusals``). Discord does not
document its bucket sizes (it reports them in ``X-RateLimit-*`` headers); 5 per 5 s is the
strict reading the tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "DISCORD_EPOCH",
    "FailureRule",
    "FakeDiscord",
    "FakeInteraction",
    "RecordedFile",
    "RecordedRequest",
    "fake_discord",
    "fake_discord_server",
    "running_client",
]

_log = logging.getLogger(__name__)

DISCORD_EPOCH = 1420070400000
API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"

# Permission bits a bot needs for /imagine; sent as app_permissions and the @everyone role.
_PERMISSIONS = (
    (1 << 6)  # ADD_REACTIONS
    | (1 << 10)  # VIEW_CHANNEL
    | (1 << 11)  # SEND_MESSAGES
    | (1 << 14)  # EMBED_LINKS
    | (1 << 15)  # ATTACH_FILES
    | (1 << 16)  # READ_MESSAGE_HISTORY
    | (1 << 18)  # USE_EXTERNAL_EMOJIS
    | (1 << 31)  # USE_APPLICATION_COMMANDS
    | (1 << 38)  # SEND_MESSAGES_IN_THREADS
)

# Message flags and interaction types (Discord API docs).
_EPHEMERAL = 1 << 6
_LOADING = 1 << 7
_PING, _APP_COMMAND, _COMPONENT, _AUTOCOMPLETE, _MODAL_SUBMIT = 1, 2, 3, 4, 5


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply whose Content-Type is exactly ``application/json`` (discord.py checks equality)."""
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return web.Response(status=status, body=json.dumps(data).encode(), headers=all_headers)


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return _json_response({"message": message, "code": code, **extra}, status=status)


@dataclass
class RecordedFile:
    """One file of a multipart request."""

    field: str
    filename: str
    content_type: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RecordedRequest:
    """One REST request as the fake saw it; ``path`` is relative to ``/api/v10`` and URL-decoded."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None  # the JSON body, or the multipart ``payload_json``
    files: list[RecordedFile] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)  # other multipart text fields
    received_at: float = 0.0  # loop.time() when the request arrived
    status: int | None = None  # filled in once answered
    response: Any = None  # the JSON (or None) that was answered

    @property
    def is_multipart(self) -> bool:
        return bool(self.files) or bool(self.form)

    def matches(self, method: str, path_regex: str) -> bool:
        return (method == "*" or self.method == method.upper()) and re.fullmatch(path_regex, self.path) is not None


_REC = web.RequestKey("rec", RecordedRequest)


@dataclass
class FailureRule:
    """Answer the next ``times`` requests matching ``method`` + ``path_regex`` with an error."""

    method: str
    path_regex: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int | None  # None: forever

    def take(self, rec: RecordedRequest) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if not rec.matches(self.method, self.path_regex):
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class FakeInteraction:
    """Server-side state of one injected interaction."""

    id: int
    token: str
    payload: dict[str, Any]
    created_at: float
    response_type: int | None = None
    original_message_id: int | None = None
    expired: bool = False

    @property
    def responded(self) -> bool:
        return self.response_type is not None


@dataclass
class _GatewayConnection:
    ws: web.WebSocketResponse
    query: dict[str, str]
    identify: dict[str, Any] | None = None
    session_id: str | None = None
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    heartbeats: int = 0


class FakeDiscord:
    """A fake Discord REST API + gateway on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        app_id: int | None = None,
        bot_name: str = "imagine-bot",
        heartbeat_interval_ms: int = 41250,
        initial_response_timeout: float = 3.0,
        token_ttl: float = 15 * 60.0,
        upload_limit: int = 10 * 1024 * 1024,
        application_flags: int = 0,
        with_default_guild: bool = True,
        nonce_window: float = 5 * 60.0,
        global_per_second: int = 0,
        edits_per_message: tuple[int, float] | None = None,
    ) -> None:
        self._last_snowflake = 0
        # a per-message edit bucket (count, seconds), e.g. (5, 5.0): PATCHes of one message (the
        # interaction's @original included) over it get a bucket 429 (recorded in edit_refusals)
        self.edits_per_message = edits_per_message
        self.edit_refusals: list[RecordedRequest] = []
        # Discord's documented global limit (50 requests/s per bot; interaction callbacks and
        # interaction-token webhooks are exempt): 0 is off; over it, a global 429 (recorded)
        self.global_per_second = global_per_second
        self._counter = itertools.count()
        self.app_id: int = app_id or self.snowflake()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.initial_response_timeout = initial_response_timeout
        self.token_ttl = token_ttl
        self.upload_limit = upload_limit
        self.application_flags = application_flags
        self.nonce_window = nonce_window
        self.nonces: dict[tuple[int, str], tuple[int, float]] = {}  # (channel, nonce) -> (message id, when)
        self.nonce_hits = 0  # repeated sends answered with the existing message
        # called with each answered REST request before its answer goes out (kill tests stop the bot here)
        self.before_answer: Callable[[RecordedRequest], None] | None = None

        self.bot_user: dict[str, Any] = self._user_payload(self.app_id, bot_name, bot=True)
        self.users: dict[int, dict[str, Any]] = {self.app_id: self.bot_user}
        self.owner: dict[str, Any] = self.make_user("owner")
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.channel_message_ids: dict[int, list[int]] = {}
        self.attachments: dict[int, bytes] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.closed_dms: set[int] = set()
        self.interactions: dict[str, FakeInteraction] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}

        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.failures: list[FailureRule] = []
        self.gateway_connections: list[_GatewayConnection] = []
        self.identifies: list[dict[str, Any]] = []
        self._claimed: set[int] = set()
        self._changed: asyncio.Condition | None = None

        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int = 0
        self._restore: contextlib.ExitStack | None = None

        # A default world: one guild with a normal and an NSFW text channel, and a user "alice".
        self.guild_id = self.text_channel_id = self.nsfw_channel_id = 0
        self.user: dict[str, Any] = self.make_user("alice")
        if with_default_guild:
            guild = self.add_guild("Test Guild", members=[self.user])
            self.guild_id = int(guild["id"])
            self.text_channel_id = int(self.add_text_channel(self.guild_id, "general")["id"])
            self.nsfw_channel_id = int(self.add_text_channel(self.guild_id, "nsfw-art", nsfw=True)["id"])

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, patch: bool = True, port: int = 0) -> FakeDiscord:
        """Start the server on 127.0.0.1 (``port`` 0: a free one); with ``patch``, point discord.py at it."""
        self._changed = asyncio.Condition()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", port)
        await self._site.start()
        server = self._site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if patch:
            self._restore = contextlib.ExitStack()
            self._restore.enter_context(self.patch_discord())
        return self

    async def stop(self) -> None:
        """Close gateway sockets, stop the server and undo the discord.py patches."""
        for conn in list(self.gateway_connections):
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(code=1001), 2)
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), 5)
            self._runner = None
        if self._restore is not None:
            self._restore.close()
            self._restore = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{GATEWAY_PATH}"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[FakeDiscord]:
        """Point ``discord.http.Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` here; restore on exit."""
        import discord.gateway
        import discord.http
        import yarl

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url + "/")
        try:
            yield self
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # ------------------------------------------------------------------ world building

    def snowflake(self) -> int:
        """A fresh, increasing Discord snowflake."""
        value = ((int(time.time() * 1000) - DISCORD_EPOCH) << 22) | (next(self._counter) & 0xFFF)
        value = max(value, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    @staticmethod
    def _user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(user_id),
            "username": name,
            "global_name": None if bot else name.title(),
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "bot": bot,
        }
        if bot:
            payload.update(verified=True, mfa_enabled=False, locale="en-US")
        return payload

    def make_user(self, name: str, user_id: int | None = None, *, bot: bool = False) -> dict[str, Any]:
        """Create (and remember) a user payload."""
        payload = self._user_payload(user_id or self.snowflake(), name, bot=bot)
        self.users[int(payload["id"])] = payload
        return payload

    def _member_payload(self, user: dict[str, Any], *, permissions: int | None = None) -> dict[str, Any]:
        member: dict[str, Any] = {
            "user": user,
            "roles": [],
            "joined_at": _now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def add_guild(self, name: str, *, members: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Add a guild the bot is in (sent in READY + GUILD_CREATE); returns its payload."""
        guild_id = self.snowflake()
        users = [self.bot_user, *(members or [])]
        guild: dict[str, Any] = {
            "id": str(guild_id),
            "name": name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": self.owner["id"],
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "features": [],
            "roles": [
                {
                    "id": str(guild_id),  # @everyone has the guild's id
                    "name": "@everyone",
                    "permissions": str(_PERMISSIONS),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                    "icon": None,
                    "unicode_emoji": None,
                }
            ],
            "emojis": [],
            "stickers": [],
            "channels": [],
            "threads": [],
            "members": [self._member_payload(u) for u in users],
            "member_count": len(users),
            "large": False,
            "unavailable": False,
            "joined_at": _now_iso(),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "premium_progress_bar_enabled": False,
        }
        self.guilds[guild_id] = guild
        return guild

    def add_member(self, guild_id: int, user: dict[str, Any]) -> None:
        """Make ``user`` a member of the guild (before the bot connects)."""
        guild = self.guilds[guild_id]
        guild["members"].append(self._member_payload(user))
        guild["member_count"] = len(guild["members"])
        self.users[int(user["id"])] = user

    def add_text_channel(self, guild_id: int, name: str, *, nsfw: bool = False) -> dict[str, Any]:
        """Add a text channel to a guild; returns its payload."""
        guild = self.guilds[guild_id]
        channel: dict[str, Any] = {
            "id": str(self.snowflake()),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(guild["channels"]),
            "permission_overwrites": [],
            "nsfw": nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
        guild["channels"].append(channel)
        self.channels[int(channel["id"])] = channel
        return channel

    def dm_channel_for(self, user_id: int | str) -> int:
        """The id of the DM channel with ``user_id`` (created on first use, as POST /users/@me/channels does)."""
        uid = int(user_id)
        if uid not in self.dm_channels:
            channel_id = self.snowflake()
            user = self.users.get(uid) or self.make_user(f"user{uid}", uid)
            self.channels[channel_id] = {
                "id": str(channel_id),
                "type": 1,
                "recipients": [user],
                "last_message_id": None,
                "flags": 0,
            }
            self.dm_channels[uid] = channel_id
        return self.dm_channels[uid]

    def close_dms(self, user_id: int | str) -> None:
        """From now on, messages to this user's DM channel fail with 403 / 50007."""
        self.closed_dms.add(int(user_id))

    # ------------------------------------------------------------------ messages seen

    def channel_messages(self, channel_id: int | str) -> list[dict[str, Any]]:
        """Messages in a channel (bot posts and interaction responses), oldest first, as stored now."""
        return [self.messages[mid] for mid in self.channel_message_ids.get(int(channel_id), []) if mid in self.messages]

    def dm_messages(self, user_id: int | str) -> list[dict[str, Any]]:
        """Messages the bot sent to a user's DMs."""
        uid = int(user_id)
        return self.channel_messages(self.dm_channels[uid]) if uid in self.dm_channels else []

    def attachment_bytes(self, attachment: dict[str, Any] | int | str) -> bytes:
        """The uploaded bytes of an attachment (payload or id)."""
        att_id = int(attachment["id"]) if isinstance(attachment, dict) else int(attachment)
        return self.attachments[att_id]

    def original_response(self, token: str) -> dict[str, Any] | None:
        """The current @original message of an interaction, if any."""
        inter = self.interactions[token]
        return self.messages.get(inter.original_message_id or 0)

    # ------------------------------------------------------------------ failures

    def fail_next(
        self,
        method: str,
        path_regex: str,
        *,
        status: int,
        code: int = 0,
        message: str = "",
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> FailureRule:
        """Answer the next ``times`` (None: all) matching requests with ``status`` and a Discord error body."""
        rule = FailureRule(
            method.upper(), path_regex, status, {"message": message, "code": code, **body}, dict(headers or {}), times
        )
        self.failures.append(rule)
        return rule

    def rate_limit_next(
        self, method: str, path_regex: str, *, retry_after: float = 0.2, times: int = 1, is_global: bool = False
    ) -> FailureRule:
        """Answer the next ``times`` matching requests with 429 and ``retry_after`` (body and headers)."""
        headers = {
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket",
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",  # discord.py treats a 429 without Via as a Cloudflare ban
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        return self.fail_next(
            method,
            path_regex,
            status=429,
            code=0,
            message="You are being rate limited.",
            times=times,
            headers=headers,
            retry_after=retry_after,
            **{"global": is_global},
        )

    def expire_interaction(self, token_or_payload: str | dict[str, Any]) -> None:
        """Make an interaction token behave as after 15 minutes: webhook routes 404 / 10015."""
        token = token_or_payload if isinstance(token_or_payload, str) else token_or_payload["token"]
        self.interactions[token].expired = True

    # ------------------------------------------------------------------ waiting on requests

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """All recorded requests matching ``method`` (or ``*``) and ``path_regex`` (full match)."""
        return [r for r in self.requests if r.matches(method, path_regex)]

    async def wait_for_request(
        self,
        method: str,
        path_regex: str,
        timeout: float = 5.0,
        *,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        status: int | None = None,
    ) -> RecordedRequest:
        """The first answered matching request not yet returned by an earlier wait; waits up to ``timeout``.

        ``method`` is upper-case or ``"*"``; ``path_regex`` must match the whole path, relative to
        /api/v10 and URL-decoded (e.g. ``r"/channels/\\d+/messages"``). Requests that arrived before
        the call count too, and each recorded request is returned by at most one wait, so successive
        calls with one pattern return successive requests. Raises AssertionError listing every
        request seen when nothing matches in time.
        """
        assert self._changed is not None, "start() the fake first"

        def find() -> RecordedRequest | None:
            for index, rec in enumerate(self.requests):
                if index in self._claimed or rec.status is None or not rec.matches(method, path_regex):
                    continue
                if status is not None and rec.status != status:
                    continue
                if predicate is not None and not predicate(rec):
                    continue
                self._claimed.add(index)
                return rec
            return None

        async def wait() -> RecordedRequest:
            async with self._changed:  # type: ignore[union-attr]
                while (found := find()) is None:
                    await self._changed.wait()  # type: ignore[union-attr]
                return found

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            seen = "\n  ".join(f"{r.method} {r.path} -> {r.status}" for r in self.requests) or "(none)"
            raise AssertionError(
                f"no {method} {path_regex} request within {timeout}s; requests so far:\n  {seen}"
            ) from None

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ gateway: injecting events

    @property
    def identify(self) -> dict[str, Any] | None:
        """The last IDENTIFY payload (``d``) received."""
        return self.identifies[-1] if self.identifies else None

    @property
    def intents(self) -> int | None:
        return None if self.identify is None else int(self.identify.get("intents", 0))

    async def wait_for_identify(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until a client has identified (READY and GUILD_CREATEs are then sent)."""

        async def wait() -> dict[str, Any]:
            while not any(c.session_id for c in self.gateway_connections if not c.ws.closed):
                await asyncio.sleep(0.01)
            assert self.identify is not None
            return self.identify

        return await asyncio.wait_for(wait(), timeout)

    def _live_connections(self) -> list[_GatewayConnection]:
        return [c for c in self.gateway_connections if c.session_id and not c.ws.closed]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an op-0 dispatch ``event`` to every identified gateway connection."""
        live = self._live_connections()
        if not live:
            raise AssertionError(f"no identified gateway connection to dispatch {event} to")
        for conn in live:
            await self._send_dispatch(conn, event, data)

    async def send_interaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Register an interaction (token valid from now) and dispatch INTERACTION_CREATE."""
        self.interactions[payload["token"]] = FakeInteraction(
            id=int(payload["id"]), token=payload["token"], payload=payload, created_at=asyncio.get_running_loop().time()
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the gateway sockets from the server side (the client should reconnect and RESUME)."""
        for conn in self._live_connections():
            await conn.ws.close(code=code)

    # ------------------------------------------------------------------ payload builders

    def _channel_context(self, channel: int | str | dict[str, Any] | None) -> tuple[dict[str, Any], int | None]:
        if channel is None:
            channel_id = self.text_channel_id
        elif isinstance(channel, dict):
            channel_id = int(channel["id"])
        else:
            channel_id = int(channel)
        ch = self.channels[channel_id]
        guild_id = int(ch["guild_id"]) if "guild_id" in ch else None
        return ch, guild_id

    def _interaction_base(
        self,
        type_: int,
        data: dict[str, Any],
        user: dict[str, Any] | None,
        channel: int | str | dict[str, Any] | None,
        *,
        locale: str,
        attachment_size_limit: int | None,
    ) -> dict[str, Any]:
        user = user or self.user
        self.users.setdefault(int(user["id"]), user)
        ch, guild_id = self._channel_context(channel)
        payload: dict[str, Any] = {
            "id": str(self.snowflake()),
            "application_id": str(self.app_id),
            "type": type_,
            "data": data,
            "token": f"tok-{self.snowflake()}",
            "version": 1,
            "locale": locale,
            "app_permissions": str(_PERMISSIONS),
            "entitlements": [],
            "attachment_size_limit": attachment_size_limit or self.upload_limit,
            "channel_id": ch["id"],
            "channel": {k: v for k, v in ch.items() if k != "recipients"} | (
                {"recipients": [user]} if ch["type"] == 1 else {}
            ),
        }
        if guild_id is not None:
            guild = self.guilds[guild_id]
            payload.update(
                guild_id=str(guild_id),
                guild_locale=guild["preferred_locale"],
                guild={"id": str(guild_id), "locale": guild["preferred_locale"], "features": guild["features"]},
                member=self._member_payload(user, permissions=_PERMISSIONS),
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,  # GUILD
            )
        else:
            payload.update(user=user, authorizing_integration_owners={"0": "0"}, context=1)  # BOT_DM
        return payload

    def slash(
        self,
        name: str,
        options: dict[str, Any] | list[dict[str, Any]] | None = None,
        user: dict[str, Any] | None = None,
        channel: int | str | dict[str, Any] | None = None,
        guild: int | None = None,
        *,
        command_guild_id: int | None = None,
        resolved: dict[str, Any] | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND interaction for ``/name``.

        ``options`` is ``{name: value}`` (types inferred: str 3, bool 5, int 4, float 10) or a list
        of raw option dicts. ``channel`` defaults to the default guild's text channel; pass
        ``fake.dm_channel_for(user_id)`` for a DM. ``guild`` is accepted for readability and must
        match the channel's guild. ``command_guild_id`` marks the command as a guild command.
        """
        if isinstance(options, dict):
            option_list = [self._option(k, v) for k, v in options.items()]
        else:
            option_list = list(options or [])
        key = (command_guild_id, name, 1)
        command_id = self._command_ids.setdefault(key, self.snowflake())
        data: dict[str, Any] = {"id": str(command_id), "name": name, "type": 1, "options": option_list}
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)
        if resolved:
            data["resolved"] = resolved
        payload = self._interaction_base(
            _APP_COMMAND, data, user, channel, locale=locale, attachment_size_limit=attachment_size_limit
        )
        if guild is not None and int(payload.get("guild_id", 0)) != int(guild):
            raise ValueError(f"channel {payload['channel_id']} is not in guild {guild}")
        return payload

    def user_attachment(self, data: bytes, filename: str = "photo.png",
                        channel: int | str | None = None, *, size: int | None = None) -> dict[str, Any]:
        """An attachment a user sends with a slash command, served at its CDN URL as Discord does.

        Put it in ``resolved={"attachments": {id: payload}}`` and the option ``{"name": "image",
        "type": 11, "value": id}``. ``size`` overrides the size Discord reports (default: the real one).
        """
        att_id = self.snowflake()
        self.attachments[att_id] = data
        channel_id = int(channel) if channel is not None else self.text_channel_id
        url = f"{self.url}/attachments/{channel_id}/{att_id}/{filename}"
        payload: dict[str, Any] = {"id": str(att_id), "filename": filename, "size": len(data) if size is None else size,
                                   "url": url, "proxy_url": url,
                                   "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream"}
        if (dims := _image_size(data)) is not None:
            payload["width"], payload["height"] = dims
        return payload

    def slash_with_attachment(self, name: str, options: dict[str, Any], attachment: dict[str, Any],
                              option: str = "image", **kwargs: Any) -> dict[str, Any]:
        """``slash`` with ``attachment`` (from :meth:`user_attachment`) as the ``option`` option."""
        listed = [self._option(k, v) for k, v in options.items()]
        listed.append({"name": option, "type": 11, "value": attachment["id"]})
        return self.slash(name, listed, resolved={"attachments": {attachment["id"]: attachment}}, **kwargs)

    @staticmethod
    def _option(name: str, value: Any) -> dict[str, Any]:
        if isinstance(value, bool):
            type_ = 5
        elif isinstance(value, int):
            type_ = 4
        elif isinstance(value, float):
            type_ = 10
        else:
            type_ = 3
        return {"name": name, "type": type_, "value": value}

    def button(
        self,
        custom_id: str,
        message: dict[str, Any] | int | str,
        user: dict[str, Any] | None = None,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_COMPONENT interaction: ``user`` clicked ``custom_id`` on a stored message (dict or id)."""
        msg = self.messages[int(message["id"] if isinstance(message, dict) else message)]
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        payload = self._interaction_base(
            _COMPONENT, data, user, msg["channel_id"], locale=locale, attachment_size_limit=attachment_size_limit
        )
        payload["message"] = msg
        return payload

    def modal_submit(
        self,
        custom_id: str,
        values: dict[str, str],
        user: dict[str, Any] | None = None,
        channel: int | str | dict[str, Any] | None = None,
        *,
        message: dict[str, Any] | int | str | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """A MODAL_SUBMIT interaction: ``user`` filled the modal ``custom_id`` (the one the bot sent
        as a type 9 callback) with ``{text input custom_id: value}``, each in a Label (type 18).
        ``message``: the message whose component opened the modal (Discord sends it along)."""
        components = [{"type": 18, "id": n + 1, "component": {"type": 4, "id": n + 100, "custom_id": key,
                                                                "value": value}}
                      for n, (key, value) in enumerate(values.items())]
        stored = None
        if message is not None:
            stored = self.messages[int(message["id"] if isinstance(message, dict) else message)]
            channel = stored["channel_id"]
        payload = self._interaction_base(_MODAL_SUBMIT, {"custom_id": custom_id, "components": components},
                                         user, channel, locale=locale, attachment_size_limit=None)
        if stored is not None:
            payload["message"] = stored
        return payload

    def _reaction(
        self,
        emoji: str | dict[str, Any],
        message: dict[str, Any] | int | str,
        user: dict[str, Any] | None,
        channel: int | str | None,
        *,
        add: bool,
    ) -> dict[str, Any]:
        user = user or self.user
        if isinstance(message, dict):
            message_id, channel_id = int(message["id"]), int(message["channel_id"])
        else:
            message_id = int(message)
            stored = self.messages.get(message_id)
            channel_id = int(channel if channel is not None else (stored or {}).get("channel_id", self.text_channel_id))
        emoji_payload = emoji if isinstance(emoji, dict) else {"id": None, "name": emoji}
        data: dict[str, Any] = {
            "user_id": user["id"],
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": emoji_payload,
            "burst": False,
            "type": 0,
        }
        ch = self.channels.get(channel_id, {})
        if "guild_id" in ch:
            data["guild_id"] = ch["guild_id"]
            if add:
                data["member"] = self._member_payload(user)
        if add:
            data["burst_colors"] = []
            stored = self.messages.get(message_id)
            if stored is not None:
                data["message_author_id"] = stored["author"]["id"]
        return data

    def reaction_add(
        self,
        emoji: str | dict[str, Any],
        message: dict[str, Any] | int | str,
        user: dict[str, Any] | None = None,
        channel: int | str | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_REACTION_ADD payload (dispatch it with ``fake.dispatch("MESSAGE_REACTION_ADD", p)``)."""
        return self._reaction(emoji, message, user, channel, add=True)

    def reaction_remove(
        self,
        emoji: str | dict[str, Any],
        message: dict[str, Any] | int | str,
        user: dict[str, Any] | None = None,
        channel: int | str | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_REACTION_REMOVE payload."""
        return self._reaction(emoji, message, user, channel, add=False)

    async def add_reaction(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Build and dispatch MESSAGE_REACTION_ADD; same arguments as ``reaction_add``."""
        payload = self.reaction_add(*args, **kwargs)
        await self.dispatch("MESSAGE_REACTION_ADD", payload)
        return payload

    async def remove_reaction(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Build and dispatch MESSAGE_REACTION_REMOVE; same arguments as ``reaction_remove``."""
        payload = self.reaction_remove(*args, **kwargs)
        await self.dispatch("MESSAGE_REACTION_REMOVE", payload)
        return payload

    # ------------------------------------------------------------------ HTTP plumbing

    def _add_routes(self, app: web.Application) -> None:
        p = API_PREFIX
        r = app.router
        r.add_get(GATEWAY_PATH, self._gateway)
        r.add_get(GATEWAY_PATH + "/", self._gateway)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._get_attachment)
        r.add_get(p + "/gateway", self._get_gateway)
        r.add_get(p + "/gateway/bot", self._get_gateway_bot)
        r.add_get(p + "/users/@me", self._get_me)
        r.add_post(p + "/users/@me/channels", self._create_dm)
        r.add_get(p + "/users/{user_id}", self._get_user)
        r.add_get(p + "/oauth2/applications/@me", self._get_application)
        r.add_get(p + "/applications/@me", self._get_application)
        r.add_get(p + "/applications/{app_id}/commands", self._get_commands)
        r.add_put(p + "/applications/{app_id}/commands", self._put_commands)
        r.add_post(p + "/applications/{app_id}/commands", self._post_command)
        r.add_get(p + "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands)
        r.add_put(p + "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        r.add_post(p + "/applications/{app_id}/guilds/{guild_id}/commands", self._post_command)
        r.add_post(p + "/interactions/{interaction_id}/{token}/callback", self._interaction_callback)
        original = p + "/webhooks/{app_id}/{token}/messages/@original"
        r.add_get(original, self._webhook_message)
        r.add_patch(original, self._webhook_message)
        r.add_delete(original, self._webhook_message)
        followup = p + "/webhooks/{app_id}/{token}/messages/{message_id}"
        r.add_get(followup, self._webhook_message)
        r.add_patch(followup, self._webhook_message)
        r.add_delete(followup, self._webhook_message)
        r.add_post(p + "/webhooks/{app_id}/{token}", self._webhook_execute)
        r.add_get(p + "/channels/{channel_id}", self._get_channel)
        r.add_post(p + "/channels/{channel_id}/messages", self._post_message)
        r.add_get(p + "/channels/{channel_id}/messages", self._get_messages)
        r.add_get(p + "/channels/{channel_id}/messages/{message_id}", self._message)
        r.add_patch(p + "/channels/{channel_id}/messages/{message_id}", self._message)
        r.add_delete(p + "/channels/{channel_id}/messages/{message_id}", self._message)
        reactions = p + "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
        r.add_put(reactions, self._own_reaction)
        r.add_delete(reactions, self._own_reaction)
        r.add_post(p + "/channels/{channel_id}/typing", self._no_content)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        rec = await self._record(request)
        request[_REC] = rec
        response: web.StreamResponse
        rule = next((f for f in self.failures if f.take(rec)), None)
        if rule is None and self._over_global_limit(rec):
            rule = self._global_429(rec)
        if rule is None and self._over_edit_limit(rec):
            rule = self._edit_429(rec)
            self.edit_refusals.append(rec)
        if rule is not None:
            response = _json_response(rule.body, status=rule.status, headers=rule.headers)
            rec.response = rule.body
        else:
            try:
                response = await handler(request)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
                _log.warning("fake Discord has no route for %s %s", rec.method, rec.path)
                self.unhandled.append(rec)
                response = _error(exc.status, 0, f"{exc.status}: {exc.reason}")
            if isinstance(response, web.Response) and response.body and response.content_type == "application/json":
                assert isinstance(response.body, bytes)
                rec.response = json.loads(response.body)
        rec.status = response.status
        if self.before_answer is not None:
            self.before_answer(rec)
        await self._notify()
        return response

    @staticmethod
    def _exempt(rec: RecordedRequest) -> bool:
        return rec.path.startswith(("/interactions/", "/webhooks/"))

    def _over_global_limit(self, rec: RecordedRequest) -> bool:
        if not self.global_per_second or self._exempt(rec):
            return False
        since = rec.received_at - 1.0
        recent = sum(1 for r in self.requests if r is not rec and r.received_at > since
                     and r.status != 429 and not self._exempt(r))
        return recent >= self.global_per_second

    def _over_edit_limit(self, rec: RecordedRequest) -> bool:
        if self.edits_per_message is None or rec.method != "PATCH" or "/messages/" not in rec.path:
            return False
        count, period = self.edits_per_message
        since = rec.received_at - period
        recent = sum(1 for r in self.requests if r is not rec and r.method == "PATCH" and r.path == rec.path
                     and r.received_at > since and r.status != 429)
        return recent >= count

    def _edit_429(self, rec: RecordedRequest) -> FailureRule:
        count, period = self.edits_per_message or (0, 0.0)
        headers = {"Retry-After": str(period), "X-RateLimit-Limit": str(count), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset-After": str(period), "X-RateLimit-Bucket": "fake-message-edits",
                   "X-RateLimit-Scope": "user", "Via": "1.1 google"}
        body = {"message": "You are being rate limited.", "code": 0, "retry_after": period, "global": False}
        return FailureRule(rec.method, re.escape(rec.path), 429, body, headers, 0)

    def _global_429(self, rec: RecordedRequest) -> FailureRule:
        retry_after = 1.0
        headers = {"Retry-After": "1", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global", "Via": "1.1 google"}
        body = {"message": "You are being rate limited.", "code": 0, "retry_after": retry_after, "global": True}
        return FailureRule(rec.method, re.escape(rec.path), 429, body, headers, 0)

    async def _record(self, request: web.Request) -> RecordedRequest:
        rec = RecordedRequest(
            method=request.method,
            path=request.path[len(API_PREFIX) :],
            query=dict(request.query),
            headers=dict(request.headers),
            received_at=asyncio.get_running_loop().time(),
        )
        self.requests.append(rec)
        if request.content_type == "application/json" and request.can_read_body:
            rec.json = json.loads(await request.text())
        elif request.content_type.startswith("multipart/") and request.can_read_body:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.filename is not None:
                    data = bytes(await part.read())
                    ctype = part.headers.get("Content-Type")
                    rec.files.append(RecordedFile(part.name or "", part.filename, ctype, data))
                else:
                    text = await part.text()
                    if part.name == "payload_json":
                        rec.json = json.loads(text)
                    else:
                        rec.form[part.name or ""] = text
        return rec

    # ------------------------------------------------------------------ REST handlers

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json_response(self.bot_user)

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["user_id"]))
        return _json_response(user) if user else _error(404, 10013, "Unknown User")

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "id": str(self.app_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "rpc_origins": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.owner,
                "team": None,
                "flags": self.application_flags,
                "bot": self.bot_user,
                "interactions_endpoint_url": None,
                "redirect_uris": [],
            }
        )

    def _commands_for(self, request: web.Request) -> tuple[int | None, list[dict[str, Any]]]:
        guild = request.match_info.get("guild_id")
        if guild is None:
            return None, self.global_commands
        return int(guild), self.guild_commands.setdefault(int(guild), [])

    def _stored_command(self, guild_id: int | None, payload: dict[str, Any]) -> dict[str, Any]:
        type_ = int(payload.get("type", 1))
        command_id = self._command_ids.setdefault((guild_id, payload["name"], type_), self.snowflake())
        command = {
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            **payload,
            "id": str(command_id),
            "application_id": str(self.app_id),
            "type": type_,
            "version": str(self.snowflake()),
        }
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
        return command

    async def _get_commands(self, request: web.Request) -> web.Response:
        return _json_response(self._commands_for(request)[1])

    async def _put_commands(self, request: web.Request) -> web.Response:
        guild_id, commands = self._commands_for(request)
        commands[:] = [self._stored_command(guild_id, c) for c in request[_REC].json or []]
        return _json_response(commands)

    async def _post_command(self, request: web.Request) -> web.Response:
        guild_id, commands = self._commands_for(request)
        command = self._stored_command(guild_id, request[_REC].json)
        commands[:] = [c for c in commands if c["id"] != command["id"]] + [command]
        return _json_response(command, status=201)

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(int(request.match_info["channel_id"]))
        return _json_response(channel) if channel else _error(404, 10003, "Unknown Channel")

    async def _create_dm(self, request: web.Request) -> web.Response:
        recipient = int(request[_REC].json["recipient_id"])
        return _json_response(self.channels[self.dm_channel_for(recipient)])

    async def _get_attachment(self, request: web.Request) -> web.Response:
        data = self.attachments.get(int(request.match_info["attachment_id"]))
        if data is None:
            return web.Response(status=404)
        ctype = mimetypes.guess_type(request.match_info["filename"])[0] or "application/octet-stream"
        return web.Response(body=data, headers={"Content-Type": ctype})

    def _too_large(self, rec: RecordedRequest) -> web.Response | None:
        if any(f.size > self.upload_limit for f in rec.files):
            return _error(413, 40005, "Request entity too large")
        return None

    async def _post_message(self, request: web.Request) -> web.Response:
        rec: RecordedRequest = request[_REC]
        channel_id = int(request.match_info["channel_id"])
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        if channel["type"] == 1 and int(channel["recipients"][0]["id"]) in self.closed_dms:
            return _error(403, 50007, "Cannot send messages to this user")
        if (too_large := self._too_large(rec)) is not None:
            return too_large
        payload = rec.json or {}
        nonce = payload.get("nonce")
        now = asyncio.get_running_loop().time()
        if nonce is not None and payload.get("enforce_nonce"):
            # Discord: the same nonce from the same author within a few minutes returns the first message
            seen = self.nonces.get((channel_id, str(nonce)))
            if seen is not None and now - seen[1] <= self.nonce_window and seen[0] in self.messages:
                self.nonce_hits += 1
                return _json_response(self.messages[seen[0]])
        message = self._create_message(channel_id, payload, rec.files)
        if nonce is not None:
            message["nonce"] = str(nonce)
            self.nonces[(channel_id, str(nonce))] = (int(message["id"]), now)
        return _json_response(message)

    async def _get_messages(self, request: web.Request) -> web.Response:
        """Channel history: newest first; ``after`` gives the oldest ``limit`` after it, as Discord does."""
        channel_id = int(request.match_info["channel_id"])
        if channel_id not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        limit = max(1, min(100, int(request.query.get("limit", 50))))
        ids = sorted(i for i in self.channel_message_ids.get(channel_id, []) if i in self.messages)
        if "after" in request.query:
            ids = [i for i in ids if i > int(request.query["after"])][:limit]
        elif "before" in request.query:
            ids = [i for i in ids if i < int(request.query["before"])][-limit:]
        else:
            ids = ids[-limit:]
        return _json_response([self.messages[i] for i in reversed(ids)])

    async def _message(self, request: web.Request) -> web.Response:
        rec: RecordedRequest = request[_REC]
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or int(message["channel_id"]) != int(request.match_info["channel_id"]):
            return _error(404, 10008, "Unknown Message")
        return self._read_edit_delete(request.method, message, rec)

    def _read_edit_delete(self, method: str, message: dict[str, Any], rec: RecordedRequest) -> web.Response:
        if method == "GET":
            return _json_response(message)
        if method == "DELETE":
            self.messages.pop(int(message["id"]), None)
            return web.Response(status=204)
        if (too_large := self._too_large(rec)) is not None:
            return too_large
        return _json_response(self._edit_message(message, rec.json or {}, rec.files))

    async def _own_reaction(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None:
            return _error(404, 10008, "Unknown Message")
        name = request.match_info["emoji"]
        reactions: list[dict[str, Any]] = message.setdefault("reactions", [])
        existing = next((r for r in reactions if r["emoji"]["name"] == name), None)
        if request.method == "PUT" and (existing is None or not existing["me"]):
            if existing is None:
                existing = {"emoji": {"id": None, "name": name}, "count": 0, "me": False, "burst_colors": []}
                existing.update(count_details={"burst": 0, "normal": 0}, me_burst=False, burst_count=0)
                reactions.append(existing)
            existing["count"] += 1
            existing["me"] = True
        elif request.method == "DELETE" and existing is not None and existing["me"]:
            existing["count"] -= 1
            existing["me"] = False
            if existing["count"] <= 0:
                reactions.remove(existing)
        return web.Response(status=204)

    # ------------------------------------------------------------------ interactions

    def _interaction_for(self, token: str) -> FakeInteraction | None:
        inter = self.interactions.get(token)
        if inter is None or inter.expired:
            return None
        if asyncio.get_running_loop().time() - inter.created_at > self.token_ttl:
            inter.expired = True
            return None
        return inter

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        rec: RecordedRequest = request[_REC]
        inter = self._interaction_for(request.match_info["token"])
        now = asyncio.get_running_loop().time()
        if (
            inter is None
            or inter.id != int(request.match_info["interaction_id"])
            or (not inter.responded and now - inter.created_at > self.initial_response_timeout)
        ):
            return _error(404, 10062, "Unknown interaction")
        if inter.responded:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = rec.json or {}
        type_ = int(body.get("type", 0))
        data = body.get("data") or {}
        if (too_large := self._too_large(rec)) is not None:
            return too_large
        channel_id = int(inter.payload["channel_id"])
        ephemeral = bool(int(data.get("flags", 0)) & _EPHEMERAL)
        message: dict[str, Any] | None = None
        if type_ == 4:  # CHANNEL_MESSAGE_WITH_SOURCE
            message = self._create_message(channel_id, data, rec.files, interaction=inter)
        elif type_ == 5:  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: a "thinking…" message
            flags = _LOADING | (_EPHEMERAL if ephemeral else 0)
            message = self._create_message(channel_id, {"content": "", "flags": flags}, [], interaction=inter)
        elif type_ in (6, 7):  # DEFERRED_UPDATE_MESSAGE / UPDATE_MESSAGE on a component's message
            source = inter.payload.get("message")
            stored = self.messages.get(int(source["id"])) if source else None
            if stored is not None:
                message = self._edit_message(stored, data, rec.files) if type_ == 7 else stored
        elif type_ not in (1, 8, 9, 10, 12):
            return _error(400, 50035, "Invalid Form Body", errors={"type": {"_errors": [{"code": "INVALID"}]}})
        inter.response_type = type_
        if message is not None:
            inter.original_message_id = int(message["id"])
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        callback: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.payload["type"],
                "response_message_id": message["id"] if message and type_ in (4, 5, 7) else None,
                "response_message_loading": type_ == 5,
                "response_message_ephemeral": ephemeral,
            }
        }
        if message is not None and type_ in (4, 5, 7):
            callback["resource"] = {"type": type_, "message": message}
        elif type_ in (6, 9, 8):
            callback["resource"] = {"type": type_}
        return _json_response(callback)

    def _webhook_interaction(self, request: web.Request) -> FakeInteraction | web.Response:
        if int(request.match_info["app_id"]) != self.app_id:
            return _error(404, 10015, "Unknown Webhook")
        inter = self._interaction_for(request.match_info["token"])
        if inter is None:
            return _error(404, 10015, "Unknown Webhook")
        return inter

    async def _webhook_message(self, request: web.Request) -> web.Response:
        inter = self._webhook_interaction(request)
        if isinstance(inter, web.Response):
            return inter
        mid = request.match_info.get("message_id")
        message_id = inter.original_message_id if mid is None else int(mid)
        message = self.messages.get(message_id or 0)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        return self._read_edit_delete(request.method, message, request[_REC])

    async def _webhook_execute(self, request: web.Request) -> web.Response:
        rec: RecordedRequest = request[_REC]
        inter = self._webhook_interaction(request)
        if isinstance(inter, web.Response):
            return inter
        if not inter.responded:
            return _error(404, 10015, "Unknown Webhook")
        if (too_large := self._too_large(rec)) is not None:
            return too_large
        message = self._create_message(int(inter.payload["channel_id"]), rec.json or {}, rec.files, interaction=inter)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json_response(message)
        return web.Response(status=204)

    # ------------------------------------------------------------------ message store

    def _attachments_from(
        self, channel_id: int, payload: dict[str, Any], files: list[RecordedFile], existing: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Resolve ``attachments`` (ids of kept ones, or upload indices of ``files[n]``) into payloads."""
        by_field = {f.field: f for f in files}
        kept = {int(a["id"]): a for a in existing}
        result: list[dict[str, Any]] = []
        declared = payload.get("attachments")
        if declared is None:  # no list: every file is new
            declared = [{"id": i} for i in range(len(files))]
        for entry in declared:
            ref = int(entry["id"])
            upload = by_field.get(f"files[{ref}]")
            if upload is None and ref in kept:
                result.append(kept[ref])
                continue
            if upload is None:
                continue
            att_id = self.snowflake()
            filename = entry.get("filename") or upload.filename
            self.attachments[att_id] = upload.data
            url = f"{self.url}/attachments/{channel_id}/{att_id}/{filename}"
            attachment: dict[str, Any] = {
                "id": str(att_id),
                "filename": filename,
                "size": upload.size,
                "url": url,
                "proxy_url": url,
                "content_type": upload.content_type
                if upload.content_type not in (None, "application/octet-stream")
                else mimetypes.guess_type(filename)[0],
            }
            if entry.get("description"):
                attachment["description"] = entry["description"]
            if (dims := _image_size(upload.data)) is not None:
                attachment["width"], attachment["height"] = dims
            result.append(attachment)
        return result

    def _create_message(
        self,
        channel_id: int,
        payload: dict[str, Any],
        files: list[RecordedFile],
        *,
        interaction: FakeInteraction | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        message_id = self.snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "author": self.bot_user,
            "content": payload.get("content") or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": self._attachments_from(channel_id, payload, files, []),
            "embeds": payload.get("embeds") or [],
            "components": payload.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": int(payload.get("flags") or 0),
        }
        if "guild_id" in channel:
            message["guild_id"] = channel["guild_id"]
        if payload.get("message_reference"):
            ref = dict(payload["message_reference"])
            ref.setdefault("channel_id", str(channel_id))
            message["message_reference"] = ref
            message["type"] = 19  # REPLY
        if interaction is not None:
            user = interaction.payload.get("user") or interaction.payload["member"]["user"]
            message["webhook_id"] = str(self.app_id)
            message["application_id"] = str(self.app_id)
            metadata: dict[str, Any] = {
                "id": str(interaction.id),
                "type": interaction.payload["type"],
                "user": user,
                "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {}),
            }
            if interaction.payload["type"] == _APP_COMMAND:
                message["type"] = 20  # CHAT_INPUT_COMMAND
                metadata["name"] = interaction.payload["data"]["name"]
            elif interaction.payload.get("message"):
                metadata["interacted_message_id"] = interaction.payload["message"]["id"]
            if interaction.original_message_id is not None:
                metadata["original_response_message_id"] = str(interaction.original_message_id)
            message["interaction_metadata"] = metadata
        self.messages[message_id] = message
        self.channel_message_ids.setdefault(channel_id, []).append(message_id)
        channel["last_message_id"] = str(message_id)
        return message

    def _edit_message(
        self, message: dict[str, Any], payload: dict[str, Any], files: list[RecordedFile]
    ) -> dict[str, Any]:
        for key in ("content", "embeds", "components"):
            if key in payload:
                message[key] = payload[key] if payload[key] is not None else ([] if key != "content" else "")
        if "flags" in payload and payload["flags"] is not None:
            message["flags"] = int(payload["flags"])
        if "attachments" in payload or files:
            message["attachments"] = self._attachments_from(
                int(message["channel_id"]), payload, files, message["attachments"]
            )
        message["flags"] = int(message.get("flags", 0)) & ~_LOADING
        message["edited_timestamp"] = _now_iso()
        return message

    # ------------------------------------------------------------------ gateway server

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConnection(ws=ws, query=dict(request.query))
        self.gateway_connections.append(conn)
        await self._send(conn, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": []}})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                await self._gateway_frame(conn, frame)
        finally:
            await self._notify()
        return ws

    async def _gateway_frame(self, conn: _GatewayConnection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:  # HEARTBEAT
            conn.heartbeats += 1
            await self._send(conn, {"op": 11, "d": None})
        elif op == 2:  # IDENTIFY
            await self._on_identify(conn, data)
        elif op == 6:  # RESUME
            old = next((c for c in self.gateway_connections if c.session_id == data["session_id"]), None)
            conn.identify = old.identify if old else None
            conn.seq = old.seq if old else 0
            conn.session_id = data["session_id"]
            await self._send_dispatch(conn, "RESUMED", {"_trace": []})
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            guild = self.guilds.get(int(data["guild_id"]))
            chunk: dict[str, Any] = {
                "guild_id": data["guild_id"],
                "members": guild["members"] if guild else [],
                "chunk_index": 0,
                "chunk_count": 1,
            }
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            await self._send_dispatch(conn, "GUILD_MEMBERS_CHUNK", chunk)
        # op 3 (presence) and others: accepted silently

    async def _on_identify(self, conn: _GatewayConnection, data: dict[str, Any]) -> None:
        conn.identify = data
        self.identifies.append(data)
        conn.session_id = f"session-{self.snowflake()}"
        shard = data.get("shard") or [0, 1]
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
            "session_id": conn.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": shard,
            "application": {"id": str(self.app_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": [],
        }
        await self._send_dispatch(conn, "READY", ready)
        for guild in self.guilds.values():
            await self._send_dispatch(conn, "GUILD_CREATE", guild)

    async def _send_dispatch(self, conn: _GatewayConnection, event: str, data: dict[str, Any]) -> None:
        async with conn.lock:
            conn.seq += 1
            await conn.ws.send_str(json.dumps({"op": 0, "t": event, "s": conn.seq, "d": data}))

    async def _send(self, conn: _GatewayConnection, frame: dict[str, Any]) -> None:
        async with conn.lock:
            await conn.ws.send_str(json.dumps(frame))


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) when ``data`` is an image Pillow can read, else None."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a project dependency
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


@contextlib.asynccontextmanager
async def running_client(client: Any, token: str = "fake-token", *, timeout: float = 5.0) -> AsyncIterator[Any]:
    """Log ``client`` (a ``discord.Client``) in, connect it, wait for READY; close it and await it on exit.

    Build the client with ``guild_ready_timeout=0.05`` or READY waits 2 s for more guilds.
    ``connect(reconnect=False)`` makes a broken fake fail the test instead of retrying forever.
    """
    await asyncio.wait_for(client.login(token), timeout)
    runner = asyncio.create_task(client.connect(reconnect=False), name="fake-discord-client")
    try:
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait({ready, runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if runner in done:
                runner.result()  # re-raise why connect() ended
            raise AssertionError(f"client not ready within {timeout}s")
        yield client
    finally:
        await asyncio.wait_for(client.close(), timeout)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, timeout)


@contextlib.asynccontextmanager
async def fake_discord_server(**kwargs: Any) -> AsyncIterator[FakeDiscord]:
    """``async with fake_discord_server() as fake``: a started, patched FakeDiscord, stopped on exit."""
    fake = FakeDiscord(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py pointed at it (import this fixture into a test module)."""
    async with fake_discord_server() as fake:
        yield fake

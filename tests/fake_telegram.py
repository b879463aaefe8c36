"""A fake Telegram Bot API server on 127.0.0.1 for running the real python-telegram-bot offline.

The fake is an ``aiohttp.web`` app that answers the Bot API methods the bot uses with complete
``{"ok": true, "result": ...}`` objects that PTB can de-json, keeps the chat state those answers
imply (messages per chat, uploaded files, webhook, commands), and records every call.

Use it from an async test::

    async with FakeTelegram() as fake:
        app = (
            ApplicationBuilder()
            .token(fake.token)
            .base_url(fake.base_url)            # "http://127.0.0.1:PORT/bot"; PTB appends token
            .base_file_url(fake.base_file_url)  # "http://127.0.0.1:PORT/file/bot"
            .build()
        )
        app.add_handler(CommandHandler("imagine", on_imagine))
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1,
                                            allowed_updates=Update.ALL_TYPES)
            fake.push(fake.message_update("/imagine a fox"))
            call = await fake.wait_for_call("sendMessage")      # a Call: .params, .files, .result
            fake.push(fake.callback_query_update("rate:5", call.result))
            ...
            await app.updater.stop()
            await app.stop()

PTB builds request URLs as ``base_url + token + "/" + method`` (``telegram/_bot.py``,
``_parse_base_url``), so ``base_url`` ends in ``/bot`` without the token.

What it does, in brief:

* Requests: POST (or GET) ``/bot<token>/<method>`` with JSON, url-encoded or multipart bodies.
  PTB sends form fields whose values are JSON-encoded except plain strings; the fake decodes them
  back (``chat_id`` -> int, ``reply_markup`` -> dict, ``text`` stays a string). Uploaded parts
  are kept as :class:`UploadedFile` (field, filename, content type, bytes). Method names are
  case-insensitive, a wrong token answers 401, an unknown method 404.
* Every call is a :class:`Call` in ``fake.log``; ``fake.calls("sendPhoto")`` filters by method;
  ``await fake.wait_for_call(method, predicate, timeout=5, since=mark)`` waits for one (raises
  ``AssertionError`` listing what did arrive on timeout). ``mark = fake.mark()`` before an action
  and ``since=mark`` ignore earlier calls.
* Updates: ``fake.message_update(...)``, ``fake.callback_query_update(...)``,
  ``fake.message_reaction_update(...)`` build update dicts with increasing ``update_id``;
  ``fake.push(update)`` queues one (pushing the same dict twice repeats its ``update_id``, as
  Telegram may after a webhook timeout: use that to test de-duplication). ``getUpdates``
  behaves like Telegram's: updates stay queued until confirmed by a later ``offset``;
  long-polls up to ``timeout`` (capped by ``max_long_poll``) and returns as soon as something
  is queued; ``allowed_updates`` is
  remembered across calls and, as on Telegram, the default excludes ``message_reaction``,
  ``message_reaction_count`` and ``chat_member`` (such updates are moved to
  ``fake.filtered_updates`` instead of delivered). A newer getUpdates ends a waiting one with
  409 "Conflict: terminated by other getUpdates request", and getUpdates while a webhook is set
  answers 409 as well.
* Webhooks: after ``setWebhook`` (PTB's ``updater.start_webhook`` calls it), ``push`` POSTs the
  update to the webhook URL with ``X-Telegram-Bot-Api-Secret-Token`` (once, no retries; the
  status lands in ``fake.webhook_deliveries``). ``await fake.post_webhook(update,
  secret_token=...)`` posts one by hand and returns the HTTP status. http:// URLs are accepted.
* ``editMessageMedia`` replaces a photo/document message's media, caption and keyboard;
  ``fake.media_of(message)`` gives the bytes a stored message shows. ``fake.on_applied`` (a
  callable, or None) sees each successful call after its effect and before the answer: a kill
  test SIGKILLs the bot there (the platform has the result, the bot never heard back).
* Failures: ``fake.rate_limit("sendMessage", retry_after=1)`` (429 with
  ``parameters.retry_after``), ``fake.bad_request(method, description)``,
  ``fake.forbidden(method)`` (403 "bot was blocked by the user"), or the general
  ``fake.fail(method, status, description, times=1, when=predicate)``. Injected failures happen
  before any side effect and are recorded as calls with ``ok=False``.
* Telegram-like checks that are real behaviour, not injected: empty or >4096-char text, caption
  over 1024, ``callback_data`` over 64 bytes, albums outside 2-10 items, photos whose
  width + height > 10000 or that are not images, editing/deleting unknown messages, "message is
  not modified" for no-op edits, and ``editMessageText`` without ``reply_markup`` removes the
  inline keyboard (as Telegram does). Descriptions marked "(fake)" are not Telegram's wording.
* Files: uploaded photos/documents get ``file_id``s; ``getFile`` + download from
  ``base_file_url`` return the uploaded bytes (all sizes of a photo return the original bytes);
  sending a known ``file_id`` again works, an unknown one is a 400.

Things about PTB 22.8 that this fake made visible (see tests/test_fake_telegram.py):

* ``post_init`` runs only under ``run_polling``/``run_webhook``; with ``async with app`` +
  ``start()`` call ``bot.set_my_commands`` yourself after initialisation.
* ``BadRequest`` strips "Bad Request: " and then ``str.capitalize()``s the rest, so
  "Bad Request: BUTTON_DATA_INVALID" reads "Button_data_invalid": match error text
  case-insensitively.
* ``RetryAfter.__init__`` itself emits a PTBDeprecationWarning (``retry_after`` becoming a
  timedelta) unless ``PTB_TIMEDELTA=1``; ``AIORateLimiter`` sleeps ``retry_after + 0.1`` s and
  retries at most ``max_retries`` times (default 0: no retry).
* ``updater.stop()`` cancels the long-poll client-side and sends one more getUpdates
  (timeout 0) to confirm the offset; the abandoned poll then ends here with a 409 and is
  recorded with ``client_gone=True``.
* Without ``allowed_updates`` in ``start_polling``/``start_webhook`` no ``message_reaction``
  update ever arrives (Telegram's default); pass ``Update.ALL_TYPES`` or a list naming it.
* The webhook server (tornado) answers 403 for a missing or wrong secret token and for any
  Content-Type other than exactly ``application/json``.

* Flood limits (opt-in, ``FakeTelegram(flood=FloodRules())``): Telegram's documented limits,
  enforced in every sliding window: at most 20 messages per minute in a group (chat id < 0),
  1 per second in a private chat, 30 calls per second overall (getUpdates excepted). A message
  is a call that creates or edits one (``send*`` but ``sendChatAction``, ``edit*``,
  ``copyMessage``, ``forwardMessage``; an album counts each item): the docs do not say whether
  edits count, so the fake counts them (the strict reading). Reactions and chat actions count
  only overall. Over a limit: 429 "Too Many Requests: retry after N" with
  ``parameters.retry_after``, recorded in ``fake.flood_refusals``; accepted calls are in
  ``fake.flood_log`` as (time, chat id, messages, method) for measuring, e.g. with
  ``peak_in_window``.

Not modelled: parse modes other than stripping tags for ``parse_mode="HTML"`` (no entities are
returned), message threads, inline mode, payments.
"""

from __future__ import annotations

import asyncio
import html
import io
import itertools
import json
import mimetypes
import re
import time
from types import EllipsisType
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "BLOCKED",
    "NOT_MODIFIED",
    "ApiError",
    "Call",
    "Failure",
    "FakeTelegram",
    "UploadedFile",
    "make_chat",
    "make_user",
    "FloodRules",
    "message_cost",
    "peak_in_window",
]

JSON = dict[str, Any]

DEFAULT_TOKEN = "123456:TEST-fake-token"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a message content and reply markup of the current message"
)
BLOCKED = "Forbidden: bot was blocked by the user"
# ReactionTypeEmoji.emoji: the emoji a bot may set (Bot API 9; e.g. ✅ is not among them)
REACTION_EMOJI = frozenset(
    "👍 👎 ❤ 🔥 🥰 👏 😁 🤔 🤯 😱 🤬 😢 🎉 🤩 🤮 💩 🙏 👌 🕊 🤡 🥱 🥴 😍 🐳 ❤‍🔥 🌚 🌭 💯 🤣 ⚡ 🍌 🏆 💔 🤨 😐 🍓 🍾 💋 "
    "🖕 😈 😴 😭 🤓 👻 👨‍💻 👀 🎃 🙈 😇 😨 🤝 ✍ 🤗 🫡 🎅 🎄 ☃ 💅 🤪 🗿 🆒 💘 🙉 🦄 😘 💊 🙊 😎 👾 🤷‍♂ 🤷 🤷‍♀ 😡".split()
)
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

# Form values PTB sends as raw strings (everything else is JSON-encoded); never json-decode these.
_STRING_PARAMS = frozenset(
    {
        "text", "caption", "parse_mode", "callback_query_id", "url", "secret_token", "action",
        "inline_message_id", "ip_address", "language_code", "message_effect_id",
        "business_connection_id", "emoji", "title", "description", "short_description",
        "name", "file_id", "query", "custom_title",
    }
)
_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_PHOTO_BOXES = (90, 320, 800, 1280, 2560)
_MAX_PHOTO_BYTES = 10 * 1024 * 1024
_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
_MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile: bots may download files up to 20 MB


def make_user(
    user_id: int,
    first_name: str = "Alice",
    username: str | None = None,
    *,
    is_bot: bool = False,
    language_code: str | None = "en",
) -> JSON:
    """A Telegram ``User`` dict."""
    user: JSON = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    return user


def make_chat(chat_id: int, chat_type: str = "private", title: str | None = None, **extra: Any) -> JSON:
    """A Telegram ``Chat`` dict; ``chat_type`` is private, group, supergroup or channel."""
    chat: JSON = {"id": chat_id, "type": chat_type}
    if chat_type != "private":
        chat["title"] = title or f"Chat {chat_id}"
    chat.update(extra)
    return chat


@dataclass
class UploadedFile:
    """One multipart file part of a request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Call:
    """One Bot API request as the fake saw it, with what it answered."""

    method: str
    params: JSON
    files: dict[str, UploadedFile]
    time: float  # time.monotonic() when the request arrived
    index: int = -1  # position in FakeTelegram.log
    status: int = 200
    result: Any = None
    description: str | None = None
    client_gone: bool = False  # the client hung up before the answer (PTB cancels its poll on stop)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def file(self, name: str) -> UploadedFile:
        """The uploaded part named ``name``; an ``attach://name`` reference works too."""
        return self.files[name.removeprefix("attach://")]


@dataclass
class Failure:
    """An injected error: the next ``times`` matching calls of ``method`` fail."""

    method: str
    status: int
    description: str
    times: int | None = 1  # None: until cleared
    retry_after: int | None = None
    when: Callable[[Call], bool] | None = None

    def matches(self, call: Call) -> bool:
        if self.method.lower() != call.method.lower() or self.times == 0:
            return False
        return self.when is None or bool(self.when(call))


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str
    mime_type: str | None = None
    file_name: str | None = None
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class FloodRules:
    """Telegram's documented flood limits (Bots FAQ); 0 turns one off."""

    group_per_minute: int = 20
    private_per_second: int = 1
    overall_per_second: int = 30
    minute: float = 60.0  # the group window's length (tests shrink it to run a "minute" quickly)


def message_cost(method: str, params: Mapping[str, Any]) -> int:
    """Messages a call creates or edits, by the fake's (strict) reading."""
    name = method.lower()
    if name == "sendmediagroup":
        media = params.get("media")
        return len(media) if isinstance(media, list) else 1
    if name == "sendchataction":
        return 0
    return 1 if name.startswith(("send", "edit")) or name in ("copymessage", "forwardmessage") else 0


def peak_in_window(stamps: Iterable[tuple[float, int]], period: float) -> tuple[int, float]:
    """The most (cost-weighted) stamps in any window of ``period`` seconds, and where it starts."""
    points = sorted(stamps)
    best, start, total, j = 0, 0.0, 0, 0
    for i, (t, cost) in enumerate(points):
        total += cost
        while points[j][0] <= t - period:
            total -= points[j][1]
            j += 1
        if total > best:
            best, start = total, points[j][0]
    return best, start


class ApiError(Exception):
    """Raised inside a method to answer ``{"ok": false, ...}`` with ``status``."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


def _bad(description: str) -> ApiError:
    return ApiError(400, description)


class _Signal:
    """Wake every waiter when something changed (callable from sync code)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` is true; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                return ready()
        return True


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _command_entities(text: str) -> list[JSON]:
    return [
        {"type": "bot_command", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())}
        for m in _COMMAND_RE.finditer(text)
    ]


def _strip_html(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _decode_value(name: str, raw: str) -> Any:
    if name in _STRING_PARAMS:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _reaction(value: str | Mapping[str, Any]) -> JSON:
    return {"type": "emoji", "emoji": value} if isinstance(value, str) else dict(value)


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


class FakeTelegram:
    """The fake Bot API server; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_username: str = "imagine_test_bot",
        bot_first_name: str = "Imagine Test Bot",
        max_long_poll: float = 10.0,
        port: int = 0,
        flood: FloodRules | None = None,
    ) -> None:
        self.token = token
        self.flood = flood
        self.flood_log: list[tuple[float, int | None, int, str]] = []  # accepted: (time, chat, cost, method)
        self.flood_refusals: list[Call] = []
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        self.bot_user: JSON = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.max_long_poll = max_long_poll
        self.default_user = make_user(1001, "Alice", "alice")
        self.log: list[Call] = []
        self.failures: list[Failure] = []
        self.chats: dict[int, JSON] = {}
        self.messages: dict[tuple[int, int], JSON] = {}
        self.files: dict[str, _StoredFile] = {}
        self.commands: dict[str, list[JSON]] = {}  # json.dumps([scope, language_code]) -> commands
        self.pending_updates: list[JSON] = []
        self.filtered_updates: list[JSON] = []
        self.allowed_updates: frozenset[str] | None = None  # None: Telegram's default
        self.webhook: JSON | None = None  # setWebhook params while a webhook is set
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self.bot_reactions: dict[tuple[int, int], list[JSON]] = {}  # setMessageReaction by the bot
        self.callback_query_ids: set[str] = set()
        self.chat_members: dict[tuple[int, int], JSON] = {}  # (chat id, user id) -> ChatMember (set_member)
        self.answered_callback_queries: set[str] = set()
        # called with each successful call after its effect, before the answer (kill tests)
        self.on_applied: Callable[[Call], None] | None = None
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._file_counter = itertools.count(1)
        self._group_counter = itertools.count(1)
        self._query_counter = itertools.count(1)
        self._poll_generation = 0
        self._closing = False
        self._updates_changed: _Signal | None = None
        self._calls_changed: _Signal | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = port  # 0: a free one, chosen at start
        self._methods: dict[str, Callable[[Call], Any]] = {
            name.lower(): getattr(self, f"_m_{name}")
            for name in (
                "getMe", "logOut", "close", "getUpdates", "setWebhook", "deleteWebhook",
                "getWebhookInfo", "setMyCommands", "getMyCommands", "deleteMyCommands",
                "sendMessage", "editMessageText", "editMessageCaption", "editMessageReplyMarkup",
                "editMessageMedia",
                "sendPhoto", "sendDocument", "sendMediaGroup", "answerCallbackQuery",
                "sendChatAction", "deleteMessage", "setMessageReaction", "getChat", "getFile",
                "getChatMember",
            )
        }
        self._canonical = {
            name.lower(): name for name in (m.__name__[3:] for m in self._methods.values())
        }

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url``: PTB appends the token."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url``."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._updates_changed = _Signal()
        self._calls_changed = _Signal()
        self._closing = False
        app = web.Application(client_max_size=_MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        """Wake long-polls, cancel webhook deliveries, close the server."""
        self._closing = True
        if self._updates_changed:
            self._updates_changed.notify()
        for task in list(self._deliveries):
            task.cancel()
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._session:
            await self._session.close()
            self._session = None
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- recorded calls

    def mark(self) -> int:
        """The current length of ``log``: pass as ``since=`` to ignore earlier calls."""
        return len(self.log)

    def calls(self, method: str | None = None, *, ok: bool | None = None, since: int = 0) -> list[Call]:
        """Recorded calls, oldest first, optionally of one method and/or outcome."""
        return [
            call
            for call in self.log[since:]
            if (method is None or call.method.lower() == method.lower())
            and (ok is None or call.ok == ok)
        ]

    async def wait_for_calls(
        self,
        method: str,
        count: int,
        predicate: Callable[[Call], bool] | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
    ) -> list[Call]:
        """Wait until ``count`` calls of ``method`` (matching ``predicate``) were answered."""
        assert self._calls_changed is not None, "FakeTelegram is not started"

        def matching() -> list[Call]:
            return [c for c in self.calls(method, since=since) if predicate is None or predicate(c)]

        if not await self._calls_changed.wait_until(lambda: len(matching()) >= count, timeout):
            seen = ", ".join(f"{c.method}({c.status})" for c in self.log[since:]) or "nothing"
            raise AssertionError(
                f"expected {count} {method} call(s) within {timeout}s, got {len(matching())}; "
                f"calls since #{since}: {seen}"
            )
        return matching()[:count]

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
    ) -> Call:
        """Wait for the first call of ``method`` (matching ``predicate``) since ``since``."""
        return (await self.wait_for_calls(method, 1, predicate, timeout=timeout, since=since))[0]

    # ---------------------------------------------------------------- failures

    def fail(
        self,
        method: str,
        status: int,
        description: str,
        *,
        times: int | None = 1,
        retry_after: int | None = None,
        when: Callable[[Call], bool] | None = None,
    ) -> Failure:
        """The next ``times`` calls of ``method`` (matching ``when``) answer this error."""
        failure = Failure(method, status, description, times, retry_after, when)
        self.failures.append(failure)
        return failure

    def rate_limit(
        self,
        method: str,
        retry_after: int = 1,
        *,
        times: int | None = 1,
        when: Callable[[Call], bool] | None = None,
    ) -> Failure:
        """429 "Too Many Requests: retry after N" with ``parameters.retry_after``."""
        return self.fail(
            method, 429, f"Too Many Requests: retry after {retry_after}",
            times=times, retry_after=retry_after, when=when,
        )

    def bad_request(
        self, method: str, description: str = NOT_MODIFIED, *, times: int | None = 1,
        when: Callable[[Call], bool] | None = None,
    ) -> Failure:
        """400 with ``description`` (must start with "Bad Request: " to look real)."""
        return self.fail(method, 400, description, times=times, when=when)

    def forbidden(
        self, method: str, description: str = BLOCKED, *, times: int | None = 1,
        when: Callable[[Call], bool] | None = None,
    ) -> Failure:
        """403, by default "Forbidden: bot was blocked by the user"."""
        return self.fail(method, 403, description, times=times, when=when)

    def clear_failures(self) -> None:
        self.failures.clear()

    def set_member(self, chat: Mapping[str, Any], user: Mapping[str, Any], status: str = "member") -> None:
        """What getChatMember answers for ``user`` in ``chat``: member, administrator, creator, …"""
        member: JSON = {"status": status, "user": dict(user)}
        if status in ("administrator", "creator"):
            member["is_anonymous"] = False
        if status == "administrator":
            member.update(dict.fromkeys((
                "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
                "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
                "can_delete_stories"), True), can_be_edited=False, can_promote_members=False)
        self.chat_members[(int(chat["id"]), int(user["id"]))] = member

    # ---------------------------------------------------------------- update builders

    def private_chat(self, user: Mapping[str, Any]) -> JSON:
        """The private chat with ``user`` (its id is the user's id)."""
        chat = make_chat(user["id"], "private", first_name=user.get("first_name"))
        if user.get("username"):
            chat["username"] = user["username"]
        return chat

    def message_update(
        self,
        text: str | None = None,
        user: Mapping[str, Any] | None = None,
        chat: Mapping[str, Any] | None = None,
        *,
        entities: Sequence[Mapping[str, Any]] | None = None,
        reply_to: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> JSON:
        """An update with a new message from ``user`` in ``chat`` (default: a private chat).

        ``/commands`` (also ``/imagine@botname``) get ``bot_command`` entities unless
        ``entities`` is given; extra ``fields`` go into the message as they are.
        """
        user = dict(user or self.default_user)
        chat = dict(chat or self.private_chat(user))
        message = self._new_message(chat, sender=user, **fields)
        if text is not None:
            message["text"] = text
            found = list(entities) if entities is not None else _command_entities(text)
            if found:
                message["entities"] = found
        if reply_to is not None:
            message["reply_to_message"] = dict(reply_to)
        return {"update_id": next(self._update_ids), "message": message}

    def user_photo(self, data: bytes) -> list[JSON]:
        """The ``photo`` field (PhotoSizes, largest last) of a photo a user sends; getFile serves it."""
        stored = self._user_file(data, "photo", "image/jpeg", None)
        width, height = _image_size(data) or (0, 0)
        return [{"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "width": width,
                 "height": height, "file_size": len(data)}]

    def user_document(self, data: bytes, file_name: str = "picture.png",
                      mime_type: str | None = None) -> JSON:
        """The ``document`` field of a file a user sends (any bytes); getFile serves it."""
        mime = mime_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        stored = self._user_file(data, "document", mime, file_name)
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_name": file_name,
                "mime_type": mime, "file_size": len(data)}

    def _user_file(self, data: bytes, kind: str, mime: str, name: str | None) -> _StoredFile:
        n = next(self._file_counter)
        suffix = mimetypes.guess_extension(mime) or ""
        stored = _StoredFile(file_id=f"{kind[:2].upper()}AgAD{n:06d}", file_unique_id=f"AQAD{n:06d}", data=data,
                             file_path=f"{kind}s/file_{n}{suffix}", mime_type=mime, file_name=name)
        self.files[stored.file_id] = stored
        return stored

    def callback_query_update(
        self,
        data: str,
        message: Mapping[str, Any],
        user: Mapping[str, Any] | None = None,
    ) -> JSON:
        """A button press on ``message`` (e.g. ``call.result`` of the bot's sendMessage)."""
        query_id = f"{self.bot_id}{next(self._query_counter):08d}"
        self.callback_query_ids.add(query_id)
        query = {
            "id": query_id,
            "from": dict(user or self.default_user),
            "message": dict(self.messages.get((message["chat"]["id"], message["message_id"]), message)),
            "chat_instance": f"ci{message['chat']['id']}",
            "data": data,
        }
        return {"update_id": next(self._update_ids), "callback_query": query}

    def message_reaction_update(
        self,
        chat: Mapping[str, Any],
        message_id: int,
        user: Mapping[str, Any] | None = None,
        old_reaction: Iterable[str | Mapping[str, Any]] = (),
        new_reaction: Iterable[str | Mapping[str, Any]] = ("👍",),
    ) -> JSON:
        """A user changed their reaction to a message; emoji strings become ReactionTypeEmoji."""
        reaction = {
            "chat": dict(chat),
            "message_id": message_id,
            "user": dict(user or self.default_user),
            "date": int(time.time()),
            "old_reaction": [_reaction(r) for r in old_reaction],
            "new_reaction": [_reaction(r) for r in new_reaction],
        }
        return {"update_id": next(self._update_ids), "message_reaction": reaction}

    def push(self, update: Mapping[str, Any]) -> None:
        """Queue ``update`` for getUpdates, or POST it to the webhook when one is set."""
        if self.webhook is not None:
            task = asyncio.get_running_loop().create_task(self._deliver(dict(update)))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
            return
        self.pending_updates.append(dict(update))
        if self._updates_changed:
            self._updates_changed.notify()

    async def post_webhook(
        self,
        update: Mapping[str, Any],
        secret_token: str | None | EllipsisType = ...,
        url: str | None = None,
    ) -> int:
        """POST ``update`` to the webhook (or ``url``); ``...`` sends the configured secret."""
        assert self._session is not None, "FakeTelegram is not started"
        webhook = self.webhook or {}
        target = url or webhook.get("url")
        if not target:
            raise AssertionError("no webhook is set and no url given")
        token = webhook.get("secret_token") if secret_token is ... else secret_token
        headers = {"X-Telegram-Bot-Api-Secret-Token": token} if token else {}
        async with self._session.post(target, json=dict(update), headers=headers) as response:
            await response.read()
            return response.status

    async def join_webhook_deliveries(self, timeout: float = 5.0) -> None:
        """Wait for the webhook POSTs started by ``push``."""
        if self._deliveries:
            await asyncio.wait_for(asyncio.gather(*self._deliveries), timeout)

    async def _deliver(self, update: JSON) -> None:
        try:
            status = await self.post_webhook(update)
        except aiohttp.ClientError:
            status = 0
        self.webhook_deliveries.append((update["update_id"], status))

    # ---------------------------------------------------------------- HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        if request.match_info["token"] != self.token:
            return self._error_response(401, "Unauthorized")
        name = request.match_info["method"]
        handler = self._methods.get(name.lower())
        params, files = await self._read_params(request)
        if handler is None:  # recorded too, so a test can see what the fake lacks
            self._record(Call(name, params, files, arrived, status=404, description="Not Found"))
            return self._error_response(404, "Not Found")
        call = Call(self._canonical[name.lower()], params, files, arrived)
        try:
            failure = next((f for f in self.failures if f.matches(call)), None)
            if failure is not None:
                if failure.times is not None:
                    failure.times -= 1
                raise ApiError(failure.status, failure.description, failure.retry_after)
            self._check_flood(call)
            result = handler(call)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as exc:
            call.status, call.description = exc.status, exc.description
            call.client_gone = request.transport is None or request.transport.is_closing()
            self._record(call)
            return self._error_response(exc.status, exc.description, exc.retry_after)
        call.result = result
        call.client_gone = request.transport is None or request.transport.is_closing()
        self._record(call)
        if self.on_applied is not None:
            self.on_applied(call)
        return web.json_response({"ok": True, "result": result})

    def _check_flood(self, call: Call) -> None:
        """429 when this call would put a window over a documented limit; else log it."""
        if call.method == "getUpdates":
            return
        now = time.monotonic()
        chat_id = call.params.get("chat_id")
        chat = int(chat_id) if isinstance(chat_id, int) or (isinstance(chat_id, str)
                                                           and chat_id.lstrip("-").isdigit()) else None
        cost = message_cost(call.method, call.params) if chat is not None else 0
        rules = self.flood
        if rules is not None:
            checks: list[tuple[int, float, int, Callable[[tuple[float, int | None, int, str]], int]]] = [
                (rules.overall_per_second, 1.0, 1, lambda e: 1)]
            if cost and chat is not None:
                limit, period = ((rules.group_per_minute, rules.minute) if chat < 0 else (rules.private_per_second, 1.0))
                checks.append((limit, period, cost, lambda e: e[2] if e[1] == chat else 0))
            for limit, period, need, weight in checks:
                if not limit:
                    continue
                inside = [(e[0], weight(e)) for e in self.flood_log if e[0] > now - period]
                used = sum(w for _, w in inside)
                if used + need > limit:
                    weighted = [t for t, w in inside if w]
                    wait = max(1, int((min(weighted) + period - now) + 0.999)) if weighted else 1
                    self.flood_refusals.append(call)
                    raise ApiError(429, f"Too Many Requests: retry after {wait}", wait)
        self.flood_log.append((now, chat, cost, call.method))

    def _record(self, call: Call) -> None:
        call.index = len(self.log)
        self.log.append(call)
        if self._calls_changed:
            self._calls_changed.notify()

    @staticmethod
    def _error_response(status: int, description: str, retry_after: int | None = None) -> web.Response:
        body: JSON = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=status)

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[JSON, dict[str, UploadedFile]]:
        params: JSON = {k: _decode_value(k, v) for k, v in request.query.items()}
        files: dict[str, UploadedFile] = {}
        if request.method != "POST" or not request.can_read_body:
            return params, files
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                if part.filename is not None:
                    data = await part.read(decode=False)
                    content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE)
                    files[part.name] = UploadedFile(part.name, part.filename, content_type, bytes(data))
                else:
                    params[part.name] = _decode_value(part.name, await part.text())
        else:
            form = await request.post()
            params.update({k: _decode_value(k, v) for k, v in form.items() if isinstance(v, str)})
        return params, files

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")

    # ---------------------------------------------------------------- state helpers

    def _chat(self, chat_id: Any) -> JSON:
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        if not isinstance(chat_id, int):
            raise _bad("Bad Request: chat not found")
        if chat_id not in self.chats:
            self.chats[chat_id] = make_chat(chat_id, "private" if chat_id > 0 else "supergroup")
        return self.chats[chat_id]

    def _new_message(
        self, chat: Mapping[str, Any], *, sender: Mapping[str, Any] | None = None, **fields: Any
    ) -> JSON:
        chat = dict(chat)
        self.chats.setdefault(chat["id"], chat)
        counter = self._message_ids.setdefault(chat["id"], itertools.count(1))
        message: JSON = {
            "message_id": next(counter),
            "date": int(time.time()),
            "chat": chat,
            "from": dict(sender or self.bot_user),
        }
        message.update(fields)
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    def _stored_message(self, params: JSON, missing: str) -> JSON:
        if "inline_message_id" in params:
            raise _bad("Bad Request: inline messages are not supported (fake)")
        chat = self._chat(params.get("chat_id"))
        message = self.messages.get((chat["id"], int(params.get("message_id") or 0)))
        if message is None:
            raise _bad(missing)
        return message

    def _store_file(self, upload: UploadedFile, kind: str) -> _StoredFile:
        if len(upload.data) > _MAX_UPLOAD_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        if not upload.data:
            raise _bad("Bad Request: file must be non-empty")
        n = next(self._file_counter)
        suffix = mimetypes.guess_extension(upload.content_type or "") or ""
        if upload.filename and "." in upload.filename:
            suffix = "." + upload.filename.rsplit(".", 1)[1]
        stored = _StoredFile(
            file_id=f"{kind[:2].upper()}AgAD{n:06d}",
            file_unique_id=f"AQAD{n:06d}",
            data=upload.data,
            file_path=f"{kind}s/file_{n}{suffix}",
            mime_type=upload.content_type or mimetypes.guess_type(upload.filename or "")[0],
            file_name=upload.filename,
        )
        self.files[stored.file_id] = stored
        return stored

    def _resolve_input(self, call: Call, value: Any, field_name: str) -> UploadedFile | _StoredFile:
        """An upload (``attach://x`` or a part named like the field) or a known file_id."""
        if isinstance(value, str) and value.startswith("attach://"):
            name = value.removeprefix("attach://")
            if name not in call.files:
                raise _bad(f"Bad Request: file {name!r} not found in the request (fake)")
            return call.files[name]
        if value is None and field_name in call.files:
            return call.files[field_name]
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        raise _bad("Bad Request: wrong file identifier/HTTP URL specified")

    def _photo_sizes(self, source: UploadedFile | _StoredFile) -> list[JSON]:
        if isinstance(source, _StoredFile) and source.width:
            width, height, data = source.width, source.height, source.data
            stored = source
        else:
            data = source.data
            if len(data) > _MAX_PHOTO_BYTES:
                raise _bad("Bad Request: photo is too big (fake: Telegram allows 10 MB)")
            size = _image_size(data)
            if size is None:
                raise _bad("Bad Request: IMAGE_PROCESS_FAILED")
            width, height = size
            if width + height > 10000:
                raise _bad("Bad Request: PHOTO_INVALID_DIMENSIONS")
            upload = (
                source
                if isinstance(source, UploadedFile)
                else UploadedFile("photo", None, "image/jpeg", data)
            )
            stored = self._store_file(upload, "photo")
            stored.width, stored.height = width, height
        sizes: list[JSON] = []
        for box in _PHOTO_BOXES:
            scale = min(1.0, box / max(width, height))
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            if sizes and (sizes[-1]["width"], sizes[-1]["height"]) == (w, h):
                break
            file_id = stored.file_id if scale == 1.0 or box == _PHOTO_BOXES[-1] else f"{stored.file_id}_{box}"
            self.files.setdefault(file_id, stored)
            sizes.append(
                {
                    "file_id": file_id,
                    "file_unique_id": f"{stored.file_unique_id}_{box}",
                    "width": w,
                    "height": h,
                    "file_size": max(1, round(len(data) * scale * scale)),
                }
            )
            if scale == 1.0:
                break
        return sizes

    def _document(self, source: UploadedFile | _StoredFile) -> JSON:
        stored = source if isinstance(source, _StoredFile) else self._store_file(source, "document")
        document: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
        }
        if stored.file_name:
            document["file_name"] = stored.file_name
        if stored.mime_type:
            document["mime_type"] = stored.mime_type
        return document

    @staticmethod
    def _check_text(text: Any, *, caption: bool = False) -> str | None:
        if text is None:
            return None
        if not isinstance(text, str):
            text = str(text)
        limit = 1024 if caption else 4096
        if caption and len(text) > limit:
            raise _bad("Bad Request: message caption is too long")
        if not caption and not text.strip():
            raise _bad("Bad Request: message text is empty")
        if not caption and len(text) > limit:
            raise _bad("Bad Request: message is too long")
        return text

    @staticmethod
    def _check_markup(markup: Any) -> JSON | None:
        if not isinstance(markup, dict) or "inline_keyboard" not in markup:
            return None
        for row in markup["inline_keyboard"]:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _bad("Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _message_fields(self, params: JSON, *, text_key: str) -> JSON:
        fields: JSON = {}
        text = self._check_text(params.get(text_key), caption=text_key == "caption")
        if text is not None:
            fields[text_key] = _strip_html(text) if params.get("parse_mode") == "HTML" else text
        markup = self._check_markup(params.get("reply_markup"))
        if markup:
            fields["reply_markup"] = markup
        reply = params.get("reply_parameters") or {}
        reply_id = reply.get("message_id") if isinstance(reply, dict) else None
        reply_id = reply_id or params.get("reply_to_message_id")
        if reply_id:
            original = self.messages.get((self._chat(params.get("chat_id"))["id"], int(reply_id)))
            if original is not None:
                fields["reply_to_message"] = {k: v for k, v in original.items() if k != "reply_to_message"}
            elif not (isinstance(reply, dict) and reply.get("allow_sending_without_reply")):
                raise _bad("Bad Request: message to be replied not found")
        if params.get("has_spoiler"):
            fields["has_media_spoiler"] = True
        return fields

    # ---------------------------------------------------------------- Bot API methods

    def _m_getMe(self, call: Call) -> JSON:
        return dict(self.bot_user)

    def _m_logOut(self, call: Call) -> bool:
        return True

    def _m_close(self, call: Call) -> bool:
        return True

    async def _m_getUpdates(self, call: Call) -> list[JSON]:
        assert self._updates_changed is not None
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        params = call.params
        offset = int(params.get("offset") or 0)
        limit = min(100, max(1, int(params.get("limit") or 100)))
        timeout = min(float(params.get("timeout") or 0), self.max_long_poll)
        if "allowed_updates" in params:
            allowed = params["allowed_updates"]
            self.allowed_updates = frozenset(allowed) if allowed else None
        if offset > 0:
            self.pending_updates = [u for u in self.pending_updates if u["update_id"] >= offset]
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_changed.notify()  # ends an older waiting getUpdates with 409

        def ready() -> bool:
            return self._closing or generation != self._poll_generation or bool(self._deliverable())

        await self._updates_changed.wait_until(ready, timeout)
        if generation != self._poll_generation:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        return self._deliverable()[:limit]

    def _deliverable(self) -> list[JSON]:
        allowed = self.allowed_updates
        kept: list[JSON] = []
        for update in self.pending_updates:
            kind = next((k for k in update if k != "update_id"), "")
            if (kind in allowed) if allowed is not None else (kind not in DEFAULT_EXCLUDED_UPDATES):
                kept.append(update)
            else:
                self.filtered_updates.append(update)
        self.pending_updates = kept
        return kept

    def _m_setWebhook(self, call: Call) -> bool:
        url = call.params.get("url") or ""
        if not url:
            self.webhook = None
            return True
        if not url.startswith(("http://", "https://")):
            raise _bad("Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = call.params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("Bad Request: secret token contains unallowed characters")
        if call.params.get("drop_pending_updates"):
            self.pending_updates.clear()
        if "allowed_updates" in call.params:
            allowed = call.params["allowed_updates"]
            self.allowed_updates = frozenset(allowed) if allowed else None
        self.webhook = dict(call.params)
        self._poll_generation += 1  # a waiting getUpdates ends with 409, as on Telegram
        if self._updates_changed:
            self._updates_changed.notify()
        return True

    def _m_deleteWebhook(self, call: Call) -> bool:
        self.webhook = None
        if call.params.get("drop_pending_updates"):
            self.pending_updates.clear()
        return True

    def _m_getWebhookInfo(self, call: Call) -> JSON:
        webhook = self.webhook or {}
        info: JSON = {
            "url": webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending_updates),
        }
        if "max_connections" in webhook:
            info["max_connections"] = webhook["max_connections"]
        if self.allowed_updates is not None:
            info["allowed_updates"] = sorted(self.allowed_updates)
        return info

    @staticmethod
    def _commands_key(params: JSON) -> str:
        return json.dumps([params.get("scope") or {"type": "default"}, params.get("language_code") or ""])

    def _m_setMyCommands(self, call: Call) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list):
            raise _bad("Bad Request: can't parse commands JSON object")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad("Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("Bad Request: BOT_COMMAND_DESCRIPTION_INVALID (fake)")
        self.commands[self._commands_key(call.params)] = commands
        return True

    def _m_getMyCommands(self, call: Call) -> list[JSON]:
        return self.commands.get(self._commands_key(call.params), [])

    def _m_deleteMyCommands(self, call: Call) -> bool:
        self.commands.pop(self._commands_key(call.params), None)
        return True

    def _m_sendMessage(self, call: Call) -> JSON:
        chat = self._chat(call.params.get("chat_id"))
        if call.params.get("text") is None:
            raise _bad("Bad Request: message text is empty")
        return self._new_message(chat, **self._message_fields(call.params, text_key="text"))

    def _m_editMessageText(self, call: Call) -> JSON:
        message = self._stored_message(call.params, "Bad Request: message to edit not found")
        if "text" not in message:
            raise _bad("Bad Request: there is no text in the message to edit")
        if call.params.get("text") is None:
            raise _bad("Bad Request: message text is empty")
        fields = self._message_fields(call.params, text_key="text")
        # Telegram drops the inline keyboard when an edit does not repeat it.
        if fields["text"] == message["text"] and fields.get("reply_markup") == message.get("reply_markup"):
            raise _bad(NOT_MODIFIED)
        message["text"] = fields["text"]
        self._set_markup(message, fields.get("reply_markup"))
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_editMessageCaption(self, call: Call) -> JSON:
        message = self._stored_message(call.params, "Bad Request: message to edit not found")
        if not ("photo" in message or "document" in message):
            raise _bad("Bad Request: there is no caption in the message to edit")
        caption = self._check_text(call.params.get("caption"), caption=True)
        if call.params.get("parse_mode") == "HTML" and caption is not None:
            caption = _strip_html(caption)
        markup = self._check_markup(call.params.get("reply_markup"))
        if caption == message.get("caption") and markup == message.get("reply_markup"):
            raise _bad(NOT_MODIFIED)
        if caption is None:
            message.pop("caption", None)
        else:
            message["caption"] = caption
        self._set_markup(message, markup)
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_editMessageReplyMarkup(self, call: Call) -> JSON:
        message = self._stored_message(call.params, "Bad Request: message to edit not found")
        markup = self._check_markup(call.params.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise _bad(NOT_MODIFIED)
        self._set_markup(message, markup)
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_editMessageMedia(self, call: Call) -> JSON:
        message = self._stored_message(call.params, "Bad Request: message to edit not found")
        if not any(k in message for k in ("photo", "document", "video", "animation", "audio")):
            raise _bad("Bad Request: there is no media in the message to edit")
        item = call.params.get("media")
        if not isinstance(item, dict) or item.get("type") not in ("photo", "document"):
            raise _bad("Bad Request: media type not supported (fake)")
        fields = self._message_fields({**item, "chat_id": message["chat"]["id"]}, text_key="caption")
        fields.pop("reply_markup", None)
        source = self._resolve_input(call, item.get("media"), "")
        for key in ("photo", "document", "caption", "has_media_spoiler"):
            message.pop(key, None)
        if item["type"] == "photo":
            message["photo"] = self._photo_sizes(source)
        else:
            message["document"] = self._document(source)
        message.update(fields)
        self._set_markup(message, self._check_markup(call.params.get("reply_markup")))
        message["edit_date"] = int(time.time())
        return dict(message)

    def media_of(self, message: Mapping[str, Any]) -> bytes | None:
        """The bytes a stored message shows (its photo or document), or None."""
        if "photo" in message:
            return self.files[message["photo"][-1]["file_id"]].data
        if "document" in message:
            return self.files[message["document"]["file_id"]].data
        return None

    @staticmethod
    def _set_markup(message: JSON, markup: JSON | None) -> None:
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)

    def _m_sendPhoto(self, call: Call) -> JSON:
        chat = self._chat(call.params.get("chat_id"))
        fields = self._message_fields(call.params, text_key="caption")
        photo = self._photo_sizes(self._resolve_input(call, call.params.get("photo"), "photo"))
        return self._new_message(chat, photo=photo, **fields)

    def _m_sendDocument(self, call: Call) -> JSON:
        chat = self._chat(call.params.get("chat_id"))
        fields = self._message_fields(call.params, text_key="caption")
        document = self._document(self._resolve_input(call, call.params.get("document"), "document"))
        return self._new_message(chat, document=document, **fields)

    def _m_sendMediaGroup(self, call: Call) -> list[JSON]:
        chat = self._chat(call.params.get("chat_id"))
        media = call.params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad("Bad Request: media group must have 2-10 items (fake)")
        kinds = {item.get("type") for item in media}
        if "document" in kinds and kinds != {"document"}:
            raise _bad("Bad Request: documents can't be mixed with other media types (fake)")
        if not kinds <= {"photo", "document"}:
            unsupported = sorted(kinds - {"photo", "document"})
            raise _bad(f"Bad Request: media type(s) {unsupported} not supported (fake)")
        group_id = f"{int(time.time())}{next(self._group_counter):04d}"
        prepared: list[JSON] = []
        for item in media:  # validate and store everything before creating any message
            fields = self._message_fields({**item, "chat_id": chat["id"]}, text_key="caption")
            source = self._resolve_input(call, item.get("media"), "")
            if item["type"] == "photo":
                fields["photo"] = self._photo_sizes(source)
            else:
                fields["document"] = self._document(source)
            fields.pop("reply_markup", None)
            prepared.append(fields)
        shared = {k: v for k, v in call.params.items() if k != "reply_markup"}  # albums take none
        base = self._message_fields(shared, text_key="caption")
        return [
            self._new_message(chat, **{**base, **fields, "media_group_id": group_id})
            for fields in prepared
        ]

    def _m_answerCallbackQuery(self, call: Call) -> bool:
        query_id = str(call.params.get("callback_query_id"))
        if query_id not in self.callback_query_ids or query_id in self.answered_callback_queries:
            raise _bad("Bad Request: query is too old and response timeout expired or query ID is invalid")
        text = call.params.get("text")
        if text is not None and len(str(text)) > 200:
            raise _bad("Bad Request: MESSAGE_TOO_LONG")
        self.answered_callback_queries.add(query_id)
        return True

    def _m_sendChatAction(self, call: Call) -> bool:
        self._chat(call.params.get("chat_id"))
        return True

    def _m_deleteMessage(self, call: Call) -> bool:
        message = self._stored_message(call.params, "Bad Request: message to delete not found")
        del self.messages[(message["chat"]["id"], message["message_id"])]
        return True

    def _m_setMessageReaction(self, call: Call) -> bool:
        message = self._stored_message(call.params, "Bad Request: message to react not found (fake)")
        for reaction in call.params.get("reaction") or []:
            if reaction.get("type") == "emoji" and reaction.get("emoji") not in REACTION_EMOJI:
                raise _bad("Bad Request: REACTION_INVALID")
        self.bot_reactions[(message["chat"]["id"], message["message_id"])] = call.params.get("reaction") or []
        return True

    def _m_getChat(self, call: Call) -> JSON:
        chat = dict(self._chat(call.params.get("chat_id")))
        chat.update(
            accent_color_id=0,
            max_reaction_count=11,
            accepted_gift_types={
                "unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
                "premium_subscription": False, "gifts_from_channels": False,
            },
        )
        return chat

    def _m_getChatMember(self, call: Call) -> JSON:
        chat = self._chat(call.params.get("chat_id"))
        user_id = int(call.params.get("user_id") or 0)
        if not user_id:
            raise _bad("Bad Request: invalid user_id specified")
        default = {"status": "member", "user": make_user(user_id, str(user_id))}
        if chat["type"] == "private":
            default["status"] = "member" if user_id in (chat["id"], self.bot_id) else "left"
        return dict(self.chat_members.get((chat["id"], user_id), default))

    def _m_getFile(self, call: Call) -> JSON:
        stored = self.files.get(str(call.params.get("file_id")))
        if stored is None:
            raise _bad("Bad Request: invalid file_id")
        if len(stored.data) > _MAX_DOWNLOAD_BYTES:
            raise _bad("Bad Request: file is too big")
        return {
            "file_id": str(call.params["file_id"]),
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

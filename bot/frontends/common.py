"""What every front end shares: texts, error references, settings parsing, pacing, image rendering.

Platform-neutral (no discord, no telegram imports), so each front end imports it and none
imports another. What lives here is what more than one front end had its own copy of::

    clip(text, limit)             cut to ``limit`` characters with "…"
    new_reference() apology(ref)  the reference id of an unexpected error, and the user's apology
    on_off(value)                 a setting's value as shown ("on"/"off" for booleans)
    settings_changes(text)        "key=value …" → dict, None when a word has no "="
    FORGET_WARNING forgotten_counts(outcome)   the /forget confirmation and its summary
    meter(filled, total)          ▰▰▱▱ progress bar
    Coalescer                     progress edits of one message: newest only, paced, out of the result's way
    render_grid render_single thumbnail   images under an upload limit (a 2-column grid), thumbnails
    image_ref shared_text link_code_text linked_text key_created_text keys_text api_key_text web_link_text
                                  the gallery, account linking and API keys, in every chat the same
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from bot.service import FORGET_KEEPS, NotAllowed, NotFound, StoredImage, Via, Who
from generation.core.errors import ImagineError, InvalidRequest
from generation.tools.inputs import MAX_UPLOAD_BYTES
from storage.files import fit_under

__all__ = [
    "APIKEY_PRIVATE",
    "ESTIMATING",
    "FORGET_WARNING",
    "GALLERY_OFF",
    "JOB_ID_LENGTH",
    "MAX_UPLOAD_BYTES",
    "NOT_YOURS",
    "UNLINKED",
    "WEB_PRIVATE",
    "Coalescer",
    "api_key_text",
    "apology",
    "canonical_ref",
    "clip",
    "eta_phrase",
    "forgotten_counts",
    "image_ref",
    "key_created_text",
    "keys_text",
    "link_code_text",
    "linked_text",
    "meter",
    "new_reference",
    "on_off",
    "quota_text",
    "TOOLS",
    "tool_action",
    "upload_too_large",
    "render_grid",
    "render_single",
    "settings_changes",
    "web_link_text",
    "share_image",
    "shared_text",
    "stats_lines",
    "thumbnail",
    "variation_hint",
]

FORGET_WARNING = ("This deletes your history, ratings, settings and images for good. "
                  "Blocks, strikes, cooldowns, this window's used quota and personal limits stay.")


JOB_ID_LENGTH = 12  # a request id: 12 hex digits; an image's number is shorter
ESTIMATING = "estimating the time"  # before this bot has timed a batch, a guess can be far off


def eta_phrase(seconds: float, measured: bool = True) -> str:
    """ "about 24 s" / "about 3 min" once this bot has timed a batch; before that, no number."""
    if not measured:
        return ESTIMATING
    return f"about {max(1, round(seconds))} s" if seconds < 90 else f"about {round(seconds / 60)} min"


# The toolbox under one image: a short code (in button data) -> (label, service kind, mode).
TOOLS: dict[str, tuple[str, str, str]] = {
    "ups": ("⬆️ Upscale (Subtle)", "upscale", "subtle"),
    "upc": ("⬆️ Upscale (Creative)", "upscale", "creative"),
    "z15": ("🔍 Zoom Out 1.5x", "zoom", "1.5"),
    "z2": ("🔍 Zoom Out 2x", "zoom", "2"),
    "pl": ("⬅️", "pan", "left"),
    "pr": ("➡️", "pan", "right"),
    "pu": ("⬆️", "pan", "up"),
    "pd": ("⬇️", "pan", "down"),
    "vr": ("🖌️ Vary (Region)", "edit", "words"),  # asks what to change first (Discord: a modal; Telegram: /edit)
}


async def tool_action(service: Any, who: Who, job_id: str, index: int, code: str, *,
                      target: dict[str, Any] | None = None, origin: Any = None, via: Via | None = None) -> Any:
    """Run toolbox button ``code`` on image ``index`` of a job (a new Ticket); ImagineError if unknown.
    ``via``: the message whose button was clicked (the service's authority check)."""
    if code not in TOOLS:
        raise ImagineError("That button is from another version of this bot; use the ones under a new image.")
    _, kind, mode = TOOLS[code]
    if kind == "edit":  # the front end asks for the words first and calls service.edit
        raise ImagineError("Say what to change and what to paint there instead: /edit WHAT -> NEW TEXT.")
    if kind == "upscale":
        return await service.upscale(who, job_id, index, mode, target=target, origin=origin, via=via)
    return await service.outpaint(who, job_id, index, kind, mode, target=target, origin=origin, via=via)


def upload_too_large(size: int | None) -> str | None:
    """The refusal for a file the platform says is over the upload limit (before downloading it)."""
    if size is not None and size > MAX_UPLOAD_BYTES:
        return (f"Your image is {size:,} bytes, over the {MAX_UPLOAD_BYTES / 1e6:g} MB limit; "
                "send a smaller or more compressed one.")
    return None


def clip(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters (the last one an ellipsis) when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def new_reference() -> str:
    """A short id that ties the user's apology to the logged traceback."""
    return uuid.uuid4().hex[:8]


def apology(ref: str) -> str:
    return f"Sorry, something went wrong (reference {ref})."


def on_off(value: Any) -> Any:
    """A setting's value as shown to the user: booleans as on/off."""
    return "on" if value is True else "off" if value is False else value


def stats_lines(stats: dict[str, Any]) -> list[str]:
    """``/admin stats`` as text lines: ``key: value``, a table as ``k=v, …``, the ratings
    by model, steps, style and LoRA one line each, and the newest comments on one line."""
    lines: list[str] = []
    for key, value in stats.items():
        if key == "ratings" and isinstance(value, dict):
            lines.extend(f"ratings by {by}: " + ("; ".join(groups) or "none yet") for by, groups in value.items())
        elif key == "comments" and isinstance(value, list):
            lines.append("comments (newest first): " + ("; ".join(value) or "none yet"))
        elif isinstance(value, dict):
            lines.append(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            lines.append(f"{key}: {value}")
    return lines


_PERIODS = {"hourly": "hour", "daily": "day", "weekly": "week"}


def quota_text(used: int, limit: int, remaining: int, window: str, resets: str) -> str:
    """/quota on every platform: used, left, which window, when it resets (``resets`` as the
    platform shows a time: Discord's relative timestamp, a UTC date elsewhere)."""
    period = _PERIODS.get(window, window)
    return (f"Used {used} of {limit} images; {remaining} left this {period} ({window} quota). "
            f"Resets {resets}.")


def settings_changes(text: str) -> dict[str, str] | None:
    """``key=value …`` (shell quoting) as {key: value}; None when a word has no ``=``.

    Raises ValueError for unbalanced quotes.
    """
    changes: dict[str, str] = {}
    for pair in shlex.split(text):
        key, eq, value = pair.partition("=")
        if not eq:
            return None
        changes[key.strip().lower()] = value
    return changes


def variation_hint(delivery: Any) -> str:
    """For a chat with buttons: how to make another variation of the same image ("" if not one)."""
    origin, _, image = (delivery.request.variation_of or "").partition("#")
    return f" · more: V{image} on its images" if origin and image.isdecimal() else ""


def forgotten_counts(outcome: Any, copies: int | None = None) -> str:
    """The tail of the /forget summary (a whole sentence, ending in its period): what was
    cancelled and removed, and what is kept. ``copies``: images a front end had written to a
    folder of its own (the terminal chat's output folder) and removed too."""
    written = "" if copies is None else f", {copies} copied image(s) removed from the output folder"
    return (f"({outcome.jobs_cancelled} running request(s) cancelled, "
            f"{outcome.files_deleted} stored file(s) removed{written}). {FORGET_KEEPS}")


# -- the gallery, account linking, API keys -----------------------------------------------------

APIKEY_PRIVATE = ("API keys are only handed out in a private chat with me: send /apikey there "
                  "(a key shown in a group is a key for everyone).")
NOT_YOURS = {True: "Only the person who asked for this image can share it.",
             False: "Only the person who asked for this image, or an admin, can take it out of the gallery."}
UNLINKED = {True: "Unlinked: this identity has its own account again.", False: "This identity is not linked."}


def image_ref(args: Sequence[str]) -> str | None:
    """"JOB N" or "JOB-N" as an image reference "JOB-N" (N from 1), or an image's number as
    /history shows it ("12"); None when it is none of them."""
    if len(args) == 1 and args[0].isdecimal() and int(args[0]) >= 1 and len(args[0]) < JOB_ID_LENGTH:
        return args[0]
    ref = "-".join(args)
    job, sep, number = ref.rpartition("-")
    if len(args) not in (1, 2) or not sep or not job or not number.isdecimal() or int(number) < 1:
        return None
    return ref


async def canonical_ref(service: Any, who: Who, ref: str) -> str:
    """"JOB-N" for an image named either way (its number is looked up: the caller's own images,
    shared ones, or any for an admin; NotFound otherwise)."""
    return await service.ref_of(who, ref) if ref.isdecimal() else ref


GALLERY_OFF = ("this bot's web gallery is not running, so nobody can see it yet (whoever runs the bot "
               "turns it on with [web] enabled = true, and public_url for links that work from elsewhere)")


def shared_text(public_url: str, ref: str, share_id: str) -> str:
    """The answer to a share: where the image is now public ("" public_url: no gallery runs)."""
    if not public_url:
        return f"🌐 Shared {ref}, but {GALLERY_OFF}."
    return f"🌐 Shared {ref} in the gallery: {public_url}/i/{share_id}"


async def share_image(service: Any, who: Who, ref: str, share: bool, via: Via | None = None) -> str:
    """Share (or unshare) image ``ref`` for ``who``: the answer to show, or an ImagineError saying why not.

    The service answers "no such image" for someone else's image (the web must not tell which
    exist); in a chat the image is in plain sight (a button ``via`` a message showing it), so say
    who may do it instead.
    """
    try:
        ref = await canonical_ref(service, who, ref)
        if share:
            return shared_text(service.config.public_url, ref, await service.share(who, ref))
        done = await service.unshare(who, ref)
    except NotFound:
        job, _, number = ref.rpartition("-")
        try:
            shown = (await service.job_delivery(who, job, via=via)).images if job else ()
        except ImagineError:
            shown = ()
        visible = any(i.index == int(number) - 1 for i in shown)
        if not visible and job:  # a publicly shared image is in plain sight too
            try:
                await service.ref_of(who, ref)
                visible = True
            except ImagineError:
                pass
        if visible:
            raise NotAllowed(NOT_YOURS[share]) from None
        raise
    return f"{ref} is no longer in the gallery." if done else f"{ref} was not in the gallery."


def link_code_text(code: str) -> str:
    return (f"Your link code: {code} (valid 10 minutes, once). Enter /link {code} on your other "
            "platform to use one account (quota, history, settings, API keys) on both.")


def linked_text(identities: Sequence[str]) -> str:
    return "Linked: " + ", ".join(identities) + " now share one account."


def key_created_text(key_id: int, key: str) -> str:
    return (f"API key {key_id}, shown only now: keep it secret, send it as 'Authorization: Bearer …'. "
            f"/apikey revoke {key_id} ends it.\n{key}")


def keys_text(keys: Sequence[Any]) -> str:
    """One line per API key (never the key itself): id, prefix, state, created, last used."""
    if not keys:
        return "You have no API keys. /apikey makes one."
    def when(text: str) -> str:
        return text[:16].replace("T", " ")

    lines = ["Your API keys:"]
    for key in keys:
        state = f"revoked {when(key.revoked_at)}" if key.revoked_at else "live"
        used = f"last used {when(key.last_used_at)} UTC" if key.last_used_at else "never used"
        label = f" — {key.label}" if key.label else ""
        lines.append(f"{key.id}: {key.prefix}… {state}, created {when(key.created_at)}, {used}{label}")
    return "\n".join(lines)


async def api_key_text(service: Any, who: Who, action: str, key_id: int | None = None) -> str:
    """/apikey on every platform, once the front end has parsed it: ``new`` makes a key (shown
    once), ``list`` lists them, ``revoke`` ends key ``key_id``; the answer to show."""
    if action == "list":
        return keys_text(await service.api_keys(who))
    if action == "revoke":
        if key_id is None:
            raise InvalidRequest("key_id", "Say which key to revoke: /apikey revoke ID (the ids are in /apikey list).")
        await service.revoke_api_key(who, key_id)
        return f"Revoked API key {key_id}."
    key, row = await service.create_api_key(who)
    return key_created_text(row.id, key)


WEB_PRIVATE = ("Sign-in links to the web studio are only handed out in a private chat with me: send /web "
               "there (a link shown in a group would let anyone in as you).")


def web_link_text(url: str) -> str:
    """The answer to /web: the one-time sign-in link to the web studio."""
    where = "" if url.startswith(("http://", "https://")) else \
        " (open it on this bot's web address; the operator can set web.public_url for a full link)"
    return (f"Your sign-in link to the web studio, valid 10 minutes and only once; do not share it:\n{url}{where}\n"
            "In the browser, Sessions lists where you are signed in; /forget ends every session.")


def meter(filled: int, total: int) -> str:
    """A progress bar of ``total`` cells, ``filled`` of them full."""
    return "▰" * filled + "▱" * max(0, total - filled)


class Coalescer:
    """Progress edits of one message, coalesced: at most one per ``interval``, only the newest text
    (a text, or whatever one edit shows: Discord's is the text with the newest live preview).

    The interval runs from the end of one edit to the start of the next.

    ``show(text)`` never waits for the platform: the text is kept and an edit task sends it
    (the first at once, then one per interval). Updates that arrive meanwhile replace the waiting
    text. ``settle()`` before the result: drops the waiting text and waits for an edit already on
    its way, so the result always goes after it and is never overwritten by progress.
    """

    def __init__(self, send: Callable[[Any], Awaitable[Any]], interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.interval = interval
        self._clock = clock
        self._last = -math.inf
        self._pending: Any = None
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self.edits = 0
        self.coalesced = 0  # texts replaced before they were sent

    def show(self, text: Any) -> None:
        if self._pending is not None:
            self.coalesced += 1
        self._pending = text
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._pending is not None:
            wait = self._last + self.interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            text, self._pending = self._pending, None
            self._sending = True
            try:
                await self._send(text)
                self.edits += 1
            except Exception:  # progress is best effort
                logging.getLogger(__name__).warning("progress edit failed", exc_info=True)
            finally:
                self._sending = False
                # the interval counts from when the platform answered, so however long one edit
                # spent on the way, the platform never sees two closer than ``interval``
                self._last = self._clock()

    def close(self) -> None:
        """Stop at once (the job is no longer followed)."""
        self._pending = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def settle(self) -> None:
        """Drop the waiting text; let an edit on its way finish."""
        self._pending = None
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if self._sending:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- images ------------------------------------------------------------------------------------


def render_grid(images: Sequence[StoredImage], limit: int) -> tuple[bytes, str]:
    """(bytes, extension): the single image, or the images as a 2-column grid; fit under ``limit``."""
    if len(images) == 1:
        return render_single(images[0].path, limit)
    opened = [Image.open(image.path).convert("RGB") for image in images]
    try:
        width = max(i.width for i in opened)
        height = max(i.height for i in opened)
        columns = 2
        rows = math.ceil(len(opened) / columns)
        grid = Image.new("RGB", (columns * width, rows * height), (0, 0, 0))
        for n, image in enumerate(opened):
            grid.paste(image, ((n % columns) * width, (n // columns) * height))
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
    finally:
        for image in opened:
            image.close()
    return fit_under(buffer.getvalue(), limit)


def render_single(path: Path, limit: int) -> tuple[bytes, str]:
    """One stored image, re-encoded only when it is over ``limit`` bytes."""
    return fit_under(path.read_bytes(), limit)


def thumbnail(path: Path) -> bytes:
    """A JPEG at most 160x160 of a stored image (for history listings)."""
    with Image.open(path) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((160, 160))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()

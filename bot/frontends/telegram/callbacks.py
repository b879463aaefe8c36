"""Stateless inline-button data and the reaction → stars scheme (pure: no I/O).

Every button carries all it needs in its ``callback_data`` (≤ 64 bytes), so buttons keep working
after a restart. Format: a one-letter action, then fields separated by ``:``::

    r:<job>                 🔄 reroll job
    u:<job>:<n>             U<n>: image n (1-based) as a full-quality document
    v:<job>:<n>             V<n>: variations of image n
    k:<job>:<n>             show the ⭐1–5 row for image n of an album (n = 0: back to the main row)
    s:<job>:<n>:<stars>     rate image n with 1–5 stars
    x:<job>                 cancel a queued/running job (the status message's button)
    h:<page>:<search>       /history page (search cut to fit the 64 bytes)
    f:<user_id>:y|n         /forget confirmation (only that user may press it)
    a:<user_id>             file a moderation appeal (under a cooldown/block refusal; only that user)
    g:<job>:<n>             🌐 put image n in the public web gallery (its owner)
    o:<job>:<n>             take image n out of the gallery again (its owner or an admin)
    t:<job>:<n>:<tool>      the toolbox on image n: ups/upc ⬆️ Upscale, z15/z2 Zoom Out, pl/pr/pu/pd pan,
                            vr 🖌️ Vary (Region) (says how: a reply with /edit)
    d:<n>[:i]               Imagine n under a /describe answer (its prompt n, read back from the
                            answer's text); with i, starting from the described picture

Job ids are 12 hex digits, so the longest job button (``s:…:4:5``) is 18 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_CALLBACK_BYTES",
    "REACTION_STARS",
    "Action",
    "encode",
    "history_data",
    "parse",
    "stars_for",
]

MAX_CALLBACK_BYTES = 64
_ACTIONS = frozenset("ruvksxhfagotd")

# Reaction scheme (documented in docs/user/commands.md): the strongest mapped emoji of a user's reactions
# counts; removing every mapped reaction removes the rating made by reaction (not a button one).
REACTION_STARS: dict[str, int] = {
    **dict.fromkeys(("❤", "❤️", "❤‍🔥", "🔥", "😍", "🤩", "🏆", "💯", "⚡"), 5),
    **dict.fromkeys(("👍", "👏", "👌", "🥰", "😁", "🎉"), 4),
    **dict.fromkeys(("🤔", "😐", "🤷", "🤷‍♂", "🤷‍♀"), 3),
    **dict.fromkeys(("🥱", "😢", "😴"), 2),
    **dict.fromkeys(("👎", "💩", "🤮", "😡", "🤬"), 1),
}


@dataclass(frozen=True)
class Action:
    """A parsed button press: the action letter and its fields as strings."""

    kind: str
    fields: tuple[str, ...]


def encode(kind: str, *fields: object) -> str:
    """``kind:field:…``; raises ValueError when it would not fit Telegram's 64 bytes."""
    if kind not in _ACTIONS:
        raise ValueError(f"`kind` must be one of {''.join(sorted(_ACTIONS))}, not {kind!r}")
    data = ":".join([kind, *(str(f) for f in fields)])
    if len(data.encode("utf-8")) > MAX_CALLBACK_BYTES:
        raise ValueError(f"callback_data is {len(data.encode())} bytes; Telegram allows {MAX_CALLBACK_BYTES}")
    return data


def history_data(page: int, search: str | None) -> str:
    """``h:<page>:<search>``, the search cut (on a character boundary) to fit 64 bytes."""
    head = f"h:{page}:"
    room = MAX_CALLBACK_BYTES - len(head.encode())
    text = (search or "").encode("utf-8")[:room].decode("utf-8", "ignore")
    return head + text


def parse(data: str | None) -> Action | None:
    """The action in ``data``, or None for data this bot did not make."""
    if not data or len(data) < 2 or data[1] != ":" or data[0] not in _ACTIONS:
        return None
    kind = data[0]
    if kind == "h":  # the search may contain ":"
        page, _, search = data[2:].partition(":")
        return Action(kind, (page, search)) if page.isdecimal() else None
    fields = tuple(data[2:].split(":"))
    return Action(kind, fields)


def stars_for(emojis: list[str]) -> int | None:
    """The stars for a set of reaction emoji (the best mapped one), None when none is mapped."""
    found = [REACTION_STARS[e] for e in emojis if e in REACTION_STARS]
    return max(found) if found else None

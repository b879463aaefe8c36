"""The inline keyboards under the bot's messages (their data: :mod:`bot.frontends.telegram.callbacks`)."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.frontends.common import TOOLS
from bot.frontends.telegram import callbacks
from bot.service import HistoryView

__all__ = [
    "appeal_keyboard",
    "cancel_keyboard",
    "describe_keyboard",
    "forget_keyboard",
    "history_keyboard",
    "main_keyboard",
    "share_keyboard",
    "stars_keyboard",
]


def main_keyboard(job_id: str, count: int) -> InlineKeyboardMarkup:
    """🔄, U1…Un, V1…Vn, rating and 🌐 share buttons under a result."""
    enc = callbacks.encode
    if count == 1:
        rows = [
            [InlineKeyboardButton("🔄 Reroll", callback_data=enc("r", job_id)),
             InlineKeyboardButton("⬇ U1 full size", callback_data=enc("u", job_id, 1)),
             InlineKeyboardButton("🎨 V1 vary", callback_data=enc("v", job_id, 1))],
            [InlineKeyboardButton(f"{s}⭐", callback_data=enc("s", job_id, 1, s)) for s in range(1, 6)],
            [InlineKeyboardButton("🌐 Share", callback_data=enc("g", job_id, 1)),
             InlineKeyboardButton(TOOLS["vr"][0], callback_data=enc("t", job_id, 1, "vr"))],
        ]
    else:
        numbers = range(1, count + 1)
        rows = [
            [InlineKeyboardButton("🔄 Reroll", callback_data=enc("r", job_id))],
            [InlineKeyboardButton(f"U{n}", callback_data=enc("u", job_id, n)) for n in numbers],
            [InlineKeyboardButton(f"V{n}", callback_data=enc("v", job_id, n)) for n in numbers],
            [InlineKeyboardButton(f"⭐ #{n}", callback_data=enc("k", job_id, n)) for n in numbers],
            [InlineKeyboardButton(f"🌐 {n}", callback_data=enc("g", job_id, n)) for n in numbers],
        ]
    return InlineKeyboardMarkup(rows)


def _tools(job_id: str, index: int, *rows: tuple[str, ...]) -> list[list[InlineKeyboardButton]]:
    return [[InlineKeyboardButton(TOOLS[code][0], callback_data=callbacks.encode("t", job_id, index, code))
             for code in row] for row in rows]


_OUTPAINT = (("z15", "z2"), ("pl", "pr", "pu", "pd"))


def tools_keyboard(job_id: str, index: int) -> InlineKeyboardMarkup:
    """Under one full-quality image (U1…U4), as Midjourney lays them out: upscales, zoom, pan."""
    return InlineKeyboardMarkup(_tools(job_id, index, ("ups", "upc"), ("vr",), *_OUTPAINT))


def upscaled_keyboard(job_id: str) -> InlineKeyboardMarkup:
    """Under an upscaled file (or a zoom, pan or edit): zoom, pan or edit it, rate it, share it."""
    enc = callbacks.encode
    return InlineKeyboardMarkup([
        *_tools(job_id, 1, ("vr",), *_OUTPAINT),
        [InlineKeyboardButton(f"{s}⭐", callback_data=enc("s", job_id, 1, s)) for s in range(1, 6)],
        [InlineKeyboardButton("🌐 Share", callback_data=enc("g", job_id, 1))],
    ])


def describe_keyboard(count: int, with_image: bool) -> InlineKeyboardMarkup:
    """Under a /describe answer: Imagine 1…n, and 🖼 1…n to start from the described picture."""
    enc = callbacks.encode
    rows = [[InlineKeyboardButton(f"Imagine {n}", callback_data=enc("d", n)) for n in range(1, count + 1)]]
    if with_image:
        rows.append([InlineKeyboardButton(f"🖼 {n}", callback_data=enc("d", n, "i")) for n in range(1, count + 1)])
    return InlineKeyboardMarkup(rows)


def share_keyboard(job_id: str, index: int) -> InlineKeyboardMarkup:
    """Under the answer to 🌐: take image ``index`` (1-based) out of the gallery again."""
    return InlineKeyboardMarkup([[InlineKeyboardButton("↩ Unshare", callback_data=callbacks.encode("o", job_id, index))]])


def stars_keyboard(job_id: str, index: int) -> InlineKeyboardMarkup:
    """⭐1–5 for image ``index`` (1-based) of an album, and a way back."""
    enc = callbacks.encode
    return InlineKeyboardMarkup([
        [InlineKeyboardButton(f"{s}⭐", callback_data=enc("s", job_id, index, s)) for s in range(1, 6)],
        [InlineKeyboardButton(f"« back (rating image {index})", callback_data=enc("k", job_id, 0))],
    ])


def cancel_keyboard(job_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("❌ Cancel", callback_data=callbacks.encode("x", job_id))]])


def forget_keyboard(user_id: int) -> InlineKeyboardMarkup:
    """/forget's confirmation: only ``user_id`` may press it."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton("🗑 Yes, delete everything", callback_data=callbacks.encode("f", user_id, "y")),
        InlineKeyboardButton("Keep", callback_data=callbacks.encode("f", user_id, "n")),
    ]])


def appeal_keyboard(user_id: int) -> InlineKeyboardMarkup:
    """The 📝 Appeal button under a cooldown/block refusal (only ``user_id`` may press it)."""
    return InlineKeyboardMarkup([[InlineKeyboardButton("📝 Appeal", callback_data=callbacks.encode("a", user_id))]])


def history_keyboard(view: HistoryView, search: str | None) -> InlineKeyboardMarkup | None:
    rows: list[list[InlineKeyboardButton]] = []
    for number, entry in enumerate(view.entries, 1):
        row = [InlineKeyboardButton(f"🖼 {number}.{shown.image.index + 1}",
                                    callback_data=callbacks.encode("u", entry.job_id, shown.image.index + 1))
               for shown in entry.images]
        if row:
            rows.append(row)
    paging = []
    if view.page > 0:
        paging.append(InlineKeyboardButton("« Newer", callback_data=callbacks.history_data(view.page - 1, search)))
    if view.has_more:
        paging.append(InlineKeyboardButton("Older »", callback_data=callbacks.history_data(view.page + 1, search)))
    if paging:
        rows.append(paging)
    return InlineKeyboardMarkup(rows) if rows else None

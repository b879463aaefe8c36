"""Who a Telegram user is, what a command says, and the texts of the bot's messages (pure)."""

from __future__ import annotations

from typing import Any

from telegram import ReplyParameters, User

from bot.frontends.common import clip, eta_phrase, meter, variation_hint
from bot.service import Delivery, HistoryView, Queued, Running, Who

__all__ = [
    "PLATFORM",
    "caption_of",
    "image_of",
    "command_text",
    "eta_text",
    "history_text",
    "reply_parameters",
    "stars_text",
    "status_text",
    "who_of",
]

PLATFORM = "telegram"


def who_of(user: User) -> Who:
    """The service identity of a Telegram user."""
    return Who(PLATFORM, str(user.id), user.full_name or user.username or str(user.id))


def command_text(text: str | None) -> str:
    """What follows ``/command`` (or ``/command@bot``), whitespace kept as typed."""
    parts = (text or "").split(None, 1)
    return parts[1].strip() if len(parts) > 1 else ""


def image_of(message: Any) -> tuple[str, int | None] | None:
    """(file_id, size) of the picture a /imagine starts from: a photo or file sent with the command
    as its caption, else one in the message it replies to; None for a text-only /imagine."""
    for candidate in (message, getattr(message, "reply_to_message", None)):
        if candidate is None:
            continue
        if candidate.photo:
            largest = candidate.photo[-1]
            return largest.file_id, largest.file_size
        if candidate.document is not None:
            return candidate.document.file_id, candidate.document.file_size
    return None


def stars_text(n: int) -> str:
    return "★" * n + "☆" * (5 - n)


def eta_text(seconds: float, measured: bool = True) -> str:
    return eta_phrase(seconds, measured)


def reply_parameters(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id, allow_sending_without_reply=True) if message_id else None


def status_text(update: Queued | Running, prompt: str) -> str:
    """The status message for a queued or running job."""
    prompt = clip(prompt, 300)
    if isinstance(update, Queued):
        return f"⏳ Queued — position {update.position}, {eta_text(update.eta, update.measured)}\n{prompt}"
    return f"🎨 Generating — step {update.step}/{update.steps} {meter(update.step, update.steps)}\n{prompt}"


def caption_of(delivery: Delivery, name: str | None) -> str:
    by = f"\n— {name}" if name else ""
    return clip(f"{delivery.text}{by} · job {delivery.job_id}{variation_hint(delivery)}", 1024)


def history_text(view: HistoryView, search: str | None) -> str:
    if not view.entries:
        if view.total and view.page:
            return "No more requests."
        return f"No requests match “{search}”." if search else "You have no requests yet. Try /imagine."
    about = f" matching “{search}”" if search else ""
    lines = [f"📜 Your requests{about} — page {view.page + 1} of {view.pages} ({view.total} in all)"]
    for number, entry in enumerate(view.entries, 1):
        when = entry.created_at[:16].replace("T", " ")
        lines.append(f"\n{number}. {when} · {entry.status} · job {entry.job_id}")
        lines.append(clip(entry.text, 300))
        if entry.error:
            lines.append(f"   {clip(entry.error, 200)}")
        if entry.input_image is not None:  # a text list shows no pictures: it names the one sent
            lines.append("   🖼 started from a picture you sent (in /export)")
        for shown in entry.images:
            mine = f"your {shown.my_stars}★" if shown.my_stars else "not rated by you"
            mean = f", average {shown.average:.1f}★ of {shown.ratings}" if shown.ratings else ""
            lines.append(f"   image {shown.image.index + 1}: {mine}{mean}")
    return clip("\n".join(lines), 4096)

"""The console's "buttons": the typed commands that do what Discord's buttons and Telegram's
inline keyboard do, printed under each result so the next step is one copy away."""

from __future__ import annotations

from bot.service import Delivery

__all__ = ["actions_line"]


def actions_line(delivery: Delivery) -> str:
    """One line of follow-up commands for a delivered job (reroll, variation, rate)."""
    first = delivery.images[0] if delivery.images else None
    parts = [f"/reroll {delivery.job_id}"]
    if first is not None:
        parts.append(f"/variation {delivery.job_id} {first.index + 1}")
        parts.append(f"/rate {first.image_id} 5")
    origin, _, image = (delivery.request.variation_of or "").partition("#")
    if origin and image.isdecimal():  # another variation of the same original image
        parts.append(f"/variation {origin} {image} (another of the original)")
    return "  next: " + " · ".join(parts)

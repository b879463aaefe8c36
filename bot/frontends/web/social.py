"""Public "share to" links (no keys: each network's share intent) and the card a shared page shows."""

from __future__ import annotations

from urllib.parse import quote, urlencode

__all__ = ["share_links"]


def share_links(url: str, text: str) -> list[tuple[str, str]]:
    """(network, link) pairs that open a new post with ``url`` and ``text`` on each network."""
    text = text[:200]
    return [
        ("X", "https://x.com/intent/tweet?" + urlencode({"text": text, "url": url})),
        ("Reddit", "https://www.reddit.com/submit?" + urlencode({"url": url, "title": text})),
        ("Mastodon", "https://mastodonshare.com/?" + urlencode({"text": text, "url": url})),
        ("Bluesky", "https://bsky.app/intent/compose?" + urlencode({"text": f"{text} {url}"})),
        ("Telegram", "https://t.me/share/url?" + urlencode({"url": url, "text": text})),
        ("WhatsApp", "https://wa.me/?text=" + quote(f"{text} {url}")),
        ("Facebook", "https://www.facebook.com/sharer/sharer.php?" + urlencode({"u": url})),
    ]

"""Can the Hugging Face Hub be reached? One DNS lookup and one TCP connect, no retries.

Both the loader (to load from the cache at once when it cannot) and ``imagine-bot download``
(to say why it cannot) ask; neither imports the other for it.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

__all__ = ["hub_endpoint", "unreachable"]


def hub_endpoint() -> str:
    """The Hub (or mirror) URL huggingface_hub uses: ``HF_ENDPOINT`` or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def unreachable(endpoint: str | None = None, timeout: float = 5.0) -> str | None:
    """Why ``endpoint`` cannot be reached (DNS lookup, then a TCP connect), or None if it can."""
    url = urlsplit(endpoint or hub_endpoint())
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"the DNS lookup of {host} failed ({exc.args[-1] if exc.args else exc})"
    last: OSError | None = None
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return None
        except OSError as exc:
            last = exc
    reason = last.strerror if last is not None and last.strerror else str(last or "no address")
    return f"cannot connect to {host}:{port} ({reason})"

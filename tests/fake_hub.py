"""A Hugging Face Hub on 127.0.0.1 that serves in-memory repositories to huggingface_hub.

It answers what ``snapshot_download(local_dir=…)`` asks for: the revision
(``/api/models/<repo>/revision/<rev>``), the file tree (``/api/models/<repo>/tree/<rev>``) and
each file (``HEAD``/``GET /<repo>/resolve/<rev>/<path>``, with ``Range`` for resumed downloads).
Every request is recorded, so a test can see which files were fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub", "serve"]



def commit_of(repo: str) -> str:
    """A commit hash per repository (huggingface_hub caches file trees by commit)."""
    return hashlib.sha1(repo.encode()).hexdigest()


class FakeHub:
    """Repositories (repo id -> {path: bytes}) and the requests made so far."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def fetched(self, repo: str) -> set[str]:
        """Paths of ``repo`` whose content was sent (GET on resolve)."""
        prefix = f"/{repo}/resolve/"
        return {unquote(path.split("/", 1)[1]) for method, url in self.requests if method == "GET"
                for path in [url[len(prefix):]] if url.startswith(prefix)}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  *, head: bool = False) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, value: object) -> None:
            self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def _not_found(self, head: bool = False) -> None:
            self._send(404, b'{"error": "Repository not found"}',
                       {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, head=head)

        def _route(self, head: bool) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
            if api:
                files = hub.repos.get(api.group(1))
                if files is None:
                    return self._not_found()
                if api.group(2) == "revision":
                    return self._json({"id": api.group(1), "sha": commit_of(api.group(1)),
                                       "siblings": [{"rfilename": p} for p in sorted(files)]})
                return self._json([{"type": "file", "path": p, "size": len(data),
                                    "oid": hashlib.sha1(data).hexdigest()} for p, data in sorted(files.items())])
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not resolve or resolve.group(1) not in hub.repos:
                return self._not_found(head)
            data = hub.repos[resolve.group(1)].get(unquote(resolve.group(3)))
            if data is None:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head=head)
            headers = {"X-Repo-Commit": commit_of(resolve.group(1)), "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream"}
            start = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if start and not head:
                offset = int(start.group(1))
                headers["Content-Range"] = f"bytes {offset}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[offset:], headers)
            self._send(200, data, headers, head=head)

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

    return Handler


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run ``hub`` on a free loopback port (``hub.url``) for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()

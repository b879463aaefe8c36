"""Test helpers for the web studio: sign in through a link the service made, the CSRF token of a page."""

from __future__ import annotations

import re

import httpx

from bot.service import ImagineService, Who

__all__ = ["csrf_of", "sign_in"]


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, service: ImagineService, who: Who) -> str:
    """Sign ``client`` in as ``who`` with a fresh /web link; the session's CSRF token."""
    link = await service.web_signin_link(who)
    path = "/signin/" + link.rpartition("/signin/")[2]
    page = await client.get(path)
    assert page.status_code == 200, page.text
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce
    done = await client.post(path, data={"nonce": nonce.group(1)})
    assert done.status_code == 303 and done.headers["location"] == "/studio", done.text
    studio = await client.get("/studio")
    assert studio.status_code == 200
    return csrf_of(studio.text)

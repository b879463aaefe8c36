"""Signing in to the studio with a link from the chat, the session cookie, CSRF, and the sessions page.

    GET  /signin/{token}     a page with one "Sign in" button: chat apps fetch links for their
                             previews, so opening the link must not use it up
    POST /signin/{token}     uses the link (once, within 10 minutes), sets the session cookie
    POST /signout            ends this session
    GET  /sessions           where you are signed in; POST /sessions/{id}/end ends one

The cookie is HttpOnly, SameSite=Lax, and Secure when ``web.public_url`` is https. Every
state-changing request of a session carries its CSRF token (``X-CSRF-Token`` header or a
``csrf`` form field); the sign-in form itself carries a double-submit token from a cookie of
its GET, so another site cannot sign a browser in to someone else's account.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bot.frontends.web.views import templates
from bot.service import ImagineService, NotFound, WebSession

__all__ = ["COOKIE", "Refused", "check_csrf", "page_session", "refused", "session", "signin_router"]

COOKIE = "ib_session"
SIGNIN_COOKIE = "ib_signin"
SESSION_AGE = 30 * 24 * 3600
USED = ("This sign-in link is used or expired (links work once, for 10 minutes). "
        "Send /web in a private chat with the bot for a new one.")

signin_router = APIRouter(tags=["studio"], include_in_schema=False)


class Refused(Exception):
    """A studio request refused (signed out, no CSRF token): a page for a browser, JSON for the script."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def refused(request: Request, err: Refused) -> Response:
    """The answer to a :class:`Refused`: the studio's script asks for JSON, a plain form gets a page."""
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"detail": str(err)}, err.status)
    return signed_out(request, str(err), err.status)


def _service(request: Request) -> ImagineService:
    return request.app.state.service


def _secure(request: Request) -> bool:
    return str(request.app.state.settings.public_url).startswith("https://")


async def page_session(request: Request) -> WebSession | None:
    """The live session of this browser, or None (signed out)."""
    cookie = request.cookies.get(COOKIE)
    return await _service(request).web_session(cookie) if cookie else None


async def session(request: Request) -> WebSession:
    """FastAPI dependency of the studio's JSON routes: the session, or 401 saying how to sign in."""
    found = await page_session(request)
    if found is None:
        raise Refused(401, "You are signed out. Send /web in a private chat with the bot for a sign-in link.")
    return found


async def check_csrf(request: Request, found: Annotated[WebSession, Depends(session)]) -> WebSession:
    """FastAPI dependency of state-changing routes: the session, if the request carries its CSRF token."""
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        sent = str((await request.form()).get("csrf", ""))
    if not sent or not hmac.compare_digest(sent.encode(), found.csrf.encode()):
        raise Refused(403, "This request lacks this page's security token; reload the page and try again.")
    return found


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def signed_out(request: Request, message: str = "", status: int = 401) -> HTMLResponse:
    """The page a signed-out browser sees instead of the studio."""
    return render(request, "signin.html", {"error": message, "name": None, "session": None}, status)


@signin_router.get("/signin/{token}", response_class=HTMLResponse)
async def signin_page(token: str, request: Request) -> HTMLResponse:
    """Whose account the link signs in to, and a button to go ahead (the link is not used yet)."""
    name = await _service(request).web_signin_name(token)
    if name is None:
        return signed_out(request, USED, 410)
    nonce = secrets.token_urlsafe(16)
    response = render(request, "signin.html", {"name": name, "token": token, "nonce": nonce, "error": "",
                                               "session": None})
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in this page's address
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict",
                        secure=_secure(request), path="/signin")
    return response


@signin_router.post("/signin/{token}")
async def signin(token: str, request: Request) -> Response:
    """Use the link: a new session (cookie), then the studio."""
    form = await request.form()
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(str(form.get("nonce", "")).encode(), nonce.encode()):
        return signed_out(request, "Open the sign-in link from the chat again, then press Sign in.", 403)
    started = await _service(request).web_sign_in(token, request.headers.get("user-agent", ""))
    if started is None:
        return signed_out(request, USED, 410)
    cookie, _ = started
    response = RedirectResponse("/studio", status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=SESSION_AGE, httponly=True, samesite="lax",
                        secure=_secure(request), path="/")
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@signin_router.post("/signout")
async def signout(request: Request, found: Annotated[WebSession, Depends(check_csrf)]) -> Response:
    """End this browser's session."""
    await _service(request).end_web_session(found.who, found.id)
    response = RedirectResponse("/signed-out", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@signin_router.get("/signed-out", response_class=HTMLResponse)
async def signed_out_page(request: Request) -> HTMLResponse:
    return signed_out(request, "You are signed out.", 200)


@signin_router.get("/sessions", response_class=HTMLResponse)
async def sessions_page(request: Request) -> HTMLResponse:
    """Where this account is signed in, each with an End button."""
    found = await page_session(request)
    if found is None:
        return signed_out(request)
    listed = await _service(request).web_sessions(found.who)
    return render(request, "sessions.html", {"session": found, "sessions": listed})


@signin_router.post("/sessions/{session_id}/end")
async def end_session(session_id: int, request: Request,
                      found: Annotated[WebSession, Depends(check_csrf)]) -> Response:
    """End one of your sessions (this one signs you out)."""
    try:
        await _service(request).end_web_session(found.who, session_id)
    except NotFound as err:
        raise Refused(404, str(err)) from None
    return RedirectResponse("/signed-out" if session_id == found.id else "/sessions", status_code=303)

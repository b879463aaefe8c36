"""Web studio sign-in: ``/web`` in a private chat gives a one-time link that starts a browser session.

The link (valid :data:`SIGNIN_VALID`, used once) and the session's cookie token are stored only
as hashes (:mod:`storage.web_sessions`). A session acts as the chat account that asked for the
link (linked identities included), so quota, history, ratings and settings are the same ones.
Its CSRF token comes back with every state-changing request. ``/forget`` ends every session of
the account (:meth:`SessionsPart.end_web_sessions_of`, one of the context's ``session_enders``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from bot.service.context import ServiceContext
from bot.service.tickets import NotAllowed, NotFound, Who
from storage import Database, links, users
from storage import web_sessions as sessions
from storage.clock import from_text, utcnow

__all__ = ["SESSION_VALID", "SIGNIN_VALID", "WEB_OFF", "SessionsPart", "WebSession", "operator_web_link", "signin_url"]

logger = logging.getLogger(__name__)

SIGNIN_VALID = timedelta(minutes=10)
SESSION_VALID = timedelta(days=30)
TOUCH_EVERY = timedelta(minutes=1)  # ``last_seen_at`` is written at most this often per session


@dataclass(frozen=True)
class WebSession:
    """A live browser session: who it acts as, its id (for the list) and its CSRF token."""

    id: int
    who: Who
    csrf: str
    agent: str
    created_at: str
    last_seen_at: str


WEB_OFF = ("The web studio is off on this bot, so there is no page to sign in to. Its operator can turn "
           "it on with a [web] section (enabled = true) in the config.")


def signin_url(public_url: str, token: str) -> str:
    """The sign-in link for ``token`` (a path alone when no public address is configured)."""
    return f"{public_url.rstrip('/')}/signin/{token}"


class SessionsPart(ServiceContext):
    """Sign-in links, browser sessions, and ending them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.session_enders.append(self.end_web_sessions_of)  # /forget ends the account's sessions

    async def web_signin_link(self, who: Who) -> str:
        """A one-time sign-in link to the web studio for the caller's account (10 minutes);
        NotAllowed saying so when the web front end is off (no studio to sign in to)."""
        if not self.config.web_enabled:
            raise NotAllowed(WEB_OFF)
        user = await self._user(who)
        token = await sessions.issue_signin(self.db, user.id, self.clock(), SIGNIN_VALID)
        logger.info("web sign-in link issued for %s", who.key)  # never the token
        return signin_url(self.config.web_url or self.config.public_url, token)

    async def web_signin_name(self, token: str) -> str | None:
        """The display name a live sign-in link signs in as (not using it); None when used or expired."""
        user_id = await sessions.peek_signin(self.db, token, self.clock())
        user = None if user_id is None else await users.get(self.db, user_id)
        return None if user is None else (user.display_name or user.platform_user_id)

    async def web_sign_in(self, token: str, agent: str = "") -> tuple[str, WebSession] | None:
        """Use a sign-in link: (the new session's cookie token, the session); None when it is used,
        expired or unknown."""
        now = self.clock()
        async with self.db.transaction() as tx:
            user_id = await sessions.claim_signin(tx, token, now)
            if user_id is None:
                return None
            cookie, row = await sessions.create(tx, user_id, agent, now, SESSION_VALID)
        session = await self._session(row)
        if session is None:
            return None
        logger.info("web session %d started for %s", row.id, session.who.key)
        return cookie, session

    async def web_session(self, cookie: str) -> WebSession | None:
        """The live session of a cookie token, or None (ended, expired, unknown)."""
        now = self.clock()
        row = await sessions.find(self.db, cookie, now)
        if row is None:
            return None
        if now - from_text(row.last_seen_at) >= TOUCH_EVERY:
            await sessions.touch(self.db, row.id, now)  # one small write a minute, not one a request
        return await self._session(row)

    async def web_sessions(self, who: Who) -> list[WebSession]:
        """The caller's live browser sessions, newest first."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return []
        found = [await self._session(r) for r in await sessions.for_user(self.db, user.id, self.clock())]
        return [s for s in found if s is not None]

    async def end_web_session(self, who: Who, session_id: int) -> None:
        """End one of the caller's sessions (NotFound for another's or one already ended)."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None or not await sessions.end(self.db, session_id, user.id, self.clock()):
            raise NotFound(f"You have no live web session {session_id}.")
        logger.info("web session %d ended by %s", session_id, who.key)

    async def end_web_sessions_of(self, user_id: int) -> int:
        """End every session of an account (``/forget``); how many were live."""
        return await sessions.end_all(self.db, user_id, self.clock())

    async def end_web_sessions(self, who: Who) -> int:
        """End every session of the caller's account; how many were live."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        return 0 if user is None else await self.end_web_sessions_of(user.id)

    async def _session(self, row: sessions.Session) -> WebSession | None:
        account = await links.account_of(self.db, row.user_id)
        user = await users.get(self.db, account)
        if user is None or user.blocked:
            return None
        who = Who(user.platform, user.platform_user_id, user.display_name)
        return WebSession(row.id, who, row.csrf, row.agent, row.created_at, row.last_seen_at)


# -- for operators (``imagine-bot web-link``): straight on the database, no queue or model needed ------


async def operator_web_link(db: Database, user: str, public_url: str) -> str:
    """A one-time sign-in link for ``user`` ("platform:user_id"), made on the database directly."""
    platform, sep, user_id = user.partition(":")
    if not sep or not platform or not user_id:
        raise ValueError(f'a user is "platform:user_id", like "telegram:1234", not {user!r}')
    account = await links.account_of(db, await links.own_row(db, platform, user_id))
    token = await sessions.issue_signin(db, account, utcnow(), SIGNIN_VALID)
    return signin_url(public_url, token)

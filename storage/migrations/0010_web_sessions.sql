-- 0010: the web studio — one-time sign-in links made in a chat, and the browser sessions they start.

-- /web: a one-time sign-in link (stored hashed), valid 10 minutes, used once.
CREATE TABLE web_signins (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT
) WITHOUT ROWID;

-- A browser session bound to an account: the cookie's token is stored hashed; the CSRF token
-- is sent back by every state-changing request of that session.
CREATE TABLE web_sessions (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    csrf         TEXT    NOT NULL,
    agent        TEXT    NOT NULL DEFAULT '',  -- the browser's User-Agent, to recognise it in a list
    created_at   TEXT    NOT NULL,
    last_seen_at TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    ended_at     TEXT
);

CREATE INDEX web_sessions_user ON web_sessions (user_id);

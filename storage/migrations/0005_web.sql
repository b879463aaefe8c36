-- 0005: the web front end — API keys, shared images (the public gallery), one account across
-- platforms, and a row the health check writes to prove the database is writable.

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prefix       TEXT    NOT NULL,            -- the first characters, to recognise a key in a list
    hash         TEXT    NOT NULL UNIQUE,     -- sha256 of the whole key; the key itself is never stored
    label        TEXT    NOT NULL DEFAULT '',
    created_at   TEXT    NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
);

CREATE INDEX api_keys_user ON api_keys (user_id);

-- A shared image is public at /i/<id>; nothing else is. id is random (not the image's row id).
CREATE TABLE shares (
    id         TEXT    PRIMARY KEY,
    image_id   INTEGER NOT NULL UNIQUE REFERENCES images (id) ON DELETE CASCADE,
    shared_by  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL
);

CREATE INDEX shares_created ON shares (created_at DESC);

-- /link: a one-time code (stored hashed) that joins another platform identity to an account.
CREATE TABLE link_codes (
    code_hash  TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT
) WITHOUT ROWID;

-- user_id (one platform identity) acts as account_id (the users row that holds the account).
CREATE TABLE account_links (
    user_id    INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    linked_at  TEXT    NOT NULL,
    CHECK (user_id <> account_id)
);

CREATE INDEX account_links_account ON account_links (account_id);

CREATE TABLE health_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);

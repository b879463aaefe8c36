-- 0002: moderation — the decision log, per-user standing (strikes, cooldown, block), appeals,
-- and per-scope image policies. Users are keyed by "platform:user_id" text, not users.id, so
-- that /forget (which deletes the users row) does not wipe strikes or a block.
-- No prompt text is stored: only a short hash of the normalized prompt.

CREATE TABLE moderation_log (
    id          INTEGER PRIMARY KEY,
    user_key    TEXT    NOT NULL,             -- "platform:user_id" (the admin's for admin actions)
    subject     TEXT,                         -- the user an admin action is about
    scope       TEXT    NOT NULL DEFAULT '*', -- "discord:guild:<id>", "telegram:chat:<id>", "*"
    kind        TEXT    NOT NULL CHECK (kind IN ('prompt', 'image', 'request', 'strike', 'appeal', 'admin')),
    rule        TEXT,                         -- category or rule name
    action      TEXT    NOT NULL,             -- blocked, spoiler, refused, cooldown, banned, opened, lifted, …
    strike      INTEGER NOT NULL DEFAULT 0 CHECK (strike IN (0, 1)),  -- counts toward escalation
    prompt_hash TEXT,                         -- first 16 hex of sha256(normalized prompt)
    job_id      TEXT,
    created_at  TEXT    NOT NULL
);

CREATE INDEX moderation_log_user ON moderation_log (user_key, created_at);
CREATE INDEX moderation_log_time ON moderation_log (created_at);

CREATE TABLE moderation_users (
    user_key        TEXT PRIMARY KEY,
    strikes_since   TEXT,                     -- strikes before this (a lift) no longer count
    cooldown_until  TEXT,
    banned          INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1)),
    last_request_at TEXT
) WITHOUT ROWID;

CREATE TABLE moderation_appeals (
    id          INTEGER PRIMARY KEY,
    user_key    TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'lifted', 'rejected')),
    message     TEXT    NOT NULL DEFAULT '',  -- what the user wrote (truncated)
    strikes     INTEGER NOT NULL DEFAULT 0,   -- strikes counted when it was opened
    state       TEXT    NOT NULL DEFAULT '',  -- 'banned', 'cooldown' or '' when opened
    created_at  TEXT    NOT NULL,
    resolved_at TEXT,
    resolved_by TEXT
);

CREATE UNIQUE INDEX moderation_appeals_one_open ON moderation_appeals (user_key) WHERE status = 'open';

CREATE TABLE moderation_policies (
    scope      TEXT PRIMARY KEY,
    explicit   TEXT NOT NULL CHECK (explicit IN ('block', 'spoiler')),
    allow      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(allow)),  -- prompt categories allowed here
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

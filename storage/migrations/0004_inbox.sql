-- 0004: acknowledge only what is stored.
-- inbox: raw requests from a platform (a Telegram update, a Discord interaction), written before
-- the platform is told "got it"; handled_at is set once the request's outcome is committed.
-- After a crash, rows without handled_at are processed again.
-- jobs.origin: the inbox key a job came from (UNIQUE), so processing a request twice can never
-- create, or charge, a second job.

CREATE TABLE inbox (
    platform    TEXT NOT NULL,
    key         TEXT NOT NULL,            -- Telegram update_id, Discord interaction id, …
    payload     TEXT NOT NULL CHECK (json_valid(payload)),
    received_at TEXT NOT NULL,
    handled_at  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, key)
) WITHOUT ROWID;

CREATE INDEX inbox_unhandled ON inbox (platform, received_at) WHERE handled_at IS NULL;

ALTER TABLE jobs ADD COLUMN origin TEXT;

CREATE UNIQUE INDEX jobs_origin ON jobs (origin) WHERE origin IS NOT NULL;

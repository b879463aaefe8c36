-- 0001: users, quotas, jobs, images, ratings, model versions.
-- Times are UTC ISO-8601 text with microseconds (storage/clock.py), so they sort as text.
-- JSON columns hold plain objects written by the repositories; json_valid guards them.

CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    platform         TEXT    NOT NULL,
    platform_user_id TEXT    NOT NULL,
    display_name     TEXT    NOT NULL DEFAULT '',
    settings         TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    blocked          INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
    dm_closed        INTEGER NOT NULL DEFAULT 0 CHECK (dm_closed IN (0, 1)),
    created_at       TEXT    NOT NULL,
    UNIQUE (platform, platform_user_id)
);

-- One row per user and quota window; window_start is the window's start as UTC text.
CREATE TABLE quota_usage (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    window_start TEXT    NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (user_id, window_start)
) WITHOUT ROWID;

CREATE TABLE quota_overrides (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    daily_limit INTEGER NOT NULL CHECK (daily_limit >= 0)
);

CREATE TABLE jobs (
    id              TEXT    PRIMARY KEY,                       -- uuid4 hex
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    request         TEXT    NOT NULL CHECK (json_valid(request)),  -- canonical request dict
    prompt          TEXT    GENERATED ALWAYS AS (json_extract(request, '$.prompt')) VIRTUAL,
    request_key     TEXT    NOT NULL,                          -- hash of request + model, for dedupe
    model_id        TEXT    NOT NULL,
    checkpoint_hash TEXT,
    status          TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'delivered', 'failed', 'cancelled')),
    charged         INTEGER NOT NULL DEFAULT 0 CHECK (charged >= 0),  -- images charged to quota
    quota_window    TEXT,                                      -- quota_usage.window_start charged
    refunded        INTEGER NOT NULL DEFAULT 0 CHECK (refunded IN (0, 1)),
    priority        INTEGER NOT NULL DEFAULT 0,
    target          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(target)),  -- delivery refs
    error           TEXT,
    created_at      TEXT    NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    delivered_at    TEXT
);

CREATE INDEX jobs_user_history ON jobs (user_id, created_at DESC);
CREATE INDEX jobs_status ON jobs (status, created_at);
CREATE INDEX jobs_request_key ON jobs (request_key);

CREATE TABLE images (
    id         INTEGER PRIMARY KEY,
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    seed       INTEGER NOT NULL,
    path       TEXT    NOT NULL,               -- relative to the image store root
    sha256     TEXT    NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    safety     TEXT    NOT NULL DEFAULT 'ok',
    created_at TEXT    NOT NULL,
    UNIQUE (job_id, idx)
);

CREATE INDEX images_path ON images (path);
CREATE INDEX images_created ON images (created_at);

CREATE TABLE ratings (
    image_id   INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stars      INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    source     TEXT    NOT NULL CHECK (source IN ('reaction', 'button', 'command')),
    comment    TEXT,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (image_id, user_id)
) WITHOUT ROWID;

CREATE INDEX ratings_user ON ratings (user_id);

CREATE TABLE model_versions (
    model_id        TEXT NOT NULL,
    checkpoint_hash TEXT NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    PRIMARY KEY (model_id, checkpoint_hash)
) WITHOUT ROWID;

-- 0011: the model catalogue's live rollout shares (issue 25). `imagine-bot models promote NAME 0.3`
-- (or /models promote in chat) writes a row; the bot reads it on each request that names no model,
-- so a share changes without a restart. A row wins over [models.NAME] traffic in the config.

CREATE TABLE model_traffic (
    name       TEXT PRIMARY KEY,                                -- the [models.NAME] it applies to
    traffic    REAL NOT NULL CHECK (traffic >= 0 AND traffic <= 1),
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL DEFAULT ''                         -- "cli" or the admin's platform:id
) WITHOUT ROWID;

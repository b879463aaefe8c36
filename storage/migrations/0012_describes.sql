-- 0012: /describe calls (issue 24). Free, but limited per user per hour: the limit counts these
-- rows, so it holds across a restart and between processes. What was shown (the caption and the
-- suggestions; NULL when the caption was refused) is the user's history of /describe: in /export,
-- removed by /forget. The picture itself is not kept (only its sha256).

CREATE TABLE describes (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    image_sha   TEXT NOT NULL,
    caption     TEXT,                   -- NULL: no words, or refused by the prompt filter (not shown)
    suggestions TEXT NOT NULL DEFAULT '[]'  -- JSON list of the prompts shown
);
CREATE INDEX describes_by_user ON describes (user_id, created_at);

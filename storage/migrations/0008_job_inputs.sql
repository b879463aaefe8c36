-- 0008: the image a job starts from when a user sent one (img2img from an upload). The file is
-- in the image store like results, so history shows it, /forget deletes it and a restart runs
-- the job with it again.

CREATE TABLE job_inputs (
    job_id     TEXT    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    path       TEXT    NOT NULL,            -- relative to the image store (content-addressed)
    sha256     TEXT    NOT NULL,
    width      INTEGER NOT NULL,            -- the fitted image the pipeline starts from
    height     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    source     TEXT    NOT NULL DEFAULT 'upload',  -- upload (a user's file) or image (one of ours)
    created_at TEXT    NOT NULL
);

CREATE INDEX job_inputs_path ON job_inputs (path);

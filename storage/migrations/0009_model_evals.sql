-- 0010: evaluation figures per model version (imagine-bot eval): one row per run, so a version's
-- figures can be followed over time. Metrics absent from a run (no --refs: no FID/KID/precision/
-- recall) are NULL. Deleting a version deletes its evaluations.

CREATE TABLE model_evals (
    id              INTEGER PRIMARY KEY,
    model_id        TEXT    NOT NULL,
    checkpoint_hash TEXT    NOT NULL,
    prompt_set      TEXT    NOT NULL,            -- "partiprompts-mini" or the prompts file's name
    n               INTEGER NOT NULL,            -- images generated and measured
    seed            INTEGER NOT NULL,            -- image i used seed + i
    extractor       TEXT    NOT NULL,            -- "tiny" or "inception+clip": figures compare only within one
    fid             REAL,
    kid             REAL,
    kid_std         REAL,
    inception_score REAL,
    inception_std   REAL,
    clip_score      REAL,
    precision       REAL,
    recall          REAL,
    report          TEXT    NOT NULL DEFAULT '', -- path of the JSON report
    created_at      TEXT    NOT NULL,
    FOREIGN KEY (model_id, checkpoint_hash) REFERENCES model_versions (model_id, checkpoint_hash)
        ON DELETE CASCADE
);

CREATE INDEX model_evals_version ON model_evals (model_id, checkpoint_hash, created_at);

-- 0003: one indexed map from sent messages to jobs, for every front end. Replaces the refs that
-- lived in jobs.target (Discord: target.messages {id: index}; Telegram: target["tg<id>"] = chat,
-- target["tgi<id>"] = index) and were found with a json_extract scan of every job.
-- image_index NULL: the message shows every image of the job (a grid, or a keyboard message).

CREATE TABLE job_messages (
    platform    TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,   -- '' where message ids are unique on their own (Discord)
    message_id  TEXT    NOT NULL,
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    image_index INTEGER CHECK (image_index IS NULL OR image_index >= 0),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (platform, chat_id, message_id)
) WITHOUT ROWID;

CREATE INDEX job_messages_job ON job_messages (job_id);

-- Discord refs already stored: target.platform = 'discord', target.messages = {"<id>": index or -1}
INSERT OR REPLACE INTO job_messages (platform, chat_id, message_id, job_id, image_index, created_at)
SELECT 'discord', '', m.key, jobs.id, CASE WHEN m.value < 0 THEN NULL ELSE m.value END, jobs.created_at
FROM jobs, json_each(jobs.target, '$.messages') AS m
WHERE json_extract(jobs.target, '$.platform') = 'discord' AND json_type(jobs.target, '$.messages') = 'object'
ORDER BY jobs.created_at, jobs.rowid;

-- Telegram refs already stored: target["tg<id>"] = chat id, target["tgi<id>"] = index or -1
INSERT OR REPLACE INTO job_messages (platform, chat_id, message_id, job_id, image_index, created_at)
SELECT 'telegram', CAST(t.value AS TEXT), substr(t.key, 3), jobs.id,
       CASE WHEN coalesce(json_extract(jobs.target, '$."tgi' || substr(t.key, 3) || '"'), -1) < 0 THEN NULL
            ELSE json_extract(jobs.target, '$."tgi' || substr(t.key, 3) || '"') END,
       jobs.created_at
FROM jobs, json_each(jobs.target) AS t
WHERE t.key GLOB 'tg[0-9]*'
ORDER BY jobs.created_at, jobs.rowid;

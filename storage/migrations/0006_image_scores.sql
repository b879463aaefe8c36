-- 0006: a CLIP score per image ([eval] clip_model), written after the image is stored.

CREATE TABLE image_scores (
    image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    clip     REAL    NOT NULL,            -- 100 * max(cosine(image, prompt), 0)
    model    TEXT    NOT NULL             -- the CLIP model that gave it
);

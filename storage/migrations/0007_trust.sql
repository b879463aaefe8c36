-- 0007: a failure is told exactly once, like a result. `told` = 1 once the job's outcome (its
-- images, or the failure/cancel message) was shown to the user. Rows from before this version
-- count as told (nothing can tell them now); new rows start at 0 (storage/jobs.py create).
-- Failed/cancelled rows never told are found after a restart through the partial index.

ALTER TABLE jobs ADD COLUMN told INTEGER NOT NULL DEFAULT 1 CHECK (told IN (0, 1));

CREATE INDEX jobs_untold ON jobs (finished_at) WHERE told = 0 AND status IN ('failed', 'cancelled');

-- failed/cancelled but still charged (a crash between two transactions of an older version):
-- found by the start-up repair pass (storage/quotas.py repair_unrefunded)
CREATE INDEX jobs_unrefunded ON jobs (status) WHERE refunded = 0 AND charged > 0
    AND status IN ('failed', 'cancelled');

-- The job's latest claim lives on its row: `claim_id` is the attempt's id
-- (what every worker report is fenced by), `claimed_at` when it began and
-- `claimed_by` the worker. They keep their values after the attempt ends,
-- so the row holds the latest attempt: a running one, or the one that
-- ended the job (succeeded or failed). An attempt row is written once,
-- when an attempt ends that is not the job's last word (a retry, a lost or
-- released attempt, one that printed output), or before a user's retry or
-- cancel moves the job on.
ALTER TABLE research_jobs ADD COLUMN claim_id TEXT CHECK (claim_id IS NULL OR length(claim_id) = 36);
ALTER TABLE research_jobs ADD COLUMN claimed_at TEXT;
ALTER TABLE research_jobs ADD COLUMN claimed_by TEXT;

-- Running jobs of a database made before: their open attempt row becomes
-- their claim (a running job without one gets a fresh id, so its lost
-- attempt can still be recorded).
UPDATE research_jobs
SET claim_id = coalesce(
        (SELECT a.id FROM job_attempts AS a
         WHERE a.job_id = research_jobs.id AND a.finished_at IS NULL
         ORDER BY a.started_at DESC LIMIT 1),
        lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
              || substr(hex(randomblob(2)), 2) || '-a'
              || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    claimed_at = coalesce(
        (SELECT a.started_at FROM job_attempts AS a
         WHERE a.job_id = research_jobs.id AND a.finished_at IS NULL
         ORDER BY a.started_at DESC LIMIT 1),
        locked_at),
    claimed_by = locked_by
WHERE status = 'running';
DELETE FROM job_attempts WHERE finished_at IS NULL;


-- What an operator needs to see: live serve processes, manual actions on
-- jobs, and what a handler printed.

-- One row per serve process working the queue: written when its pool
-- starts and at its heartbeats, deleted when it stops. `status` lists them
-- ("is anything working my queue?"); `running` and `claimed_ahead` let it
-- tell jobs whose handler runs from claims prefetched for busy workers.
CREATE TABLE serves (
    worker        TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL CHECK (pid > 0),
    workers       INTEGER NOT NULL CHECK (workers > 0),
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    running       INTEGER NOT NULL DEFAULT 0 CHECK (running >= 0),
    claimed_ahead INTEGER NOT NULL DEFAULT 0 CHECK (claimed_ahead >= 0)
) WITHOUT ROWID;

-- Manual actions on a job (retry, cancel, release), shown by `job show`
-- beside its attempts.
CREATE TABLE job_events (
    job_id    TEXT NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    id        TEXT NOT NULL CHECK (length(id) = 36),
    tenant_id TEXT NOT NULL,
    at        TEXT NOT NULL,
    action    TEXT NOT NULL CHECK (action IN ('retry', 'cancel', 'release')),
    detail    TEXT,
    PRIMARY KEY (job_id, id)
) WITHOUT ROWID;

-- The tail of what an external handler wrote to stdout in this attempt.
ALTER TABLE job_attempts ADD COLUMN output TEXT;

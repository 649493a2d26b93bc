-- bundleq schema, version 1. Released migrations are never edited: add a new
-- V<n>__<name>.sql instead.
--
-- Conventions: ids are canonical lowercase UUID text (new ones UUIDv7);
-- times are fixed-width UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' so that text
-- order is time order; JSON is text that json_valid() accepts.

-- Facts about this home, such as its default tenant.
CREATE TABLE bundleq_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per accepted run bundle.
CREATE TABLE research_runs (
    tenant_id     TEXT NOT NULL CHECK (length(tenant_id) = 36),
    id            TEXT NOT NULL CHECK (length(id) = 36),
    title         TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL CHECK (length(bundle_sha256) = 64),
    bundle_json   TEXT NOT NULL CHECK (json_valid(bundle_json)),
    origin        TEXT NOT NULL CHECK (origin IN ('submit', 'inbox', 'api')),
    origin_name   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, bundle_sha256)
);

-- The seed's research_jobs, column for column.
CREATE TABLE research_jobs (
    id           TEXT PRIMARY KEY CHECK (length(id) = 36),
    tenant_id    TEXT NOT NULL CHECK (length(tenant_id) = 36),
    run_id       TEXT NOT NULL CHECK (length(run_id) = 36),
    job_type     TEXT NOT NULL CHECK (length(job_type) BETWEEN 1 AND 128),
    status       TEXT NOT NULL
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL CHECK (attempts >= 0 AND attempts <= max_attempts),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    retry_at     TEXT CHECK (retry_at IS NULL OR status = 'queued'),
    locked_at    TEXT,
    locked_by    TEXT,
    last_error   TEXT,
    payload_json TEXT NOT NULL CHECK (json_valid(payload_json)),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    -- A row holds a lock exactly when it is running.
    CHECK ((status = 'running') = (locked_at IS NOT NULL)),
    CHECK ((status = 'running') = (locked_by IS NOT NULL)),
    CHECK (status <> 'running' OR attempts >= 1)
);

-- The claim walks these three partial indexes, each in the order it needs,
-- so its cost does not grow with the number of queued jobs:
--   queued and never failed, oldest first;
CREATE INDEX research_jobs_ready ON research_jobs (created_at)
    WHERE status = 'queued' AND retry_at IS NULL;
--   queued waiting out a backoff, soonest due first;
CREATE INDEX research_jobs_retry ON research_jobs (retry_at)
    WHERE status = 'queued' AND retry_at IS NOT NULL;
--   running, oldest lock first (rescue of lost workers, and heartbeats).
CREATE INDEX research_jobs_running ON research_jobs (locked_at)
    WHERE status = 'running';
-- Listing for one tenant, newest first. Deliberately without status: an
-- index on a column that every state change updates costs every claim and
-- every report a delete and an insert; listings filter on status instead.
CREATE INDEX research_jobs_tenant ON research_jobs (tenant_id, created_at);
CREATE INDEX research_jobs_run ON research_jobs (tenant_id, run_id);

-- One row per claim of a job: who ran which attempt, when, and how it ended.
-- An open row (finished_at NULL) is the claim a worker must still hold for
-- its report to count.
-- Keyed by (job_id, id) without a rowid: one B-tree serves the fence
-- lookup, the history listing (ids are UUIDv7, so time-ordered) and the
-- cascade from research_jobs.
CREATE TABLE job_attempts (
    job_id      TEXT NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    id          TEXT NOT NULL CHECK (length(id) = 36),
    tenant_id   TEXT NOT NULL,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    worker      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'retry', 'failed', 'lost', 'released')),
    error       TEXT,
    CHECK ((finished_at IS NULL) = (outcome IS NULL)),
    PRIMARY KEY (job_id, id)
) WITHOUT ROWID;

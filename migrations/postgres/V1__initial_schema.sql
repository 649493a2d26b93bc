-- bundleq schema on PostgreSQL, version 1. The same versions and names as
-- migrations/sqlite/ (a test compares the two lists); each version brings the
-- same tables, in PostgreSQL's own types. Released migrations are never
-- edited: add a new V<n>__<name>.sql to both folders instead.
--
-- Conventions: ids are uuid (new ones UUIDv7), times timestamptz, a job's
-- payload jsonb; a bundle is text, because it must read back as the bytes
-- received.

-- Facts about this database, such as its default tenant.
CREATE TABLE bundleq_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- One row per accepted run bundle.
CREATE TABLE research_runs (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    title         text NOT NULL,
    bundle_sha256 character varying NOT NULL CHECK (length(bundle_sha256) = 64),
    bundle_json   text NOT NULL,
    origin        character varying NOT NULL CHECK (origin IN ('submit', 'inbox', 'api')),
    origin_name   text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, bundle_sha256)
);

-- The seed's research_jobs, column for column and type for type.
CREATE TABLE research_jobs (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    run_id       uuid NOT NULL,
    job_type     character varying NOT NULL CHECK (length(job_type) BETWEEN 1 AND 128),
    status       character varying NOT NULL
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     integer NOT NULL CHECK (attempts >= 0 AND attempts <= max_attempts),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    retry_at     timestamptz CHECK (retry_at IS NULL OR status = 'queued'),
    locked_at    timestamptz,
    locked_by    character varying,
    last_error   text,
    payload_json jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- A row holds a lock exactly when it is running.
    CHECK ((status = 'running') = (locked_at IS NOT NULL)),
    CHECK ((status = 'running') = (locked_by IS NOT NULL)),
    CHECK (status <> 'running' OR attempts >= 1)
);

-- The claim's three walks, each a partial index in the order it needs:
-- queued and never failed, oldest first;
CREATE INDEX research_jobs_ready ON research_jobs (created_at)
    WHERE status = 'queued' AND retry_at IS NULL;
-- queued waiting out a backoff (or scheduled), soonest due first;
CREATE INDEX research_jobs_retry ON research_jobs (retry_at)
    WHERE status = 'queued' AND retry_at IS NOT NULL;
-- running, oldest lock first (rescue of lost workers).
CREATE INDEX research_jobs_running ON research_jobs (locked_at)
    WHERE status = 'running';
-- Listings for one tenant, newest first, and the jobs of one run.
CREATE INDEX research_jobs_tenant ON research_jobs (tenant_id, created_at);
CREATE INDEX research_jobs_run ON research_jobs (tenant_id, run_id);

-- One row per ended attempt of a job that is not the job's last word (see
-- V5): who ran it, when, and how it ended.
CREATE TABLE job_attempts (
    job_id      uuid NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    tenant_id   uuid NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    worker      character varying NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     character varying
                CHECK (outcome IN ('succeeded', 'retry', 'failed', 'lost', 'released')),
    error       text,
    CHECK ((finished_at IS NULL) = (outcome IS NULL)),
    PRIMARY KEY (job_id, id)
);

-- What an operator needs to see: live serve processes (of every host working
-- the database), manual actions on jobs, and what a handler printed.

CREATE TABLE serves (
    worker        text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL CHECK (pid > 0),
    workers       integer NOT NULL CHECK (workers > 0),
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    running       integer NOT NULL DEFAULT 0 CHECK (running >= 0),
    claimed_ahead integer NOT NULL DEFAULT 0 CHECK (claimed_ahead >= 0)
);

CREATE TABLE job_events (
    job_id    uuid NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    id        uuid NOT NULL,
    tenant_id uuid NOT NULL,
    at        timestamptz NOT NULL,
    action    character varying NOT NULL CHECK (action IN ('retry', 'cancel', 'release')),
    detail    text,
    PRIMARY KEY (job_id, id)
);

ALTER TABLE job_attempts ADD COLUMN output text;

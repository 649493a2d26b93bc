-- Job types whose claims are paused; '*' pauses every type.
CREATE TABLE research_paused (
    job_type  character varying PRIMARY KEY,
    paused_at timestamptz NOT NULL
);

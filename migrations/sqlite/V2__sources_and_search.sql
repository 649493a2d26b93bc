-- Sources of processed runs, and their text indexed for offline search.

-- One row per source of a run, written by process_bundle in the same
-- transaction that marks its job succeeded.
CREATE TABLE research_sources (
    tenant_id    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    idx          INTEGER NOT NULL CHECK (idx >= 0),
    uri          TEXT NOT NULL,
    title        TEXT,
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    media_type   TEXT,
    retrieved_at TEXT,
    -- Bytes kept under objects/ (NULL for a reference-only source).
    size         INTEGER CHECK (size IS NULL OR size >= 0),
    indexed      INTEGER NOT NULL CHECK (indexed IN (0, 1)),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id, idx),
    FOREIGN KEY (tenant_id, run_id) REFERENCES research_runs (tenant_id, id) ON DELETE CASCADE
);

-- Full-text index of source text (plus title and uri). rowid pairs with
-- research_sources.rowid.
CREATE VIRTUAL TABLE research_sources_fts USING fts5(
    title, uri, body,
    tenant_id UNINDEXED, run_id UNINDEXED, idx UNINDEXED,
    tokenize = 'porter unicode61'
);

-- Sources of processed runs, and their text indexed for offline search.

-- The text search configuration: words split on anything that is not a
-- letter or digit (the application replaces those with spaces before it
-- indexes or queries), accents removed, English stemming, no stopwords —
-- what SQLite's FTS5 `porter unicode61` tokenizer does. `unaccent` is a
-- trusted extension shipped with PostgreSQL; it lives in `public` so that
-- every schema's configuration can use it.
CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public;
CREATE TEXT SEARCH DICTIONARY bundleq_stem (TEMPLATE = snowball, Language = english);
CREATE TEXT SEARCH CONFIGURATION bundleq_search (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION bundleq_search
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword,
                      hword_part, hword_asciipart, hword_numpart
    WITH public.unaccent, bundleq_stem;

-- One row per source of a run, written by process_bundle in the same
-- transaction that marks its job succeeded. `search` holds title, uri and
-- body as one tsvector (fitted to tsvector's 1 MiB cap); `body` the text
-- snippets are cut from.
CREATE TABLE research_sources (
    tenant_id    uuid NOT NULL,
    run_id       uuid NOT NULL,
    idx          integer NOT NULL CHECK (idx >= 0),
    uri          text NOT NULL,
    title        text,
    sha256       character varying NOT NULL CHECK (length(sha256) = 64),
    media_type   text,
    retrieved_at timestamptz,
    size         bigint CHECK (size IS NULL OR size >= 0),
    indexed      boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    body         text,
    search       tsvector NOT NULL,
    PRIMARY KEY (tenant_id, run_id, idx),
    FOREIGN KEY (tenant_id, run_id) REFERENCES research_runs (tenant_id, id) ON DELETE CASCADE
);

-- Big texts are indexed apart from the writer: a worker indexes them in a
-- search shard, a file of its own beside the database (`<db>.search<N>`,
-- holding the text and an FTS5 index over it), which no other thread is
-- writing at the time, so workers index in parallel while the one writer
-- records only the source rows.

-- Every shard a worker made, so that readers know which files to search
-- and copies know which files to take.
CREATE TABLE research_search_shards (
    shard      INTEGER PRIMARY KEY CHECK (shard >= 0),
    created_at TEXT NOT NULL
);

-- The shard holding a source's text and index row; NULL when the source
-- is in `research_sources_fts` (small texts, and everything indexed before
-- this version).
ALTER TABLE research_sources ADD COLUMN search_shard INTEGER
    CHECK (search_shard IS NULL OR search_shard >= 0);

-- The database's own index reads only its own rows' content.
DROP VIEW research_sources_indexed;
CREATE VIEW research_sources_indexed AS
SELECT s.rowid AS source_rowid,
       coalesce(s.title, '') AS title,
       s.uri AS uri,
       coalesce(t.body, CASE WHEN s.indexed THEN CAST(o.bytes AS TEXT) END, '') AS body
FROM research_sources AS s
LEFT JOIN research_source_texts AS t ON t.source_rowid = s.rowid
LEFT JOIN objects AS o ON o.sha256 = unhex(s.sha256)
WHERE s.search_shard IS NULL;

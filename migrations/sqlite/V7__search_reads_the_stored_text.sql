-- The search index keeps no copy of the text it indexes: it is an FTS5
-- table with external content, read (for snippets, and to remove a row)
-- from `research_sources_indexed`, which takes each source's text from
-- where it is already kept: the source's object in the database, or, for
-- text whose object is a file (bigger than what the database keeps) or
-- indexed by an earlier release, `research_source_texts`.
CREATE TABLE research_source_texts (
    source_rowid INTEGER PRIMARY KEY,  -- research_sources.rowid
    body         TEXT NOT NULL
);

-- What earlier releases indexed stays searchable: its text moves here.
INSERT INTO research_source_texts (source_rowid, body)
SELECT rowid, body FROM research_sources_fts WHERE body <> '';

DROP TABLE research_sources_fts;

CREATE VIEW research_sources_indexed AS
SELECT s.rowid AS source_rowid,
       coalesce(s.title, '') AS title,
       s.uri AS uri,
       coalesce(t.body, CASE WHEN s.indexed THEN CAST(o.bytes AS TEXT) END, '') AS body
FROM research_sources AS s
LEFT JOIN research_source_texts AS t ON t.source_rowid = s.rowid
LEFT JOIN objects AS o ON o.sha256 = unhex(s.sha256);

-- rowid pairs with research_sources.rowid; which tenant and run a row
-- belongs to is read from there.
CREATE VIRTUAL TABLE research_sources_fts USING fts5(
    title, uri, body,
    content = 'research_sources_indexed',
    content_rowid = 'source_rowid',
    tokenize = 'porter unicode61'
);
INSERT INTO research_sources_fts (research_sources_fts) VALUES ('rebuild');

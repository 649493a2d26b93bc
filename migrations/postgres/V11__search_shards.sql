-- SQLite's V11 moves the indexing of big texts off its one writer into
-- search shards beside the database. PostgreSQL has no single writer: its
-- tsvector is written with the source row, as before, and nothing changes
-- here. The version exists so both backends keep the same list.
SELECT 1;

-- Source bytes live in the database on PostgreSQL, whatever their size, so
-- that every host working the queue reads the same objects: a job accepted
-- on one host is processed on another. An object is its chunks (1 MiB each,
-- in order) and one row in `objects`, written after its last chunk: an
-- object without its row is not there. Reads check the bytes against the
-- digest.
CREATE TABLE objects (
    sha256 bytea PRIMARY KEY CHECK (length(sha256) = 32),
    size   bigint NOT NULL CHECK (size >= 0),
    chunks integer NOT NULL CHECK (chunks >= 0)
);
CREATE TABLE object_chunks (
    sha256 bytea NOT NULL,
    seq    integer NOT NULL CHECK (seq >= 0),
    bytes  bytea NOT NULL,
    PRIMARY KEY (sha256, seq)
);

-- The text of inline sources is kept once, as its object (see
-- src/store/compact.rs).
ALTER TABLE research_runs ADD COLUMN bundle_holes text;

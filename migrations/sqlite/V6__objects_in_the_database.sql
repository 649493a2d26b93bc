-- Small source objects live in the database: a batch of accepted bundles
-- is made durable by one commit instead of one fsync per file, and a few
-- kilobytes of text no longer occupy a 4 KiB block of their own. Bigger
-- objects stay files under objects/ (the application decides which, by
-- size); objects stored as files by earlier releases stay where they are
-- and are read from there.
-- The digest is kept as its 32 bytes (`unhex` of the hex text used
-- everywhere else): half the key, in the table and in its index.
CREATE TABLE objects (
    sha256 BLOB PRIMARY KEY CHECK (typeof(sha256) = 'blob' AND length(sha256) = 32),
    bytes  BLOB NOT NULL
);

-- The text of an inline source is kept once, as its object: the stored
-- bundle JSON holds `null` in its place and `bundle_holes` lists where
-- (`[[byte offset, digest], …]`: the digest as the offset of its hex
-- digits in the stored JSON, or the digits themselves; NULL when nothing
-- was cut; see src/store/compact.rs). Filling the
-- holes gives back the bytes received, exactly.
ALTER TABLE research_runs ADD COLUMN bundle_holes TEXT;

-- What `bundleq verify` found when it last read each stored object (in the
-- database or under objects/) and hashed it: `ok` is 1 when the bytes
-- matched their digest. An object never checked has no row; a row whose
-- object is gone is harmless (it is removed with the object by a sweep).
-- The digest is kept as its 32 bytes, as in `objects`.
CREATE TABLE object_checks (
    sha256     BLOB PRIMARY KEY CHECK (typeof(sha256) = 'blob' AND length(sha256) = 32),
    checked_at TEXT NOT NULL,
    ok         INTEGER NOT NULL CHECK (ok IN (0, 1))
) WITHOUT ROWID;

-- What `bundleq verify` found when it last read each stored object and
-- hashed it: `ok` is true when the bytes matched their digest. An object
-- never checked has no row; a row whose object is gone is removed with the
-- object by a sweep.
CREATE TABLE object_checks (
    sha256     bytea PRIMARY KEY CHECK (length(sha256) = 32),
    checked_at timestamptz NOT NULL,
    ok         boolean NOT NULL
);

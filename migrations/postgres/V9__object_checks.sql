-- What `bundleq verify` found when it last read each stored object and
-- hashed it: `ok` is true when the bytes matched their digest. An object
-- never checked has no row; a row whose object is gone is removed with the
-- object by a sweep.
CREATE TABLE object_checks (
    sha256     bytea PRIMARY KEY CHECK (length(sha256) = 32),
    checked_at timestamptz NOT NULL,
    ok         boolean NOT NULL
);

-- When an object was last stored (or found already there by a writer about
-- to name it): a sweep of unreferenced objects keeps those stored in the
-- last hour, since a run on another host may be about to name them (hosts
-- share no lock but the database's). Pruning a run sets its objects'
-- time back, so that what it alone named goes at once.
ALTER TABLE objects ADD COLUMN stored_at timestamptz NOT NULL DEFAULT now();

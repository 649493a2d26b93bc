-- Tenants become explicit, and a run remembers which inbox claim recorded it.

-- Every tenant the database knows; the nil UUID is never one.
CREATE TABLE tenants (
    id         uuid PRIMARY KEY CHECK (id <> '00000000-0000-0000-0000-000000000000'),
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_at timestamptz NOT NULL
);

-- The inbox claim (a batch folder under a home's claims/) that recorded the
-- run: a claim recovered after a crash finds its own run here.
ALTER TABLE research_runs ADD COLUMN inbox_claim text;

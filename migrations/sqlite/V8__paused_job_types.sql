-- Job types whose claims are paused (`bundleq pause TYPE`, `resume TYPE`):
-- every claim of every process reads this table, so a pause holds across all
-- serves of the database within one poll interval. '*' pauses every type
-- (`pause --all`); it is not a valid job type, so it names no real one.
-- Jobs already running finish; nothing else about a paused job changes.
CREATE TABLE research_paused (
    job_type  TEXT PRIMARY KEY,
    paused_at TEXT NOT NULL
) WITHOUT ROWID;

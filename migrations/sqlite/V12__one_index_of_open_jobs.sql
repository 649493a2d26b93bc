-- One index of the open jobs instead of three (research_jobs_ready,
-- research_jobs_retry, research_jobs_running), in three runs:
--   running, oldest lock first (a running job's retry_at is NULL, and
--   status DESC puts 'running' before 'queued');
--   queued and never failed (retry_at and locked_at NULL), oldest first;
--   queued waiting out a backoff, soonest due first.
-- A claim takes the oldest ready job and gives it the newest lock: it
-- deletes the first entry of the second run and inserts the last of the
-- first, side by side on one leaf. With three indexes the claim's commit
-- wrote a leaf of each of two, a page more to the disk per claim.
-- retry_at leads so that only a query naming it (the claim's and the
-- scheduler's, which say which index they walk) can search this index:
-- a listing by status keeps to the tenant's index and its order.
CREATE INDEX research_jobs_open ON research_jobs (retry_at, status DESC, locked_at, created_at)
    WHERE status = 'queued' OR status = 'running';
DROP INDEX research_jobs_ready;
DROP INDEX research_jobs_retry;
DROP INDEX research_jobs_running;

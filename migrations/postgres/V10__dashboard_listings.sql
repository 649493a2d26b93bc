-- Indexes for the dashboard's listings, none on the claim's path:
--   runs of a tenant, newest first (the runs page and `bundleq runs`);
CREATE INDEX research_runs_created ON research_runs (tenant_id, created_at);
--   failed jobs, and cancelled ones, of a tenant, newest first: what an
--   operator looks for among millions of succeeded jobs. Partial, so a
--   claim or a success never touches them; only a job entering or leaving
--   these states does.
CREATE INDEX research_jobs_failed ON research_jobs (tenant_id, created_at)
    WHERE status = 'failed';
CREATE INDEX research_jobs_cancelled ON research_jobs (tenant_id, created_at)
    WHERE status = 'cancelled';

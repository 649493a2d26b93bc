-- Indexes for the dashboard's listings, none on the claim's path:
--   runs of a tenant, newest first (the runs page and `bundleq runs`);
CREATE INDEX research_runs_created ON research_runs (tenant_id, created_at);
--   failed and cancelled jobs of a tenant, newest first: what an operator
--   looks for among millions of succeeded ones. Partial, so a claim or a
--   success never touches it; only a job entering or leaving these states.
CREATE INDEX research_jobs_stopped ON research_jobs (tenant_id, status, created_at)
    WHERE status IN ('failed', 'cancelled');

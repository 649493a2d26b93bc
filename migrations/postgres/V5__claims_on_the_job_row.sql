-- The job's latest claim lives on its row: `claim_id` fences every worker
-- report, `claimed_at` and `claimed_by` say when and by whom it began (see
-- the SQLite migration of the same name).
ALTER TABLE research_jobs ADD COLUMN claim_id uuid;
ALTER TABLE research_jobs ADD COLUMN claimed_at timestamptz;
ALTER TABLE research_jobs ADD COLUMN claimed_by character varying;

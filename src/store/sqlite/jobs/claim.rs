//! Claiming: the claim query (three partial-index walks), the lost jobs
//! it fails at their last attempt, and one store call that records
//! outcomes and claims in one transaction (`cycle`).

use rusqlite::{Connection, Transaction, params};
use uuid::Uuid;

use super::report::apply_completions;
use super::{close_lost_attempt, job_from_row};
use crate::error::Result;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::convert::DbContext;
use crate::store::sqlite::deferred::record;
use crate::store::{Claim, ClaimToken, Completion, Job, QueuePolicy, Report, TransitionKind};
use crate::timestamp::Timestamp;

/// The claim: due queued jobs and expired running ones, oldest first. Each
/// branch walks its own partial index and stops after `?3` rows.
pub(super) const CLAIM_SQL: &str = "
UPDATE research_jobs
SET status = 'running', attempts = attempts + 1, locked_at = ?1, locked_by = ?4,
    retry_at = NULL, updated_at = ?1
WHERE id IN (
    SELECT id FROM (
        SELECT id, created_at FROM (
            SELECT id, created_at FROM research_jobs INDEXED BY research_jobs_ready
            WHERE status = 'queued' AND retry_at IS NULL
            ORDER BY created_at LIMIT ?3)
        UNION ALL
        SELECT id, created_at FROM (
            SELECT id, created_at FROM research_jobs INDEXED BY research_jobs_retry
            WHERE status = 'queued' AND retry_at IS NOT NULL AND retry_at <= ?1
            ORDER BY retry_at LIMIT ?3)
        UNION ALL
        SELECT id, created_at FROM (
            SELECT id, created_at FROM research_jobs INDEXED BY research_jobs_running
            WHERE status = 'running' AND locked_at < ?2
            ORDER BY locked_at LIMIT ?3)
    )
    ORDER BY created_at LIMIT ?3)
RETURNING id, tenant_id, run_id, job_type, status, attempts, max_attempts,
    retry_at, locked_at, locked_by, last_error, payload_json, created_at, updated_at";

/// A running job whose lock expired at its last attempt is not claimed
/// again: it fails, and its open attempt row is closed as lost.
pub(super) const FAIL_LOST_SQL: &str = "
UPDATE research_jobs
SET status = 'failed', retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = ?1,
    last_error = 'worker ' || locked_by || ' was lost during attempt ' || attempts || '/'
        || max_attempts || ' (lock expired at ' || locked_at || ')'
WHERE id IN (
    SELECT id FROM research_jobs INDEXED BY research_jobs_running
    WHERE status = 'running' AND locked_at < ?2 AND attempts >= max_attempts)
RETURNING id, attempts, last_error";

/// The claim, inside the caller's transaction.
pub(super) fn claim_in(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    n: u32,
    worker: &str,
    now: Timestamp,
) -> Result<Vec<Claim>> {
    let expiry = now.minus(policy.lock_timeout);
    // Lost at the last attempt: fail, never run a fourth time.
    let lost: Vec<(String, u32, String)> = {
        let mut stmt = tx.prepare_cached(FAIL_LOST_SQL).db("fail lost jobs")?;
        let rows = stmt
            .query_map(params![now, expiry], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .db("fail lost jobs")?;
        rows.collect::<rusqlite::Result<_>>().db("fail lost jobs")?
    };
    for (id, attempts, error) in &lost {
        close_lost_attempt(tx, id, error, now)?;
        record(
            id,
            TransitionKind::Failed {
                attempts: *attempts,
                error: error.clone(),
            },
        )?;
    }

    let mut jobs: Vec<Job> = {
        let mut stmt = tx.prepare_cached(CLAIM_SQL).db("claim jobs")?;
        let rows = stmt
            .query_map(params![now, expiry, n, worker], job_from_row)
            .db("claim jobs")?;
        rows.collect::<rusqlite::Result<_>>().db("claim jobs")?
    };
    jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));

    let mut claims = Vec::with_capacity(jobs.len());
    // One attempt row per claim, inserted by one statement for the batch.
    let mut rows: Vec<(String, String, String, u32)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = job.id.to_string();
        let rescued_from = if job.attempts > 1 {
            close_lost_attempt(tx, &id, "lock expired; the job was rescued", now)?
        } else {
            None
        };
        if let Some(old) = &rescued_from {
            record(
                &id,
                TransitionKind::Rescued {
                    from: old.clone(),
                    attempt: job.attempts,
                    max_attempts: job.max_attempts,
                },
            )?;
        }
        let attempt_id = Uuid::now_v7();
        rows.push((
            id,
            attempt_id.to_string(),
            job.tenant_id.to_string(),
            job.attempts,
        ));
        claims.push(Claim {
            token: ClaimToken {
                job_id: job.id,
                worker: worker.to_owned(),
                attempt: job.attempts,
                max_attempts: job.max_attempts,
                attempt_id,
            },
            job,
            rescued_from,
        });
    }
    if !rows.is_empty() {
        let batch = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
        tx.prepare_cached(
            "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, ?1, ?2
             FROM json_each(?3)",
        )
        .and_then(|mut s| s.execute(params![worker, now, batch]))
        .db("record attempts")?;
    }
    Ok(claims)
}

pub(in crate::store::sqlite) fn explain_claim(conn: &Connection) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for sql in [CLAIM_SQL, FAIL_LOST_SQL] {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .db("explain the claim")?;
        let now = Timestamp::now();
        let all = params![now, now, 10, "w"];
        let rows = stmt
            .query_map(&all[..stmt.parameter_count()], |r| r.get::<_, String>(3))
            .db("explain the claim")?;
        for r in rows {
            lines.push(r.db("explain the claim")?);
        }
    }
    Ok(lines)
}

impl SqliteStore {
    /// Claims up to `n` jobs for `worker` in one transaction: queued jobs that
    /// are due, and running jobs whose lock expired (orphan rescue), oldest
    /// first. A lost job already at `max_attempts` is failed instead.
    pub fn claim(&mut self, n: u32, worker: &str, now: Timestamp) -> Result<Vec<Claim>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let policy = self.options.policy.clone();
        self.write("claim jobs", |tx| claim_in(tx, &policy, n, worker, now))
    }

    /// One worker-pool cycle in one transaction: record `completions`, then
    /// claim up to `n` jobs. Halves the commits of doing both apart.
    pub fn cycle(
        &mut self,
        completions: &[Completion],
        n: u32,
        worker: &str,
        now: Timestamp,
    ) -> Result<(Vec<Report>, Vec<Claim>)> {
        if n == 0 {
            return Ok((self.complete(completions, now)?, Vec::new()));
        }
        let policy = self.options.policy.clone();
        self.write("record outcomes and claim jobs", |tx| {
            let reports = apply_completions(tx, &policy, completions, now)?;
            let claims = claim_in(tx, &policy, n, worker, now)?;
            Ok((reports, claims))
        })
    }
}

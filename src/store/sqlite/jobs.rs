//! `research_jobs` and `job_attempts`: enqueue, claim, heartbeat, report,
//! release, cancel, retry, read and prune.
//!
//! Every worker report is fenced by its [`ClaimToken`]: it changes the row
//! only while the job is still `running` under that very claim (same
//! `locked_by`, same `attempts`, and its attempt row still open). A worker
//! whose lock was rescued therefore changes nothing, even if it re-claimed
//! the job itself under the same name.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

use super::convert::{DbContext, json_col, status_col, uuid_col, uuid_text};
use super::deferred::{defer, record};
use super::sources::replace_sources;
use super::{SqliteStore, WriteTx};
use crate::error::{Error, Result};
use crate::state::{
    FailureDecision, JobStatus, Outcome, RELEASE_ALLOWANCE, ReleaseDecision, decide_failure,
    decide_release,
};
use crate::store::{
    Attempt, Claim, ClaimToken, Completion, Job, JobEvent, JobFilter, NewJob, PruneFilter, Pruned,
    QueuePolicy, Report, Stats, Transition, TransitionKind,
};
use crate::timestamp::Timestamp;

/// Errors stored in `last_error` and attempt rows are cut to this many bytes.
const MAX_ERROR_BYTES: usize = 8 * 1024;

const JOB_COLUMNS: &str = "id, tenant_id, run_id, job_type, status, attempts, max_attempts, \
     retry_at, locked_at, locked_by, last_error, payload_json, created_at, updated_at";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: uuid_col(row, 0)?,
        tenant_id: uuid_col(row, 1)?,
        run_id: uuid_col(row, 2)?,
        job_type: row.get(3)?,
        status: status_col(row, 4)?,
        attempts: row.get(5)?,
        max_attempts: row.get(6)?,
        retry_at: row.get(7)?,
        locked_at: row.get(8)?,
        locked_by: row.get(9)?,
        last_error: row.get(10)?,
        payload_json: json_col(row, 11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: uuid_col(row, 0)?,
        job_id: uuid_col(row, 1)?,
        attempt: row.get(2)?,
        worker: row.get(3)?,
        started_at: row.get(4)?,
        finished_at: row.get(5)?,
        outcome: row.get(6)?,
        error: row.get(7)?,
        output: row.get(8)?,
    })
}

fn truncate_error(message: &str) -> &str {
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The claim: due queued jobs and expired running ones, oldest first. Each
/// branch walks its own partial index and stops after `?3` rows.
const CLAIM_SQL: &str = "
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
const FAIL_LOST_SQL: &str = "
UPDATE research_jobs
SET status = 'failed', retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = ?1,
    last_error = 'worker ' || locked_by || ' was lost during attempt ' || attempts || '/'
        || max_attempts || ' (lock expired at ' || locked_at || ')'
WHERE id IN (
    SELECT id FROM research_jobs INDEXED BY research_jobs_running
    WHERE status = 'running' AND locked_at < ?2 AND attempts >= max_attempts)
RETURNING id, attempts, last_error";

/// The fence every worker report passes, written once: the job is still
/// running under this very claim (its worker, its attempt number, and its
/// attempt row still open). The arguments are the SQL expressions holding
/// the claim's job id, worker, attempt and attempt id: `?1`…`?4` for one
/// report ([`fenced`]), a batch's columns for many.
fn fence(job: &str, worker: &str, attempt: &str, attempt_id: &str) -> String {
    format!(
        "research_jobs.id = {job} AND research_jobs.status = 'running'
         AND research_jobs.locked_by = {worker} AND research_jobs.attempts = {attempt}
         AND EXISTS (SELECT 1 FROM job_attempts AS fenced
                     WHERE fenced.job_id = {job} AND fenced.id = {attempt_id}
                       AND fenced.finished_at IS NULL)"
    )
}

/// `update` applied to one job only if the claim whose token is bound to
/// `?1`…`?4` (see [`fence_params`]) still holds it.
fn fenced(update: &str) -> String {
    format!("{update} WHERE {}", fence("?1", "?2", "?3", "?4"))
}

fn close_attempt(
    tx: &Transaction<'_>,
    token: &ClaimToken,
    outcome: &str,
    error: Option<&str>,
    output: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE job_attempts SET finished_at = ?3, outcome = ?4, error = ?5, output = ?6
         WHERE job_id = ?1 AND id = ?2 AND finished_at IS NULL",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.job_id.to_string(),
            token.attempt_id.to_string(),
            now,
            outcome,
            error,
            output
        ])
    })
    .db("record an attempt")?;
    Ok(())
}

/// Closes whatever attempt of `job_id` is still open, as lost; returns the
/// worker that held it.
fn close_lost_attempt(
    tx: &Transaction<'_>,
    job_id: &str,
    error: &str,
    now: Timestamp,
) -> Result<Option<String>> {
    tx.prepare_cached(
        "UPDATE job_attempts SET finished_at = ?2, outcome = 'lost', error = ?3
         WHERE job_id = ?1 AND finished_at IS NULL RETURNING worker",
    )
    .and_then(|mut s| {
        s.query_row(params![job_id, now, error], |r| r.get::<_, String>(0))
            .optional()
    })
    .db("record a lost attempt")
}

fn insert_job(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    job: &NewJob,
    now: Timestamp,
) -> Result<Uuid> {
    let max_attempts = job.max_attempts.unwrap_or(policy.max_attempts);
    if max_attempts == 0 {
        return Err(Error::InvalidArgument {
            what: "max_attempts",
            message: "must be at least 1".to_owned(),
        });
    }
    let id = crate::store::new_job_id();
    tx.prepare_cached(
        "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
             max_attempts, payload_json, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', 0, ?5, ?6, ?7, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.to_string(),
            job.tenant_id.to_string(),
            job.run_id.to_string(),
            job.job_type,
            max_attempts,
            job.payload.to_string(),
            now
        ])
    })
    .db("enqueue a job")?;
    Ok(id)
}

impl WriteTx<'_> {
    /// Enqueues a job inside this transaction.
    pub fn enqueue(&self, job: &NewJob, now: Timestamp) -> Result<Uuid> {
        insert_job(self.tx, self.policy, job, now)
    }
}

impl SqliteStore {
    /// Enqueues one job.
    pub fn enqueue(&mut self, job: &NewJob, now: Timestamp) -> Result<Uuid> {
        let policy = self.options.policy.clone();
        self.write("enqueue a job", |tx| insert_job(tx, &policy, job, now))
    }

    /// Enqueues many jobs in one transaction; all or none.
    pub fn enqueue_many(&mut self, jobs: &[NewJob], now: Timestamp) -> Result<Vec<Uuid>> {
        let policy = self.options.policy.clone();
        self.write("enqueue jobs", |tx| {
            jobs.iter()
                .map(|j| insert_job(tx, &policy, j, now))
                .collect()
        })
    }

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

    /// Refreshes `locked_at` of the given claims so live jobs are not
    /// rescued. Returns how many claims still hold. A clock that moved
    /// backwards never makes a lock look older than it was.
    pub fn heartbeat(&mut self, tokens: &[ClaimToken], now: Timestamp) -> Result<usize> {
        if tokens.is_empty() {
            return Ok(0);
        }
        self.write("heartbeat jobs", |tx| {
            let mut stmt = tx
                .prepare_cached(&fenced(
                    "UPDATE research_jobs SET locked_at = max(locked_at, ?5)",
                ))
                .db("heartbeat jobs")?;
            let mut held = 0;
            for t in tokens {
                held += stmt
                    .execute(params![
                        t.job_id.to_string(),
                        t.worker,
                        t.attempt,
                        t.attempt_id.to_string(),
                        now
                    ])
                    .db("heartbeat jobs")?;
            }
            Ok(held)
        })
    }

    /// Records one attempt's outcome, fenced by its claim.
    pub fn report(
        &mut self,
        token: &ClaimToken,
        outcome: &Outcome,
        now: Timestamp,
    ) -> Result<Report> {
        let reports = self.report_many(&[(token.clone(), outcome.clone())], now)?;
        Ok(reports.into_iter().next().unwrap_or(Report::Stale))
    }

    /// Records many outcomes in one transaction (group commit). Each is fenced
    /// on its own; the result says, per report, whether it was applied.
    pub fn report_many(
        &mut self,
        reports: &[(ClaimToken, Outcome)],
        now: Timestamp,
    ) -> Result<Vec<Report>> {
        let completions: Vec<Completion> = reports
            .iter()
            .map(|(t, o)| Completion::new(t.clone(), o.clone()))
            .collect();
        self.complete(&completions, now)
    }

    /// Records completions in one transaction (group commit), with the
    /// sources of each successful one.
    pub fn complete(&mut self, completions: &[Completion], now: Timestamp) -> Result<Vec<Report>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let policy = self.options.policy.clone();
        self.write("record job outcomes", |tx| {
            apply_completions(tx, &policy, completions, now)
        })
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

    /// Gives claims back at shutdown: the jobs return to `queued`, due at
    /// once. The interrupted attempt is given back (`attempts − 1`, history
    /// row `released`) for the first [`RELEASE_ALLOWANCE`] interruptions of
    /// a job; later ones count like any attempt, and at the last attempt
    /// the job fails. So a handler starts at most `max_attempts +
    /// RELEASE_ALLOWANCE` times however often serve is restarted.
    pub fn release(&mut self, tokens: &[ClaimToken], now: Timestamp) -> Result<Vec<Report>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.write("release jobs", |tx| {
            tokens.iter().map(|t| release_started(tx, t, now)).collect()
        })
    }

    /// Gives back claims whose handler never started (prefetched at
    /// shutdown): the attempt is given back and leaves no history row, as
    /// if the claim had not been made. These never use up the allowance.
    pub fn release_unstarted(
        &mut self,
        tokens: &[ClaimToken],
        now: Timestamp,
    ) -> Result<Vec<Report>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.write("release jobs", |tx| {
            let mut out = Vec::with_capacity(tokens.len());
            for t in tokens {
                let changed = tx
                    .prepare_cached(&fenced(
                        "UPDATE research_jobs SET status = 'queued', attempts = attempts - 1,
                             retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = ?5",
                    ))
                    .and_then(|mut s| s.execute(fence_params(t, now)))
                    .db("release a job")?;
                if changed == 1 {
                    tx.prepare_cached("DELETE FROM job_attempts WHERE job_id = ?1 AND id = ?2")
                        .and_then(|mut s| {
                            s.execute(params![t.job_id.to_string(), t.attempt_id.to_string()])
                        })
                        .db("release a job")?;
                    out.push(Report::Applied(JobStatus::Queued));
                } else {
                    out.push(Report::Stale);
                }
            }
            Ok(out)
        })
    }

    /// Worker names (`locked_by`) holding running jobs, for the check of
    /// which of them are provably gone.
    pub fn running_workers(&mut self) -> Result<Vec<String>> {
        self.read("list running workers", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT DISTINCT locked_by FROM research_jobs INDEXED BY research_jobs_running
                     WHERE status = 'running'",
                )
                .db("list running workers")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .db("list running workers")?;
            rows.collect::<rusqlite::Result<_>>()
                .db("list running workers")
        })
    }

    /// Rescues at once the running jobs of workers that are provably gone
    /// (their process and its handlers no longer exist), without waiting for
    /// their locks to expire: each lost attempt counts; a job at its last
    /// attempt fails, the others are queued and due at once. Returns the
    /// jobs and what they became.
    pub fn rescue_workers(
        &mut self,
        workers: &[String],
        now: Timestamp,
    ) -> Result<Vec<(Uuid, JobStatus)>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(workers).unwrap_or_else(|_| "[]".to_owned());
        self.write("rescue jobs of dead workers", |tx| {
            let mut out = Vec::new();
            for (status, sql) in [
                (
                    JobStatus::Failed,
                    "UPDATE research_jobs SET status = 'failed', retry_at = NULL,
                         locked_at = NULL, locked_by = NULL, updated_at = ?1,
                         last_error = 'worker ' || locked_by || ' died during attempt '
                             || attempts || '/' || max_attempts || ' (its process is gone)'
                     WHERE status = 'running' AND attempts >= max_attempts
                       AND locked_by IN (SELECT value FROM json_each(?2))
                     RETURNING id, attempts, max_attempts, last_error",
                ),
                (
                    JobStatus::Queued,
                    "UPDATE research_jobs SET status = 'queued', retry_at = NULL,
                         locked_at = NULL, locked_by = NULL, updated_at = ?1,
                         last_error = 'worker ' || locked_by || ' died during attempt '
                             || attempts || '/' || max_attempts || ' (its process is gone)'
                     WHERE status = 'running'
                       AND locked_by IN (SELECT value FROM json_each(?2))
                     RETURNING id, attempts, max_attempts, last_error",
                ),
            ] {
                let rows: Vec<(String, u32, u32, String)> = {
                    let mut stmt = tx.prepare_cached(sql).db("rescue jobs of dead workers")?;
                    let rows = stmt
                        .query_map(params![now, list], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })
                        .db("rescue jobs of dead workers")?;
                    rows.collect::<rusqlite::Result<_>>()
                        .db("rescue jobs of dead workers")?
                };
                for (id, attempts, max, error) in rows {
                    close_lost_attempt(tx, &id, &error, now)?;
                    if status == JobStatus::Failed {
                        record(
                            &id,
                            TransitionKind::Failed {
                                attempts,
                                error: error.clone(),
                            },
                        )?;
                    } else {
                        record(
                            &id,
                            TransitionKind::RescuedAtOnce {
                                error: error.clone(),
                                attempt: attempts,
                                max_attempts: max,
                            },
                        )?;
                    }
                    out.push((uuid_text(&id, "rescue jobs of dead workers")?, status));
                }
            }
            Ok(out)
        })
    }

    /// Cancels a queued or failed job of `tenant`.
    pub fn cancel(&mut self, tenant: Uuid, id: Uuid, now: Timestamp) -> Result<Job> {
        self.user_transition(
            tenant,
            id,
            now,
            "cancel",
            JobStatus::can_cancel,
            "UPDATE research_jobs SET status = 'cancelled', retry_at = NULL, updated_at = ?3
             WHERE id = ?1 AND tenant_id = ?2 AND status IN ('queued', 'failed')",
        )
    }

    /// Puts a failed or cancelled job of `tenant` back in the queue with its
    /// attempts reset.
    pub fn retry(&mut self, tenant: Uuid, id: Uuid, now: Timestamp) -> Result<Job> {
        self.user_transition(
            tenant,
            id,
            now,
            "retry",
            JobStatus::can_retry,
            "UPDATE research_jobs SET status = 'queued', attempts = 0, retry_at = NULL,
                 updated_at = ?3
             WHERE id = ?1 AND tenant_id = ?2 AND status IN ('failed', 'cancelled')",
        )
    }

    fn user_transition(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        now: Timestamp,
        action: &'static str,
        allowed: fn(JobStatus) -> bool,
        sql: &str,
    ) -> Result<Job> {
        self.write("change a job", |tx| {
            let job = get_job(tx, tenant, id)?.ok_or_else(|| Error::JobNotFound {
                id: id.to_string(),
                tenant: tenant.to_string(),
            })?;
            if !allowed(job.status) {
                return Err(Error::InvalidTransition {
                    action,
                    id: id.to_string(),
                    status: job.status,
                });
            }
            tx.execute(sql, params![id.to_string(), tenant.to_string(), now])
                .db("change a job")?;
            record_event(
                tx,
                tenant,
                id,
                action,
                Some(&format!(
                    "{} -> {}",
                    job.status,
                    if action == "cancel" {
                        "cancelled"
                    } else {
                        "queued"
                    }
                )),
                now,
            )?;
            let changed = get_job(tx, tenant, id)?.ok_or_else(|| Error::JobNotFound {
                id: id.to_string(),
                tenant: tenant.to_string(),
            })?;
            defer(Transition {
                job_id: id,
                kind: TransitionKind::ByUser {
                    action,
                    from: job.status,
                    to: changed.status,
                },
            });
            Ok(changed)
        })
    }

    /// One job of `tenant`.
    pub fn job(&mut self, tenant: Uuid, id: Uuid) -> Result<Job> {
        self.read("read a job", |tx| get_job(tx, tenant, id))?
            .ok_or_else(|| Error::JobNotFound {
                id: id.to_string(),
                tenant: tenant.to_string(),
            })
    }

    /// A job's attempt history, oldest first.
    pub fn attempts(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<Attempt>> {
        self.read("read attempts", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, job_id, attempt, worker, started_at, finished_at, outcome, error,
                         output
                     FROM job_attempts WHERE job_id = ?1 AND tenant_id = ?2
                     ORDER BY id",
                )
                .db("read attempts")?;
            let rows = stmt
                .query_map(
                    params![id.to_string(), tenant.to_string()],
                    attempt_from_row,
                )
                .db("read attempts")?;
            rows.collect::<rusqlite::Result<_>>().db("read attempts")
        })
    }

    /// How many jobs of `tenant` match `filter` (its limit aside).
    pub fn count_jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<u64> {
        self.read("count jobs", |tx| {
            let n: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM research_jobs
                     WHERE tenant_id = ?1
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR job_type = ?3)
                       AND (?4 IS NULL OR run_id = ?4)",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            tenant.to_string(),
                            filter.status.map(JobStatus::as_str),
                            filter.job_type,
                            filter.run_id.map(|r| r.to_string())
                        ],
                        |r| r.get(0),
                    )
                })
                .db("count jobs")?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Jobs of `tenant` matching `filter`, newest first.
    pub fn jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<Vec<Job>> {
        self.read("list jobs", |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM research_jobs
                     WHERE tenant_id = ?1
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR job_type = ?3)
                       AND (?4 IS NULL OR run_id = ?4)
                     ORDER BY created_at DESC, id DESC
                     LIMIT ?5"
                ))
                .db("list jobs")?;
            let rows = stmt
                .query_map(
                    params![
                        tenant.to_string(),
                        filter.status.map(JobStatus::as_str),
                        filter.job_type,
                        filter.run_id.map(|r| r.to_string()),
                        filter.limit.map_or(-1, i64::from)
                    ],
                    job_from_row,
                )
                .db("list jobs")?;
            rows.collect::<rusqlite::Result<_>>().db("list jobs")
        })
    }

    /// Counts per status, oldest queued job and next retry, for `tenant`.
    pub fn stats(&mut self, tenant: Uuid, now: Timestamp) -> Result<Stats> {
        self.read("count jobs", |tx| {
            let t = tenant.to_string();
            let mut stats = Stats {
                counts: JobStatus::ALL.iter().map(|s| (*s, 0)).collect(),
                ..Stats::default()
            };
            let mut stmt = tx
                .prepare_cached(
                    "SELECT status, count(*) FROM research_jobs WHERE tenant_id = ?1
                     GROUP BY status",
                )
                .db("count jobs")?;
            let rows = stmt
                .query_map([&t], |r| Ok((status_col(r, 0)?, r.get::<_, i64>(1)?)))
                .db("count jobs")?;
            for row in rows {
                let (status, count) = row.db("count jobs")?;
                stats
                    .counts
                    .insert(status, u64::try_from(count).unwrap_or(0));
            }
            let mut stmt = tx
                .prepare_cached(
                    "SELECT job_type,
                         CASE WHEN status = 'queued' AND retry_at > ?2 THEN 'scheduled'
                              WHEN status = 'queued' THEN 'ready'
                              ELSE status END,
                         count(*)
                     FROM research_jobs WHERE tenant_id = ?1 GROUP BY 1, 2",
                )
                .db("count jobs")?;
            let rows = stmt
                .query_map(params![t, now], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .db("count jobs")?;
            for row in rows {
                let (job_type, bucket, n) = row.db("count jobs")?;
                let n = u64::try_from(n).unwrap_or(0);
                match bucket.as_str() {
                    "ready" => stats.ready += n,
                    "scheduled" => stats.scheduled += n,
                    _ => {}
                }
                stats.by_type.entry(job_type).or_default().insert(bucket, n);
            }
            stats.oldest_queued = tx
                .query_row(
                    "SELECT min(created_at) FROM research_jobs
                     WHERE tenant_id = ?1 AND status = 'queued'",
                    [&t],
                    |r| r.get(0),
                )
                .db("count jobs")?;
            stats.next_retry = tx
                .query_row(
                    "SELECT min(retry_at) FROM research_jobs
                     WHERE tenant_id = ?1 AND status = 'queued' AND retry_at > ?2",
                    params![t, now],
                    |r| r.get(0),
                )
                .db("count jobs")?;
            Ok(stats)
        })
    }

    /// Jobs per status over all tenants (for the pool's summary line).
    pub fn counts_all(&mut self) -> Result<BTreeMap<JobStatus, u64>> {
        self.read("count jobs", |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT status, count(*) FROM research_jobs GROUP BY status")
                .db("count jobs")?;
            let rows = stmt
                .query_map([], |r| Ok((status_col(r, 0)?, r.get::<_, i64>(1)?)))
                .db("count jobs")?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (s, n) = row.db("count jobs")?;
                out.insert(s, u64::try_from(n).unwrap_or(0));
            }
            Ok(out)
        })
    }

    /// The earliest time any queued job (of any tenant) becomes due, or
    /// `None` when nothing is queued. Workers sleep until then.
    pub fn next_due(&mut self, now: Timestamp) -> Result<Option<Timestamp>> {
        self.read("find the next due job", |tx| {
            let ready: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM research_jobs INDEXED BY research_jobs_ready
                     WHERE status = 'queued' AND retry_at IS NULL)",
                    [],
                    |r| r.get(0),
                )
                .db("find the next due job")?;
            if ready {
                return Ok(Some(now));
            }
            tx.query_row(
                "SELECT min(retry_at) FROM research_jobs INDEXED BY research_jobs_retry
                 WHERE status = 'queued' AND retry_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .db("find the next due job")
        })
    }

    /// The earliest `locked_at` of any running job: when it may need rescue.
    pub fn oldest_lock(&mut self) -> Result<Option<Timestamp>> {
        self.read("find the oldest lock", |tx| {
            tx.query_row(
                "SELECT min(locked_at) FROM research_jobs INDEXED BY research_jobs_running
                 WHERE status = 'running'",
                [],
                |r| r.get(0),
            )
            .db("find the oldest lock")
        })
    }

    /// Deletes finished jobs of `tenant` (and their attempt history) whose
    /// last change is older than the filter's time, and returns them; with
    /// `dry_run`, only returns what would be deleted.
    pub fn prune(
        &mut self,
        tenant: Uuid,
        filter: &PruneFilter,
        dry_run: bool,
    ) -> Result<Vec<Pruned>> {
        let statuses: Vec<&str> = if filter.statuses.is_empty() {
            JobStatus::ALL
                .iter()
                .filter(|s| s.is_finished())
                .map(|s| s.as_str())
                .collect()
        } else {
            if let Some(s) = filter.statuses.iter().find(|s| !s.is_finished()) {
                return Err(Error::InvalidArgument {
                    what: "status",
                    message: format!("only finished jobs can be pruned, not {s} ones"),
                });
            }
            filter.statuses.iter().map(|s| s.as_str()).collect()
        };
        let list = serde_json::to_string(&statuses).unwrap_or_else(|_| "[]".to_owned());
        let matching = "FROM research_jobs
             WHERE tenant_id = ?1 AND updated_at < ?2
               AND status IN (SELECT value FROM json_each(?3))
               AND status IN ('succeeded', 'failed', 'cancelled')";
        let select = |tx: &Transaction<'_>| -> Result<Vec<Pruned>> {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT id, status, job_type, updated_at {matching} ORDER BY updated_at"
                ))
                .db("prune jobs")?;
            let rows = stmt
                .query_map(
                    params![tenant.to_string(), filter.finished_before, list],
                    |r| {
                        Ok(Pruned {
                            id: uuid_col(r, 0)?,
                            status: status_col(r, 1)?,
                            job_type: r.get(2)?,
                            updated_at: r.get(3)?,
                        })
                    },
                )
                .db("prune jobs")?;
            rows.collect::<rusqlite::Result<_>>().db("prune jobs")
        };
        if dry_run {
            return self.read("prune jobs", select);
        }
        self.write("prune jobs", |tx| {
            let pruned = select(tx)?;
            tx.execute(
                &format!("DELETE {matching}"),
                params![tenant.to_string(), filter.finished_before, list],
            )
            .db("prune jobs")?;
            Ok(pruned)
        })
    }

    /// Manual actions on a job of `tenant`, oldest first.
    pub fn events(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<JobEvent>> {
        self.read("read job events", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT at, action, detail FROM job_events
                     WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY id",
                )
                .db("read job events")?;
            let rows = stmt
                .query_map(params![id.to_string(), tenant.to_string()], |r| {
                    Ok(JobEvent {
                        at: r.get(0)?,
                        action: r.get(1)?,
                        detail: r.get(2)?,
                    })
                })
                .db("read job events")?;
            rows.collect::<rusqlite::Result<_>>().db("read job events")
        })
    }

    /// Records a manual action on a job (e.g. a release after its worker was
    /// proved gone) in its history.
    pub fn note_event(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        action: &'static str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.write("record a job event", |tx| {
            record_event(tx, tenant, id, action, Some(detail), now)
        })
    }
}

fn record_event(
    tx: &Transaction<'_>,
    tenant: Uuid,
    id: Uuid,
    action: &str,
    detail: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO job_events (job_id, id, tenant_id, at, action, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.to_string(),
            Uuid::now_v7().to_string(),
            tenant.to_string(),
            now,
            action,
            detail
        ])
    })
    .db("record a job event")?;
    Ok(())
}

/// The claim, inside the caller's transaction.
fn claim_in(
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

fn get_job(tx: &Transaction<'_>, tenant: Uuid, id: Uuid) -> Result<Option<Job>> {
    tx.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM research_jobs WHERE id = ?1 AND tenant_id = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![id.to_string(), tenant.to_string()], job_from_row)
            .optional()
    })
    .db("read a job")
}

/// Applies completions in order: plain successes in two statements for the
/// whole batch, everything else one by one.
fn apply_completions(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    completions: &[Completion],
    now: Timestamp,
) -> Result<Vec<Report>> {
    let plain = |c: &Completion| {
        c.outcome == Outcome::Succeeded && c.sources.is_none() && c.output.is_none()
    };
    let successes: Vec<&ClaimToken> = completions
        .iter()
        .filter(|c| plain(c))
        .map(|c| &c.token)
        .collect();
    let applied = succeed_batch(tx, &successes, now)?;
    completions
        .iter()
        .map(|c| {
            if !plain(c) {
                apply_completion(tx, policy, c, now)
            } else if applied.contains(&c.token.job_id) {
                defer(Transition {
                    job_id: c.token.job_id,
                    kind: TransitionKind::Succeeded {
                        attempt: c.token.attempt,
                        max_attempts: c.token.max_attempts,
                    },
                });
                Ok(Report::Applied(JobStatus::Succeeded))
            } else {
                log_stale(&c.token);
                Ok(Report::Stale)
            }
        })
        .collect()
}

/// Marks fenced claims succeeded and closes their attempt rows; returns
/// the jobs whose claim still held.
fn succeed_batch(
    tx: &Transaction<'_>,
    tokens: &[&ClaimToken],
    now: Timestamp,
) -> Result<std::collections::HashSet<Uuid>> {
    let mut applied = std::collections::HashSet::new();
    if tokens.is_empty() {
        return Ok(applied);
    }
    let rows: Vec<(String, &str, u32, String)> = tokens
        .iter()
        .map(|t| {
            (
                t.job_id.to_string(),
                t.worker.as_str(),
                t.attempt,
                t.attempt_id.to_string(),
            )
        })
        .collect();
    let batch = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
    let done: Vec<String> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "UPDATE research_jobs
                 SET status = 'succeeded', locked_at = NULL, locked_by = NULL, updated_at = ?1
                 FROM (SELECT value ->> 0 AS j, value ->> 1 AS w, value ->> 2 AS a,
                              value ->> 3 AS t
                       FROM json_each(?2)) AS c
                 WHERE {}
                 RETURNING research_jobs.id",
                fence("c.j", "c.w", "c.a", "c.t")
            ))
            .db("record successes")?;
        let out = stmt
            .query_map(params![now, batch], |r| r.get(0))
            .db("record successes")?;
        out.collect::<rusqlite::Result<_>>()
            .db("record successes")?
    };
    for id in &done {
        applied.insert(uuid_text(id, "record successes")?);
    }
    if applied.is_empty() {
        return Ok(applied);
    }
    let close: Vec<(&str, &str)> = rows
        .iter()
        .zip(tokens)
        .filter(|(_, t)| applied.contains(&t.job_id))
        .map(|((j, _, _, a), _)| (j.as_str(), a.as_str()))
        .collect();
    let closed = serde_json::to_string(&close).unwrap_or_else(|_| "[]".to_owned());
    tx.prepare_cached(
        "UPDATE job_attempts SET finished_at = ?1, outcome = 'succeeded'
         FROM (SELECT value ->> 0 AS j, value ->> 1 AS t FROM json_each(?2)) AS c
         WHERE job_attempts.job_id = c.j AND job_attempts.id = c.t
           AND job_attempts.finished_at IS NULL",
    )
    .and_then(|mut s| s.execute(params![now, closed]))
    .db("record successes")?;
    Ok(applied)
}

fn log_stale(token: &ClaimToken) {
    defer(Transition {
        job_id: token.job_id,
        kind: TransitionKind::Stale {
            worker: token.worker.clone(),
            attempt: token.attempt,
        },
    });
}

fn fence_params(t: &ClaimToken, now: Timestamp) -> [Box<dyn rusqlite::ToSql>; 5] {
    [
        Box::new(t.job_id.to_string()),
        Box::new(t.worker.clone()),
        Box::new(t.attempt),
        Box::new(t.attempt_id.to_string()),
        Box::new(now),
    ]
}

/// Gives back (or counts) one started claim at shutdown.
fn release_started(tx: &Transaction<'_>, t: &ClaimToken, now: Timestamp) -> Result<Report> {
    let released_before: u32 = tx
        .prepare_cached(
            "SELECT count(*) FROM job_attempts WHERE job_id = ?1 AND outcome = 'released'",
        )
        .and_then(|mut s| s.query_row([t.job_id.to_string()], |r| r.get(0)))
        .db("release a job")?;
    let decision = decide_release(t.attempt, t.max_attempts, released_before);
    let times = released_before + 1;
    let (sql, status, note) = match decision {
        ReleaseDecision::GiveBack => (
            "UPDATE research_jobs SET status = 'queued', attempts = attempts - 1,
                 retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = ?5",
            JobStatus::Queued,
            format!(
                "released at shutdown; the attempt is given back (interruption {times} of {RELEASE_ALLOWANCE} free ones)"
            ),
        ),
        ReleaseDecision::Requeue => (
            "UPDATE research_jobs SET status = 'queued', retry_at = NULL, locked_at = NULL,
                 locked_by = NULL, updated_at = ?5, last_error = ?6",
            JobStatus::Queued,
            format!(
                "released at shutdown; attempt {}/{} counts (interrupted {times} times)",
                t.attempt, t.max_attempts
            ),
        ),
        ReleaseDecision::Fail => (
            "UPDATE research_jobs SET status = 'failed', retry_at = NULL, locked_at = NULL,
                 locked_by = NULL, updated_at = ?5, last_error = ?6",
            JobStatus::Failed,
            format!(
                "interrupted by a shutdown at its last attempt {}/{} (interrupted {times} times)",
                t.attempt, t.max_attempts
            ),
        ),
    };
    let changed = tx
        .prepare_cached(&fenced(sql))
        .and_then(|mut s| {
            let [a, b, c, d, e] = fence_params(t, now);
            if decision == ReleaseDecision::GiveBack {
                s.execute(params![a, b, c, d, e])
            } else {
                s.execute(params![a, b, c, d, e, note])
            }
        })
        .db("release a job")?;
    if changed == 0 {
        return Ok(Report::Stale);
    }
    close_attempt(tx, t, "released", Some(&note), None, now)?;
    defer(Transition {
        job_id: t.job_id,
        kind: if decision == ReleaseDecision::Fail {
            TransitionKind::Failed {
                attempts: t.attempt,
                error: note,
            }
        } else {
            TransitionKind::Released {
                note,
                counts: decision == ReleaseDecision::Requeue,
            }
        },
    });
    Ok(Report::Applied(status))
}

fn apply_completion(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    c: &Completion,
    now: Timestamp,
) -> Result<Report> {
    let report = apply_report(tx, policy, &c.token, &c.outcome, c.output.as_deref(), now)?;
    if report == Report::Applied(JobStatus::Succeeded)
        && let Some(sources) = &c.sources
    {
        replace_sources(tx, sources, now)?;
    }
    Ok(report)
}

fn apply_report(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    token: &ClaimToken,
    outcome: &Outcome,
    output: Option<&str>,
    now: Timestamp,
) -> Result<Report> {
    let id = token.job_id.to_string();
    let (worker, attempt, attempt_id) =
        (&token.worker, token.attempt, token.attempt_id.to_string());
    let (changed, status, error) = match outcome {
        Outcome::Succeeded => {
            let n = tx
                .prepare_cached(&fenced(
                    "UPDATE research_jobs SET status = 'succeeded', locked_at = NULL,
                         locked_by = NULL, updated_at = ?5",
                ))
                .and_then(|mut s| s.execute(params![id, worker, attempt, attempt_id, now]))
                .db("record a success")?;
            (n, JobStatus::Succeeded, None)
        }
        Outcome::Retry(message) | Outcome::Fail(message) => {
            let message = truncate_error(message);
            let permanent = matches!(outcome, Outcome::Fail(_));
            let decision = decide_failure(
                token.attempt,
                token.max_attempts,
                permanent,
                &policy.backoff,
                &id,
                now,
            );
            match decision {
                FailureDecision::Retry { delay, retry_at } => {
                    let n = tx
                        .prepare_cached(&fenced(
                            "UPDATE research_jobs SET status = 'queued', retry_at = ?6,
                                 locked_at = NULL, locked_by = NULL, last_error = ?7,
                                 updated_at = ?5",
                        ))
                        .and_then(|mut s| {
                            s.execute(params![
                                id, worker, attempt, attempt_id, now, retry_at, message
                            ])
                        })
                        .db("record a failure")?;
                    if n == 1 {
                        defer(Transition {
                            job_id: token.job_id,
                            kind: TransitionKind::WillRetry {
                                attempt: token.attempt,
                                max_attempts: token.max_attempts,
                                delay,
                                retry_at,
                                error: message.to_owned(),
                            },
                        });
                    }
                    (n, JobStatus::Queued, Some(message))
                }
                FailureDecision::Fail => {
                    let n = tx
                        .prepare_cached(&fenced(
                            "UPDATE research_jobs SET status = 'failed', retry_at = NULL,
                                 locked_at = NULL, locked_by = NULL, last_error = ?6,
                                 updated_at = ?5",
                        ))
                        .and_then(|mut s| {
                            s.execute(params![id, worker, attempt, attempt_id, now, message])
                        })
                        .db("record a failure")?;
                    if n == 1 {
                        defer(Transition {
                            job_id: token.job_id,
                            kind: TransitionKind::Failed {
                                attempts: token.attempt,
                                error: message.to_owned(),
                            },
                        });
                    }
                    (n, JobStatus::Failed, Some(message))
                }
            }
        }
    };
    if changed == 0 {
        log_stale(token);
        return Ok(Report::Stale);
    }
    let outcome_name = match (outcome, status) {
        (Outcome::Succeeded, _) => "succeeded",
        (_, JobStatus::Queued) => "retry",
        _ => "failed",
    };
    close_attempt(
        tx,
        token,
        outcome_name,
        error,
        output.map(truncate_error),
        now,
    )?;
    if status == JobStatus::Succeeded {
        defer(Transition {
            job_id: token.job_id,
            kind: TransitionKind::Succeeded {
                attempt: token.attempt,
                max_attempts: token.max_attempts,
            },
        });
    }
    Ok(Report::Applied(status))
}

pub(super) fn explain_claim(conn: &Connection) -> Result<Vec<String>> {
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

//! `research_jobs` and `job_attempts`: enqueue, claim, heartbeat, report,
//! release, cancel, retry, read and prune.
//!
//! Every worker report is fenced by its [`ClaimToken`]: it changes the row
//! only while the job is still `running` under that very claim (the same
//! `claim_id`, new at every claim, `locked_by` and `attempts`). A worker
//! whose lock was rescued therefore changes nothing, even if it re-claimed
//! the job itself under the same name.
//!
//! The job row holds its latest attempt (`claim_id`, `claimed_at`,
//! `claimed_by`); an attempt row is written once, when an attempt ends that
//! is not the job's last word (see [`LAST_ATTEMPT`] and migration V5).
//!
//! Files: `claim` (the claim and `cycle`), `report` (worker reports and
//! their fence), `admin` (rescue, cancel, retry, prune), `queries`
//! (reads); this file holds the rows and enqueue.

/// The three runs of the open jobs' index, `research_jobs_open` (migration
/// V12), each as `research_jobs … WHERE` and the terms that walk it; a
/// query adds its own terms after them. Running jobs, oldest lock first
/// (`ORDER BY locked_at`).
macro_rules! running_jobs {
    () => {
        "research_jobs INDEXED BY research_jobs_open
         WHERE status = 'running' AND retry_at IS NULL"
    };
}

/// Queued jobs that never failed, oldest first (`ORDER BY created_at`).
macro_rules! ready_jobs {
    () => {
        "research_jobs INDEXED BY research_jobs_open
         WHERE status = 'queued' AND retry_at IS NULL AND locked_at IS NULL"
    };
}

/// Queued jobs waiting out a backoff, soonest due first (`ORDER BY
/// retry_at`).
macro_rules! retrying_jobs {
    () => {
        "research_jobs INDEXED BY research_jobs_open
         WHERE status = 'queued' AND retry_at IS NOT NULL"
    };
}

mod admin;
mod claim;
mod queries;
mod report;

pub(super) use claim::explain_claim;

use rusqlite::{OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

use super::convert::{DbContext, json_col, status_col, uuid_col};
use super::{SqliteStore, WriteTx};
use crate::error::{Error, Result};
pub(super) use crate::store::truncate_error;
use crate::store::{Attempt, ClaimToken, Job, NewJob, QueuePolicy};
use crate::timestamp::Timestamp;

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

/// A new attempt id, made by SQLite for each claimed row: 122 random bits
/// in the UUID text form (attempts are ordered by their start, not by id).
pub(super) const NEW_CLAIM_ID: &str =
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
    || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1)
    || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))";

/// The attempt that ended a job, as its row holds it: succeeded or failed
/// (with `last_error`), finished when the row was last updated.
pub(super) const LAST_ATTEMPT: &str = "
SELECT claim_id, id, attempts, claimed_by, claimed_at, updated_at,
    CASE status WHEN 'succeeded' THEN 'succeeded' ELSE 'failed' END,
    CASE status WHEN 'failed' THEN last_error END, NULL
FROM research_jobs
WHERE id = ?1 AND status IN ('succeeded', 'failed') AND claim_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM job_attempts AS a
                  WHERE a.job_id = research_jobs.id AND a.id = research_jobs.claim_id)";

/// Writes the attempt a job's row holds (if it ended the job and has no
/// row yet), before something moves the job on and overwrites it.
fn keep_last_attempt(tx: &Transaction<'_>, job_id: Uuid) -> Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO job_attempts (id, job_id, attempt, worker, started_at, finished_at,
             outcome, error, output, tenant_id)
         SELECT last.*, jobs.tenant_id
         FROM ({LAST_ATTEMPT}) AS last JOIN research_jobs AS jobs ON jobs.id = ?1"
    ))
    .and_then(|mut s| s.execute([job_id.to_string()]))
    .db("keep an attempt")?;
    Ok(())
}

/// Writes the row of an attempt that ended, once: the claim from `token`,
/// its tenant and start as the report that ended it found them.
fn write_attempt(
    tx: &Transaction<'_>,
    token: &ClaimToken,
    (tenant_id, started_at): &report::Ended,
    outcome: &str,
    error: Option<&str>,
    output: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at,
             finished_at, outcome, error, output)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.job_id.to_string(),
            token.attempt_id.to_string(),
            tenant_id,
            token.attempt,
            token.worker,
            started_at,
            now,
            outcome,
            error,
            output
        ])
    })
    .db("record an attempt")?;
    Ok(())
}

fn insert_job(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    job: &NewJob,
    now: Timestamp,
) -> Result<Uuid> {
    let max_attempts = job
        .max_attempts
        .unwrap_or_else(|| policy.max_attempts_for(&job.job_type));
    if max_attempts == 0 {
        return Err(Error::InvalidArgument {
            what: "max_attempts",
            message: "must be at least 1".to_owned(),
        });
    }
    let id = crate::store::new_job_id();
    tx.prepare_cached(
        "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
             max_attempts, payload_json, created_at, updated_at, retry_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', 0, ?5, ?6, ?7, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.to_string(),
            job.tenant_id.to_string(),
            job.run_id.to_string(),
            job.job_type,
            max_attempts,
            job.payload.to_string(),
            now,
            job.not_before
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
}

//! `research_jobs` and `job_attempts`: enqueue, claim, heartbeat, report,
//! release, cancel, retry, read and prune.
//!
//! Every worker report is fenced by its [`ClaimToken`]: it changes the row
//! only while the job is still `running` under that very claim (same
//! `locked_by`, same `attempts`, and its attempt row still open). A worker
//! whose lock was rescued therefore changes nothing, even if it re-claimed
//! the job itself under the same name.
//!
//! Files: `claim` (the claim and `cycle`), `report` (worker reports and
//! their fence), `admin` (rescue, cancel, retry, prune), `queries`
//! (reads); this file holds the rows and enqueue.

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
use crate::store::{Attempt, ClaimToken, Job, NewJob, QueuePolicy};
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

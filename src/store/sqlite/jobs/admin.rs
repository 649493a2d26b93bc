//! What operators and the pool do to other workers' jobs: rescue the jobs
//! of workers proved gone, cancel, retry, prune, note events, pause and
//! resume job types.

use rusqlite::params;
use uuid::Uuid;

use super::{NEW_CLAIM_ID, get_job, keep_last_attempt, record_event};
use crate::error::{Error, Result};
use crate::state::JobStatus;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::convert::{DbContext, json_list, status_col, uuid_col, uuid_text};
use crate::store::sqlite::deferred::{defer, record};
use crate::store::sqlite::upkeep::{PRUNE_GAP, PRUNE_JOBS_PER_TX};
use crate::store::{Job, Paused, PruneFilter, Pruned, Transition, TransitionKind};
use crate::timestamp::Timestamp;

impl SqliteStore {
    /// Worker names (`locked_by`) holding running jobs, for the check of
    /// which of them are provably gone.
    pub fn running_workers(&mut self) -> Result<Vec<String>> {
        self.read("list running workers", |tx| {
            let mut stmt = tx
                .prepare_cached(concat!("SELECT DISTINCT locked_by FROM ", running_jobs!()))
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
        let list = json_list(workers);
        self.write("rescue jobs of dead workers", |tx| {
            // Their attempts, lost, written before the rows change.
            tx.prepare_cached(&format!(
                "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at,
                     finished_at, outcome, error)
                 SELECT id, coalesce(claim_id, {NEW_CLAIM_ID}), tenant_id, attempts, locked_by,
                     coalesce(claimed_at, locked_at), ?1, 'lost',
                     'worker ' || locked_by || ' died during attempt ' || attempts || '/'
                         || max_attempts || ' (its process is gone)'
                 FROM research_jobs
                 WHERE status = 'running' AND locked_by IN (SELECT value FROM json_each(?2))"
            ))
            .and_then(|mut s| s.execute(params![now, list]))
            .db("rescue jobs of dead workers")?;
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
            (now, None),
            "cancel",
            JobStatus::can_cancel,
            "UPDATE research_jobs SET status = 'cancelled', retry_at = NULL, updated_at = ?3
             WHERE id = ?1 AND tenant_id = ?2 AND status IN ('queued', 'failed')",
        )
    }

    /// Puts a failed or cancelled job of `tenant` back in the queue with its
    /// attempts reset: due at once, or not before `at`.
    pub fn retry(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        now: Timestamp,
        at: Option<Timestamp>,
    ) -> Result<Job> {
        self.user_transition(
            tenant,
            id,
            (now, at),
            "retry",
            JobStatus::can_retry,
            "UPDATE research_jobs SET status = 'queued', attempts = 0, retry_at = ?4,
                 updated_at = ?3
             WHERE id = ?1 AND tenant_id = ?2 AND status IN ('failed', 'cancelled')",
        )
    }

    /// Pauses claims of `job_type` (every type when `None`) for every
    /// process working this database; false when it was paused already.
    pub fn pause(&mut self, job_type: Option<&str>, now: Timestamp) -> Result<bool> {
        let key = job_type.unwrap_or(ALL_TYPES);
        self.write("pause a job type", |tx| {
            let n = tx
                .prepare_cached(
                    "INSERT INTO research_paused (job_type, paused_at) VALUES (?1, ?2)
                     ON CONFLICT (job_type) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![key, now]))
                .db("pause a job type")?;
            Ok(n == 1)
        })
    }

    /// Resumes claims of `job_type`; with `None`, of every type (every
    /// pause is lifted). Returns the pauses lifted.
    pub fn resume(&mut self, job_type: Option<&str>) -> Result<Vec<Paused>> {
        self.write("resume a job type", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM research_paused WHERE ?1 IS NULL OR job_type = ?1
                     RETURNING job_type, paused_at",
                )
                .db("resume a job type")?;
            let rows = stmt
                .query_map([job_type], paused_row)
                .db("resume a job type")?;
            rows.collect::<rusqlite::Result<_>>()
                .db("resume a job type")
        })
    }

    /// The pauses in force, oldest first.
    pub fn paused(&mut self) -> Result<Vec<Paused>> {
        self.read("read the paused job types", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT job_type, paused_at FROM research_paused ORDER BY paused_at, job_type",
                )
                .db("read the paused job types")?;
            let rows = stmt
                .query_map([], paused_row)
                .db("read the paused job types")?;
            rows.collect::<rusqlite::Result<_>>()
                .db("read the paused job types")
        })
    }

    fn user_transition(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        (now, at): (Timestamp, Option<Timestamp>),
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
            // The attempt that ended the job leaves the row now: write it.
            keep_last_attempt(tx, id)?;
            let all = params![id.to_string(), tenant.to_string(), now, at];
            tx.prepare(sql)
                .and_then(|mut s| {
                    let n = s.parameter_count();
                    s.execute(&all[..n])
                })
                .db("change a job")?;
            record_event(
                tx,
                tenant,
                id,
                action,
                Some(&crate::store::user_action_detail(job.status, action, at)),
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

    /// Deletes (or lists) `tenant`'s finished jobs that `filter` names,
    /// with their attempts and history, oldest first: many write
    /// transactions of [`PRUNE_JOBS_PER_TX`] jobs each, with the writer left
    /// free between two (see [`SqliteStore::prune_runs`]).
    pub fn prune(
        &mut self,
        tenant: Uuid,
        filter: &PruneFilter,
        dry_run: bool,
    ) -> Result<Vec<Pruned>> {
        self.prune_in_steps(tenant, filter, dry_run, PRUNE_JOBS_PER_TX, &mut || {
            std::thread::sleep(PRUNE_GAP);
        })
    }

    /// [`SqliteStore::prune`], `per_tx` jobs per write transaction, calling
    /// `between` between two of them (with no transaction open).
    pub(in crate::store::sqlite) fn prune_in_steps(
        &mut self,
        tenant: Uuid,
        filter: &PruneFilter,
        dry_run: bool,
        per_tx: usize,
        between: &mut dyn FnMut(),
    ) -> Result<Vec<Pruned>> {
        let statuses = filter.finished_statuses()?;
        let list = json_list(&statuses);
        // One pass lists them (there is no index on `updated_at`: a pass per
        // step would read the table again each time).
        let listed: Vec<Pruned> = self.read("prune jobs", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, status, job_type, updated_at FROM research_jobs
                     WHERE tenant_id = ?1 AND updated_at < ?2
                       AND status IN (SELECT value FROM json_each(?3))
                       AND status IN ('succeeded', 'failed', 'cancelled')
                     ORDER BY updated_at, id",
                )
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
        })?;
        if dry_run {
            return Ok(listed);
        }
        let mut pruned = Vec::with_capacity(listed.len());
        let mut steps = listed.chunks(per_tx.max(1)).peekable();
        while let Some(step) = steps.next() {
            // Each step deletes those of its jobs that still match: one a
            // user retried since the listing stays.
            let ids: Vec<String> = step.iter().map(|p| p.id.to_string()).collect();
            let gone: std::collections::HashSet<String> = self.write("prune jobs", |tx| {
                let mut stmt = tx
                    .prepare_cached(
                        "DELETE FROM research_jobs
                         WHERE tenant_id = ?1 AND id IN (SELECT value FROM json_each(?2))
                           AND updated_at < ?3
                           AND status IN (SELECT value FROM json_each(?4))
                           AND status IN ('succeeded', 'failed', 'cancelled')
                         RETURNING id",
                    )
                    .db("prune jobs")?;
                let rows = stmt
                    .query_map(
                        params![
                            tenant.to_string(),
                            json_list(&ids),
                            filter.finished_before,
                            list
                        ],
                        |r| r.get(0),
                    )
                    .db("prune jobs")?;
                rows.collect::<rusqlite::Result<_>>().db("prune jobs")
            })?;
            pruned.extend(
                step.iter()
                    .filter(|p| gone.contains(&p.id.to_string()))
                    .cloned(),
            );
            if steps.peek().is_some() {
                between();
            }
        }
        Ok(pruned)
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

/// The key of `pause --all` in `research_paused` (not a valid job type).
pub(super) const ALL_TYPES: &str = "*";

fn paused_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Paused> {
    let job_type: String = r.get(0)?;
    Ok(Paused {
        job_type: (job_type != ALL_TYPES).then_some(job_type),
        since: r.get(1)?,
    })
}

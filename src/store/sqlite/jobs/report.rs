//! Worker reports and the fence they pass: heartbeat, success, failure
//! (retry or fail, by the state machine), release at shutdown. The fence
//! is written once ([`fence`]) for single and batched reports.

use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

use super::{truncate_error, write_attempt};
use crate::error::Result;
use crate::state::{
    FailureDecision, JobStatus, Outcome, RELEASE_ALLOWANCE, ReleaseDecision, decide_failure,
    decide_release,
};
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::convert::{DbContext, json_list, uuid_text};
use crate::store::sqlite::deferred::defer;
use crate::store::sqlite::sources::{PendingIndex, replace_sources};
use crate::store::{ClaimToken, Completion, QueuePolicy, Report, Transition, TransitionKind};
use crate::timestamp::Timestamp;

/// The fence every worker report passes, written once: the job is still
/// running under this very claim (its claim id, worker and attempt number;
/// all on the job row, so fencing costs no other lookup). The arguments are
/// the SQL expressions holding the claim's job id, worker, attempt and
/// attempt (claim) id: `?1`…`?4` for one report ([`fenced`]), a batch's
/// columns for many.
pub(super) fn fence(job: &str, worker: &str, attempt: &str, attempt_id: &str) -> String {
    format!(
        "research_jobs.id = {job} AND research_jobs.status = 'running'
         AND research_jobs.claim_id = {attempt_id} AND research_jobs.locked_by = {worker}
         AND research_jobs.attempts = {attempt}"
    )
}

/// `update` applied to one job only if the claim whose token is bound to
/// `?1`…`?4` (see [`fence_params`]) still holds it.
pub(super) fn fenced(update: &str) -> String {
    format!("{update} WHERE {}", fence("?1", "?2", "?3", "?4"))
}

/// The claim's tenant and start, as a report that ended it found them.
pub(super) type Ended = (String, Timestamp);

/// Runs a fenced `update` that ends an attempt; what it ended, or `None`
/// when the claim no longer held the job (a stale report).
fn end_fenced(
    tx: &Transaction<'_>,
    update: &str,
    params: impl rusqlite::Params,
    action: &'static str,
) -> Result<Option<Ended>> {
    tx.prepare_cached(&format!(
        "{} RETURNING tenant_id, claimed_at",
        fenced(update)
    ))
    .and_then(|mut s| {
        s.query_row(params, |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
    .db(action)
}

pub(super) fn fence_params(t: &ClaimToken, now: Timestamp) -> [Box<dyn rusqlite::ToSql>; 5] {
    [
        Box::new(t.job_id.to_string()),
        Box::new(t.worker.clone()),
        Box::new(t.attempt),
        Box::new(t.attempt_id.to_string()),
        Box::new(now),
    ]
}

/// Applies completions in order: plain successes in two statements for the
/// whole batch, everything else one by one.
/// Records completions; the index rows of the sources they record are
/// added to `index`, which the caller writes after its last other write.
pub(super) fn apply_completions(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    completions: &[Completion],
    now: Timestamp,
    index: &mut PendingIndex,
) -> Result<Vec<Report>> {
    let plain = |c: &Completion| {
        c.outcome == Outcome::Succeeded
            && c.sources.is_none()
            && c.output.is_none()
            && c.then.is_empty()
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
                apply_completion(tx, policy, c, now, index)
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

/// Successes of the claims in the JSON list `?2` (`[job, worker, attempt,
/// claim id]` each), fenced one by one: each row found by its id.
pub(super) static SUCCEED_BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE research_jobs
             SET status = 'succeeded', locked_at = NULL, locked_by = NULL, updated_at = ?1
             FROM (SELECT value ->> 0 AS j, value ->> 1 AS w, value ->> 2 AS a,
                          value ->> 3 AS t
                   FROM json_each(?2)) AS c
             WHERE {}
             RETURNING research_jobs.id",
        fence("c.j", "c.w", "c.a", "c.t")
    )
});

/// Marks fenced claims succeeded (the job rows then hold those attempts);
/// returns the jobs whose claim still held.
pub(super) fn succeed_batch(
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
    let batch = json_list(&rows);
    let done: Vec<String> = {
        let mut stmt = tx
            .prepare_cached(&SUCCEED_BATCH_SQL)
            .db("record successes")?;
        let out = stmt
            .query_map(params![now, batch], |r| r.get(0))
            .db("record successes")?;
        out.collect::<rusqlite::Result<_>>()
            .db("record successes")?
    };
    for id in done {
        applied.insert(uuid_text(&id, "record successes")?);
    }
    // No attempt row: the job row holds its last attempt (see V5).
    Ok(applied)
}

pub(super) fn log_stale(token: &ClaimToken) {
    defer(Transition {
        job_id: token.job_id,
        kind: TransitionKind::Stale {
            worker: token.worker.clone(),
            attempt: token.attempt,
        },
    });
}

/// Gives back (or counts) one started claim at shutdown.
pub(super) fn release_started(
    tx: &Transaction<'_>,
    t: &ClaimToken,
    now: Timestamp,
) -> Result<Report> {
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
    let [a, b, c, d, e] = fence_params(t, now);
    let ended = if decision == ReleaseDecision::GiveBack {
        end_fenced(tx, sql, params![a, b, c, d, e], "release a job")?
    } else {
        end_fenced(tx, sql, params![a, b, c, d, e, note], "release a job")?
    };
    let Some(ended) = ended else {
        return Ok(Report::Stale);
    };
    write_attempt(tx, t, &ended, "released", Some(&note), None, now)?;
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

pub(super) fn apply_completion(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    c: &Completion,
    now: Timestamp,
    index: &mut PendingIndex,
) -> Result<Report> {
    let report = apply_report(tx, policy, &c.token, &c.outcome, c.output.as_deref(), now)?;
    if report == Report::Applied(JobStatus::Succeeded) {
        if let Some(sources) = &c.sources {
            replace_sources(tx, sources, now, index)?;
        }
        queue_next_steps(tx, policy, &c.token, &c.then, now)?;
    }
    Ok(report)
}

/// Queues the next steps of a job's run, in the transaction that records
/// its success: one job per type, with the job's payload, unless the run
/// already has a job of that type (a step runs once per run; a retried
/// step that succeeds again queues nothing twice).
fn queue_next_steps(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    token: &ClaimToken,
    then: &[String],
    now: Timestamp,
) -> Result<()> {
    let after = token.job_id.to_string();
    for job_type in then {
        let id = crate::store::new_job_id();
        let queued: Option<String> = tx
            .prepare_cached(
                "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
                     max_attempts, payload_json, created_at, updated_at)
                 SELECT ?1, j.tenant_id, j.run_id, ?2, 'queued', 0, ?3, j.payload_json, ?4, ?4
                 FROM research_jobs AS j
                 WHERE j.id = ?5
                   AND NOT EXISTS (SELECT 1 FROM research_jobs AS o INDEXED BY research_jobs_run
                                   WHERE o.tenant_id = j.tenant_id AND o.run_id = j.run_id
                                     AND o.job_type = ?2)
                 RETURNING run_id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        id.to_string(),
                        job_type,
                        policy.max_attempts_for(job_type),
                        now,
                        after
                    ],
                    |r| r.get(0),
                )
                .optional()
            })
            .db("queue the next step")?;
        if let Some(run) = queued {
            defer(Transition {
                job_id: id,
                kind: TransitionKind::StepQueued {
                    job_type: job_type.clone(),
                    run_id: uuid_text(&run, "queue the next step")?,
                    after: token.job_id,
                },
            });
        }
    }
    Ok(())
}

pub(super) fn apply_report(
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
            let n = end_fenced(
                tx,
                "UPDATE research_jobs SET status = 'succeeded', locked_at = NULL,
                     locked_by = NULL, updated_at = ?5",
                params![id, worker, attempt, attempt_id, now],
                "record a success",
            )?;
            (n, JobStatus::Succeeded, None)
        }
        Outcome::Retry(message) | Outcome::Fail(message) => {
            let message = truncate_error(message);
            let permanent = matches!(outcome, Outcome::Fail(_));
            let decision = decide_failure(
                token.attempt,
                token.max_attempts,
                permanent,
                policy.backoff_for(&token.job_type),
                &id,
                now,
            );
            match decision {
                FailureDecision::Retry { delay, retry_at } => {
                    let n = end_fenced(
                        tx,
                        "UPDATE research_jobs SET status = 'queued', retry_at = ?6,
                             locked_at = NULL, locked_by = NULL, last_error = ?7,
                             updated_at = ?5",
                        params![id, worker, attempt, attempt_id, now, retry_at, message],
                        "record a failure",
                    )?;
                    if n.is_some() {
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
                    let n = end_fenced(
                        tx,
                        "UPDATE research_jobs SET status = 'failed', retry_at = NULL,
                             locked_at = NULL, locked_by = NULL, last_error = ?6,
                             updated_at = ?5",
                        params![id, worker, attempt, attempt_id, now, message],
                        "record a failure",
                    )?;
                    if n.is_some() {
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
    let Some(ended) = changed else {
        log_stale(token);
        return Ok(Report::Stale);
    };
    let outcome_name = match (outcome, status) {
        (Outcome::Succeeded, _) => "succeeded",
        (_, JobStatus::Queued) => "retry",
        _ => "failed",
    };
    // The job row holds the attempt that ends the job; an attempt the job
    // goes on from (a retry), or one with output to keep, gets its row.
    if status == JobStatus::Queued || output.is_some() {
        write_attempt(
            tx,
            token,
            &ended,
            outcome_name,
            error,
            output.map(truncate_error),
            now,
        )?;
    }
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

impl SqliteStore {
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

    /// Records completions in one transaction (group commit), with the
    /// sources of each successful one.
    pub fn complete(&mut self, completions: &[Completion], now: Timestamp) -> Result<Vec<Report>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let policy = self.options.policy.clone();
        self.write("record job outcomes", |tx| {
            let mut index = PendingIndex::default();
            let reports = apply_completions(tx, &policy, completions, now, &mut index)?;
            index.write(tx)?;
            Ok(reports)
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
                // No attempt row was written for it: it leaves no history.
                if changed == 1 {
                    out.push(Report::Applied(JobStatus::Queued));
                } else {
                    out.push(Report::Stale);
                }
            }
            Ok(out)
        })
    }
}

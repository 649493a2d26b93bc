//! `research_jobs`, `job_attempts`, `job_events` and `research_paused` on
//! PostgreSQL: enqueue, the claim, the fenced reports, rescue, the user's
//! actions, pauses and the reads. The rules are those of the SQLite
//! backend (see `store::sqlite::jobs`); only the SQL differs.

use std::collections::{BTreeMap, HashMap, HashSet};

use postgres::Row;
use uuid::Uuid;

use super::{Param, PgStore, Tx, col};
use crate::error::{Error, Result};
use crate::state::{
    FailureDecision, JobStatus, Outcome, RELEASE_ALLOWANCE, ReleaseDecision, decide_failure,
    decide_release,
};
use crate::store::{
    Attempt, Claim, ClaimToken, Completion, Job, JobEvent, JobFilter, MinuteCount, NewJob, Paused,
    PruneFilter, Pruned, Report, Stats, Transition, TransitionKind,
};
use crate::store::{add_minute, earliest, truncate_error};
use crate::timestamp::Timestamp;

/// The key of `pause --all` (not a valid job type).
const ALL_TYPES: &str = "*";

const JOB_COLUMNS: &str = "j.id, j.tenant_id, j.run_id, j.job_type, j.status, j.attempts, \
     j.max_attempts, j.retry_at, j.locked_at, j.locked_by, j.last_error, j.payload_json, \
     j.created_at, j.updated_at";

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn status_of(text: &str) -> Result<JobStatus> {
    text.parse().map_err(|e: String| Error::InvalidArgument {
        what: "stored status",
        message: e,
    })
}

pub(super) fn job_from_row(r: &Row) -> Result<Job> {
    Ok(Job {
        id: col(r, 0)?,
        tenant_id: col(r, 1)?,
        run_id: col(r, 2)?,
        job_type: col(r, 3)?,
        status: status_of(col(r, 4)?)?,
        attempts: count(col(r, 5)?),
        max_attempts: count(col(r, 6)?),
        retry_at: col(r, 7)?,
        locked_at: col(r, 8)?,
        locked_by: col(r, 9)?,
        last_error: col(r, 10)?,
        payload_json: col(r, 11)?,
        created_at: col(r, 12)?,
        updated_at: col(r, 13)?,
    })
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Inserts a job inside `tx`.
pub(super) fn insert_job(tx: &mut Tx<'_>, job: &NewJob) -> Result<Uuid> {
    let max_attempts = job
        .max_attempts
        .unwrap_or_else(|| tx.policy.max_attempts_for(&job.job_type));
    if max_attempts == 0 {
        return Err(Error::InvalidArgument {
            what: "max_attempts",
            message: "must be at least 1".to_owned(),
        });
    }
    let id = crate::store::new_job_id();
    let now = tx.now;
    tx.execute(
        "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
             max_attempts, payload_json, created_at, updated_at, retry_at)
         VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $7, $7, $8)",
        &[
            &id,
            &job.tenant_id,
            &job.run_id,
            &job.job_type,
            &int(max_attempts),
            &job.payload,
            &now,
            &job.not_before,
        ],
    )?;
    tx.notify();
    Ok(id)
}

/// Inserts jobs inside `tx` with one statement (arrays unnested).
fn insert_jobs(tx: &mut Tx<'_>, jobs: &[NewJob]) -> Result<Vec<Uuid>> {
    let mut maxes = Vec::with_capacity(jobs.len());
    for j in jobs {
        let max = j
            .max_attempts
            .unwrap_or_else(|| tx.policy.max_attempts_for(&j.job_type));
        if max == 0 {
            return Err(Error::InvalidArgument {
                what: "max_attempts",
                message: "must be at least 1".to_owned(),
            });
        }
        maxes.push(int(max));
    }
    let ids: Vec<Uuid> = jobs.iter().map(|_| crate::store::new_job_id()).collect();
    let tenants: Vec<Uuid> = jobs.iter().map(|j| j.tenant_id).collect();
    let runs: Vec<Uuid> = jobs.iter().map(|j| j.run_id).collect();
    let types: Vec<&str> = jobs.iter().map(|j| j.job_type.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = jobs.iter().map(|j| &j.payload).collect();
    let due: Vec<Option<Timestamp>> = jobs.iter().map(|j| j.not_before).collect();
    let now = tx.now;
    let channel = tx.channel.to_owned();
    // One statement that also announces itself: it runs as its own
    // transaction, one round trip for the whole batch.
    tx.execute(
        "WITH added AS (
             INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
                 max_attempts, payload_json, created_at, updated_at, retry_at)
             SELECT i, t, r, ty, 'queued', 0, m, p, $8, $8, d
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::varchar[], $5::int4[],
                         $6::jsonb[], $7::timestamptz[]) AS x(i, t, r, ty, m, p, d)
             RETURNING 1)
         SELECT pg_notify($9, '') FROM (SELECT count(*) FROM added) AS n",
        &[
            &ids, &tenants, &runs, &types, &maxes, &payloads, &due, &now, &channel,
        ],
    )?;
    Ok(ids)
}

/// The attempt that ended a job, as its row holds it (succeeded or failed,
/// with no attempt row of its own yet).
const LAST_ATTEMPT: &str = "
SELECT j.claim_id, j.id, j.attempts, j.claimed_by, j.claimed_at, j.updated_at,
    CASE j.status WHEN 'succeeded' THEN 'succeeded' ELSE 'failed' END,
    CASE j.status WHEN 'failed' THEN j.last_error END, NULL::text
FROM research_jobs AS j
WHERE j.id = $1 AND j.status IN ('succeeded', 'failed') AND j.claim_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM job_attempts AS a WHERE a.job_id = j.id AND a.id = j.claim_id)";

/// Writes the attempt a job's row holds before something moves it on.
fn keep_last_attempt(tx: &mut Tx<'_>, job_id: Uuid) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO job_attempts (id, job_id, attempt, worker, started_at, finished_at,
                 outcome, error, output, tenant_id)
             SELECT last.*, (SELECT tenant_id FROM research_jobs WHERE id = $1)
             FROM ({LAST_ATTEMPT}) AS last"
        ),
        &[&job_id],
    )?;
    Ok(())
}

/// The fence every worker report passes: the job still runs under this
/// very claim. `$1`…`$4`: job id, worker, attempt, claim id.
fn fenced(update: &str) -> String {
    format!(
        "{update} WHERE j.id = $1 AND j.status = 'running' AND j.claim_id = $4
         AND j.locked_by = $2 AND j.attempts = $3"
    )
}

/// A fenced update that ends an attempt: the claim's tenant and start, or
/// `None` when the claim no longer held the job.
fn end_fenced(
    tx: &mut Tx<'_>,
    update: &str,
    token: &ClaimToken,
    extra: &[Param<'_>],
) -> Result<Option<(Uuid, Timestamp)>> {
    let attempt = int(token.attempt);
    let mut params: Vec<Param<'_>> =
        vec![&token.job_id, &token.worker, &attempt, &token.attempt_id];
    params.extend_from_slice(extra);
    let row = tx.opt(
        &format!("{} RETURNING j.tenant_id, j.claimed_at", fenced(update)),
        &params,
    )?;
    row.map(|r| Ok((col(&r, 0)?, col(&r, 1)?))).transpose()
}

/// Writes the row of an attempt that ended.
fn write_attempt(
    tx: &mut Tx<'_>,
    token: &ClaimToken,
    (tenant, started): (Uuid, Timestamp),
    outcome: &str,
    error: Option<&str>,
    output: Option<&str>,
) -> Result<()> {
    let now = tx.now;
    tx.execute(
        "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at,
             finished_at, outcome, error, output)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &token.job_id,
            &token.attempt_id,
            &tenant,
            &int(token.attempt),
            &token.worker,
            &started,
            &now,
            &outcome,
            &error,
            &output,
        ],
    )?;
    Ok(())
}

fn record_event(
    tx: &mut Tx<'_>,
    tenant: Uuid,
    id: Uuid,
    action: &str,
    detail: Option<&str>,
) -> Result<()> {
    let now = tx.now;
    tx.execute(
        "INSERT INTO job_events (job_id, id, tenant_id, at, action, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id, &Uuid::now_v7(), &tenant, &now, &action, &detail],
    )?;
    Ok(())
}

fn get_job(tx: &mut Tx<'_>, tenant: Uuid, id: Uuid) -> Result<Option<Job>> {
    tx.opt(
        &format!(
            "SELECT {JOB_COLUMNS} FROM research_jobs AS j WHERE j.id = $1 AND j.tenant_id = $2"
        ),
        &[&id, &tenant],
    )?
    .map(|r| job_from_row(&r))
    .transpose()
}

/// The claim, one statement: running jobs whose lock expired at their
/// last attempt fail (their attempt recorded lost: never run once more
/// than allowed); then the three walks (ready, due retries, expired locks),
/// each a `FOR UPDATE SKIP LOCKED` CTE, oldest first, past paused types and
/// the capped types in `$5`, at most `$7` per capped type in `$6`; one
/// `UPDATE … RETURNING` takes them, with each row as it stood before (to
/// tell rescues). Its first row's first column lists the jobs it failed
/// (JSON), and a row whose other columns are NULL means nothing was taken.
const CLAIM_SQL: &str = "
WITH lost AS (
    SELECT id FROM research_jobs
    WHERE status = 'running' AND locked_at < $2 AND attempts >= max_attempts
    ORDER BY locked_at FOR UPDATE SKIP LOCKED),
kept AS (
    INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at, finished_at,
        outcome, error)
    SELECT o.id, coalesce(o.claim_id, gen_random_uuid()), o.tenant_id, o.attempts, o.locked_by,
        coalesce(o.claimed_at, o.locked_at), $1, 'lost',
        'worker ' || o.locked_by || ' was lost during attempt ' || o.attempts || '/'
            || o.max_attempts || ' (lock expired at '
            || to_char(o.locked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || ')'
    FROM research_jobs AS o JOIN lost USING (id)),
failed AS (
    UPDATE research_jobs AS j
    SET status = 'failed', retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = $1,
        last_error = 'worker ' || j.locked_by || ' was lost during attempt ' || j.attempts || '/'
            || j.max_attempts || ' (lock expired at '
            || to_char(j.locked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || ')'
    FROM lost
    WHERE j.id = lost.id
    RETURNING j.id, j.attempts, j.last_error),
ready AS (
    SELECT id, job_type, created_at FROM research_jobs AS r
    WHERE status = 'queued' AND retry_at IS NULL AND job_type <> ALL($5::varchar[])
      AND NOT EXISTS (SELECT 1 FROM research_paused AS p WHERE p.job_type IN (r.job_type, '*'))
    ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED),
due AS (
    SELECT id, job_type, created_at FROM research_jobs AS r
    WHERE status = 'queued' AND retry_at IS NOT NULL AND retry_at <= $1
      AND job_type <> ALL($5::varchar[])
      AND NOT EXISTS (SELECT 1 FROM research_paused AS p WHERE p.job_type IN (r.job_type, '*'))
    ORDER BY retry_at LIMIT $3 FOR UPDATE SKIP LOCKED),
expired AS (
    SELECT id, job_type, created_at FROM research_jobs AS r
    WHERE status = 'running' AND locked_at < $2 AND attempts < max_attempts
      AND job_type <> ALL($5::varchar[])
      AND NOT EXISTS (SELECT 1 FROM research_paused AS p WHERE p.job_type IN (r.job_type, '*'))
    ORDER BY locked_at LIMIT $3 FOR UPDATE SKIP LOCKED),
picked AS (
    SELECT id FROM (
        SELECT c.id, c.created_at,
               row_number() OVER (PARTITION BY c.job_type ORDER BY c.created_at, c.id) AS rn,
               r.room
        FROM (SELECT * FROM ready UNION ALL SELECT * FROM due UNION ALL SELECT * FROM expired) AS c
        LEFT JOIN unnest($6::varchar[], $7::int8[]) AS r(job_type, room) USING (job_type)
    ) AS x
    WHERE x.room IS NULL OR x.rn <= x.room
    ORDER BY x.created_at, x.id LIMIT $3),
old AS (
    SELECT o.id, o.status, o.claim_id, o.attempts, o.locked_by, o.tenant_id,
           coalesce(o.claimed_at, o.locked_at) AS started
    FROM research_jobs AS o JOIN picked USING (id)),
rescued AS (
    INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at, finished_at,
        outcome, error)
    SELECT o.id, coalesce(o.claim_id, gen_random_uuid()), o.tenant_id, o.attempts, o.locked_by,
        o.started, $1, 'lost', 'lock expired; the job was rescued'
    FROM old AS o WHERE o.status = 'running'),
claimed AS (
    UPDATE research_jobs AS j
    SET status = 'running', attempts = j.attempts + 1, locked_at = $1, locked_by = $4,
        retry_at = NULL, updated_at = $1, claim_id = gen_random_uuid(), claimed_at = $1,
        claimed_by = $4
    FROM old
    WHERE j.id = old.id
    RETURNING j.id, j.tenant_id, j.run_id, j.job_type, j.status, j.attempts, j.max_attempts,
        j.retry_at, j.locked_at, j.locked_by, j.last_error, j.payload_json, j.created_at,
        j.updated_at, j.claim_id, old.status AS old_status, old.claim_id AS old_claim,
        old.attempts AS old_attempts, old.locked_by AS old_worker, old.started)
SELECT c.id, c.tenant_id, c.run_id, c.job_type, c.status, c.attempts, c.max_attempts,
    c.retry_at, c.locked_at, c.locked_by, c.last_error, c.payload_json, c.created_at,
    c.updated_at, c.claim_id, c.old_status, c.old_claim, c.old_attempts, c.old_worker, c.started,
    (SELECT json_agg(json_build_array(f.id, f.attempts, f.last_error)) FROM failed AS f)
FROM (SELECT 1) AS one LEFT JOIN claimed AS c ON true";

/// The claim inside `tx`.
fn claim_in(tx: &mut Tx<'_>, n: u32, worker: &str) -> Result<Vec<Claim>> {
    let now = tx.now;
    let expiry = now.minus(tx.policy.lock_timeout);
    let caps: Vec<(String, u32)> = tx.policy.caps().map(|(t, c)| (t.to_owned(), c)).collect();
    let mut room: HashMap<String, u32> = HashMap::new();
    if !caps.is_empty() {
        // Claimers of every process count and take places one at a time.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::CAPS_LOCK])?;
        let names: Vec<&str> = caps.iter().map(|(t, _)| t.as_str()).collect();
        let running: HashMap<String, i64> = tx
            .query(
                "SELECT job_type::text, count(*) FROM research_jobs
                 WHERE status = 'running' AND locked_at >= $1 AND job_type = ANY($2::varchar[])
                 GROUP BY job_type",
                &[&expiry, &names],
            )?
            .iter()
            .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
            .collect::<Result<_>>()?;
        for (name, cap) in &caps {
            let busy = running.get(name).copied().unwrap_or(0);
            room.insert(
                name.clone(),
                u32::try_from(i64::from(*cap) - busy).unwrap_or(0),
            );
        }
    }
    let mut claims: Vec<Claim> = Vec::new();
    // One round without caps; with caps, another round whenever a type ran
    // out of room (its jobs may have kept others out of the last one).
    loop {
        let want = n - claims.len() as u32;
        let blocked: Vec<String> = room
            .iter()
            .filter(|(_, r)| **r == 0)
            .map(|(t, _)| t.clone())
            .collect();
        let (types, rooms): (Vec<String>, Vec<i64>) = room
            .iter()
            .filter(|(_, r)| **r > 0)
            .map(|(t, r)| (t.clone(), i64::from(*r)))
            .unzip();
        let rows = tx.query(
            CLAIM_SQL,
            &[
                &now,
                &expiry,
                &i64::from(want),
                &worker,
                &blocked,
                &types,
                &rooms,
            ],
        )?;
        if let Some(failed) = rows
            .first()
            .map(|r| col::<Option<serde_json::Value>>(r, 20))
        {
            for f in failed?
                .as_ref()
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let id = f[0].as_str().and_then(|t| Uuid::parse_str(t).ok());
                if let Some(id) = id {
                    tx.defer(Transition {
                        job_id: id,
                        kind: TransitionKind::Failed {
                            attempts: f[1]
                                .as_u64()
                                .and_then(|a| u32::try_from(a).ok())
                                .unwrap_or(0),
                            error: f[2].as_str().unwrap_or_default().to_owned(),
                        },
                    });
                }
            }
        }
        let rows: Vec<&postgres::Row> = rows
            .iter()
            .filter(|r| col::<Option<Uuid>>(r, 0).is_ok_and(|id| id.is_some()))
            .collect();
        let got = rows.len();
        let mut filled = false;
        for r in rows {
            let job = job_from_row(r)?;
            if let Some(left) = room.get_mut(&job.job_type) {
                *left = left.saturating_sub(1);
                filled |= *left == 0;
            }
            let attempt_id: Uuid = col(r, 14)?;
            let old_status: String = col(r, 15)?;
            let rescued_from = if old_status == "running" {
                let from: String = col(r, 18)?;
                tx.defer(Transition {
                    job_id: job.id,
                    kind: TransitionKind::Rescued {
                        from: from.clone(),
                        attempt: job.attempts,
                        max_attempts: job.max_attempts,
                    },
                });
                Some(from)
            } else {
                None
            };
            claims.push(Claim::of(job, worker, attempt_id, rescued_from));
        }
        if got == 0 || claims.len() as u32 >= n || !filled {
            break;
        }
    }
    claims.sort_by(|a, b| {
        a.job
            .created_at
            .cmp(&b.job.created_at)
            .then(a.job.id.cmp(&b.job.id))
    });
    Ok(claims)
}

pub(super) fn explain_claim(store: &mut PgStore) -> Result<Vec<String>> {
    store.read("explain the claim", |tx| {
        let now = tx.now;
        let empty: Vec<String> = Vec::new();
        let rooms: Vec<i64> = Vec::new();
        let rows = tx.query(
            &format!("EXPLAIN {CLAIM_SQL}"),
            &[&now, &now, &10i64, &"w", &empty, &empty, &rooms],
        );
        // EXPLAIN of an UPDATE in a read-only transaction is allowed (it
        // does not run it).
        rows?
            .iter()
            .map(|r| col::<String>(r, 0))
            .collect::<Result<Vec<_>>>()
    })
}

/// Records completions in order.
fn apply_completions(tx: &mut Tx<'_>, completions: &[Completion]) -> Result<Vec<Report>> {
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
    let applied = succeed_batch(tx, &successes)?;
    let mut out = Vec::with_capacity(completions.len());
    for c in completions {
        if !plain(c) {
            out.push(apply_completion(tx, c)?);
        } else if applied.contains(&c.token.job_id) {
            tx.defer(Transition {
                job_id: c.token.job_id,
                kind: TransitionKind::Succeeded {
                    attempt: c.token.attempt,
                    max_attempts: c.token.max_attempts,
                },
            });
            out.push(Report::Applied(JobStatus::Succeeded));
        } else {
            stale(tx, &c.token);
            out.push(Report::Stale);
        }
    }
    Ok(out)
}

fn stale(tx: &mut Tx<'_>, token: &ClaimToken) {
    tx.defer(Transition {
        job_id: token.job_id,
        kind: TransitionKind::Stale {
            worker: token.worker.clone(),
            attempt: token.attempt,
        },
    });
}

/// Marks fenced claims succeeded in one statement.
fn succeed_batch(tx: &mut Tx<'_>, tokens: &[&ClaimToken]) -> Result<HashSet<Uuid>> {
    if tokens.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = tokens.iter().map(|t| t.job_id).collect();
    let workers: Vec<&str> = tokens.iter().map(|t| t.worker.as_str()).collect();
    let attempts: Vec<i32> = tokens.iter().map(|t| int(t.attempt)).collect();
    let claims: Vec<Uuid> = tokens.iter().map(|t| t.attempt_id).collect();
    let now = tx.now;
    tx.query(
        "UPDATE research_jobs AS j
         SET status = 'succeeded', locked_at = NULL, locked_by = NULL, updated_at = $1
         FROM unnest($2::uuid[], $3::varchar[], $4::int4[], $5::uuid[]) AS c(j, w, a, t)
         WHERE j.id = c.j AND j.status = 'running' AND j.claim_id = c.t
           AND j.locked_by = c.w AND j.attempts = c.a
         RETURNING j.id",
        &[&now, &ids, &workers, &attempts, &claims],
    )?
    .iter()
    .map(|r| col(r, 0))
    .collect()
}

fn apply_completion(tx: &mut Tx<'_>, c: &Completion) -> Result<Report> {
    let report = apply_report(tx, &c.token, &c.outcome, c.output.as_deref())?;
    if report == Report::Applied(JobStatus::Succeeded) {
        if let Some(sources) = &c.sources {
            super::runs::replace_sources(tx, sources)?;
        }
        queue_next_steps(tx, &c.token, &c.then)?;
    }
    Ok(report)
}

/// Queues the next steps of a job's run: one job per type unless the run
/// already has a job of that type.
fn queue_next_steps(tx: &mut Tx<'_>, token: &ClaimToken, then: &[String]) -> Result<()> {
    for job_type in then {
        let id = crate::store::new_job_id();
        let max = int(tx.policy.max_attempts_for(job_type));
        let now = tx.now;
        let queued = tx.opt(
            "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
                 max_attempts, payload_json, created_at, updated_at)
             SELECT $1, j.tenant_id, j.run_id, $2::varchar, 'queued', 0, $3, j.payload_json, $4, $4
             FROM research_jobs AS j
             WHERE j.id = $5
               AND NOT EXISTS (SELECT 1 FROM research_jobs AS o
                               WHERE o.tenant_id = j.tenant_id AND o.run_id = j.run_id
                                 AND o.job_type = $2::varchar)
             RETURNING run_id",
            &[&id, job_type, &max, &now, &token.job_id],
        )?;
        if let Some(r) = queued {
            tx.notify();
            tx.defer(Transition {
                job_id: id,
                kind: TransitionKind::StepQueued {
                    job_type: job_type.clone(),
                    run_id: col(&r, 0)?,
                    after: token.job_id,
                },
            });
        }
    }
    Ok(())
}

fn apply_report(
    tx: &mut Tx<'_>,
    token: &ClaimToken,
    outcome: &Outcome,
    output: Option<&str>,
) -> Result<Report> {
    let now = tx.now;
    let (ended, status, error) = match outcome {
        Outcome::Succeeded => {
            let e = end_fenced(
                tx,
                "UPDATE research_jobs AS j SET status = 'succeeded', locked_at = NULL,
                     locked_by = NULL, updated_at = $5",
                token,
                &[&now],
            )?;
            (e, JobStatus::Succeeded, None)
        }
        Outcome::Retry(message) | Outcome::Fail(message) => {
            let message = truncate_error(message);
            let permanent = matches!(outcome, Outcome::Fail(_));
            let decision = decide_failure(
                token.attempt,
                token.max_attempts,
                permanent,
                tx.policy.backoff_for(&token.job_type),
                &token.job_id.to_string(),
                now,
            );
            match decision {
                FailureDecision::Retry { delay, retry_at } => {
                    let e = end_fenced(
                        tx,
                        "UPDATE research_jobs AS j SET status = 'queued', retry_at = $6,
                             locked_at = NULL, locked_by = NULL, last_error = $7, updated_at = $5",
                        token,
                        &[&now, &retry_at, &message],
                    )?;
                    if e.is_some() {
                        tx.notify();
                        tx.defer(Transition {
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
                    (e, JobStatus::Queued, Some(message))
                }
                FailureDecision::Fail => {
                    let e = end_fenced(
                        tx,
                        "UPDATE research_jobs AS j SET status = 'failed', retry_at = NULL,
                             locked_at = NULL, locked_by = NULL, last_error = $6, updated_at = $5",
                        token,
                        &[&now, &message],
                    )?;
                    if e.is_some() {
                        tx.defer(Transition {
                            job_id: token.job_id,
                            kind: TransitionKind::Failed {
                                attempts: token.attempt,
                                error: message.to_owned(),
                            },
                        });
                    }
                    (e, JobStatus::Failed, Some(message))
                }
            }
        }
    };
    let Some(ended) = ended else {
        stale(tx, token);
        return Ok(Report::Stale);
    };
    let outcome_name = match (outcome, status) {
        (Outcome::Succeeded, _) => "succeeded",
        (_, JobStatus::Queued) => "retry",
        _ => "failed",
    };
    if status == JobStatus::Queued || output.is_some() {
        write_attempt(
            tx,
            token,
            ended,
            outcome_name,
            error,
            output.map(truncate_error),
        )?;
    }
    if status == JobStatus::Succeeded {
        tx.defer(Transition {
            job_id: token.job_id,
            kind: TransitionKind::Succeeded {
                attempt: token.attempt,
                max_attempts: token.max_attempts,
            },
        });
    }
    Ok(Report::Applied(status))
}

fn release_started(tx: &mut Tx<'_>, t: &ClaimToken) -> Result<Report> {
    let released_before: i64 = col(
        &tx.one(
            "SELECT count(*) FROM job_attempts WHERE job_id = $1 AND outcome = 'released'",
            &[&t.job_id],
        )?,
        0,
    )?;
    let released_before = u32::try_from(released_before).unwrap_or(u32::MAX);
    let decision = decide_release(t.attempt, t.max_attempts, released_before);
    let times = released_before + 1;
    let now = tx.now;
    let (sql, status, note) = match decision {
        ReleaseDecision::GiveBack => (
            "UPDATE research_jobs AS j SET status = 'queued', attempts = j.attempts - 1,
                 retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = $5,
                 last_error = coalesce($6, j.last_error)",
            JobStatus::Queued,
            format!(
                "released at shutdown; the attempt is given back (interruption {times} of {RELEASE_ALLOWANCE} free ones)"
            ),
        ),
        ReleaseDecision::Requeue => (
            "UPDATE research_jobs AS j SET status = 'queued', retry_at = NULL, locked_at = NULL,
                 locked_by = NULL, updated_at = $5, last_error = $6",
            JobStatus::Queued,
            format!(
                "released at shutdown; attempt {}/{} counts (interrupted {times} times)",
                t.attempt, t.max_attempts
            ),
        ),
        ReleaseDecision::Fail => (
            "UPDATE research_jobs AS j SET status = 'failed', retry_at = NULL, locked_at = NULL,
                 locked_by = NULL, updated_at = $5, last_error = $6",
            JobStatus::Failed,
            format!(
                "interrupted by a shutdown at its last attempt {}/{} (interrupted {times} times)",
                t.attempt, t.max_attempts
            ),
        ),
    };
    // A free give-back leaves last_error as it was.
    let kept: Option<&str> = if decision == ReleaseDecision::GiveBack {
        None
    } else {
        Some(&note)
    };
    let Some(ended) = end_fenced(tx, sql, t, &[&now, &kept])? else {
        return Ok(Report::Stale);
    };
    write_attempt(tx, t, ended, "released", Some(&note), None)?;
    if status == JobStatus::Queued {
        tx.notify();
    }
    tx.defer(Transition {
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

fn paused_row(r: &Row) -> Result<Paused> {
    let job_type: String = col(r, 0)?;
    Ok(Paused {
        job_type: (job_type != ALL_TYPES).then_some(job_type),
        since: col(r, 1)?,
    })
}

fn attempt_from_row(r: &Row) -> Result<Attempt> {
    Ok(Attempt {
        id: col(r, 0)?,
        job_id: col(r, 1)?,
        attempt: count(col(r, 2)?),
        worker: col(r, 3)?,
        started_at: col(r, 4)?,
        finished_at: col(r, 5)?,
        outcome: col(r, 6)?,
        error: col(r, 7)?,
        output: col(r, 8)?,
    })
}

impl PgStore {
    /// Enqueues one job.
    pub fn enqueue(&mut self, job: &NewJob, now: Timestamp) -> Result<Uuid> {
        self.write("enqueue a job", now, |tx| insert_job(tx, job))
    }

    /// Enqueues many jobs in one transaction, one statement for all.
    pub fn enqueue_many(&mut self, jobs: &[NewJob], now: Timestamp) -> Result<Vec<Uuid>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.write_one("enqueue jobs", now, |tx| insert_jobs(tx, jobs))
    }

    /// Claims up to `n` jobs for `worker`.
    pub fn claim(&mut self, n: u32, worker: &str, now: Timestamp) -> Result<Vec<Claim>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.policy().caps().next().is_none() {
            // Without caps the claim is one statement.
            return self.write_one("claim jobs", now, |tx| claim_in(tx, n, worker));
        }
        self.write("claim jobs", now, |tx| claim_in(tx, n, worker))
    }

    /// Records completions, then claims, in one transaction.
    pub fn cycle(
        &mut self,
        completions: &[Completion],
        n: u32,
        worker: &str,
        now: Timestamp,
    ) -> Result<(Vec<Report>, Vec<Claim>)> {
        if completions.is_empty() {
            return Ok((Vec::new(), self.claim(n, worker, now)?));
        }
        self.write("record outcomes and claim jobs", now, |tx| {
            let reports = apply_completions(tx, completions)?;
            let claims = if n == 0 {
                Vec::new()
            } else {
                claim_in(tx, n, worker)?
            };
            Ok((reports, claims))
        })
    }

    /// Refreshes the locks of live claims; how many still hold.
    pub fn heartbeat(&mut self, tokens: &[ClaimToken], now: Timestamp) -> Result<usize> {
        if tokens.is_empty() {
            return Ok(0);
        }
        self.write("heartbeat jobs", now, |tx| {
            let now = tx.now;
            let mut held = 0;
            for t in tokens {
                let attempt = int(t.attempt);
                held += tx.execute(
                    &fenced("UPDATE research_jobs AS j SET locked_at = greatest(j.locked_at, $5)"),
                    &[&t.job_id, &t.worker, &attempt, &t.attempt_id, &now],
                )? as usize;
            }
            Ok(held)
        })
    }

    /// Records completions in one transaction.
    pub fn complete(&mut self, completions: &[Completion], now: Timestamp) -> Result<Vec<Report>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        self.write("record job outcomes", now, |tx| {
            apply_completions(tx, completions)
        })
    }

    /// Gives claims back at shutdown.
    pub fn release(&mut self, tokens: &[ClaimToken], now: Timestamp) -> Result<Vec<Report>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.write("release jobs", now, |tx| {
            tokens.iter().map(|t| release_started(tx, t)).collect()
        })
    }

    /// Gives back claims whose handler never started.
    pub fn release_unstarted(
        &mut self,
        tokens: &[ClaimToken],
        now: Timestamp,
    ) -> Result<Vec<Report>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.write("release jobs", now, |tx| {
            let now = tx.now;
            let mut out = Vec::with_capacity(tokens.len());
            for t in tokens {
                let attempt = int(t.attempt);
                let changed = tx.execute(
                    &fenced(
                        "UPDATE research_jobs AS j SET status = 'queued', attempts = j.attempts - 1,
                             retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = $5",
                    ),
                    &[&t.job_id, &t.worker, &attempt, &t.attempt_id, &now],
                )?;
                if changed == 1 {
                    tx.notify();
                    out.push(Report::Applied(JobStatus::Queued));
                } else {
                    out.push(Report::Stale);
                }
            }
            Ok(out)
        })
    }

    /// Worker names holding running jobs.
    pub fn running_workers(&mut self) -> Result<Vec<String>> {
        self.read("list running workers", |tx| {
            tx.query(
                "SELECT DISTINCT locked_by::text FROM research_jobs WHERE status = 'running'",
                &[],
            )?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        })
    }

    /// Rescues at once the running jobs of workers proved gone.
    pub fn rescue_workers(
        &mut self,
        workers: &[String],
        now: Timestamp,
    ) -> Result<Vec<(Uuid, JobStatus)>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        self.write("rescue jobs of dead workers", now, |tx| {
            let now = tx.now;
            let why = "'worker ' || j.locked_by || ' died during attempt ' || j.attempts || '/'
                       || j.max_attempts || ' (its process is gone)'";
            tx.execute(
                &format!(
                    "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at,
                         finished_at, outcome, error)
                     SELECT j.id, coalesce(j.claim_id, gen_random_uuid()), j.tenant_id, j.attempts,
                         j.locked_by, coalesce(j.claimed_at, j.locked_at), $1, 'lost', {why}
                     FROM research_jobs AS j
                     WHERE j.status = 'running' AND j.locked_by = ANY($2::varchar[])"
                ),
                &[&now, &workers],
            )?;
            let mut out = Vec::new();
            for (status, set, extra) in [
                (
                    JobStatus::Failed,
                    "status = 'failed'",
                    "AND j.attempts >= j.max_attempts",
                ),
                (JobStatus::Queued, "status = 'queued'", ""),
            ] {
                let rows = tx.query(
                    &format!(
                        "UPDATE research_jobs AS j SET {set}, retry_at = NULL, locked_at = NULL,
                             locked_by = NULL, updated_at = $1, last_error = {why}
                         WHERE j.status = 'running' AND j.locked_by = ANY($2::varchar[]) {extra}
                         RETURNING j.id, j.attempts, j.max_attempts, j.last_error"
                    ),
                    &[&now, &workers],
                )?;
                for r in rows {
                    let (id, attempts, max, error): (Uuid, i32, i32, String) =
                        (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?, col(&r, 3)?);
                    let kind = if status == JobStatus::Failed {
                        TransitionKind::Failed {
                            attempts: count(attempts),
                            error,
                        }
                    } else {
                        tx.notify();
                        TransitionKind::RescuedAtOnce {
                            error,
                            attempt: count(attempts),
                            max_attempts: count(max),
                        }
                    };
                    tx.defer(Transition { job_id: id, kind });
                    out.push((id, status));
                }
            }
            Ok(out)
        })
    }

    /// Cancels a queued or failed job.
    pub fn cancel(&mut self, tenant: Uuid, id: Uuid, now: Timestamp) -> Result<Job> {
        self.user_transition(tenant, id, now, None, "cancel")
    }

    /// Queues a failed or cancelled job again.
    pub fn retry(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        now: Timestamp,
        at: Option<Timestamp>,
    ) -> Result<Job> {
        self.user_transition(tenant, id, now, at, "retry")
    }

    fn user_transition(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        now: Timestamp,
        at: Option<Timestamp>,
        action: &'static str,
    ) -> Result<Job> {
        self.write("change a job", now, |tx| {
            let now = tx.now;
            let not_found = || Error::JobNotFound {
                id: id.to_string(),
                tenant: tenant.to_string(),
            };
            let job = tx
                .opt(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM research_jobs AS j
                         WHERE j.id = $1 AND j.tenant_id = $2 FOR UPDATE"
                    ),
                    &[&id, &tenant],
                )?
                .map(|r| job_from_row(&r))
                .transpose()?
                .ok_or_else(not_found)?;
            let allowed = if action == "cancel" {
                JobStatus::can_cancel(job.status)
            } else {
                JobStatus::can_retry(job.status)
            };
            if !allowed {
                return Err(Error::InvalidTransition {
                    action,
                    id: id.to_string(),
                    status: job.status,
                });
            }
            keep_last_attempt(tx, id)?;
            if action == "cancel" {
                tx.execute(
                    "UPDATE research_jobs SET status = 'cancelled', retry_at = NULL, updated_at = $3
                     WHERE id = $1 AND tenant_id = $2",
                    &[&id, &tenant, &now],
                )?;
            } else {
                tx.execute(
                    "UPDATE research_jobs SET status = 'queued', attempts = 0, retry_at = $4,
                         updated_at = $3
                     WHERE id = $1 AND tenant_id = $2",
                    &[&id, &tenant, &now, &at],
                )?;
                tx.notify();
            }
            let detail = crate::store::user_action_detail(job.status, action, at);
            record_event(tx, tenant, id, action, Some(&detail))?;
            let changed = get_job(tx, tenant, id)?.ok_or_else(not_found)?;
            tx.defer(Transition {
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

    /// Pauses claims of `job_type` (every type when `None`).
    pub fn pause(&mut self, job_type: Option<&str>, now: Timestamp) -> Result<bool> {
        let key = job_type.unwrap_or(ALL_TYPES);
        self.write("pause a job type", now, |tx| {
            let now = tx.now;
            let n = tx.execute(
                "INSERT INTO research_paused (job_type, paused_at) VALUES ($1, $2)
                 ON CONFLICT (job_type) DO NOTHING",
                &[&key, &now],
            )?;
            Ok(n == 1)
        })
    }

    /// Lifts pauses.
    pub fn resume(&mut self, job_type: Option<&str>) -> Result<Vec<Paused>> {
        self.write("resume a job type", Timestamp::now(), |tx| {
            tx.notify();
            tx.query(
                "DELETE FROM research_paused WHERE $1::text IS NULL OR job_type = $1
                 RETURNING job_type::text, paused_at",
                &[&job_type],
            )?
            .iter()
            .map(paused_row)
            .collect()
        })
    }

    /// The pauses in force, oldest first.
    pub fn paused(&mut self) -> Result<Vec<Paused>> {
        self.read("read the paused job types", |tx| {
            tx.query(
                "SELECT job_type::text, paused_at FROM research_paused ORDER BY paused_at, job_type",
                &[],
            )?
            .iter()
            .map(paused_row)
            .collect()
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

    /// A job's attempts, oldest first, the running one last.
    pub fn attempts(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<Attempt>> {
        self.read("read attempts", |tx| {
            tx.query(
                &format!(
                    "SELECT * FROM (
                         SELECT id, job_id, attempt, worker::text, started_at, finished_at,
                             outcome::text, error, output, 0 AS running
                         FROM job_attempts WHERE job_id = $1 AND tenant_id = $2
                         UNION ALL
                         SELECT claim_id, id, attempts, locked_by::text, claimed_at, NULL, NULL,
                             NULL, NULL, 1
                         FROM research_jobs
                         WHERE id = $1 AND tenant_id = $2 AND status = 'running'
                           AND claim_id IS NOT NULL
                         UNION ALL
                         SELECT last.claim_id, last.id, last.attempts, last.claimed_by::text,
                             last.claimed_at, last.updated_at, last.status, last.last_error,
                             last.output, 0
                         FROM ({LAST_ATTEMPT}) AS last(claim_id, id, attempts, claimed_by,
                             claimed_at, updated_at, status, last_error, output)
                         WHERE EXISTS (SELECT 1 FROM research_jobs WHERE id = $1 AND tenant_id = $2)
                     ) AS a
                     ORDER BY 5, 10, 6, 1"
                ),
                &[&id, &tenant],
            )?
            .iter()
            .map(attempt_from_row)
            .collect()
        })
    }

    /// Manual actions on a job, oldest first.
    pub fn events(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<JobEvent>> {
        self.read("read job events", |tx| {
            tx.query(
                "SELECT at, action::text, detail FROM job_events
                 WHERE job_id = $1 AND tenant_id = $2 ORDER BY id",
                &[&id, &tenant],
            )?
            .iter()
            .map(|r| {
                Ok(JobEvent {
                    at: col(r, 0)?,
                    action: col(r, 1)?,
                    detail: col(r, 2)?,
                })
            })
            .collect()
        })
    }

    /// Records a manual action on a job.
    pub fn note_event(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        action: &'static str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.write("record a job event", now, |tx| {
            record_event(tx, tenant, id, action, Some(detail))
        })
    }

    /// Jobs of `tenant` matching `filter`, newest first.
    pub fn jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<Vec<Job>> {
        let status = filter.status.map(JobStatus::as_str);
        let limit = filter.limit.map(i64::from);
        let text = filter.text.as_deref().filter(|t| !t.is_empty());
        let (last_at, last_id) = filter.before.unzip();
        self.read("list jobs", |tx| {
            tx.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM research_jobs AS j
                     WHERE j.tenant_id = $1
                       AND ($2::text IS NULL OR j.status = $2)
                       AND ($3::text IS NULL OR j.job_type = $3)
                       AND ($4::uuid IS NULL OR j.run_id = $4)
                       AND ($6::text IS NULL OR strpos(j.payload_json::text, $6) > 0
                            OR strpos(coalesce(j.last_error, ''), $6) > 0)
                       AND ($7::timestamptz IS NULL OR (j.created_at, j.id) < ($7, $8))
                     ORDER BY j.created_at DESC, j.id DESC
                     LIMIT $5"
                ),
                &[
                    &tenant,
                    &status,
                    &filter.job_type,
                    &filter.run_id,
                    &limit,
                    &text,
                    &last_at,
                    &last_id,
                ],
            )?
            .iter()
            .map(job_from_row)
            .collect()
        })
    }

    /// How many jobs of `tenant` match `filter` (its limit and page aside).
    pub fn count_jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<u64> {
        let status = filter.status.map(JobStatus::as_str);
        let text = filter.text.as_deref().filter(|t| !t.is_empty());
        self.read("count jobs", |tx| {
            let n: i64 = col(
                &tx.one(
                    "SELECT count(*) FROM research_jobs
                     WHERE tenant_id = $1
                       AND ($2::text IS NULL OR status = $2)
                       AND ($3::text IS NULL OR job_type = $3)
                       AND ($4::uuid IS NULL OR run_id = $4)
                       AND ($5::text IS NULL OR strpos(payload_json::text, $5) > 0
                            OR strpos(coalesce(last_error, ''), $5) > 0)",
                    &[&tenant, &status, &filter.job_type, &filter.run_id, &text],
                )?,
                0,
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Finished jobs and attempts waiting for a retry, per minute since
    /// `since`.
    pub fn throughput(&mut self, tenant: Uuid, since: Timestamp) -> Result<Vec<MinuteCount>> {
        self.read("count finished jobs", |tx| {
            let mut per = std::collections::BTreeMap::new();
            for row in tx.query(
                "SELECT to_char(date_trunc('minute', updated_at) AT TIME ZONE 'UTC',
                                'YYYY-MM-DD\"T\"HH24:MI'), status, count(*)
                 FROM research_jobs
                 WHERE tenant_id = $1 AND status IN ('succeeded', 'failed')
                   AND updated_at >= $2
                 GROUP BY 1, 2
                 UNION ALL
                 SELECT to_char(date_trunc('minute', finished_at) AT TIME ZONE 'UTC',
                                'YYYY-MM-DD\"T\"HH24:MI'), 'retry', count(*)
                 FROM job_attempts
                 WHERE tenant_id = $1 AND outcome = 'retry' AND finished_at >= $2
                 GROUP BY 1",
                &[&tenant, &since],
            )? {
                let minute: String = col(&row, 0)?;
                let what: String = col(&row, 1)?;
                let n: i64 = col(&row, 2)?;
                add_minute(&mut per, &minute, &what, n);
            }
            Ok(per.into_values().collect())
        })
    }

    /// Counts for `bundleq status`.
    pub fn stats(&mut self, tenant: Uuid, now: Timestamp) -> Result<Stats> {
        let caller_clock = self.options.caller_clock;
        self.read("count jobs", |tx| {
            // Due or not is decided by the database's clock.
            let now = if caller_clock {
                now
            } else {
                col(&tx.one("SELECT now()", &[])?, 0)?
            };
            let mut stats = Stats {
                counts: JobStatus::ALL.iter().map(|s| (*s, 0)).collect(),
                ..Stats::default()
            };
            // One pass: counts per type and bucket, the oldest queued job
            // and the next retry with them (the per-status counts follow).
            for r in tx.query(
                "SELECT job_type::text,
                     CASE WHEN status = 'queued' AND retry_at > $2 AND attempts = 0 THEN 'scheduled'
                          WHEN status = 'queued' AND retry_at > $2 THEN 'retrying'
                          WHEN status = 'queued' THEN 'ready'
                          ELSE status::text END,
                     count(*),
                     min(created_at) FILTER (WHERE status = 'queued'),
                     min(retry_at) FILTER (WHERE status = 'queued' AND retry_at > $2)
                 FROM research_jobs WHERE tenant_id = $1 GROUP BY 1, 2",
                &[&tenant, &now],
            )? {
                let (job_type, bucket, n): (String, String, i64) =
                    (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?);
                let (oldest, next): (Option<Timestamp>, Option<Timestamp>) =
                    (col(&r, 3)?, col(&r, 4)?);
                let n = u64::try_from(n).unwrap_or(0);
                let status = match bucket.as_str() {
                    "ready" => {
                        stats.ready += n;
                        JobStatus::Queued
                    }
                    "scheduled" => {
                        stats.scheduled += n;
                        JobStatus::Queued
                    }
                    "retrying" => {
                        stats.retrying += n;
                        JobStatus::Queued
                    }
                    other => status_of(other)?,
                };
                *stats.counts.entry(status).or_insert(0) += n;
                stats.oldest_queued = earliest(stats.oldest_queued, oldest);
                stats.next_retry = earliest(stats.next_retry, next);
                stats.by_type.entry(job_type).or_default().insert(bucket, n);
            }
            Ok(stats)
        })
    }

    /// Jobs per status over all tenants.
    pub fn counts_all(&mut self) -> Result<BTreeMap<JobStatus, u64>> {
        self.read("count jobs", |tx| {
            let mut out = BTreeMap::new();
            for r in tx.query(
                "SELECT status::text, count(*) FROM research_jobs GROUP BY status",
                &[],
            )? {
                let (s, n): (String, i64) = (col(&r, 0)?, col(&r, 1)?);
                out.insert(status_of(&s)?, u64::try_from(n).unwrap_or(0));
            }
            Ok(out)
        })
    }

    /// When the next queued job becomes due, in the caller's clock (the
    /// database's time of it, moved by the difference of the two clocks).
    pub fn next_due(&mut self, now: Timestamp) -> Result<Option<Timestamp>> {
        let caller_clock = self.options.caller_clock;
        self.read("find the next due job", |tx| {
            let row = tx.one(
                "SELECT EXISTS (SELECT 1 FROM research_jobs WHERE status = 'queued' AND retry_at IS NULL),
                        (SELECT min(retry_at) FROM research_jobs
                         WHERE status = 'queued' AND retry_at IS NOT NULL),
                        now()",
                &[],
            )?;
            let ready: bool = col(&row, 0)?;
            if ready {
                return Ok(Some(now));
            }
            let at: Option<Timestamp> = col(&row, 1)?;
            let server: Timestamp = col(&row, 2)?;
            Ok(at.map(|t| in_caller_clock(t, server, now, caller_clock)))
        })
    }

    /// The earliest lock of any running job, in the caller's clock.
    pub fn oldest_lock(&mut self) -> Result<Option<Timestamp>> {
        let now = Timestamp::now();
        let caller_clock = self.options.caller_clock;
        self.read("find the oldest lock", |tx| {
            let row = tx.one(
                "SELECT min(locked_at), now() FROM research_jobs WHERE status = 'running'",
                &[],
            )?;
            let at: Option<Timestamp> = col(&row, 0)?;
            let server: Timestamp = col(&row, 1)?;
            Ok(at.map(|t| in_caller_clock(t, server, now, caller_clock)))
        })
    }

    /// Deletes (or lists) finished jobs of `tenant`.
    pub fn prune(
        &mut self,
        tenant: Uuid,
        filter: &PruneFilter,
        dry_run: bool,
    ) -> Result<Vec<Pruned>> {
        let statuses = filter.finished_statuses()?;
        let matching = "FROM research_jobs
             WHERE tenant_id = $1 AND updated_at < $2 AND status = ANY($3::varchar[])
               AND status IN ('succeeded', 'failed', 'cancelled')";
        let select = |tx: &mut Tx<'_>| -> Result<Vec<Pruned>> {
            tx.query(
                &format!("SELECT id, status::text, job_type::text, updated_at {matching} ORDER BY updated_at"),
                &[&tenant, &filter.finished_before, &statuses],
            )?
            .iter()
            .map(|r| {
                Ok(Pruned {
                    id: col(r, 0)?,
                    status: status_of(col(r, 1)?)?,
                    job_type: col(r, 2)?,
                    updated_at: col(r, 3)?,
                })
            })
            .collect()
        };
        if dry_run {
            return self.read("prune jobs", select);
        }
        self.write("prune jobs", filter.finished_before, |tx| {
            let pruned = select(tx)?;
            tx.execute(
                &format!("DELETE {matching}"),
                &[&tenant, &filter.finished_before, &statuses],
            )?;
            Ok(pruned)
        })
    }
}

/// A time of the database's clock (`at`, read when the database's clock
/// said `server`) in the clock of a caller whose clock says `now`.
fn in_caller_clock(
    at: Timestamp,
    server: Timestamp,
    now: Timestamp,
    caller_clock: bool,
) -> Timestamp {
    if caller_clock {
        return at;
    }
    if at >= server {
        now.plus(at.since(server))
    } else {
        now.minus(server.since(at))
    }
}

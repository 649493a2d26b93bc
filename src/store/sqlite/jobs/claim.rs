//! Claiming: the claim query (three walks of the open jobs' index), the lost jobs
//! it fails at their last attempt, and one store call that records
//! outcomes and claims in one transaction (`cycle`).

use rusqlite::{Connection, Transaction, params};
use uuid::Uuid;

use std::collections::HashMap;

use super::admin::ALL_TYPES;
use super::report::apply_completions;
use super::{JOB_COLUMNS, NEW_CLAIM_ID, job_from_row};
use crate::error::Result;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::convert::{DbContext, json_list, uuid_col};
use crate::store::sqlite::deferred::record;
use crate::store::sqlite::sources::PendingIndex;
use crate::store::{Claim, Completion, Job, QueuePolicy, Report, TransitionKind};
use crate::timestamp::Timestamp;

/// The claim: due queued jobs and expired running ones, oldest first. Each
/// branch walks its own run of the open jobs' index, reading rowids from
/// the index alone, and stops after `?3` rows; the rows are then updated
/// by rowid. Each claimed row gets a new `claim_id`, which fences its
/// reports.
///
/// Every bound LIMIT in the backend is written `LIMIT +?N`: SQLite's
/// planner reads the value of a bare `LIMIT ?N`, which marks the statement
/// to be compiled again whenever the parameter is bound, that is on every
/// run (a third of a claim's time). The unary plus hides the value from the
/// planner and changes nothing else.
pub(super) static CLAIM_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| claim_sql(true));

/// The claim when no lock has expired (what [`ANY_EXPIRED_SQL`] says
/// before it, in the same transaction): its first two branches.
static CLAIM_DUE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| claim_sql(false));

fn claim_sql(rescue: bool) -> String {
    let expired = if rescue {
        concat!(
            "
        UNION ALL
        SELECT r, created_at FROM (
            SELECT rowid AS r, created_at FROM ",
            running_jobs!(),
            " AND locked_at < ?2
            ORDER BY locked_at LIMIT +?3)"
        )
    } else {
        ""
    };
    format!(
        "
UPDATE research_jobs
SET status = 'running', attempts = attempts + 1, locked_at = ?1, locked_by = ?4,
    retry_at = NULL, updated_at = ?1, claim_id = {NEW_CLAIM_ID}, claimed_at = ?1,
    claimed_by = ?4
WHERE rowid IN (
    SELECT r FROM (
        SELECT r, created_at FROM (
            SELECT rowid AS r, created_at FROM {ready}
            ORDER BY created_at LIMIT +?3)
        UNION ALL
        SELECT r, created_at FROM (
            SELECT rowid AS r, created_at FROM {retrying} AND retry_at <= ?1
            ORDER BY retry_at LIMIT +?3){expired}
    )
    ORDER BY created_at LIMIT +?3)
RETURNING {JOB_COLUMNS}, claim_id",
        ready = ready_jobs!(),
        retrying = retrying_jobs!(),
    )
}

/// Whether any running job's lock has expired: one probe of the running
/// jobs' run of the index, after which a claim with nothing to rescue skips the statements
/// that fail and rescue lost jobs (a fifth of a claim's time).
const ANY_EXPIRED_SQL: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM ",
    running_jobs!(),
    " AND locked_at < ?1)"
);

/// Running jobs whose lock expired: what the claim may rescue (the same
/// index walk as its third branch), with their claim as it stands.
const EXPIRED_SQL: &str = concat!(
    "SELECT id, claim_id, tenant_id, attempts, locked_by, coalesce(claimed_at, locked_at)
     FROM ",
    running_jobs!(),
    " AND locked_at < ?1
     ORDER BY locked_at LIMIT +?2"
);

/// The lost attempts of running jobs whose lock expired at their last
/// attempt, written before [`FAIL_LOST_SQL`] fails them.
static FAIL_LOST_ATTEMPTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "
INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at, finished_at,
    outcome, error)
SELECT id, coalesce(claim_id, {NEW_CLAIM_ID}), tenant_id, attempts, locked_by,
    coalesce(claimed_at, locked_at), ?1, 'lost',
    'worker ' || locked_by || ' was lost during attempt ' || attempts || '/'
        || max_attempts || ' (lock expired at ' || locked_at || ')'
FROM {running} AND locked_at < ?2 AND attempts >= max_attempts",
        running = running_jobs!(),
    )
});

/// A running job whose lock expired at its last attempt is not claimed
/// again: it fails (its attempt was recorded lost just before).
pub(super) const FAIL_LOST_SQL: &str = concat!(
    "UPDATE research_jobs
     SET status = 'failed', retry_at = NULL, locked_at = NULL, locked_by = NULL, updated_at = ?1,
         last_error = 'worker ' || locked_by || ' was lost during attempt ' || attempts || '/'
             || max_attempts || ' (lock expired at ' || locked_at || ')'
     WHERE id IN (SELECT id FROM ",
    running_jobs!(),
    " AND locked_at < ?2 AND attempts >= max_attempts)
     RETURNING id, attempts, last_error"
);

/// A claim found expired, as it stood before it was rescued.
struct Expired {
    claim_id: Option<String>,
    tenant_id: String,
    attempt: u32,
    worker: String,
    started_at: Timestamp,
}

/// The claim, inside the caller's transaction.
pub(super) fn claim_in(
    tx: &Transaction<'_>,
    policy: &QueuePolicy,
    n: u32,
    worker: &str,
    now: Timestamp,
) -> Result<Vec<Claim>> {
    let expiry = now.minus(policy.lock_timeout);
    let any_expired: bool = tx
        .prepare_cached(ANY_EXPIRED_SQL)
        .and_then(|mut s| s.query_row([expiry], |r| r.get(0)))
        .db("claim jobs")?;
    if any_expired {
        fail_lost(tx, now, expiry)?;
    }
    if let Some(limits) = ClaimLimits::read(tx, policy, expiry)? {
        return claim_limited(tx, &limits, n, worker, now, expiry, any_expired);
    }
    let expired = if any_expired {
        read_expired(tx, n, expiry)?
    } else {
        HashMap::new()
    };
    let sql: &str = if any_expired {
        &CLAIM_SQL
    } else {
        &CLAIM_DUE_SQL
    };
    let jobs: Vec<(Job, Uuid)> = {
        let mut stmt = tx.prepare_cached(sql).db("claim jobs")?;
        let rows = stmt
            .query_map(params![now, expiry, n, worker], |r| {
                Ok((job_from_row(r)?, uuid_col(r, 14)?))
            })
            .db("claim jobs")?;
        rows.collect::<rusqlite::Result<_>>().db("claim jobs")?
    };
    finish_claims(tx, worker, &expired, jobs, now)
}

/// What holds claims back when an operator paused job types or the
/// configuration caps how many jobs of a type run at once.
struct ClaimLimits {
    /// `pause --all`: nothing is claimed.
    all: bool,
    /// Paused types.
    paused: Vec<String>,
    /// Capped types: how many more of their jobs may start now.
    room: HashMap<String, u32>,
}

impl ClaimLimits {
    /// The limits in force, or `None` when there are none (the claim then
    /// takes its plain path). Running jobs count against a cap while their
    /// lock is live; a job whose lock expired is what a claim rescues.
    fn read(
        tx: &Transaction<'_>,
        policy: &QueuePolicy,
        expiry: Timestamp,
    ) -> Result<Option<ClaimLimits>> {
        let paused: Vec<String> = {
            let mut stmt = tx
                .prepare_cached("SELECT job_type FROM research_paused")
                .db("claim jobs")?;
            let rows = stmt.query_map([], |r| r.get(0)).db("claim jobs")?;
            rows.collect::<rusqlite::Result<_>>().db("claim jobs")?
        };
        let caps: Vec<(&str, u32)> = policy.caps().collect();
        if paused.is_empty() && caps.is_empty() {
            return Ok(None);
        }
        let mut room = HashMap::new();
        if !caps.is_empty() {
            let names: Vec<&str> = caps.iter().map(|(t, _)| *t).collect();
            let running: HashMap<String, u32> = {
                let mut stmt = tx
                    .prepare_cached(concat!(
                        "SELECT job_type, count(*) FROM ",
                        running_jobs!(),
                        " AND locked_at >= ?1
                               AND job_type IN (SELECT value FROM json_each(?2))
                             GROUP BY job_type"
                    ))
                    .db("claim jobs")?;
                let rows = stmt
                    .query_map(params![expiry, json_list(&names)], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .db("claim jobs")?;
                rows.collect::<rusqlite::Result<_>>().db("claim jobs")?
            };
            for (name, cap) in caps {
                let busy = running.get(name).copied().unwrap_or(0);
                room.insert(name.to_owned(), cap.saturating_sub(busy));
            }
        }
        Ok(Some(ClaimLimits {
            all: paused.iter().any(|p| p == ALL_TYPES),
            paused,
            room,
        }))
    }
}

/// The claim's candidates when limits are in force: the same three walks
/// of the open jobs' index, past the job types in `?4` (paused, or at
/// their cap).
static LIMITED_CANDIDATES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let not_blocked = "AND job_type NOT IN (SELECT value FROM json_each(?4))";
    format!(
        "
SELECT id, job_type FROM (
    SELECT id, job_type, created_at FROM (
        SELECT id, job_type, created_at FROM {ready} {not_blocked}
        ORDER BY created_at LIMIT +?3)
    UNION ALL
    SELECT id, job_type, created_at FROM (
        SELECT id, job_type, created_at FROM {retrying} AND retry_at <= ?1 {not_blocked}
        ORDER BY retry_at LIMIT +?3)
    UNION ALL
    SELECT id, job_type, created_at FROM (
        SELECT id, job_type, created_at FROM {running} AND locked_at < ?2 AND ?5 {not_blocked}
        ORDER BY locked_at LIMIT +?3)
)
ORDER BY created_at, id LIMIT +?3",
        ready = ready_jobs!(),
        retrying = retrying_jobs!(),
        running = running_jobs!(),
    )
});

/// Claims the jobs listed in `?3` (chosen in this transaction).
static CLAIM_LISTED_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "
UPDATE research_jobs
SET status = 'running', attempts = attempts + 1, locked_at = ?1, locked_by = ?2,
    retry_at = NULL, updated_at = ?1, claim_id = {NEW_CLAIM_ID}, claimed_at = ?1,
    claimed_by = ?2
WHERE id IN (SELECT value FROM json_each(?3))
RETURNING {JOB_COLUMNS}, claim_id"
    )
});

/// The claim with limits in force: paused types are passed over, and a
/// capped type gets no more jobs than its room. Each round takes the
/// oldest eligible jobs and claims those within their type's room; when a
/// type runs out of room it is passed over from the next round on, which
/// fills the places left (at most one round per capped type, plus one).
fn claim_limited(
    tx: &Transaction<'_>,
    limits: &ClaimLimits,
    n: u32,
    worker: &str,
    now: Timestamp,
    expiry: Timestamp,
    rescue: bool,
) -> Result<Vec<Claim>> {
    if limits.all {
        return Ok(Vec::new());
    }
    let mut room = limits.room.clone();
    let mut blocked: Vec<String> = limits.paused.clone();
    blocked.extend(
        room.iter()
            .filter(|(_, r)| **r == 0)
            .map(|(t, _)| t.clone()),
    );
    let mut claims = Vec::new();
    while (claims.len() as u32) < n {
        let want = n - claims.len() as u32;
        let candidates: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare_cached(&LIMITED_CANDIDATES_SQL)
                .db("claim jobs")?;
            let rows = stmt
                .query_map(
                    params![now, expiry, want, json_list(&blocked), rescue],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .db("claim jobs")?;
            rows.collect::<rusqlite::Result<_>>().db("claim jobs")?
        };
        let found = candidates.len();
        let mut chosen = Vec::new();
        let mut full = false;
        for (id, job_type) in candidates {
            match room.get_mut(&job_type) {
                Some(0) => full = true,
                Some(r) => {
                    *r -= 1;
                    if *r == 0 {
                        blocked.push(job_type);
                    }
                    chosen.push(id);
                }
                None => chosen.push(id),
            }
        }
        if !chosen.is_empty() {
            let expired = if rescue {
                read_expired_of(tx, &chosen)?
            } else {
                HashMap::new()
            };
            let jobs: Vec<(Job, Uuid)> = {
                let mut stmt = tx.prepare_cached(&CLAIM_LISTED_SQL).db("claim jobs")?;
                let rows = stmt
                    .query_map(params![now, worker, json_list(&chosen)], |r| {
                        Ok((job_from_row(r)?, uuid_col(r, 14)?))
                    })
                    .db("claim jobs")?;
                rows.collect::<rusqlite::Result<_>>().db("claim jobs")?
            };
            claims.extend(finish_claims(tx, worker, &expired, jobs, now)?);
        }
        // Fewer candidates than asked for: there are no more. Otherwise go
        // on only if some were passed over for a type that ran out of room.
        if (found as u32) < want || !full {
            break;
        }
    }
    claims.sort_by_key(|c| (c.job.created_at, c.job.id));
    Ok(claims)
}

/// Fails the running jobs lost at their last attempt: never run a fourth
/// time.
fn fail_lost(tx: &Transaction<'_>, now: Timestamp, expiry: Timestamp) -> Result<()> {
    tx.prepare_cached(&FAIL_LOST_ATTEMPTS_SQL)
        .and_then(|mut s| s.execute(params![now, expiry]))
        .db("fail lost jobs")?;
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
        record(
            id,
            TransitionKind::Failed {
                attempts: *attempts,
                error: error.clone(),
            },
        )?;
    }
    Ok(())
}

fn expired_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Expired)> {
    Ok((
        r.get::<_, String>(0)?,
        Expired {
            claim_id: r.get(1)?,
            tenant_id: r.get(2)?,
            attempt: r.get(3)?,
            worker: r.get(4)?,
            started_at: r.get(5)?,
        },
    ))
}

/// The claims the claim may rescue, as they stand before it overwrites
/// them.
fn read_expired(
    tx: &Transaction<'_>,
    n: u32,
    expiry: Timestamp,
) -> Result<HashMap<String, Expired>> {
    let mut stmt = tx.prepare_cached(EXPIRED_SQL).db("claim jobs")?;
    let rows = stmt
        .query_map(params![expiry, n], expired_row)
        .db("claim jobs")?;
    rows.collect::<rusqlite::Result<_>>().db("claim jobs")
}

/// The running ones among `ids` (about to be claimed, so their lock
/// expired), as they stand before the claim overwrites them.
fn read_expired_of(tx: &Transaction<'_>, ids: &[String]) -> Result<HashMap<String, Expired>> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, claim_id, tenant_id, attempts, locked_by, coalesce(claimed_at, locked_at)
             FROM research_jobs
             WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'running'",
        )
        .db("claim jobs")?;
    let rows = stmt
        .query_map([json_list(ids)], expired_row)
        .db("claim jobs")?;
    rows.collect::<rusqlite::Result<_>>().db("claim jobs")
}

/// Orders the claimed jobs, records the rescues (and the lost attempts
/// they end), and makes the claims.
fn finish_claims(
    tx: &Transaction<'_>,
    worker: &str,
    expired: &HashMap<String, Expired>,
    mut jobs: Vec<(Job, Uuid)>,
    now: Timestamp,
) -> Result<Vec<Claim>> {
    jobs.sort_by(|(a, _), (b, _)| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));

    let mut claims = Vec::with_capacity(jobs.len());
    // The lost attempts of the rescued jobs, inserted by one statement.
    let mut lost_rows = Vec::new();
    for (job, attempt_id) in jobs {
        let old = expired.get(&job.id.to_string());
        if let Some(old) = old {
            record(
                &job.id.to_string(),
                TransitionKind::Rescued {
                    from: old.worker.clone(),
                    attempt: job.attempts,
                    max_attempts: job.max_attempts,
                },
            )?;
            lost_rows.push(serde_json::json!([
                job.id.to_string(),
                old.claim_id
                    .clone()
                    .unwrap_or_else(|| Uuid::now_v7().to_string()),
                old.tenant_id,
                old.attempt,
                old.worker,
                old.started_at.to_db(),
            ]));
        }
        let from = old.map(|o| o.worker.clone());
        claims.push(Claim::of(job, worker, attempt_id, from));
    }
    if !lost_rows.is_empty() {
        tx.prepare_cached(
            "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at,
                 finished_at, outcome, error)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                 value ->> 5, ?1, 'lost', 'lock expired; the job was rescued'
             FROM json_each(?2)",
        )
        .and_then(|mut s| {
            s.execute(params![
                now,
                serde_json::Value::Array(lost_rows).to_string()
            ])
        })
        .db("record lost attempts")?;
    }
    Ok(claims)
}

pub(in crate::store::sqlite) fn explain_claim(conn: &Connection) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for sql in [
        CLAIM_SQL.as_str(),
        FAIL_LOST_SQL,
        super::report::SUCCEED_BATCH_SQL.as_str(),
    ] {
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
            let mut index = PendingIndex::default();
            let reports = apply_completions(tx, &policy, completions, now, &mut index)?;
            let claims = claim_in(tx, &policy, n, worker, now)?;
            index.write(tx)?;
            Ok((reports, claims))
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::{ANY_EXPIRED_SQL, CLAIM_DUE_SQL, CLAIM_SQL, EXPIRED_SQL};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{StoreOptions, Synchronous};
    use crate::timestamp::Timestamp;

    #[test]
    fn the_claim_statements_are_compiled_once_not_at_every_claim() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::create(
            &dir.path().join("bundleq.db"),
            StoreOptions {
                synchronous: Synchronous::Normal,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let now = Timestamp::now();
        for (sql, params) in [
            (CLAIM_SQL.as_str(), 4),
            (CLAIM_DUE_SQL.as_str(), 4),
            (EXPIRED_SQL, 2),
            (ANY_EXPIRED_SQL, 1),
        ] {
            let mut stmt = store.conn.prepare(sql).unwrap();
            for n in 1..=5i64 {
                let values: [&dyn rusqlite::ToSql; 4] = [&now, &now, &n, &"w"];
                let bound: Vec<&dyn rusqlite::ToSql> = match params {
                    1 => vec![&now],
                    2 => vec![&now, &n],
                    _ => values.to_vec(),
                };
                let mut rows = stmt.query(bound.as_slice()).unwrap();
                while rows.next().unwrap().is_some() {}
            }
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}

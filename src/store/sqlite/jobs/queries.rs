//! Reading jobs: one job, its attempts and events, filtered lists and
//! counts, stats, and the times an idle pool waits for.

use std::collections::BTreeMap;

use rusqlite::params;
use uuid::Uuid;

use super::{JOB_COLUMNS, LAST_ATTEMPT, attempt_from_row, get_job, job_from_row};
use crate::error::{Error, Result};
use crate::state::JobStatus;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::convert::{DbContext, status_col};
use crate::store::{Attempt, Job, JobEvent, JobFilter, MinuteCount, Stats, add_minute, earliest};
use crate::timestamp::Timestamp;

impl SqliteStore {
    /// One job of `tenant`.
    pub fn job(&mut self, tenant: Uuid, id: Uuid) -> Result<Job> {
        self.read("read a job", |tx| get_job(tx, tenant, id))?
            .ok_or_else(|| Error::JobNotFound {
                id: id.to_string(),
                tenant: tenant.to_string(),
            })
    }

    /// A job's attempt history, oldest first, with the attempt running now
    /// (unfinished) last.
    pub fn attempts(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<Attempt>> {
        self.read("read attempts", |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT id, job_id, attempt, worker, started_at, finished_at, outcome, error,
                         output, 0 AS running
                     FROM job_attempts WHERE job_id = ?1 AND tenant_id = ?2
                     UNION ALL
                     -- The attempt running now lives on the job row.
                     SELECT claim_id, id, attempts, locked_by, claimed_at, NULL, NULL, NULL, NULL,
                         1
                     FROM research_jobs
                     WHERE id = ?1 AND tenant_id = ?2 AND status = 'running'
                       AND claim_id IS NOT NULL
                     UNION ALL
                     -- So does the attempt that ended the job.
                     SELECT last.*, 0 FROM ({LAST_ATTEMPT}) AS last
                     WHERE EXISTS (SELECT 1 FROM research_jobs
                                   WHERE id = ?1 AND tenant_id = ?2)
                     ORDER BY 5, 10, 6, 1"
                ))
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

    /// How many jobs of `tenant` match `filter` (its limit and page
    /// aside).
    pub fn count_jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<u64> {
        let filter = JobFilter {
            before: None,
            ..filter.clone()
        };
        self.read("count jobs", |tx| {
            let n: i64 = tx
                .prepare_cached(&format!(
                    "SELECT count(*) FROM research_jobs WHERE {}",
                    list_filter(filter.status)
                ))
                .and_then(|mut s| {
                    let p = list_params(tenant, &filter);
                    s.query_row(rusqlite::params_from_iter(p.iter()), |r| r.get(0))
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
                    "SELECT {JOB_COLUMNS} FROM research_jobs WHERE {}
                     ORDER BY created_at DESC, id DESC
                     LIMIT +?8",
                    list_filter(filter.status)
                ))
                .db("list jobs")?;
            let p = list_params_limited(tenant, filter);
            let rows = stmt
                .query_map(rusqlite::params_from_iter(p.iter()), job_from_row)
                .db("list jobs")?;
            rows.collect::<rusqlite::Result<_>>().db("list jobs")
        })
    }

    /// The query plan of [`SqliteStore::jobs`] for `filter` (for a test
    /// that checks it walks an index).
    pub fn explain_jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<Vec<String>> {
        self.read("explain a job listing", |tx| {
            let mut stmt = tx
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT {JOB_COLUMNS} FROM research_jobs
                     WHERE {} ORDER BY created_at DESC, id DESC LIMIT +?8",
                    list_filter(filter.status)
                ))
                .db("explain a job listing")?;
            let p = list_params_limited(tenant, filter);
            let rows = stmt
                .query_map(rusqlite::params_from_iter(p.iter()), |r| {
                    r.get::<_, String>(3)
                })
                .db("explain a job listing")?;
            rows.collect::<rusqlite::Result<_>>()
                .db("explain a job listing")
        })
    }

    /// Jobs of `tenant` that finished (succeeded, failed for good) and
    /// attempts that failed and wait for a retry, per minute since `since`.
    pub fn throughput(&mut self, tenant: Uuid, since: Timestamp) -> Result<Vec<MinuteCount>> {
        self.read("count finished jobs", |tx| {
            let mut per: BTreeMap<String, MinuteCount> = BTreeMap::new();
            // Every job row is read (none is indexed by when it finished,
            // to keep the claim's path lean); see `stats` for the order.
            let sole_owner = owns_every_job(tx, &tenant.to_string())?;
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT substr(updated_at, 1, 16), status, count(*) FROM research_jobs {}
                     WHERE tenant_id = ?1 AND status IN ('succeeded', 'failed')
                       AND updated_at >= ?2
                     GROUP BY 1, 2
                     UNION ALL
                     SELECT substr(finished_at, 1, 16), 'retry', count(*) FROM job_attempts
                     WHERE tenant_id = ?1 AND outcome = 'retry' AND finished_at >= ?2
                     GROUP BY 1",
                    if sole_owner { "NOT INDEXED" } else { "" }
                ))
                .db("count finished jobs")?;
            let rows = stmt
                .query_map(params![tenant.to_string(), since.to_string()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .db("count finished jobs")?;
            for row in rows {
                let (minute, what, n) = row.db("count finished jobs")?;
                add_minute(&mut per, &minute, &what, n);
            }
            Ok(per.into_values().collect())
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
            // One pass over the tenant's jobs: counts per type and bucket,
            // and the oldest queued job and the next retry with them. When
            // the tenant owns every job (a home with one tenant), reading
            // the table in order beats looking each row up from the tenant
            // index (1,000,000 jobs: 0.7 s against 1.0 s).
            let sole_owner = owns_every_job(tx, &t)?;
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT job_type,
                         CASE WHEN status = 'queued' AND retry_at > ?2 AND attempts = 0
                                  THEN 'scheduled'
                              WHEN status = 'queued' AND retry_at > ?2 THEN 'retrying'
                              WHEN status = 'queued' THEN 'ready'
                              ELSE status END,
                         count(*),
                         min(CASE WHEN status = 'queued' THEN created_at END),
                         min(CASE WHEN status = 'queued' AND retry_at > ?2 THEN retry_at END)
                     FROM research_jobs {} WHERE tenant_id = ?1 GROUP BY 1, 2",
                    if sole_owner { "NOT INDEXED" } else { "" }
                ))
                .db("count jobs")?;
            let rows = stmt
                .query_map(params![t, now], |r| {
                    let bucket = r.get::<_, String>(1)?;
                    // The queued buckets are queued; any other is a status.
                    let status = match bucket.as_str() {
                        "ready" | "scheduled" | "retrying" => JobStatus::Queued,
                        _ => status_col(r, 1)?,
                    };
                    Ok((
                        r.get::<_, String>(0)?,
                        bucket,
                        status,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<Timestamp>>(3)?,
                        r.get::<_, Option<Timestamp>>(4)?,
                    ))
                })
                .db("count jobs")?;
            for row in rows {
                let (job_type, bucket, status, n, oldest, next) = row.db("count jobs")?;
                let n = u64::try_from(n).unwrap_or(0);
                match bucket.as_str() {
                    "ready" => stats.ready += n,
                    "scheduled" => stats.scheduled += n,
                    "retrying" => stats.retrying += n,
                    _ => {}
                }
                *stats.counts.entry(status).or_insert(0) += n;
                stats.oldest_queued = earliest(stats.oldest_queued, oldest);
                stats.next_retry = earliest(stats.next_retry, next);
                stats.by_type.entry(job_type).or_default().insert(bucket, n);
            }
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
                    concat!("SELECT EXISTS (SELECT 1 FROM ", ready_jobs!(), ")"),
                    [],
                    |r| r.get(0),
                )
                .db("find the next due job")?;
            if ready {
                return Ok(Some(now));
            }
            tx.query_row(
                concat!("SELECT min(retry_at) FROM ", retrying_jobs!()),
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
                concat!("SELECT min(locked_at) FROM ", running_jobs!()),
                [],
                |r| r.get(0),
            )
            .db("find the oldest lock")
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
}

/// True when `tenant` owns every job of the database (a home with one
/// tenant): a pass over its jobs then reads the table in order rather than
/// looking each row up from the tenant index.
fn owns_every_job(tx: &rusqlite::Transaction<'_>, tenant: &str) -> Result<bool> {
    tx.prepare_cached(
        "SELECT coalesce((SELECT min(tenant_id) FROM research_jobs) = ?1
                         AND (SELECT max(tenant_id) FROM research_jobs) = ?1, 0)",
    )
    .and_then(|mut st| st.query_row([tenant], |r| r.get(0)))
    .db("count jobs")
}

/// The WHERE clause of job listings and counts: `?1` tenant, `?2` status,
/// `?3` type, `?4` run, `?5` text, `?6`/`?7` the page's last
/// `created_at`/id. The page bound is a range on the tenant index's
/// `created_at`, so a later page starts where the last one ended.
///
/// A status is written into the statement rather than bound, so that
/// SQLite can walk a partial index for it (`research_jobs_failed`,
/// `research_jobs_cancelled`).
fn list_filter(status: Option<JobStatus>) -> String {
    let status = status.map_or_else(
        || "?2 IS NULL".to_owned(),
        |s| format!("status = '{}'", s.as_str()),
    );
    format!("tenant_id = ?1 AND {status} AND {LIST_REST}")
}

/// [`list_filter`] after the tenant and the status.
const LIST_REST: &str = "(?3 IS NULL OR job_type = ?3)
    AND (?4 IS NULL OR run_id = ?4)
    AND (?5 IS NULL OR instr(payload_json, ?5) > 0 OR instr(coalesce(last_error, ''), ?5) > 0)
    AND created_at <= ?6 AND (created_at < ?6 OR id < ?7)";

/// The parameters of [`list_filter`].
fn list_params(tenant: Uuid, filter: &JobFilter) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
    let (last_at, last_id) = match filter.before {
        Some((at, id)) => (at.to_string(), id.to_string()),
        // After every timestamp and id in text order.
        None => ("~".to_owned(), "~".to_owned()),
    };
    vec![
        Value::Text(tenant.to_string()),
        text(filter.status.map(|s| s.as_str().to_owned())),
        text(filter.job_type.clone()),
        text(filter.run_id.map(|r| r.to_string())),
        text(filter.text.clone().filter(|t| !t.is_empty())),
        Value::Text(last_at),
        Value::Text(last_id),
    ]
}

/// [`list_params`] and the limit (`?8`).
fn list_params_limited(tenant: Uuid, filter: &JobFilter) -> Vec<rusqlite::types::Value> {
    let mut p = list_params(tenant, filter);
    p.push(rusqlite::types::Value::Integer(
        filter.limit.map_or(-1, i64::from),
    ));
    p
}

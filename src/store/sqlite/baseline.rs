//! The benchmark baseline: the same schema driven by plain statements in
//! batches, with no engine around them (no attempt history, no fencing, no
//! backoff logic). It measures what SQLite itself allows on this machine,
//! so `bundleq bench` can quote the engine as a ratio of it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;
use uuid::Uuid;

use super::SqliteStore;
use super::convert::DbContext;
use crate::error::Result;
use crate::store::{BaselineFigures, StoreOptions, Synchronous};
use crate::timestamp::Timestamp;

/// Jobs per enqueue transaction.
const ENQUEUE_BATCH: usize = 1000;
/// Jobs per claim and per completion transaction.
const CLAIM_BATCH: usize = 100;

/// Runs the baseline for `n` jobs in a new database at `path`, and times
/// `samples` minimal commits.
pub fn run_baseline(
    path: &Path,
    synchronous: Synchronous,
    n: usize,
    samples: usize,
) -> Result<BaselineFigures> {
    let options = StoreOptions {
        synchronous,
        ..StoreOptions::default()
    };
    let mut store = SqliteStore::create(path, options)?;
    let conn = &mut store.conn;
    let tenant = Uuid::now_v7().to_string();
    let now = Timestamp::now();

    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(ENQUEUE_BATCH);
        let tx = conn.transaction().db("baseline enqueue")?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
                         max_attempts, payload_json, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'bench', 'queued', 0, 3, '{}', ?4, ?4)",
                )
                .db("baseline enqueue")?;
            for _ in 0..k {
                insert
                    .execute(params![
                        crate::store::new_job_id().to_string(),
                        tenant,
                        tenant,
                        now
                    ])
                    .db("baseline enqueue")?;
            }
        }
        tx.commit().db("baseline enqueue")?;
        left -= k;
    }
    let enqueue = start.elapsed();

    let drain_start = Instant::now();
    let mut done = 0;
    while done < n {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .db("baseline claim")?;
        // The ready jobs as the schema's open jobs' index holds them (a
        // queued job's lock is NULL), as any SQL for this schema would ask.
        let ids: Vec<String> = {
            let mut claim = tx
                .prepare_cached(
                    "UPDATE research_jobs SET status = 'running', attempts = attempts + 1,
                         locked_at = ?1, locked_by = 'baseline', updated_at = ?1
                     WHERE id IN (SELECT id FROM research_jobs
                                  WHERE status = 'queued' AND retry_at IS NULL
                                    AND locked_at IS NULL
                                  ORDER BY created_at LIMIT +?2)
                     RETURNING id",
                )
                .db("baseline claim")?;
            let rows = claim
                .query_map(params![now, CLAIM_BATCH as i64], |r| r.get(0))
                .db("baseline claim")?;
            rows.collect::<rusqlite::Result<_>>().db("baseline claim")?
        };
        tx.commit().db("baseline claim")?;
        if ids.is_empty() {
            break;
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .db("baseline complete")?;
        {
            let mut complete = tx
                .prepare_cached(
                    "UPDATE research_jobs SET status = 'succeeded', locked_at = NULL,
                         locked_by = NULL, updated_at = ?2
                     WHERE id = ?1 AND status = 'running'",
                )
                .db("baseline complete")?;
            for id in &ids {
                complete.execute(params![id, now]).db("baseline complete")?;
            }
        }
        tx.commit().db("baseline complete")?;
        done += ids.len();
    }
    let drain = drain_start.elapsed();
    let per_s = |count: usize, d: std::time::Duration| count as f64 / d.as_secs_f64().max(1e-9);
    Ok(BaselineFigures {
        enqueue_per_s: per_s(n, enqueue),
        claim_complete_per_s: per_s(done, drain),
        lifecycle_per_s: per_s(done, enqueue + drain),
        commit_p50_us: commit_floor(conn, samples)?,
    })
}

/// Median time of `BEGIN IMMEDIATE; UPDATE` of a one-row table`; COMMIT`
/// over `samples` rounds, microseconds.
fn commit_floor(conn: &mut rusqlite::Connection, samples: usize) -> Result<f64> {
    floor_table(conn)?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        times.push(floor_commit(conn)?);
    }
    times.sort_unstable();
    Ok(times
        .get(times.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6))
}

fn floor_table(conn: &rusqlite::Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS bench_floor (x INTEGER NOT NULL);
         INSERT INTO bench_floor SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM bench_floor);",
    )
    .db("baseline commit")
}

/// One commit of the floor, timed.
fn floor_commit(conn: &mut rusqlite::Connection) -> Result<Duration> {
    let start = Instant::now();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .db("baseline commit")?;
    tx.execute("UPDATE bench_floor SET x = x + 1", [])
        .db("baseline commit")?;
    tx.commit().db("baseline commit")?;
    Ok(start.elapsed())
}

impl SqliteStore {
    /// Adds the commit floor's table (one row) to this database.
    pub fn add_commit_floor(&mut self) -> Result<()> {
        floor_table(&self.conn)
    }

    /// Times one commit of the floor on this store's own connection.
    pub fn commit_floor(&mut self) -> Result<Duration> {
        floor_commit(&mut self.conn)
    }
}

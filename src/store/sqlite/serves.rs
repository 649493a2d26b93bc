//! `serves`: the serve processes working the queue, as they last reported
//! themselves. A pool registers when it starts, refreshes its row at its
//! heartbeats and removes it when it stops; rows of workers proved gone
//! are removed by whoever proves it.

use rusqlite::{Row, params};

use super::SqliteStore;
use super::convert::{DbContext, json_list};
use crate::error::Result;
use crate::store::ServeRow;

fn serve_from_row(r: &Row<'_>) -> rusqlite::Result<ServeRow> {
    Ok(ServeRow {
        worker: r.get(0)?,
        host: r.get(1)?,
        pid: r.get(2)?,
        workers: r.get(3)?,
        started_at: r.get(4)?,
        heartbeat_at: r.get(5)?,
        running: r.get(6)?,
        claimed_ahead: r.get(7)?,
    })
}

impl SqliteStore {
    /// Writes (or replaces) a serve's row.
    pub fn report_serve(&mut self, row: &ServeRow) -> Result<()> {
        self.write("record a serve", |tx| {
            tx.prepare_cached(
                "INSERT INTO serves (worker, host, pid, workers, started_at, heartbeat_at,
                     running, claimed_ahead)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (worker) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                     running = excluded.running, claimed_ahead = excluded.claimed_ahead",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.worker,
                    row.host,
                    row.pid,
                    row.workers,
                    row.started_at,
                    row.heartbeat_at,
                    row.running,
                    row.claimed_ahead
                ])
            })
            .db("record a serve")?;
            Ok(())
        })
    }

    /// Removes the rows of these workers (stopped, or proved gone).
    pub fn forget_serves(&mut self, workers: &[String]) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let list = json_list(workers);
        self.write("forget serves", |tx| {
            tx.prepare_cached(
                "DELETE FROM serves WHERE worker IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| s.execute([list]))
            .db("forget serves")?;
            Ok(())
        })
    }

    /// Every serve row, most recently heard from first.
    pub fn serves(&mut self) -> Result<Vec<ServeRow>> {
        self.read("list serves", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT worker, host, pid, workers, started_at, heartbeat_at, running,
                         claimed_ahead
                     FROM serves ORDER BY heartbeat_at DESC",
                )
                .db("list serves")?;
            let rows = stmt.query_map([], serve_from_row).db("list serves")?;
            rows.collect::<rusqlite::Result<_>>().db("list serves")
        })
    }
}

//! `research_runs`: one row per accepted bundle, unique per tenant by the
//! sha256 of its bytes, inserted in the same transaction as its job.

use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;

use super::convert::{DbContext, uuid_col, uuid_text};
use super::{SqliteStore, WriteTx};
use crate::digest::Sha256Hex;
use crate::error::{Error, Result};
use crate::store::compact;
use crate::store::{NewJob, NewRun, Run, RunInsert, RunSummary};
use crate::timestamp::Timestamp;

/// An object kept in the database, by the hex digits of its digest.
const OBJECT_SQL: &str = "SELECT bytes FROM objects WHERE sha256 = unhex(?1)";

const SUMMARY_COLUMNS: &str =
    "id, tenant_id, title, bundle_sha256, origin, origin_name, created_at, updated_at";

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        id: uuid_col(row, 0)?,
        tenant_id: uuid_col(row, 1)?,
        title: row.get(2)?,
        bundle_sha256: row.get(3)?,
        origin: row.get(4)?,
        origin_name: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

impl SqliteStore {
    /// Records runs and enqueues their jobs in one transaction (see
    /// [`crate::Store::insert_runs`]).
    pub fn insert_runs(&mut self, runs: &[NewRun], now: Timestamp) -> Result<Vec<RunInsert>> {
        self.transaction(|tx| runs.iter().map(|r| tx.insert_run(r, now)).collect())
    }
}

impl WriteTx<'_> {
    /// Records a run and enqueues its job, unless the same bytes (or another
    /// bundle under the same run id) were already accepted for the tenant.
    /// The tenant must exist ([`Error::UnknownTenant`]).
    fn insert_run(&self, run: &NewRun, now: Timestamp) -> Result<RunInsert> {
        self.require_tenant(run.tenant_id)?;
        let tenant = run.tenant_id.to_string();
        let dup: Option<(String, Option<String>, Option<String>)> = self
            .tx
            .prepare_cached(
                "SELECT id, inbox_claim, origin_name FROM research_runs
                 WHERE tenant_id = ?1 AND bundle_sha256 = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, run.bundle_sha256], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .db("look up a run")?;
        if let Some((id, inbox_claim, origin_name)) = dup {
            let run_id = uuid_text(&id, "look up a run")?;
            return Ok(RunInsert::Duplicate {
                run_id,
                inbox_claim,
                origin_name,
            });
        }
        let taken: Option<String> = self
            .tx
            .prepare_cached(
                "SELECT bundle_sha256 FROM research_runs WHERE tenant_id = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, run.id.to_string()], |r| r.get(0))
                    .optional()
            })
            .db("look up a run")?;
        if let Some(existing_sha256) = taken {
            return Ok(RunInsert::Conflict { existing_sha256 });
        }
        // Inline texts kept as objects are kept once (see `compact`).
        let texts: Vec<(&Sha256Hex, &str)> = run
            .objects
            .iter()
            .filter(|o| o.inline)
            .filter_map(|o| Some((&o.sha256, std::str::from_utf8(&o.bytes).ok()?)))
            .collect();
        let (json, holes) = match compact::cut(&run.bundle_json, &texts) {
            Some((json, holes)) => (std::borrow::Cow::Owned(json), Some(holes)),
            None => (std::borrow::Cow::Borrowed(run.bundle_json.as_str()), None),
        };
        self.tx
            .prepare_cached(
                "INSERT INTO research_runs (tenant_id, id, title, bundle_sha256, bundle_json,
                     origin, origin_name, created_at, updated_at, inbox_claim, bundle_holes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    run.id.to_string(),
                    run.title,
                    run.bundle_sha256,
                    json,
                    run.origin,
                    run.origin_name,
                    now,
                    run.inbox_claim,
                    holes
                ])
            })
            .db("record a run")?;
        let job_id = self.enqueue(
            &NewJob {
                tenant_id: run.tenant_id,
                run_id: run.id,
                job_type: run.job.job_type.clone(),
                payload: run.job.payload.clone(),
                max_attempts: run.job.max_attempts,
                not_before: run.job.not_before,
            },
            now,
        )?;
        let mut put = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO objects (sha256, bytes) VALUES (unhex(?1), ?2)")
            .db("store an object")?;
        for o in &run.objects {
            put.execute(params![o.sha256.as_str(), o.bytes])
                .db("store an object")?;
        }
        Ok(RunInsert::Inserted { job_id })
    }
}

impl SqliteStore {
    /// Runs of `tenant`, newest first.
    pub fn runs(
        &mut self,
        tenant: Uuid,
        before: Option<(Timestamp, Uuid)>,
        limit: Option<u32>,
    ) -> Result<Vec<RunSummary>> {
        let (last_at, last_id) = before.map_or_else(
            || ("~".to_owned(), "~".to_owned()),
            |(at, id)| (at.to_string(), id.to_string()),
        );
        self.read("list runs", |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM research_runs
                     WHERE tenant_id = ?1 AND created_at <= ?2 AND (created_at < ?2 OR id < ?3)
                     ORDER BY created_at DESC, id DESC LIMIT +?4"
                ))
                .db("list runs")?;
            let rows = stmt
                .query_map(
                    params![
                        tenant.to_string(),
                        last_at,
                        last_id,
                        limit.map_or(-1, i64::from)
                    ],
                    summary_from_row,
                )
                .db("list runs")?;
            rows.collect::<rusqlite::Result<_>>().db("list runs")
        })
    }

    /// How many runs `tenant` has.
    pub fn count_runs(&mut self, tenant: Uuid) -> Result<u64> {
        self.count_of_tenant(
            "count runs",
            "SELECT count(*) FROM research_runs WHERE tenant_id = ?1",
            tenant,
        )
    }

    /// The bytes of an object kept in the database, if it is there.
    pub fn object(&mut self, sha256: &Sha256Hex) -> Result<Option<Vec<u8>>> {
        self.read("read an object", |tx| {
            tx.prepare_cached(OBJECT_SQL)
                .and_then(|mut s| s.query_row([sha256.as_str()], |r| r.get(0)).optional())
                .db("read an object")
        })
    }

    /// The bundle JSON of one run of `tenant`, as received.
    pub fn run_bundle_json(&mut self, tenant: Uuid, id: Uuid) -> Result<String> {
        self.stored_run(tenant, id).map(|(_, json)| json)
    }

    /// One run of `tenant`, with its bundle.
    pub fn run(&mut self, tenant: Uuid, id: Uuid) -> Result<Run> {
        let (summary, json) = self.stored_run(tenant, id)?;
        let bundle_json = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            detail: format!("the stored bundle of run {id} does not parse: {e}"),
        })?;
        Ok(Run {
            summary,
            bundle_json,
        })
    }

    /// A run's summary and its bundle JSON as received (its holes filled
    /// with their objects' texts, in the same read transaction).
    pub fn stored_run(&mut self, tenant: Uuid, id: Uuid) -> Result<(RunSummary, String)> {
        let path = self.path.clone();
        let found = self.read("read a run", |tx| {
            let row = tx
                .prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS}, bundle_json, bundle_holes FROM research_runs
                     WHERE tenant_id = ?1 AND id = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row(params![tenant.to_string(), id.to_string()], |r| {
                        Ok((
                            summary_from_row(r)?,
                            r.get::<_, String>(8)?,
                            r.get::<_, Option<String>>(9)?,
                        ))
                    })
                    .optional()
                })
                .db("read a run")?;
            let Some((summary, json, Some(holes))) = row else {
                return Ok(row.map(|(summary, json, _)| (summary, json)));
            };
            let mut object = tx.prepare_cached(OBJECT_SQL).db("read an object")?;
            let filled = compact::rebuild(&json, &holes, &summary.bundle_sha256, &mut |sha| {
                object
                    .query_row([sha.as_str()], |r| r.get(0))
                    .optional()
                    .db("read an object")
            })
            .map_err(|why| Error::Corrupt {
                path: path.clone(),
                detail: format!("the stored bundle of run {id} cannot be put back together: {why}"),
            })?;
            Ok(Some((summary, filled)))
        })?;
        found.ok_or_else(|| Error::RunNotFound {
            id: id.to_string(),
            tenant: tenant.to_string(),
        })
    }
}

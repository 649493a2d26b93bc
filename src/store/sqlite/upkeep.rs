//! Keeping a home's data provable: which objects the stored runs refer to,
//! the objects kept in the database, what checks found, removing what no
//! run refers to, removing old runs, and a consistent copy of the file.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

use super::SqliteStore;
use super::convert::{DbContext, uuid_col};
use super::sources::{PendingIndex, replace_sources};
use crate::digest::Sha256Hex;
use crate::error::{Error, Result};
use crate::store::model::StoredBundle;
use crate::store::{ObjectCheck, PrunedRun, RunSources, StoredObject};
use crate::timestamp::Timestamp;

/// Stored bundles read per statement while walking every run.
const PAGE: i64 = 500;

/// Runs `prune --runs` removes per write transaction (about 0.4 s of
/// work each, with their sources and index rows, on this project's
/// machine).
pub(super) const PRUNE_RUNS_PER_TX: usize = 1_000;

/// Finished jobs `prune` deletes per write transaction.
pub(super) const PRUNE_JOBS_PER_TX: usize = 10_000;

/// Unreferenced objects a sweep removes from the database per write
/// transaction.
pub(super) const SWEEP_OBJECTS_PER_TX: usize = 5_000;

/// How long a long prune leaves the writer free between two of its
/// transactions: longer than the longest pause of SQLite's busy handler
/// (100 ms), so that a process waiting for the writer gets it in between.
pub(super) const PRUNE_GAP: Duration = Duration::from_millis(120);

/// Digests are kept as their 32 bytes; SQL hands them back as hex.
const HEX: &str = "lower(hex(sha256))";

impl SqliteStore {
    /// Sets a metadata value, replacing the one in force.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.write("write home metadata", |tx| {
            tx.execute(
                "INSERT INTO bundleq_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .db("write home metadata")?;
            Ok(())
        })
    }

    /// Stored bundles (compact JSON and holes) after `after` in key order,
    /// or the one run `only`.
    pub fn stored_bundles(
        &mut self,
        after: Option<(Uuid, Uuid)>,
        only: Option<(Uuid, Uuid)>,
    ) -> Result<Vec<StoredBundle>> {
        self.read("read stored bundles", |tx| stored_bundles(tx, after, only))
    }

    /// Objects kept in the database, by digest, after `after`.
    pub fn db_objects(
        &mut self,
        after: Option<&Sha256Hex>,
        limit: u32,
    ) -> Result<Vec<StoredObject>> {
        self.read("list objects", |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {HEX}, length(bytes) FROM objects
                     WHERE sha256 > unhex(?1) ORDER BY sha256 LIMIT +?2"
                ))
                .db("list objects")?;
            let rows = stmt
                .query_map(
                    params![after.map_or("", Sha256Hex::as_str), i64::from(limit)],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .db("list objects")?;
            let mut out = Vec::new();
            for row in rows {
                let (hex, size) = row.db("list objects")?;
                out.push(StoredObject::from_row(&hex, size)?);
            }
            Ok(out)
        })
    }

    /// The sizes of those of these objects the database keeps (`length`
    /// of a blob reads its header, not its bytes).
    pub fn object_sizes(&mut self, shas: &[Sha256Hex]) -> Result<HashMap<Sha256Hex, u64>> {
        self.read("read object sizes", |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT length(bytes) FROM objects WHERE sha256 = unhex(?1)")
                .db("read object sizes")?;
            let mut out = HashMap::new();
            for sha in shas {
                let size: Option<i64> = stmt
                    .query_row([sha.as_str()], |r| r.get(0))
                    .optional()
                    .db("read object sizes")?;
                if let Some(size) = size {
                    out.insert(sha.clone(), u64::try_from(size).unwrap_or(0));
                }
            }
            Ok(out)
        })
    }

    /// Removes (or lists) the objects in the database that no stored run
    /// refers to.
    ///
    /// Call it with the objects' sweeper held ([`crate::objects::Objects::sweeper`]),
    /// as `prune` and `verify --repair` do: no run that names an object can
    /// be recorded meanwhile (recording one needs a lease), so what is found
    /// unreferenced stays so. The runs are then read a page per read
    /// transaction and the objects removed [`SWEEP_OBJECTS_PER_TX`] per write
    /// transaction, the writer left free between two, instead of one write
    /// transaction holding it for the whole walk.
    pub fn sweep_db_objects(&mut self, dry_run: bool) -> Result<Vec<StoredObject>> {
        self.sweep_db_objects_in_steps(dry_run, SWEEP_OBJECTS_PER_TX, &mut || {
            std::thread::sleep(PRUNE_GAP);
        })
    }

    /// [`SqliteStore::sweep_db_objects`], `per_tx` objects per write
    /// transaction, calling `between` between two of them.
    pub(super) fn sweep_db_objects_in_steps(
        &mut self,
        dry_run: bool,
        per_tx: usize,
        between: &mut dyn FnMut(),
    ) -> Result<Vec<StoredObject>> {
        let shown = self.path.display().to_string();
        let referenced = crate::store::model::referenced_digests(&shown, &mut |after| {
            self.stored_bundles(after, None)
        })?;
        let mut orphans = Vec::new();
        let mut after: Option<Sha256Hex> = None;
        loop {
            let page = self.db_objects(after.as_ref(), 10_000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.sha256.clone());
            orphans.extend(page.into_iter().filter(|o| !referenced.contains(&o.sha256)));
        }
        if dry_run {
            return Ok(orphans);
        }
        let mut steps = orphans.chunks(per_tx.max(1)).peekable();
        while let Some(step) = steps.next() {
            self.write("remove unreferenced objects", |tx| {
                let mut delete = tx
                    .prepare_cached("DELETE FROM objects WHERE sha256 = unhex(?1)")
                    .db("remove objects")?;
                let mut forget = tx
                    .prepare_cached("DELETE FROM object_checks WHERE sha256 = unhex(?1)")
                    .db("remove objects")?;
                for o in step {
                    delete.execute([o.sha256.as_str()]).db("remove objects")?;
                    forget.execute([o.sha256.as_str()]).db("remove objects")?;
                }
                Ok(())
            })?;
            if steps.peek().is_some() {
                between();
            }
        }
        Ok(orphans)
    }

    /// Records what checks of objects found.
    pub fn record_checks(&mut self, checks: &[(Sha256Hex, bool)], now: Timestamp) -> Result<()> {
        self.write("record object checks", |tx| {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO object_checks (sha256, checked_at, ok) VALUES (unhex(?1), ?2, ?3)
                     ON CONFLICT (sha256) DO UPDATE
                     SET checked_at = excluded.checked_at, ok = excluded.ok",
                )
                .db("record object checks")?;
            for (sha, ok) in checks {
                put.execute(params![sha.as_str(), now, ok])
                    .db("record object checks")?;
            }
            Ok(())
        })
    }

    /// The last check of each of these objects that was ever checked.
    pub fn object_checks(&mut self, shas: &[Sha256Hex]) -> Result<HashMap<Sha256Hex, ObjectCheck>> {
        self.read("read object checks", |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT checked_at, ok FROM object_checks WHERE sha256 = unhex(?1)")
                .db("read object checks")?;
            let mut out = HashMap::new();
            for sha in shas {
                let found = stmt
                    .query_row([sha.as_str()], |r| {
                        Ok(ObjectCheck {
                            checked_at: r.get(0)?,
                            ok: r.get(1)?,
                        })
                    })
                    .optional()
                    .db("read object checks")?;
                if let Some(check) = found {
                    out.insert(sha.clone(), check);
                }
            }
            Ok(out)
        })
    }

    /// Removes (or lists) the runs of `tenant` accepted before
    /// `created_before` whose jobs have all finished, oldest first.
    ///
    /// A big prune is many write transactions of [`PRUNE_RUNS_PER_TX`] runs
    /// each, with the writer left free for [`PRUNE_GAP`] between two, so a
    /// serve, submit or ingest working the same home waits at most about
    /// one of them (one transaction for 100,000 runs held the writer for
    /// 36 s). Each transaction decides on its runs as they stand then, and
    /// removes each run whole: its jobs, history, sources and index rows.
    pub fn prune_runs(
        &mut self,
        tenant: Uuid,
        created_before: Timestamp,
        dry_run: bool,
    ) -> Result<Vec<PrunedRun>> {
        self.prune_runs_in_steps(
            tenant,
            created_before,
            dry_run,
            PRUNE_RUNS_PER_TX,
            &mut || std::thread::sleep(PRUNE_GAP),
        )
    }

    /// [`SqliteStore::prune_runs`], `per_tx` runs per write transaction,
    /// calling `between` between two of them (with no transaction open).
    pub(super) fn prune_runs_in_steps(
        &mut self,
        tenant: Uuid,
        created_before: Timestamp,
        dry_run: bool,
        per_tx: usize,
        between: &mut dyn FnMut(),
    ) -> Result<Vec<PrunedRun>> {
        // One pass lists them; each step removes those of its runs that
        // still qualify (a job enqueued for one since keeps it).
        let listed: Vec<PrunedRun> = self.read("prune runs", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT r.id, r.title, r.created_at,
                            (SELECT count(*) FROM research_jobs AS j
                             WHERE j.tenant_id = r.tenant_id AND j.run_id = r.id)
                     FROM research_runs AS r
                     WHERE r.tenant_id = ?1 AND r.created_at < ?2
                       AND NOT EXISTS (
                           SELECT 1 FROM research_jobs AS j
                           WHERE j.tenant_id = r.tenant_id AND j.run_id = r.id
                             AND j.status IN ('queued', 'running'))
                     ORDER BY r.created_at, r.id",
                )
                .db("prune runs")?;
            let rows = stmt
                .query_map(params![tenant.to_string(), created_before], |r| {
                    Ok(PrunedRun {
                        id: uuid_col(r, 0)?,
                        title: r.get(1)?,
                        created_at: r.get(2)?,
                        jobs: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
                    })
                })
                .db("prune runs")?;
            rows.collect::<rusqlite::Result<_>>().db("prune runs")
        })?;
        if dry_run {
            return Ok(listed);
        }
        let tenant_text = tenant.to_string();
        let mut pruned: Vec<PrunedRun> = Vec::with_capacity(listed.len());
        let mut steps = listed.chunks(per_tx.max(1)).peekable();
        while let Some(step) = steps.next() {
            let removed = self.write("prune runs", |tx| {
                let mut removed = Vec::new();
                let mut index = PendingIndex::default();
                for run in step {
                    let run_text = run.id.to_string();
                    let jobs: Option<i64> = tx
                        .prepare_cached(
                            "SELECT (SELECT count(*) FROM research_jobs AS j
                                     WHERE j.tenant_id = r.tenant_id AND j.run_id = r.id)
                             FROM research_runs AS r
                             WHERE r.tenant_id = ?1 AND r.id = ?2
                               AND NOT EXISTS (
                                   SELECT 1 FROM research_jobs AS j
                                   WHERE j.tenant_id = r.tenant_id AND j.run_id = r.id
                                     AND j.status IN ('queued', 'running'))",
                        )
                        .and_then(|mut st| {
                            st.query_row(params![tenant_text, run_text], |r| r.get(0))
                                .optional()
                        })
                        .db("prune runs")?;
                    let Some(jobs) = jobs else { continue };
                    // Index rows leave before the text they were made from.
                    let none = RunSources {
                        tenant_id: tenant,
                        run_id: run.id,
                        sources: Vec::new(),
                    };
                    replace_sources(tx, &none, created_before, &mut index)?;
                    for sql in [
                        "DELETE FROM research_jobs WHERE tenant_id = ?1 AND run_id = ?2",
                        "DELETE FROM research_runs WHERE tenant_id = ?1 AND id = ?2",
                    ] {
                        tx.prepare_cached(sql)
                            .and_then(|mut s| s.execute(params![tenant_text, run_text]))
                            .db("prune runs")?;
                    }
                    removed.push(PrunedRun {
                        jobs: jobs.try_into().unwrap_or(0),
                        ..run.clone()
                    });
                }
                index.write(tx)?;
                Ok(removed)
            })?;
            // Their rows in search shards are never found once the runs are
            // gone; removing them only frees the space, so a failure here
            // is said and the prune stands.
            let runs: Vec<Uuid> = removed.iter().map(|r| r.id).collect();
            if let Err(e) = self.forget_runs_in_shards(tenant, &runs) {
                log::warn!("Pruned runs' rows stay in the search shards: {e}");
            }
            pruned.extend(removed);
            if steps.peek().is_some() {
                between();
            }
        }
        Ok(pruned)
    }

    /// Writes a consistent copy of the database to `dest` (a new file):
    /// SQLite's online backup, in one step, so the copy is the database as
    /// of one read transaction while writers carry on (WAL). It works from
    /// a connection that may only read (`VACUUM INTO` would open its output
    /// read-only too).
    pub fn copy_to(&mut self, dest: &Path) -> Result<()> {
        online_copy(&self.conn, dest, self.options.busy_deadline).map_err(|e| self.classify(e))
    }
}

/// Copies the database `from` reads (its main schema) into the new file
/// `dest` by SQLite's online backup, retried from where it stopped while
/// another connection holds a lock it needs, up to `wait`.
pub(super) fn online_copy(from: &rusqlite::Connection, dest: &Path, wait: Duration) -> Result<()> {
    let mut out = rusqlite::Connection::open_with_flags(
        dest,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::Io {
        action: "create the database copy",
        path: dest.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let deadline = std::time::Instant::now() + wait;
    let copied = (|| -> rusqlite::Result<bool> {
        let backup = rusqlite::backup::Backup::new(from, &mut out)?;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => return Ok(true),
                // Another connection held a lock the copy needs: again, from
                // the start of what is left, until the deadline.
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return Ok(false),
            }
        }
    })()
    .db("copy the database")?;
    out.close().map_err(|(_, e)| e).db("copy the database")?;
    if copied {
        Ok(())
    } else {
        Err(Error::Busy {
            action: "copy the database",
            waited_secs: wait.as_secs(),
        })
    }
}

/// One page of stored bundles (see [`SqliteStore::stored_bundles`]).
fn stored_bundles(
    tx: &Transaction<'_>,
    after: Option<(Uuid, Uuid)>,
    only: Option<(Uuid, Uuid)>,
) -> Result<Vec<StoredBundle>> {
    let (sql, a, b) = match (only, after) {
        (Some((t, r)), _) => (
            "SELECT tenant_id, id, bundle_json, bundle_holes FROM research_runs
             WHERE tenant_id = ?1 AND id = ?2 AND ?3 >= 0",
            t.to_string(),
            r.to_string(),
        ),
        (None, after) => (
            "SELECT tenant_id, id, bundle_json, bundle_holes FROM research_runs
             WHERE (tenant_id, id) > (?1, ?2) ORDER BY tenant_id, id LIMIT +?3",
            after.map_or(String::new(), |(t, _)| t.to_string()),
            after.map_or(String::new(), |(_, r)| r.to_string()),
        ),
    };
    let mut stmt = tx.prepare_cached(sql).db("read stored bundles")?;
    let rows = stmt
        .query_map(params![a, b, PAGE], |r| {
            Ok(StoredBundle {
                tenant_id: uuid_col(r, 0)?,
                run_id: uuid_col(r, 1)?,
                json: r.get(2)?,
                holes: r.get(3)?,
            })
        })
        .db("read stored bundles")?;
    rows.collect::<rusqlite::Result<_>>()
        .db("read stored bundles")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use crate::digest::Sha256Hex;
    use crate::state::Outcome;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{
        Completion, NewRun, NewSource, PruneFilter, RunSources, StoreOptions, Synchronous,
    };
    use crate::timestamp::Timestamp;

    /// A database of 10 finished runs of 10 indexed sources each (one job
    /// each, succeeded), its store, its tenant, its runs oldest first, and
    /// a second connection that never waits for the writer.
    fn ten_runs() -> (
        tempfile::TempDir,
        SqliteStore,
        Uuid,
        Vec<Uuid>,
        rusqlite::Connection,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bundleq.db");
        let options = StoreOptions {
            synchronous: Synchronous::Normal,
            ..StoreOptions::default()
        };
        let mut store = SqliteStore::create(&db, options).unwrap();
        let tenant = store
            .create_tenant("lab", None, Timestamp::now())
            .unwrap()
            .id;
        let mut runs = Vec::new();
        for i in 0..10 {
            let run = NewRun::from_api(
                tenant,
                format!("Run {i}"),
                format!("{{\"run\": {i}}}"),
                "process_bundle",
            );
            runs.push(run.id);
            // Each run a little later than the one before.
            let now = Timestamp::now();
            store.insert_runs(&[run], now).unwrap();
            let claims = store.claim(1, "test", now).unwrap();
            let sources = (0..10)
                .map(|idx| {
                    let text = format!("glacier survey {i} source {idx}");
                    NewSource {
                        idx,
                        uri: format!("https://example.org/{i}/{idx}"),
                        title: None,
                        sha256: Sha256Hex::of(text.as_bytes()).to_string(),
                        media_type: None,
                        retrieved_at: None,
                        size: Some(text.len() as u64),
                        text: Some(text),
                        indexed_apart: None,
                    }
                })
                .collect();
            let done = Completion {
                sources: Some(RunSources {
                    tenant_id: tenant,
                    run_id: claims[0].job.run_id,
                    sources,
                }),
                ..Completion::new(claims[0].token.clone(), Outcome::Succeeded)
            };
            store.complete(&[done], now).unwrap();
        }
        let other = rusqlite::Connection::open(&db).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        (dir, store, tenant, runs, other)
    }

    /// A write by `other` that goes through only while no transaction of
    /// the store is open (it does not wait).
    fn writes_at_once(other: &rusqlite::Connection) {
        other
            .execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO bundleq_meta (key, value) VALUES ('probe', '1')
                 ON CONFLICT (key) DO UPDATE SET value = value + 1;
                 COMMIT;",
            )
            .expect("the writer is free between two steps of a prune");
    }

    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_long_prune_of_runs_frees_the_writer_between_steps_and_keeps_a_run_given_work_meanwhile() {
        let (_dir, mut store, tenant, runs, other) = ten_runs();
        // Steps of 3 runs: [0 1 2] [3 4 5] [6 7 8] [9]. In the first gap a
        // job of run 7 is queued again (as a user's `job retry` does).
        let kept = runs[7];
        let mut gaps = 0;
        let pruned = store
            .prune_runs_in_steps(tenant, Timestamp::now(), false, 3, &mut || {
                gaps += 1;
                writes_at_once(&other);
                if gaps == 1 {
                    other
                        .execute(
                            "UPDATE research_jobs SET status = 'queued' WHERE run_id = ?1",
                            [kept.to_string()],
                        )
                        .unwrap();
                }
            })
            .unwrap();
        assert_eq!(gaps, 3);
        let expected: Vec<Uuid> = runs.iter().copied().filter(|r| *r != kept).collect();
        assert_eq!(pruned.iter().map(|r| r.id).collect::<Vec<_>>(), expected);
        assert!(pruned.iter().all(|r| r.jobs == 1), "{pruned:?}");
        // The kept run is whole; nothing of the others is left, in the
        // index either.
        assert_eq!(count(&store, "SELECT count(*) FROM research_runs"), 1);
        assert_eq!(count(&store, "SELECT count(*) FROM research_jobs"), 1);
        assert_eq!(count(&store, "SELECT count(*) FROM research_sources"), 10);
        assert_eq!(
            count(&store, "SELECT count(*) FROM research_sources_fts_docsize"),
            10
        );
        let probes = count(
            &store,
            "SELECT CAST(value AS INTEGER) FROM bundleq_meta WHERE key = 'probe'",
        );
        assert_eq!(probes, 3);
        // A dry run lists and removes nothing; done, nothing is left to do.
        let listed = store
            .prune_runs_in_steps(tenant, Timestamp::now(), true, 3, &mut || {
                panic!("a dry run has no steps")
            })
            .unwrap();
        assert!(
            listed.is_empty(),
            "the kept run has a queued job: {listed:?}"
        );
        assert_eq!(count(&store, "SELECT count(*) FROM research_runs"), 1);
    }

    #[test]
    fn a_sweep_frees_the_writer_between_steps_and_keeps_every_named_object() {
        let (_dir, mut store, _tenant, runs, other) = ten_runs();
        // 25 objects no run names, and one that run 0's bundle names.
        let digest = |i: usize| Sha256Hex::of(format!("object {i}").as_bytes()).to_string();
        for i in 0..=25 {
            store
                .conn
                .execute(
                    "INSERT INTO objects (sha256, bytes) VALUES (unhex(?1), ?2)",
                    rusqlite::params![digest(i), format!("object {i}").into_bytes()],
                )
                .unwrap();
        }
        let named = digest(25);
        store
            .conn
            .execute(
                "UPDATE research_runs SET bundle_json = ?1 WHERE id = ?2",
                rusqlite::params![
                    serde_json::json!({"sources": [{"sha256": named, "content": "object 25"}]})
                        .to_string(),
                    runs[0].to_string()
                ],
            )
            .unwrap();
        let listed = store
            .sweep_db_objects_in_steps(true, 10, &mut || panic!("a dry run has no steps"))
            .unwrap();
        assert_eq!(listed.len(), 25);
        assert_eq!(count(&store, "SELECT count(*) FROM objects"), 26);
        let mut gaps = 0;
        let swept = store
            .sweep_db_objects_in_steps(false, 10, &mut || {
                gaps += 1;
                writes_at_once(&other);
            })
            .unwrap();
        assert_eq!(gaps, 2);
        assert_eq!(swept.len(), 25);
        assert!(swept.iter().all(|o| o.sha256.as_str() != named));
        let left: String = store
            .conn
            .query_row("SELECT lower(hex(sha256)) FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, named);
    }

    #[test]
    fn a_long_prune_of_jobs_frees_the_writer_between_steps_and_keeps_a_job_retried_meanwhile() {
        let (_dir, mut store, tenant, _runs, other) = ten_runs();
        let jobs: Vec<String> = store
            .conn
            .prepare("SELECT id FROM research_jobs ORDER BY updated_at, id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let retried = jobs[8].clone();
        let filter = PruneFilter {
            finished_before: Timestamp::now(),
            statuses: Vec::new(),
        };
        let listed = store
            .prune_in_steps(tenant, &filter, true, 4, &mut || {
                panic!("a dry run has no steps")
            })
            .unwrap();
        assert_eq!(listed.len(), 10);
        assert_eq!(count(&store, "SELECT count(*) FROM research_jobs"), 10);
        let mut gaps = 0;
        let pruned = store
            .prune_in_steps(tenant, &filter, false, 4, &mut || {
                gaps += 1;
                writes_at_once(&other);
                if gaps == 1 {
                    other
                        .execute(
                            "UPDATE research_jobs SET status = 'queued' WHERE id = ?1",
                            [&retried],
                        )
                        .unwrap();
                }
            })
            .unwrap();
        assert_eq!(gaps, 2);
        let ids: Vec<String> = pruned.iter().map(|p| p.id.to_string()).collect();
        let expected: Vec<String> = jobs.iter().filter(|j| **j != retried).cloned().collect();
        assert_eq!(ids, expected);
        let left: String = store
            .conn
            .query_row("SELECT id FROM research_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, retried);
    }
}

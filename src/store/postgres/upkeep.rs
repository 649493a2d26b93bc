//! Keeping a home's data provable on PostgreSQL: which objects the stored
//! runs refer to, the objects kept, what checks found, removing what no run
//! refers to (under [`super::OBJECTS_LOCK`]), and removing old runs.

use std::collections::HashMap;

use uuid::Uuid;

use super::runs::digest_bytes;
use super::{OBJECTS_LOCK, PgStore, Tx, col};
use crate::digest::Sha256Hex;
use crate::error::Result;
use crate::store::model::StoredBundle;
use crate::store::{ObjectCheck, PrunedRun, StoredObject};
use crate::timestamp::Timestamp;

/// Stored bundles read per statement while walking every run.
const PAGE: i64 = 500;

/// How long an object stored (or touched by a writer about to name it)
/// is kept by sweeps though no run names it yet: hosts share no lock but
/// the database's, and a submit on another host stores its objects before
/// it records their runs.
const FRESH_GRACE: &str = "1 hour";

impl PgStore {
    /// Sets a metadata value, replacing the one in force.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.write("write metadata", Timestamp::now(), |tx| {
            tx.execute(
                "INSERT INTO bundleq_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
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
        let after = after.map(digest_bytes).unwrap_or_default();
        self.read("list objects", |tx| {
            tx.query(
                "SELECT encode(sha256, 'hex'), size FROM objects
                 WHERE sha256 > $1 ORDER BY sha256 LIMIT $2",
                &[&after, &i64::from(limit)],
            )?
            .iter()
            .map(|r| StoredObject::from_row(&col::<String>(r, 0)?, col(r, 1)?))
            .collect()
        })
    }

    /// The sizes of those of these objects the database keeps.
    pub fn object_sizes(&mut self, shas: &[Sha256Hex]) -> Result<HashMap<Sha256Hex, u64>> {
        let keys: Vec<Vec<u8>> = shas.iter().map(digest_bytes).collect();
        self.read("read object sizes", |tx| {
            let mut out = HashMap::new();
            for r in tx.query(
                "SELECT encode(sha256, 'hex'), size FROM objects WHERE sha256 = ANY($1)",
                &[&keys],
            )? {
                let o = StoredObject::from_row(&col::<String>(&r, 0)?, col(&r, 1)?)?;
                out.insert(o.sha256, o.size);
            }
            Ok(out)
        })
    }

    /// Removes (or lists) the objects no stored run refers to, in one
    /// transaction holding the objects lock alone: recording a run shares
    /// it and checks there its objects are still there.
    pub fn sweep_db_objects(&mut self, dry_run: bool) -> Result<Vec<StoredObject>> {
        let shown = self.shown();
        self.write("remove unreferenced objects", Timestamp::now(), |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OBJECTS_LOCK])?;
            let referenced = crate::store::model::referenced_digests(&shown, &mut |after| {
                stored_bundles(tx, after, None)
            })?;
            // Objects stored within the grace period stay: a run on another
            // host may be about to name them.
            let mut orphans = Vec::new();
            for r in tx.query(
                "SELECT encode(sha256, 'hex'), size FROM objects
                 WHERE stored_at < now() - $1::text::interval",
                &[&FRESH_GRACE],
            )? {
                let object = StoredObject::from_row(&col::<String>(&r, 0)?, col(&r, 1)?)?;
                if !referenced.contains(&object.sha256) {
                    orphans.push(object);
                }
            }
            if !dry_run {
                let mut removed = Vec::with_capacity(orphans.len());
                for o in orphans {
                    let key = digest_bytes(&o.sha256);
                    // Touched since it was listed: a writer is naming it.
                    let gone = tx.execute(
                        "DELETE FROM objects WHERE sha256 = $1 AND stored_at < now() - $2::text::interval",
                        &[&key, &FRESH_GRACE],
                    )?;
                    if gone == 0 {
                        continue;
                    }
                    for sql in [
                        "DELETE FROM object_chunks WHERE sha256 = $1",
                        "DELETE FROM object_checks WHERE sha256 = $1",
                    ] {
                        tx.execute(sql, &[&key])?;
                    }
                    removed.push(o);
                }
                return Ok(removed);
            }
            Ok(orphans)
        })
    }

    /// Records what checks of objects found.
    pub fn record_checks(&mut self, checks: &[(Sha256Hex, bool)], now: Timestamp) -> Result<()> {
        self.write("record object checks", now, |tx| {
            for (sha, ok) in checks {
                tx.execute(
                    "INSERT INTO object_checks (sha256, checked_at, ok) VALUES ($1, $2, $3)
                     ON CONFLICT (sha256) DO UPDATE
                     SET checked_at = excluded.checked_at, ok = excluded.ok",
                    &[&digest_bytes(sha), &now, ok],
                )?;
            }
            Ok(())
        })
    }

    /// The last check of each of these objects that was ever checked.
    pub fn object_checks(&mut self, shas: &[Sha256Hex]) -> Result<HashMap<Sha256Hex, ObjectCheck>> {
        let keys: Vec<Vec<u8>> = shas.iter().map(digest_bytes).collect();
        self.read("read object checks", |tx| {
            let mut out = HashMap::new();
            for r in tx.query(
                "SELECT encode(sha256, 'hex'), checked_at, ok FROM object_checks
                 WHERE sha256 = ANY($1)",
                &[&keys],
            )? {
                let sha = StoredObject::from_row(&col::<String>(&r, 0)?, 0)?.sha256;
                out.insert(
                    sha,
                    ObjectCheck {
                        checked_at: col(&r, 1)?,
                        ok: col(&r, 2)?,
                    },
                );
            }
            Ok(out)
        })
    }

    /// Removes (or lists) the runs of `tenant` accepted before
    /// `created_before` whose jobs have all finished.
    pub fn prune_runs(
        &mut self,
        tenant: Uuid,
        created_before: Timestamp,
        dry_run: bool,
    ) -> Result<Vec<PrunedRun>> {
        let select = |tx: &mut Tx<'_>| -> Result<Vec<PrunedRun>> {
            tx.query(
                "SELECT r.id, r.title, r.created_at,
                        (SELECT count(*) FROM research_jobs AS j
                         WHERE j.tenant_id = r.tenant_id AND j.run_id = r.id)
                 FROM research_runs AS r
                 WHERE r.tenant_id = $1 AND r.created_at < $2
                   AND NOT EXISTS (
                       SELECT 1 FROM research_jobs AS j
                       WHERE j.tenant_id = r.tenant_id AND j.run_id = r.id
                         AND j.status IN ('queued', 'running'))
                 ORDER BY r.created_at, r.id",
                &[&tenant, &created_before],
            )?
            .iter()
            .map(|r| {
                Ok(PrunedRun {
                    id: col(r, 0)?,
                    title: col(r, 1)?,
                    created_at: col(r, 2)?,
                    jobs: u64::try_from(col::<i64>(r, 3)?).unwrap_or(0),
                })
            })
            .collect()
        };
        if dry_run {
            return self.read("prune runs", select);
        }
        let shown = self.shown();
        self.write("prune runs", Timestamp::now(), |tx| {
            let pruned = select(tx)?;
            for run in &pruned {
                // What the run named may go at the next sweep, grace or not
                // (a writer naming it again touches it).
                let mut keys: Vec<Vec<u8>> = Vec::new();
                for bundle in stored_bundles(tx, None, Some((tenant, run.id)))? {
                    keys.extend(
                        bundle
                            .object_refs(&shown)?
                            .iter()
                            .map(|r| digest_bytes(&r.sha256)),
                    );
                }
                tx.execute(
                    "UPDATE objects SET stored_at = '-infinity' WHERE sha256 = ANY($1)",
                    &[&keys],
                )?;
                for sql in [
                    "DELETE FROM research_jobs WHERE tenant_id = $1 AND run_id = $2",
                    "DELETE FROM research_runs WHERE tenant_id = $1 AND id = $2",
                ] {
                    tx.execute(sql, &[&tenant, &run.id])?;
                }
            }
            Ok(pruned)
        })
    }
}

/// Checks, in a transaction recording runs (which shares the objects lock
/// with other recorders; a sweep holds it alone), that the objects they
/// name and that were stored before it are still there: the first missing
/// one, if any.
pub(super) fn missing_stored(tx: &mut Tx<'_>, stored: &[Sha256Hex]) -> Result<Option<Sha256Hex>> {
    if stored.is_empty() {
        return Ok(None);
    }
    let keys: Vec<Vec<u8>> = stored.iter().map(digest_bytes).collect();
    let present: Vec<String> = tx
        .query(
            "SELECT encode(sha256, 'hex') FROM objects WHERE sha256 = ANY($1)",
            &[&keys],
        )?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_>>()?;
    Ok(stored
        .iter()
        .find(|s| !present.iter().any(|p| p == s.as_str()))
        .cloned())
}

/// One page of stored bundles (see [`PgStore::stored_bundles`]).
fn stored_bundles(
    tx: &mut Tx<'_>,
    after: Option<(Uuid, Uuid)>,
    only: Option<(Uuid, Uuid)>,
) -> Result<Vec<StoredBundle>> {
    let rows = match (only, after) {
        (Some((t, r)), _) => tx.query(
            "SELECT tenant_id, id, bundle_json, bundle_holes FROM research_runs
             WHERE tenant_id = $1 AND id = $2",
            &[&t, &r],
        )?,
        (None, None) => tx.query(
            "SELECT tenant_id, id, bundle_json, bundle_holes FROM research_runs
             ORDER BY tenant_id, id LIMIT $1",
            &[&PAGE],
        )?,
        (None, Some((t, r))) => tx.query(
            "SELECT tenant_id, id, bundle_json, bundle_holes FROM research_runs
             WHERE (tenant_id, id) > ($1, $2) ORDER BY tenant_id, id LIMIT $3",
            &[&t, &r, &PAGE],
        )?,
    };
    rows.iter()
        .map(|r| {
            Ok(StoredBundle {
                tenant_id: col(r, 0)?,
                run_id: col(r, 1)?,
                json: col(r, 2)?,
                holes: col(r, 3)?,
            })
        })
        .collect()
}

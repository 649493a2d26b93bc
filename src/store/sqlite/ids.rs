//! Short ids, like git's: the shortest prefix of an id that no other id of
//! its kind shares (at least [`MIN_SHORT`] characters), and the resolution
//! of such a prefix back to the one id it names. UUIDv7 ids created in the
//! same millisecond share their first 12 hex digits, so a short id is
//! often longer than the minimum; it is computed from the id's neighbours
//! in the primary-key index, never by scanning.

use std::collections::HashMap;

use rusqlite::{Transaction, params};
use uuid::Uuid;

use super::SqliteStore;
use super::convert::{DbContext, uuid_text};
use crate::error::Result;
use crate::store::{IdKind, short_form};

/// The ids just below and just above `id` in its kind's index.
fn neighbours(tx: &Transaction<'_>, kind: IdKind, tenant: Uuid, id: &str) -> Result<Vec<String>> {
    let (below, above) = match kind {
        IdKind::Job => (
            "SELECT max(id) FROM research_jobs WHERE id < ?1",
            "SELECT min(id) FROM research_jobs WHERE id > ?1",
        ),
        IdKind::Run => (
            "SELECT max(id) FROM research_runs WHERE tenant_id = ?2 AND id < ?1",
            "SELECT min(id) FROM research_runs WHERE tenant_id = ?2 AND id > ?1",
        ),
    };
    let mut found = Vec::new();
    for sql in [below, above] {
        let other: Option<String> = tx
            .prepare_cached(sql)
            .and_then(|mut s| {
                let p = s.parameter_count();
                let t = tenant.to_string();
                let all = params![id, t];
                s.query_row(&all[..p], |r| r.get(0))
            })
            .db("shorten ids")?;
        found.extend(other);
    }
    Ok(found)
}

impl SqliteStore {
    /// The short form of each id (of `tenant`, for runs).
    pub fn short_ids(
        &mut self,
        kind: IdKind,
        tenant: Uuid,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>> {
        self.read("shorten ids", |tx| {
            let mut out = HashMap::with_capacity(ids.len());
            for id in ids {
                if out.contains_key(id) {
                    continue;
                }
                let text = id.to_string();
                let near = neighbours(tx, kind, tenant, &text)?;
                let near: Vec<&str> = near.iter().map(String::as_str).collect();
                out.insert(*id, short_form(&text, &near));
            }
            Ok(out)
        })
    }

    /// The one id of `tenant` that starts with `prefix` (a whole id, or at
    /// least [`MIN_PREFIX`] characters of one, as shown). None, or more than
    /// one, is an error that says so.
    pub fn resolve(&mut self, kind: IdKind, tenant: Uuid, prefix: &str) -> Result<Uuid> {
        let p = kind.check_prefix(prefix)?;
        let sql = match kind {
            IdKind::Job => {
                "SELECT id FROM research_jobs
                 WHERE id >= ?1 AND id < ?1 || '~' AND tenant_id = ?2 ORDER BY id LIMIT 6"
            }
            IdKind::Run => {
                "SELECT id FROM research_runs
                 WHERE tenant_id = ?2 AND id >= ?1 AND id < ?1 || '~' ORDER BY id LIMIT 6"
            }
        };
        let found: Vec<String> = self.read("find an id", |tx| {
            let mut stmt = tx.prepare_cached(sql).db("find an id")?;
            let rows = stmt
                .query_map(params![p, tenant.to_string()], |r| r.get(0))
                .db("find an id")?;
            rows.collect::<rusqlite::Result<_>>().db("find an id")
        })?;
        let one = kind.resolved(prefix, tenant, &found)?;
        uuid_text(&one, "find an id").map_err(|e| self.classify(e))
    }
}

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
use crate::error::{Error, Result};
use crate::store::{IdKind, MIN_PREFIX, MIN_SHORT};

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn neighbours(tx: &Transaction<'_>, kind: IdKind, tenant: Uuid, id: &str) -> Result<usize> {
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
    let mut longest = 0;
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
        if let Some(o) = other {
            longest = longest.max(common_prefix(id, &o));
        }
    }
    Ok(longest)
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
                let len = (neighbours(tx, kind, tenant, &text)? + 1)
                    .max(MIN_SHORT)
                    .min(text.len());
                out.insert(*id, text[..len].to_owned());
            }
            Ok(out)
        })
    }

    /// The one id of `tenant` that starts with `prefix` (a whole id, or at
    /// least [`MIN_PREFIX`] characters of one, as shown). None, or more than
    /// one, is an error that says so.
    pub fn resolve(&mut self, kind: IdKind, tenant: Uuid, prefix: &str) -> Result<Uuid> {
        let p = prefix.trim().to_ascii_lowercase();
        let not_found = || match kind {
            IdKind::Job => Error::JobNotFound {
                id: prefix.to_owned(),
                tenant: tenant.to_string(),
            },
            IdKind::Run => Error::RunNotFound {
                id: prefix.to_owned(),
                tenant: tenant.to_string(),
            },
        };
        if p.len() < MIN_PREFIX
            || p.len() > 36
            || !p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(Error::InvalidArgument {
                what: "id",
                message: format!(
                    "{prefix:?} is not a {} id or a prefix of one ({MIN_PREFIX} to 36 characters of 0-9, a-f and '-')",
                    kind.noun()
                ),
            });
        }
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
        match found.as_slice() {
            [] => Err(not_found()),
            [one] => uuid_text(one, "find an id").map_err(|e| self.classify(e)),
            many => Err(Error::InvalidArgument {
                what: "id",
                message: format!(
                    "{prefix:?} names more than one {}: {}{}; give more characters",
                    kind.noun(),
                    many.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                    if many.len() > 5 { ", …" } else { "" }
                ),
            }),
        }
    }
}

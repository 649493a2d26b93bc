//! Runs, objects, sources and their search, tenants, serves and short ids
//! on PostgreSQL.

use std::collections::HashMap;

use postgres::Row;
use uuid::Uuid;

use super::{PgStore, Tx, col};
use crate::digest::Sha256Hex;
use crate::error::{Error, Result};
use crate::store::compact;
use crate::store::search::Token;
use crate::store::{
    IdKind, NewJob, NewRun, Run, RunInsert, RunSources, RunSummary, SearchHit, ServeRow, Tenant,
    short_form,
};
use crate::timestamp::Timestamp;

/// Objects are kept in chunks of this many bytes.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// A tsvector may not exceed 1 MiB: the indexed body stops before its
/// estimated size passes this (the estimate is an upper bound).
const TSVECTOR_BUDGET: usize = 900 * 1024;

/// Snippets are cut from at most this many bytes of a source's text.
const SNIPPET_SOURCE_BYTES: i32 = 256 * 1024;

/// The search configuration (migration V2).
const CONFIG: &str = "bundleq_search";

const SUMMARY_COLUMNS: &str =
    "id, tenant_id, title, bundle_sha256::text, origin::text, origin_name, created_at, updated_at";

fn summary_from_row(r: &Row) -> Result<RunSummary> {
    Ok(RunSummary {
        id: col(r, 0)?,
        tenant_id: col(r, 1)?,
        title: col(r, 2)?,
        bundle_sha256: col(r, 3)?,
        origin: col(r, 4)?,
        origin_name: col(r, 5)?,
        created_at: col(r, 6)?,
        updated_at: col(r, 7)?,
    })
}

pub(super) fn digest_bytes(sha: &Sha256Hex) -> Vec<u8> {
    let s = sha.as_str().as_bytes();
    s.chunks(2)
        .map(|pair| {
            let hex = |b: u8| match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => 0,
            };
            (hex(pair[0]) << 4) | hex(*pair.get(1).unwrap_or(&b'0'))
        })
        .collect()
}

/// Stores an object's chunks, then its row (the row says it is whole).
/// Marks an object as just stored, if it is there (a writer about to name
/// it): a sweep keeps it for its grace period. A sweep removing it at the
/// same moment either commits first (then it is not there, and is stored
/// again) or finds it touched and keeps it.
fn touch_object(tx: &mut Tx<'_>, key: &[u8]) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE objects SET stored_at = statement_timestamp() WHERE sha256 = $1",
        &[&key],
    )? > 0)
}

pub(super) fn put_object(tx: &mut Tx<'_>, sha: &Sha256Hex, bytes: &[u8]) -> Result<()> {
    let key = digest_bytes(sha);
    if touch_object(tx, &key)? {
        return Ok(());
    }
    let mut chunks = 0i32;
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(CHUNK_BYTES).collect()
    };
    for (seq, chunk) in pieces.into_iter().enumerate() {
        let seq = i32::try_from(seq).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO object_chunks (sha256, seq, bytes) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&key, &seq, &chunk],
        )?;
        chunks = seq + 1;
    }
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO objects (sha256, size, chunks) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&key, &size, &chunks],
    )?;
    Ok(())
}

/// Reads an object whole and checks it against its digest.
fn get_object(tx: &mut Tx<'_>, sha: &Sha256Hex, shown: &str) -> Result<Option<Vec<u8>>> {
    let key = digest_bytes(sha);
    let Some(row) = tx.opt(
        "SELECT size, chunks FROM objects WHERE sha256 = $1",
        &[&key],
    )?
    else {
        return Ok(None);
    };
    let (size, chunks): (i64, i32) = (col(&row, 0)?, col(&row, 1)?);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 30));
    let rows = tx.query(
        "SELECT seq, bytes FROM object_chunks WHERE sha256 = $1 ORDER BY seq",
        &[&key],
    )?;
    for (i, r) in rows.iter().enumerate() {
        let seq: i32 = col(r, 0)?;
        if usize::try_from(seq).ok() != Some(i) {
            break;
        }
        bytes.extend_from_slice(col::<&[u8]>(r, 1)?);
    }
    if rows.len() != usize::try_from(chunks).unwrap_or(0)
        || i64::try_from(bytes.len()).ok() != Some(size)
        || Sha256Hex::of(&bytes) != *sha
    {
        return Err(Error::Corrupt {
            path: shown.into(),
            detail: format!("object {sha} does not match its sha256 (or lacks chunks)"),
        });
    }
    Ok(Some(bytes))
}

/// Text as the index sees it: every character that is not a letter or a
/// digit becomes a space (what FTS5's `unicode61` splits words on).
fn words_only(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect()
}

/// The part of a body whose tsvector fits PostgreSQL's 1 MiB cap: words
/// are taken while an upper bound of the tsvector's size (each new word's
/// bytes plus its entry, each occurrence a position) stays under budget.
fn fitted(body: &str) -> &str {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut size = 0usize;
    let mut end = 0;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b' ' {
            i += 1;
        }
        if start == i {
            break;
        }
        let word = &body[start..i];
        size += 2 + if seen.insert(word) {
            word.len() * 2 + 8
        } else {
            0
        };
        if size > TSVECTOR_BUDGET {
            break;
        }
        end = i;
    }
    &body[..end]
}

/// Records a run's sources in place of those it had, indexed.
pub(super) fn replace_sources(tx: &mut Tx<'_>, run: &RunSources) -> Result<()> {
    tx.execute(
        "DELETE FROM research_sources WHERE tenant_id = $1 AND run_id = $2",
        &[&run.tenant_id, &run.run_id],
    )?;
    let now = tx.now;
    for s in &run.sources {
        let size = s
            .size
            .map(i64::try_from)
            .transpose()
            .map_err(|_| Error::InvalidArgument {
                what: "source size",
                message: "too large".to_owned(),
            })?;
        let idx = i32::try_from(s.idx).unwrap_or(i32::MAX);
        let title = words_only(s.title.as_deref().unwrap_or(""));
        let uri = words_only(&s.uri);
        let body = s.text.as_deref().map(words_only).unwrap_or_default();
        let indexed = fitted(&body);
        tx.execute(
            &format!(
                "INSERT INTO research_sources (tenant_id, run_id, idx, uri, title, sha256,
                     media_type, retrieved_at, size, indexed, created_at, body, search)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                     to_tsvector('{CONFIG}', $13) || to_tsvector('{CONFIG}', $14)
                         || to_tsvector('{CONFIG}', $15))"
            ),
            &[
                &run.tenant_id,
                &run.run_id,
                &idx,
                &s.uri,
                &s.title,
                &s.sha256,
                &s.media_type,
                &s.retrieved_at,
                &size,
                &s.text.is_some(),
                &now,
                &s.text,
                &title,
                &uri,
                &indexed,
            ],
        )?;
    }
    Ok(())
}

/// The tsquery text of a parsed query: each term's words quoted (no user
/// text is syntax), a phrase's words in order (`<->`), a prefix's last word
/// `:*`; NOT is "and not".
pub(crate) fn ts_query(input: &str) -> std::result::Result<String, String> {
    let mut out = Vec::new();
    for t in crate::store::search::parse(input)? {
        out.push(match t {
            Token::Term { text, prefix } => {
                let words: Vec<String> = words_only(&text)
                    .split_whitespace()
                    .map(|w| format!("'{}'", w.replace('\'', "''")))
                    .collect();
                let mut q = words.join(" <-> ");
                if prefix {
                    q.push_str(":*");
                }
                if words.len() > 1 {
                    q = format!("({q})");
                }
                q
            }
            Token::And => "&".to_owned(),
            Token::Or => "|".to_owned(),
            Token::Not => "& !".to_owned(),
            Token::Open => "(".to_owned(),
            Token::Close => ")".to_owned(),
        });
    }
    Ok(out.join(" "))
}

impl PgStore {
    /// Records runs and enqueues their jobs in one transaction.
    pub fn insert_runs(&mut self, runs: &[NewRun], now: Timestamp) -> Result<Vec<RunInsert>> {
        let stored: Vec<Sha256Hex> = runs.iter().flat_map(|r| r.stored.clone()).collect();
        let names_objects = runs
            .iter()
            .any(|r| !r.objects.is_empty() || !r.stored.is_empty());
        self.write("record runs", now, |tx| {
            if names_objects {
                // A sweep of unreferenced objects holds this alone: it
                // cannot run between our check and our commit.
                tx.execute(
                    "SELECT pg_advisory_xact_lock_shared($1)",
                    &[&super::OBJECTS_LOCK],
                )?;
            }
            if let Some(sha256) = super::upkeep::missing_stored(tx, &stored)? {
                let run_id = runs
                    .iter()
                    .find(|r| r.stored.contains(&sha256))
                    .map_or(Uuid::nil(), |r| r.id);
                return Err(Error::ObjectsGone {
                    run_id,
                    sha256: sha256.to_string(),
                });
            }
            runs.iter().map(|r| insert_run(tx, r)).collect()
        })
    }

    /// Stores an object in its own transaction (before the run that names
    /// it is recorded), reading it chunk by chunk and hashing as it goes: a
    /// stream that does not hash to `sha` stores nothing.
    pub fn put_object(&mut self, sha: &Sha256Hex, bytes: &mut dyn std::io::Read) -> Result<()> {
        let shown = self.shown();
        let mut reading = Some(bytes);
        self.write("store an object", Timestamp::now(), |tx| {
            let Some(bytes) = reading.take() else {
                // A transaction run again cannot read the stream twice.
                return Err(Error::Busy {
                    action: "store an object",
                    waited_secs: 0,
                });
            };
            let key = digest_bytes(sha);
            if touch_object(tx, &key)? {
                return Ok(());
            }
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let (mut seq, mut size) = (0i32, 0i64);
            loop {
                let mut filled = 0;
                while filled < chunk.len() {
                    let n = bytes
                        .read(&mut chunk[filled..])
                        .map_err(|source| Error::Io {
                            action: "read an object",
                            path: shown.clone().into(),
                            source,
                        })?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 && seq > 0 {
                    break;
                }
                sha2::Digest::update(&mut hasher, &chunk[..filled]);
                tx.execute(
                    "INSERT INTO object_chunks (sha256, seq, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&key, &seq, &&chunk[..filled]],
                )?;
                seq += 1;
                size += i64::try_from(filled).unwrap_or(i64::MAX);
                if filled < chunk.len() {
                    break;
                }
            }
            if Sha256Hex::from_digest(&sha2::Digest::finalize(hasher)) != *sha {
                return Err(Error::InvalidArgument {
                    what: "object",
                    message: format!("its bytes do not hash to {sha}"),
                });
            }
            tx.execute(
                "INSERT INTO objects (sha256, size, chunks) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&key, &size, &seq],
            )?;
            Ok(())
        })
    }

    /// An object's bytes, checked against its digest.
    pub fn object(&mut self, sha256: &Sha256Hex) -> Result<Option<Vec<u8>>> {
        let shown = self.shown();
        self.read("read an object", |tx| get_object(tx, sha256, &shown))
    }

    /// Runs of `tenant`, newest first.
    pub fn runs(
        &mut self,
        tenant: Uuid,
        before: Option<(Timestamp, Uuid)>,
        limit: Option<u32>,
    ) -> Result<Vec<RunSummary>> {
        let limit = limit.map(i64::from);
        let (last_at, last_id) = before.unzip();
        self.read("list runs", |tx| {
            tx.query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM research_runs
                     WHERE tenant_id = $1
                       AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ),
                &[&tenant, &limit, &last_at, &last_id],
            )?
            .iter()
            .map(summary_from_row)
            .collect()
        })
    }

    fn count_of(&mut self, action: &'static str, sql: &str, tenant: Uuid) -> Result<u64> {
        self.read(action, |tx| {
            let n: i64 = col(&tx.one(sql, &[&tenant])?, 0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// How many runs `tenant` has.
    pub fn count_runs(&mut self, tenant: Uuid) -> Result<u64> {
        self.count_of(
            "count runs",
            "SELECT count(*) FROM research_runs WHERE tenant_id = $1",
            tenant,
        )
    }

    /// How many sources `tenant`'s runs recorded.
    pub fn count_sources(&mut self, tenant: Uuid) -> Result<u64> {
        self.count_of(
            "count sources",
            "SELECT count(*) FROM research_sources WHERE tenant_id = $1",
            tenant,
        )
    }

    /// The bundle JSON of one run, as received.
    pub fn run_bundle_json(&mut self, tenant: Uuid, id: Uuid) -> Result<String> {
        self.stored_run(tenant, id).map(|(_, json)| json)
    }

    /// One run, with its bundle.
    pub fn run(&mut self, tenant: Uuid, id: Uuid) -> Result<Run> {
        let (summary, json) = self.stored_run(tenant, id)?;
        let bundle_json = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
            path: self.shown().into(),
            detail: format!("the stored bundle of run {id} does not parse: {e}"),
        })?;
        Ok(Run {
            summary,
            bundle_json,
        })
    }

    pub fn stored_run(&mut self, tenant: Uuid, id: Uuid) -> Result<(RunSummary, String)> {
        let shown = self.shown();
        let found = self.read("read a run", |tx| {
            let Some(row) = tx.opt(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, bundle_json, bundle_holes FROM research_runs
                     WHERE tenant_id = $1 AND id = $2"
                ),
                &[&tenant, &id],
            )?
            else {
                return Ok(None);
            };
            let summary = summary_from_row(&row)?;
            let json: String = col(&row, 8)?;
            let Some(holes) = col::<Option<String>>(&row, 9)? else {
                return Ok(Some((summary, json)));
            };
            let filled = compact::rebuild(&json, &holes, &summary.bundle_sha256, &mut |sha| {
                get_object(tx, sha, &shown)
            })
            .map_err(|why| Error::Corrupt {
                path: shown.clone().into(),
                detail: format!("the stored bundle of run {id} cannot be put back together: {why}"),
            })?;
            Ok(Some((summary, filled)))
        })?;
        found.ok_or_else(|| Error::RunNotFound {
            id: id.to_string(),
            tenant: tenant.to_string(),
        })
    }

    /// Sources of `tenant` matching `query`, best first, and how many match.
    pub fn search(
        &mut self,
        tenant: Uuid,
        query: &str,
        run: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<SearchHit>, u64)> {
        let q = ts_query(query).map_err(|message| Error::InvalidArgument {
            what: "search",
            message,
        })?;
        let limit = i64::from(limit);
        self.read("search sources", |tx| {
            let filter = "s.tenant_id = $2 AND ($3::uuid IS NULL OR s.run_id = $3)
                          AND s.search @@ to_tsquery('bundleq_search', $1)";
            let total: i64 = col(
                &tx.one(
                    &format!("SELECT count(*) FROM research_sources AS s WHERE {filter}"),
                    &[&q, &tenant, &run],
                )?,
                0,
            )?;
            let rows = tx.query(
                &format!(
                    "WITH top AS (
                         SELECT s.tenant_id, s.run_id, s.idx,
                                ts_rank_cd(s.search, to_tsquery('{CONFIG}', $1)) AS rank
                         FROM research_sources AS s WHERE {filter}
                         ORDER BY rank DESC, s.run_id, s.idx LIMIT $4)
                     SELECT s.run_id, s.idx, s.uri, s.title,
                            ts_headline('{CONFIG}', left(coalesce(s.body, ''), $5),
                                to_tsquery('{CONFIG}', $1),
                                'StartSel=[, StopSel=], MaxWords=12, MinWords=4, ShortWord=0,
                                 MaxFragments=1, FragmentDelimiter=…'),
                            top.rank, r.title
                     FROM top
                     JOIN research_sources AS s USING (tenant_id, run_id, idx)
                     JOIN research_runs AS r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
                     ORDER BY top.rank DESC, s.run_id, s.idx"
                ),
                &[&q, &tenant, &run, &limit, &SNIPPET_SOURCE_BYTES],
            )?;
            let hits = rows
                .iter()
                .map(|r| {
                    let rank: f32 = col(r, 5)?;
                    Ok(SearchHit {
                        run_id: col(r, 0)?,
                        idx: u32::try_from(col::<i32>(r, 1)?).unwrap_or(0),
                        uri: col(r, 2)?,
                        title: col(r, 3)?,
                        snippet: col(r, 4)?,
                        rank: -f64::from(rank),
                        run_title: col(r, 6)?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok((hits, u64::try_from(total).unwrap_or(0)))
        })
    }

    /// Every tenant, by name.
    pub fn tenants(&mut self) -> Result<Vec<Tenant>> {
        self.read("list tenants", |tx| {
            tx.query(
                "SELECT id, name, created_at FROM tenants ORDER BY name",
                &[],
            )?
            .iter()
            .map(tenant_from_row)
            .collect()
        })
    }

    /// The tenant named by `key` (its id or its name).
    pub fn tenant(&mut self, key: &str) -> Result<Tenant> {
        let by_id = Uuid::try_parse(key).ok();
        let found = self.read("look up a tenant", |tx| {
            let row = match by_id {
                Some(id) => tx.opt(
                    "SELECT id, name, created_at FROM tenants WHERE id = $1",
                    &[&id],
                )?,
                None => tx.opt(
                    "SELECT id, name, created_at FROM tenants WHERE name = $1",
                    &[&key],
                )?,
            };
            row.map(|r| tenant_from_row(&r)).transpose()
        })?;
        found.ok_or_else(|| Error::UnknownTenant {
            tenant: key.to_owned(),
        })
    }

    /// Creates a tenant.
    pub fn create_tenant(
        &mut self,
        name: &str,
        id: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Tenant> {
        let id = crate::store::new_tenant_id(name, id)?;
        self.write("create a tenant", now, |tx| {
            if let Some(r) = tx.opt(
                "SELECT id, name FROM tenants WHERE id = $1 OR name = $2",
                &[&id, &name],
            )? {
                let (other_id, other_name): (Uuid, String) = (col(&r, 0)?, col(&r, 1)?);
                return Err(Error::InvalidArgument {
                    what: "tenant",
                    message: format!("tenant {other_name} ({other_id}) already exists"),
                });
            }
            tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
                &[&id, &name, &now],
            )?;
            Ok(())
        })?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
            created_at: now,
        })
    }

    /// Makes sure tenant `id` exists.
    pub fn ensure_tenant(&mut self, id: Uuid, name: &str, now: Timestamp) -> Result<()> {
        self.write("create a tenant", now, |tx| {
            tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &name, &now],
            )?;
            Ok(())
        })
    }

    /// Writes (or refreshes) a serve's row.
    pub fn report_serve(&mut self, row: &ServeRow) -> Result<()> {
        self.write("record a serve", row.heartbeat_at, |tx| {
            let pid = i32::try_from(row.pid).unwrap_or(i32::MAX);
            let workers = i32::try_from(row.workers).unwrap_or(i32::MAX);
            let running = i32::try_from(row.running).unwrap_or(i32::MAX);
            let ahead = i32::try_from(row.claimed_ahead).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO serves (worker, host, pid, workers, started_at, heartbeat_at,
                     running, claimed_ahead)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (worker) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                     running = excluded.running, claimed_ahead = excluded.claimed_ahead",
                &[
                    &row.worker,
                    &row.host,
                    &pid,
                    &workers,
                    &row.started_at,
                    &row.heartbeat_at,
                    &running,
                    &ahead,
                ],
            )?;
            Ok(())
        })
    }

    /// Removes the rows of these workers.
    pub fn forget_serves(&mut self, workers: &[String]) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        self.write("forget serves", Timestamp::now(), |tx| {
            tx.execute(
                "DELETE FROM serves WHERE worker = ANY($1::text[])",
                &[&workers],
            )?;
            Ok(())
        })
    }

    /// Every serve row, most recently heard from first.
    pub fn serves(&mut self) -> Result<Vec<ServeRow>> {
        self.read("list serves", |tx| {
            tx.query(
                "SELECT worker, host, pid, workers, started_at, heartbeat_at, running, claimed_ahead
                 FROM serves ORDER BY heartbeat_at DESC",
                &[],
            )?
            .iter()
            .map(|r| {
                let n = |i: usize| -> Result<u32> { Ok(u32::try_from(col::<i32>(r, i)?).unwrap_or(0)) };
                Ok(ServeRow {
                    worker: col(r, 0)?,
                    host: col(r, 1)?,
                    pid: n(2)?,
                    workers: n(3)?,
                    started_at: col(r, 4)?,
                    heartbeat_at: col(r, 5)?,
                    running: n(6)?,
                    claimed_ahead: n(7)?,
                })
            })
            .collect()
        })
    }

    /// The short form of each id.
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
                let row = match kind {
                    IdKind::Job => tx.one(
                        "SELECT (SELECT id FROM research_jobs WHERE id < $1 ORDER BY id DESC LIMIT 1),
                                (SELECT id FROM research_jobs WHERE id > $1 ORDER BY id LIMIT 1)",
                        &[id],
                    )?,
                    IdKind::Run => tx.one(
                        "SELECT (SELECT id FROM research_runs WHERE tenant_id = $2 AND id < $1
                                 ORDER BY id DESC LIMIT 1),
                                (SELECT id FROM research_runs WHERE tenant_id = $2 AND id > $1
                                 ORDER BY id LIMIT 1)",
                        &[id, &tenant],
                    )?,
                };
                let mut near = Vec::new();
                for i in 0..2 {
                    near.extend(col::<Option<Uuid>>(&row, i)?.map(|u| u.to_string()));
                }
                let near: Vec<&str> = near.iter().map(String::as_str).collect();
                out.insert(*id, short_form(&id.to_string(), &near));
            }
            Ok(out)
        })
    }

    /// The one id of `tenant` starting with `prefix`.
    pub fn resolve(&mut self, kind: IdKind, tenant: Uuid, prefix: &str) -> Result<Uuid> {
        let p = kind.check_prefix(prefix)?;
        // The ids a prefix can name lie between it padded with 0s and with fs
        // (uuid order is the order of their hex digits).
        let hex: String = p.chars().filter(|c| *c != '-').collect();
        let pad = |c: char| -> Option<Uuid> {
            let mut h = hex.clone();
            while h.len() < 32 {
                h.push(c);
            }
            Uuid::parse_str(&h).ok()
        };
        // (A checked prefix always pads to a UUID; if not, it names none.)
        let found: Vec<Uuid> = match pad('0').zip(pad('f')) {
            None => Vec::new(),
            Some((low, high)) => self.read("find an id", |tx| {
                let rows = match kind {
                    IdKind::Job => tx.query(
                        "SELECT id FROM research_jobs WHERE id BETWEEN $1 AND $2 AND tenant_id = $3
                     ORDER BY id LIMIT 6",
                        &[&low, &high, &tenant],
                    )?,
                    IdKind::Run => tx.query(
                        "SELECT id FROM research_runs WHERE tenant_id = $3 AND id BETWEEN $1 AND $2
                     ORDER BY id LIMIT 6",
                        &[&low, &high, &tenant],
                    )?,
                };
                rows.iter().map(|r| col(r, 0)).collect()
            })?,
        };
        // A prefix with dashes where a UUID has none names nothing.
        let found: Vec<String> = found
            .iter()
            .map(Uuid::to_string)
            .filter(|u| u.starts_with(&p))
            .collect();
        let one = kind.resolved(prefix, tenant, &found)?;
        Uuid::parse_str(&one).map_err(|e| Error::InvalidArgument {
            what: "id",
            message: e.to_string(),
        })
    }
}

fn tenant_from_row(r: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: col(r, 0)?,
        name: col(r, 1)?,
        created_at: col(r, 2)?,
    })
}

/// Records one run and its job (and its objects), unless its bytes or its
/// run id were taken in the tenant.
fn insert_run(tx: &mut Tx<'_>, run: &NewRun) -> Result<RunInsert> {
    let known: bool = col(
        &tx.one(
            "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
            &[&run.tenant_id],
        )?,
        0,
    )?;
    if !known {
        return Err(Error::UnknownTenant {
            tenant: run.tenant_id.to_string(),
        });
    }
    // Another process may record the same bytes at the same moment: the
    // unique key decides, and the loser reads the winner's row.
    let now = tx.now;
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
    let inserted = tx.execute(
        "INSERT INTO research_runs (tenant_id, id, title, bundle_sha256, bundle_json, origin,
             origin_name, created_at, updated_at, inbox_claim, bundle_holes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)
         ON CONFLICT DO NOTHING",
        &[
            &run.tenant_id,
            &run.id,
            &run.title,
            &run.bundle_sha256,
            &json.as_ref(),
            &run.origin,
            &run.origin_name,
            &now,
            &run.inbox_claim,
            &holes,
        ],
    )?;
    if inserted == 0 {
        if let Some(r) = tx.opt(
            "SELECT id, inbox_claim, origin_name FROM research_runs
             WHERE tenant_id = $1 AND bundle_sha256 = $2",
            &[&run.tenant_id, &run.bundle_sha256],
        )? {
            return Ok(RunInsert::Duplicate {
                run_id: col(&r, 0)?,
                inbox_claim: col(&r, 1)?,
                origin_name: col(&r, 2)?,
            });
        }
        let existing: String = col(
            &tx.one(
                "SELECT bundle_sha256::text FROM research_runs WHERE tenant_id = $1 AND id = $2",
                &[&run.tenant_id, &run.id],
            )?,
            0,
        )?;
        return Ok(RunInsert::Conflict {
            existing_sha256: existing,
        });
    }
    let job_id = super::jobs::insert_job(
        tx,
        &NewJob {
            tenant_id: run.tenant_id,
            run_id: run.id,
            job_type: run.job.job_type.clone(),
            payload: run.job.payload.clone(),
            max_attempts: run.job.max_attempts,
            not_before: run.job.not_before,
        },
    )?;
    for o in &run.objects {
        put_object(tx, &o.sha256, &o.bytes)?;
    }
    Ok(RunInsert::Inserted { job_id })
}

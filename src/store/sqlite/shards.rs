//! Search shards: the search index of big texts, in files of their own
//! beside the database (`<db>.search<N>`), written by the worker that
//! processed the run instead of by the database's one writer. A worker
//! takes a shard no other thread is writing (or makes one, up to
//! [`MAX_SHARDS`]), so big texts are tokenised and indexed in parallel;
//! the database records only which shard holds each source.
//!
//! Invariants:
//! - a shard is made (file and schema) and then registered in
//!   `research_search_shards` before any row is written to it, so every
//!   reader and every copy knows it;
//! - a shard row is committed before the source row that names it, and a
//!   reader takes a shard's row only while its source row names that shard
//!   (`research_sources.search_shard`): rows of an attempt that never
//!   recorded its sources, of a run pruned since, or of another attempt's
//!   shard are never found;
//! - rows are removed only with their run (`prune`) or replaced in their
//!   own shard by the same text, never by another attempt elsewhere: a
//!   source whose row names a shard is always found there, and once.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use uuid::Uuid;

use super::convert::{DbContext, uuid_col};
use super::{PAGE_SIZE, SqliteStore, classify, is_busy, pragma, with_suffix};
use crate::error::{Error, IoContext, Result};
use crate::store::{NewSource, SearchHit};
use crate::timestamp::Timestamp;

/// At most this many shards: a search reads every one (SQLite attaches at
/// most 10 databases to a connection).
pub(super) const MAX_SHARDS: u32 = 8;

/// How long an unregistered shard file must have gone unwritten before a
/// sweep takes it for a stopped maker's leftover (at least; see
/// `sweep_leftover_shards`).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// A shard's tables: the text with the run and source it belongs to, and
/// an FTS5 index reading its content from there (the text is kept once).
/// The text is the last column, so reading a row's owner leaves its pages
/// of text unread.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shard_texts (
    id        INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    title     TEXT NOT NULL,
    uri       TEXT NOT NULL,
    body      TEXT NOT NULL,
    UNIQUE (tenant_id, run_id, idx)
);
CREATE VIRTUAL TABLE IF NOT EXISTS shard_fts USING fts5(
    title, uri, body,
    content = 'shard_texts',
    content_rowid = 'id',
    tokenize = 'porter unicode61'
);";

/// Where shard `shard` of the database at `db` lives.
pub(super) fn shard_path(db: &Path, shard: u32) -> PathBuf {
    with_suffix(db, &format!(".search{shard}"))
}

/// A shard's write connection, kept by the store that opened it.
#[derive(Debug)]
pub(super) struct ShardWriter {
    shard: u32,
    conn: Connection,
}

/// Removes a run's rows from the shard `conn` writes, inside its open
/// transaction (index rows first: they are removed by reading the text they
/// were made from).
fn delete_run(conn: &Connection, tenant: &str, run_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM shard_fts WHERE rowid IN
             (SELECT id FROM shard_texts WHERE tenant_id = ?1 AND run_id = ?2)",
    )?
    .execute(params![tenant, run_id])?;
    conn.prepare_cached("DELETE FROM shard_texts WHERE tenant_id = ?1 AND run_id = ?2")?
        .execute(params![tenant, run_id])?;
    Ok(())
}

impl SqliteStore {
    /// The shards made so far, in order.
    pub(super) fn shard_list(&mut self) -> Result<Vec<u32>> {
        self.read("list search shards", |tx| {
            let mut st = tx
                .prepare_cached("SELECT shard FROM research_search_shards ORDER BY shard")
                .db("list search shards")?;
            let rows = st
                .query_map([], |r| r.get::<_, u32>(0))
                .db("list search shards")?;
            rows.collect::<rusqlite::Result<Vec<u32>>>()
                .db("list search shards")
        })
    }

    /// Removes (or, with `dry_run`, lists) the shard files beside the
    /// database that no row registers and that nothing has written for
    /// [`LEFTOVER_AGE`] or twice the busy deadline, whichever is longer:
    /// what a maker stopped between making a shard's file and registering
    /// it left (a maker registers its shard as soon as the database lets
    /// it write, and no reader or writer ever opens an unregistered one).
    /// Each goes with its `-wal` and `-shm`.
    pub fn sweep_leftover_shards(&mut self, dry_run: bool) -> Result<Vec<PathBuf>> {
        if self.path == Path::new(":memory:") {
            return Ok(Vec::new());
        }
        let registered = self.shard_list()?;
        let (Some(folder), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(Vec::new());
        };
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        let prefix = format!("{}.search", name.to_string_lossy());
        let age = LEFTOVER_AGE.max(self.options.busy_deadline * 2);
        let mut leftovers = Vec::new();
        for entry in std::fs::read_dir(folder).io("list", folder)? {
            let entry = entry.io("list", folder)?;
            let file_name = entry.file_name();
            let Some(number) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if registered.contains(&number) || shard_path(&self.path, number) != path {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).io("read the metadata of", &path)?;
            let idle = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .unwrap_or(Duration::ZERO);
            if !meta.is_file() || idle < age {
                continue;
            }
            if !dry_run {
                for stale in [
                    with_suffix(&path, "-wal"),
                    with_suffix(&path, "-shm"),
                    path.clone(),
                ] {
                    match std::fs::remove_file(&stale) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(e).io("remove", &stale);
                        }
                        _ => {}
                    }
                }
            }
            leftovers.push(path);
        }
        leftovers.sort();
        Ok(leftovers)
    }

    /// A read connection to shard `k`, for a check of it.
    pub(super) fn shard_for_check(&self, k: u32) -> Result<Connection> {
        open_for_check(&shard_path(&self.path, k))
    }

    /// The registered shards and their files, read without a transaction
    /// and without failing (for a check of a database that may be damaged:
    /// none when the list cannot be read).
    pub(super) fn shard_files_unchecked(&self) -> Vec<(u32, PathBuf)> {
        let listed = self
            .conn
            .prepare("SELECT shard FROM research_search_shards ORDER BY shard")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, u32>(0))?
                    .collect::<rusqlite::Result<Vec<u32>>>()
            });
        listed
            .unwrap_or_default()
            .into_iter()
            .map(|k| (k, shard_path(&self.path, k)))
            .collect()
    }

    /// Copies every search shard next to `dest_db` (as a copy of this
    /// database would name them), each by SQLite's online backup into a
    /// partial file made durable and then renamed; returns the bytes copied.
    pub fn copy_shards_next_to(&mut self, dest_db: &Path) -> Result<u64> {
        let mut bytes = 0;
        for k in self.shard_list()? {
            let from = shard_path(&self.path, k);
            let to = shard_path(dest_db, k);
            let partial = with_suffix(&to, ".partial");
            // What a copy that was stopped left: never copied into.
            match std::fs::remove_file(&partial) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).io("remove", &partial);
                }
                _ => {}
            }
            let copied = open_for_check(&from)
                .and_then(|conn| {
                    conn.busy_timeout(self.busy_wait())
                        .db("open a search shard")?;
                    super::upkeep::online_copy(&conn, &partial, self.options.busy_deadline)
                })
                .map_err(|e| classify(&from, self.busy_wait(), e))
                .and_then(|()| {
                    std::fs::set_permissions(
                        &partial,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )
                    .and_then(|()| std::fs::File::open(&partial))
                    .and_then(|f| f.sync_all())
                    .io("fsync", &partial)
                });
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            // The log and index of an earlier copy would be applied to this one.
            for suffix in ["-wal", "-shm"] {
                let stale = with_suffix(&to, suffix);
                match std::fs::remove_file(&stale) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).io("remove", &stale);
                    }
                    _ => {}
                }
            }
            std::fs::rename(&partial, &to).io("move into place", &to)?;
            bytes += std::fs::metadata(&to).map_or(0, |m| m.len());
        }
        Ok(bytes)
    }

    /// The write connection to shard `shard`, which exists.
    fn shard_writer(&mut self, shard: u32) -> Result<&mut Connection> {
        let at = match self.shard_writers.iter().position(|w| w.shard == shard) {
            Some(at) => {
                // A transaction left open (a caller that unwound between
                // begin and commit) would hold the shard's lock for good.
                let conn = &self.shard_writers[at].conn;
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK").db("index big texts")?;
                }
                at
            }
            None => {
                let path = shard_path(&self.path, shard);
                if !path.exists() {
                    return Err(missing_shard(path, shard));
                }
                let conn = self.open_shard(&path, false)?;
                self.shard_writers.push(ShardWriter { shard, conn });
                self.shard_writers.len() - 1
            }
        };
        Ok(&mut self.shard_writers[at].conn)
    }

    /// Makes shard `shard` (file, mode 0600, and schema) unless its file
    /// exists: false then, as another thread or process is making it (or
    /// made it and stopped before registering it), and the caller takes
    /// the next number. Only one maker can create a file, so no two
    /// threads ever set up one shard at once.
    fn make_shard(&mut self, shard: u32) -> Result<bool> {
        let path = shard_path(&self.path, shard);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e).io("create a search shard", &path),
        }
        let conn = self.open_shard(&path, true)?;
        self.shard_writers.push(ShardWriter { shard, conn });
        Ok(true)
    }

    fn open_shard(&self, path: &Path, new: bool) -> Result<Connection> {
        let wait = self.busy_wait();
        let opened = || -> Result<Connection> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .db("open a search shard")?;
            conn.busy_timeout(wait).db("open a search shard")?;
            if new {
                conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))
                    .db("make a search shard")?;
                let _mode: String = conn
                    .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                    .db("make a search shard")?;
                conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
                    .inspect_err(|_| {
                        let _ = conn.execute_batch("ROLLBACK");
                    })
                    .db("make a search shard")?;
            }
            conn.execute_batch(&format!(
                "PRAGMA synchronous = {};
                 PRAGMA temp_store = MEMORY;
                 PRAGMA journal_size_limit = 67108864;",
                pragma(self.options.synchronous)
            ))
            .db("open a search shard")?;
            conn.set_prepared_statement_cache_capacity(16);
            Ok(conn)
        };
        opened().map_err(|e| classify(path, wait, e))
    }

    /// Indexes, in a search shard, the text of every source of `run_id`
    /// whose stored bytes are more than `min_size`, and marks those sources
    /// `indexed_apart` (their text is then not handed to the writer).
    ///
    /// Rows an earlier attempt left in another shard stay there, never
    /// found (no source row names that shard for them), until the run is
    /// pruned: removing them here could remove the rows of an attempt that
    /// is about to record them, if two attempts of one job ever overlap.
    pub fn index_apart(
        &mut self,
        tenant: Uuid,
        run_id: Uuid,
        sources: &mut [NewSource],
        min_size: u64,
    ) -> Result<()> {
        let (tenant_s, run_s) = (tenant.to_string(), run_id.to_string());
        let apart: Vec<usize> = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.text.is_some() && s.size.is_some_and(|n| n > min_size))
            .map(|(i, _)| i)
            .collect();
        if apart.is_empty() {
            return Ok(());
        }
        let shards = self.shard_list()?;
        let shard = self.begin_in_free_shard(shards, run_id)?;
        let path = shard_path(&self.path, shard);
        let wait = self.busy_wait();
        // The connection whose transaction is open (not `shard_writer`,
        // which would end it).
        let conn = &self
            .shard_writers
            .iter()
            .find(|w| w.shard == shard)
            .ok_or_else(|| missing_shard(path.clone(), shard))?
            .conn;
        let written = (|| -> rusqlite::Result<()> {
            // An earlier attempt's rows in this shard are replaced (by the
            // same text: a stored bundle never changes).
            delete_run(conn, &tenant_s, &run_s)?;
            for &i in &apart {
                let s = &sources[i];
                let (title, body) = (s.title.as_deref().unwrap_or(""), s.text.as_deref());
                conn.prepare_cached(
                    "INSERT INTO shard_texts (tenant_id, run_id, idx, title, uri, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![tenant_s, run_s, s.idx, title, s.uri, body])?;
                let id = conn.last_insert_rowid();
                conn.prepare_cached(
                    "INSERT INTO shard_fts (rowid, title, uri, body) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, title, s.uri, body])?;
            }
            conn.execute_batch("COMMIT")
        })();
        if written.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        written
            .db("index big texts")
            .map_err(|e| classify(&path, wait, e))?;
        for i in apart {
            sources[i].indexed_apart = Some(shard);
            sources[i].text = None;
        }
        Ok(())
    }

    /// Opens a write transaction in a shard no other connection is writing:
    /// the first free one, else a new one (up to [`MAX_SHARDS`]), else the
    /// run's own among them, waited for.
    fn begin_in_free_shard(&mut self, mut shards: Vec<u32>, run_id: Uuid) -> Result<u32> {
        loop {
            for &k in &shards {
                if self.try_begin(k)? {
                    return Ok(k);
                }
            }
            if shards.len() >= MAX_SHARDS as usize {
                break;
            }
            // The next number whose file nobody has made (files left by
            // makers that stopped before registering are passed over).
            let first = shards.last().map_or(0, |last| last + 1);
            let mut made = None;
            for k in first..first.saturating_add(MAX_SHARDS) {
                if self.make_shard(k)? {
                    made = Some(k);
                    break;
                }
            }
            let Some(k) = made else {
                if shards.is_empty() {
                    // Eight numbers in a row taken by files nobody
                    // registered: nothing to fall back on.
                    let path = shard_path(&self.path, first);
                    return Err(Error::Io {
                        action: "make a search shard",
                        source: std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!(
                                "it and the next {} numbers are taken by files no database \
                                 registered (left by processes stopped while making them); \
                                 remove them",
                                MAX_SHARDS - 1
                            ),
                        ),
                        path,
                    });
                }
                break;
            };
            // Registered once made: a registered shard always has its file
            // and schema.
            self.write("register a search shard", |tx| {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO research_search_shards (shard, created_at)
                     VALUES (?1, ?2)",
                )
                .and_then(|mut st| st.execute(params![k, Timestamp::now()]))
                .db("register a search shard")
                .map(drop)
            })?;
            if self.try_begin(k)? {
                return Ok(k);
            }
            shards = self.shard_list()?;
        }
        let count = u128::try_from(shards.len()).unwrap_or(1).max(1);
        let k = shards[usize::try_from(run_id.as_u128() % count).unwrap_or(0)];
        let (path, wait) = (shard_path(&self.path, k), self.busy_wait());
        self.shard_writer(k)?
            .execute_batch("BEGIN IMMEDIATE")
            .db("index big texts")
            .map_err(|e| classify(&path, wait, e))?;
        Ok(k)
    }

    /// Opens a write transaction in shard `k` if no other connection is
    /// writing it (false, at once, if one is).
    fn try_begin(&mut self, k: u32) -> Result<bool> {
        let (path, wait) = (shard_path(&self.path, k), self.busy_wait());
        let conn = self.shard_writer(k)?;
        conn.busy_timeout(Duration::ZERO).db("index big texts")?;
        let begun = conn.execute_batch("BEGIN IMMEDIATE");
        conn.busy_timeout(wait).db("index big texts")?;
        match begun {
            Ok(()) => Ok(true),
            Err(e) if is_busy(&e) => Ok(false),
            Err(e) => Err(e)
                .db("index big texts")
                .map_err(|e| classify(&path, wait, e)),
        }
    }

    /// Removes the run's rows from shard `k`, if it has any (looked up
    /// without taking the shard's write lock).
    fn forget_run_in(&mut self, k: u32, tenant: &str, run_id: &str) -> Result<()> {
        let path = shard_path(&self.path, k);
        let wait = self.busy_wait();
        let conn = self.shard_writer(k)?;
        let done = (|| -> rusqlite::Result<()> {
            let present: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM shard_texts WHERE tenant_id = ?1 AND run_id = ?2)",
                )?
                .query_row(params![tenant, run_id], |r| r.get(0))?;
            if !present {
                return Ok(());
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let deleted =
                delete_run(conn, tenant, run_id).and_then(|()| conn.execute_batch("COMMIT"));
            if deleted.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            deleted
        })();
        done.db("remove a run from the search")
            .map_err(|e| classify(&path, wait, e))
    }

    /// Removes pruned runs' rows from every shard (after the runs left the
    /// database: until then their rows are simply never found).
    pub(super) fn forget_runs_in_shards(&mut self, tenant: Uuid, runs: &[Uuid]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let tenant = tenant.to_string();
        for k in self.shard_list()? {
            for run in runs {
                self.forget_run_in(k, &tenant, &run.to_string())?;
            }
        }
        Ok(())
    }

    /// Runs `f` with every shard attached to this connection (read
    /// through it as `shard<N>`), and detaches them after: a connection
    /// with a shard attached would lock it too in every write transaction
    /// it begins, and wait for the worker indexing there.
    pub(super) fn with_shards_attached<T>(
        &mut self,
        f: impl FnOnce(&mut SqliteStore, &[u32]) -> Result<T>,
    ) -> Result<T> {
        let shards = self.shard_list()?;
        let mut attached = Vec::with_capacity(shards.len());
        let mut result = Ok(());
        for &k in &shards {
            let path = shard_path(&self.path, k);
            if !path.exists() {
                result = Err(missing_shard(path, k));
                break;
            }
            let Some(name) = path.to_str() else {
                result = Err(Error::InvalidArgument {
                    what: "database",
                    message: format!("{} is not a UTF-8 path", path.display()),
                });
                break;
            };
            match attach(&self.conn, k, &path, name) {
                Ok(()) => attached.push(k),
                Err(e) => {
                    result = Err(classify(&path, self.busy_wait(), e));
                    break;
                }
            }
        }
        let value = result.and_then(|()| f(self, &shards));
        for k in attached {
            // Cannot fail outside a transaction; if it did, the next
            // attach of this name would say so.
            if let Err(e) = self
                .conn
                .execute_batch(&format!("DETACH DATABASE shard{k}"))
            {
                log::warn!("Could not detach search shard {k}: {e}");
            }
        }
        value
    }
}

/// Attaches shard `k` (its file at `path`, named `name`) to `conn` as
/// `shard<k>`. A shard in a folder this user may not write, with no `-shm`
/// to share and no `-wal` (nobody is writing it), is read as immutable, as
/// the database itself is then.
fn attach(conn: &Connection, k: u32, path: &Path, name: &str) -> Result<()> {
    let readable = conn
        .execute(&format!("ATTACH DATABASE ?1 AS shard{k}"), [name])
        .and_then(|_| {
            conn.query_row(
                &format!("SELECT count(*) FROM shard{k}.sqlite_master"),
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .db("open a search shard");
    match readable {
        Ok(_) => Ok(()),
        Err(_) if !with_suffix(path, "-wal").exists() && !with_suffix(path, "-shm").exists() => {
            // (Attached or not, depending on where it failed.)
            let _ = conn.execute_batch(&format!("DETACH DATABASE shard{k}"));
            let uri = super::immutable_uri(path);
            conn.execute(
                &format!("ATTACH DATABASE ?1 AS shard{k}"),
                [uri.to_string_lossy()],
            )
            .db("open a search shard")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch(&format!("DETACH DATABASE shard{k}"));
            Err(e)
        }
    }
}

/// A read connection to the shard at `path` for checks (read as immutable
/// where [`attach`] would).
fn open_for_check(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).db("open a search shard")?;
    let readable = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .db("open a search shard");
    match readable {
        Ok(_) => Ok(conn),
        Err(_) if !with_suffix(path, "-wal").exists() && !with_suffix(path, "-shm").exists() => {
            Connection::open_with_flags(super::immutable_uri(path), flags).db("open a search shard")
        }
        Err(e) => Err(e),
    }
}

/// The error of a registered shard whose file is gone.
fn missing_shard(path: PathBuf, k: u32) -> Error {
    Error::Corrupt {
        path,
        detail: format!("search shard {k} is named by the database but its file is missing"),
    }
}

/// The best rows of shard `k` for a search: its rowids and ranks, at most
/// `limit`, and how many match in all.
pub(super) fn shard_top(
    tx: &Connection,
    k: u32,
    q: &str,
    tenant: &str,
    run: Option<&str>,
    limit: u32,
) -> Result<(Vec<(i64, f64)>, i64)> {
    // Only rows whose source names this shard: see the module's invariants.
    let from = format!(
        "shard{k}.shard_fts AS f JOIN shard{k}.shard_texts AS t ON t.id = f.rowid
         WHERE f.shard_fts MATCH ?1 AND t.tenant_id = ?2 AND (?3 IS NULL OR t.run_id = ?3)
           AND EXISTS (SELECT 1 FROM main.research_sources AS s
                       WHERE s.tenant_id = t.tenant_id AND s.run_id = t.run_id
                         AND s.idx = t.idx AND s.search_shard = {k})"
    );
    let mut st = tx
        .prepare_cached(&format!("SELECT f.rowid, bm25(f.shard_fts) FROM {from}"))
        .db("search sources")?;
    super::sources::best_rows(&mut st, params![q, tenant, run], limit)
}

/// Shard `k`'s rows `ids` as hits (rank left 0), with their snippets.
pub(super) fn shard_hits(
    tx: &Connection,
    k: u32,
    q: &str,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, SearchHit>> {
    let mut found = std::collections::HashMap::new();
    let (Some(&low), Some(&high)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(found);
    };
    let mut st = tx
        .prepare_cached(&format!(
            "SELECT f.rowid, t.run_id, t.idx, s.uri, s.title,
                    snippet(f.shard_fts, 2, '[', ']', '…', 12), r.title
             FROM shard{k}.shard_fts AS f
             JOIN shard{k}.shard_texts AS t ON t.id = f.rowid
             JOIN main.research_sources AS s
               ON s.tenant_id = t.tenant_id AND s.run_id = t.run_id AND s.idx = t.idx
             JOIN main.research_runs AS r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
             WHERE f.shard_fts MATCH ?1 AND f.rowid BETWEEN ?2 AND ?3
               AND +f.rowid IN (SELECT value FROM json_each(?4))"
        ))
        .db("search sources")?;
    let rows = st
        .query_map(params![q, low, high, super::convert::json_list(ids)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                SearchHit {
                    run_id: uuid_col(r, 1)?,
                    idx: r.get(2)?,
                    uri: r.get(3)?,
                    title: r.get(4)?,
                    snippet: r.get(5)?,
                    rank: 0.0,
                    run_title: r.get(6)?,
                },
            ))
        })
        .db("search sources")?;
    for row in rows {
        let (id, hit) = row.db("search sources")?;
        found.insert(id, hit);
    }
    Ok(found)
}

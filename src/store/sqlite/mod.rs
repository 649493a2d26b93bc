//! The SQLite backend: the only code that runs SQL against SQLite, and
//! the only code outside `store` that names rusqlite or refinery.
//!
//! It owns the SQLite connection (one per [`SqliteStore`]; a `Connection` is
//! `Send` but not `Sync`, so each thread opens its own), applies the
//! migrations of `migrations/sqlite/` on open, and implements every
//! operation of [`crate::Store`]. Connections of one process made with
//! `reopen` share a write mutex.
//!
//! Invariants:
//! - every transaction that may write starts with `BEGIN IMMEDIATE`, and a
//!   busy database is retried with a short backoff up to a deadline, so
//!   `SQLITE_BUSY` never reaches a user as such;
//! - no statement outlives the call that stepped it (cached statements are
//!   reset when dropped), so no read snapshot is held open between calls and
//!   checkpoints can always shrink the WAL;
//! - a write is reported as done only after its commit, and only if the
//!   database file is still the one that was opened (not deleted, not
//!   replaced): the transitions a transaction made are held back until
//!   then (`deferred`) and handed to the caller's journal only after it,
//!   so nothing claims a success that was not recorded;
//! - a damaged database (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) is
//!   [`Error::Corrupt`], busy is [`Error::Busy`], read-only is
//!   [`Error::ReadOnly`]: SQLite's own wording never reaches a user.

mod baseline;
mod convert;
mod deferred;
mod ids;
mod jobs;
mod runs;
mod serves;
mod shards;
mod sources;
mod tenants;
mod upkeep;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub(crate) use baseline::run_baseline;
pub(crate) use convert::sqlite_error;

use self::convert::DbContext;
use crate::error::{Error, IoContext, Result};
use crate::store::{QueuePolicy, SchemaVersion, StoreOptions, Synchronous, Transition};

/// A WAL larger than this is truncated when the pool goes idle (SQLite's
/// automatic checkpoints keep it near 4 MiB while no reader blocks them).
const WAL_SHRINK_BYTES: u64 = 8 * 1024 * 1024;

/// Page size of a new database. Larger than SQLite's 4 KiB default so that
/// source objects of a few KiB share pages instead of leaving half of one
/// empty each (10,000 bundles with 3 inline texts of 2 KiB: 139 MB on disk
/// with 4 KiB pages, 99 MB with 8 KiB). 16 KiB pages packed 3 % better
/// but doubled the fsync time of a minimal commit, which every claim pays.
const PAGE_SIZE: u32 = 8192;

fn pragma(s: Synchronous) -> &'static str {
    match s {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// The newest embedded migration's version, counted by `build.rs` from the
/// same folder refinery embeds (a unit test checks they agree).
fn head_version() -> i64 {
    env!("BUNDLEQ_SQLITE_HEAD").parse().unwrap_or(i64::MAX)
}

/// A connection to a bundleq database and the queue policy it applies.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
    /// Shared by every `SqliteStore` made with [`SqliteStore::reopen`] from this one:
    /// held across each write transaction so that threads of one process
    /// queue on a mutex instead of racing for SQLite's lock (whose busy
    /// handler sleeps and is unfair). Other processes are handled by the
    /// `BEGIN IMMEDIATE` retry loop.
    write_lock: Arc<Mutex<()>>,
    /// (device, inode) of the database file when it was opened: a write
    /// that finds another file (or none) at the path fails with
    /// [`Error::DatabaseGone`] instead of committing into an unlinked file.
    identity: Option<(u64, u64)>,
    /// Transitions of committed transactions, when the caller keeps them
    /// (`Some`); see [`crate::Store::keep_transitions`].
    journal: Option<Vec<Transition>>,
    /// Write connections to the search shards this store has indexed in.
    shard_writers: Vec<shards::ShardWriter>,
}

/// (device, inode) of a file, or why there is none.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

impl SqliteStore {
    /// Creates the database file (mode 0600) if it does not exist, then
    /// opens it and applies migrations.
    pub fn create(path: &Path, options: StoreOptions) -> Result<SqliteStore> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .io("create database", path)?;
        SqliteStore::open(path, options)
    }

    /// Opens an existing database and applies pending migrations. A
    /// database this user cannot write is [`Error::ReadOnly`]: use
    /// [`SqliteStore::open_read_only`] to read it.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteStore> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut store = SqliteStore::connect(path, options, flags)?;
        let read_only = store
            .conn
            .is_readonly(rusqlite::MAIN_DB)
            .db("open the database")?;
        if read_only {
            return Err(Error::ReadOnly {
                action: "open the database for writing",
                path: path.to_owned(),
            });
        }
        store.configure(true).map_err(|e| store.classify(e))?;
        store.migrate().map_err(|e| store.classify(e))?;
        Ok(store)
    }

    /// Opens a database for reading only: nothing is migrated or written,
    /// so it works on a home this user may read but not write (where
    /// SQLite allows it: a WAL database needs its `-shm` file or a
    /// writable folder). A schema behind head, or one a later release
    /// migrated, is an error naming the fix.
    ///
    /// A WAL database needs its `-shm` file: when it is missing and cannot
    /// be created here, and no `-wal` file exists (no writer has the
    /// database open), the file is read as immutable — as SQLite allows for
    /// read-only media.
    pub fn open_read_only(path: &Path, options: StoreOptions) -> Result<SqliteStore> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let attempt = |uri: &Path| -> Result<SqliteStore> {
            let mut store = SqliteStore::connect(uri, options.clone(), flags)?;
            store.configure(false).map_err(|e| store.classify(e))?;
            store.current_version().map_err(|e| store.classify(e))?;
            store.path = path.to_owned();
            Ok(store)
        };
        let store = match attempt(path) {
            Ok(s) => s,
            Err(Error::ReadOnly { .. } | Error::Db { .. })
                if !with_suffix(path, "-wal").exists() && !with_suffix(path, "-shm").exists() =>
            {
                let mut store = attempt(&immutable_uri(path))?;
                store.identity = file_identity(path).ok();
                store
            }
            Err(e) => return Err(e),
        };
        let current = store.current_version().map_err(|e| store.classify(e))?;
        if let Some(v) = &current {
            v.refuse_newer(head_version(), &path.display().to_string())?;
        }
        if !current.as_ref().is_some_and(|v| v.head) {
            return Err(Error::InvalidArgument {
                what: "database",
                message: format!(
                    "{} needs a schema migration; run `bundleq db migrate` as a user who can write it",
                    path.display()
                ),
            });
        }
        Ok(store)
    }

    /// Opens a database as it is, read-only, without looking at its schema:
    /// for `bundleq db check` on a database that may be damaged.
    /// Like [`SqliteStore::open_read_only`], a WAL database without its
    /// `-shm` or `-wal` that cannot be read as it is is read as immutable.
    pub fn open_unchecked(path: &Path, options: StoreOptions) -> Result<SqliteStore> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut store = SqliteStore::connect(path, options.clone(), flags)?;
        let readable = store
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            });
        if readable.is_err()
            && !with_suffix(path, "-wal").exists()
            && !with_suffix(path, "-shm").exists()
        {
            store = SqliteStore::connect(&immutable_uri(path), options, flags)?;
            store.path = path.to_owned();
            store.identity = file_identity(path).ok();
        }
        store
            .conn
            .busy_timeout(store.busy_wait())
            .db("set the busy timeout")?;
        Ok(store)
    }

    fn connect(path: &Path, options: StoreOptions, flags: OpenFlags) -> Result<SqliteStore> {
        let identity = match file_identity(path) {
            Ok(id) => Some(id),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::Io {
                    action: "open the database",
                    path: path.to_owned(),
                    source: e,
                });
            }
            Err(_) => None, // ":memory:" or a URI; SQLite says what is wrong
        };
        let conn = Connection::open_with_flags(path, flags)
            .db("open the database")
            .map_err(|e| classify(path, options.busy_deadline, e))?;
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
            options,
            write_lock: Arc::new(Mutex::new(())),
            identity,
            journal: None,
            shard_writers: Vec::new(),
        })
    }

    /// Opens a second connection to the same database with the same options
    /// (for another thread).
    pub fn reopen(&self) -> Result<SqliteStore> {
        // A store opened read-only (a home this user may not write) is
        // opened again the same way.
        let read_only = self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false);
        let mut store = if read_only {
            SqliteStore::open_read_only(&self.path, self.options.clone())?
        } else {
            SqliteStore::open(&self.path, self.options.clone())?
        };
        store.write_lock = Arc::clone(&self.write_lock);
        if store.identity != self.identity {
            return Err(Error::DatabaseGone {
                path: self.path.clone(),
                what: "was replaced by another file",
            });
        }
        Ok(store)
    }

    /// Fails with [`Error::DatabaseGone`] when the file at the path is no
    /// longer the one this store opened (deleted, or another file put in
    /// its place). A `stat`, cheap enough for every write and every poll.
    pub fn check_identity(&self) -> Result<()> {
        let Some(opened) = self.identity else {
            return Ok(());
        };
        match file_identity(&self.path) {
            Ok(now) if now == opened => Ok(()),
            Ok(_) => Err(Error::DatabaseGone {
                path: self.path.clone(),
                what: "was replaced by another file",
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::DatabaseGone {
                path: self.path.clone(),
                what: "was deleted",
            }),
            // Cannot tell (a permission change, say): the next check will.
            Err(_) => Ok(()),
        }
    }

    /// Turns SQLite's busy, read-only and corruption errors into bundleq's.
    fn classify(&self, e: Error) -> Error {
        classify(&self.path, self.busy_wait(), e)
    }

    /// How long SQLite's own busy handler waits outside `write`'s loop.
    fn busy_wait(&self) -> Duration {
        self.options.busy_deadline.min(Duration::from_secs(5))
    }

    fn configure(&mut self, write: bool) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(self.busy_wait())
            .db("set the busy timeout")?;
        if !write {
            c.execute_batch(&format!(
                "PRAGMA query_only = ON; PRAGMA cache_size = -{};",
                self.options.page_cache_kib
            ))
            .db("configure the connection")?;
            c.set_prepared_statement_cache_capacity(64);
            return Ok(());
        }
        // journal_mode answers with a row; WAL lets readers run beside the
        // single writer.
        // Takes effect only while the file is still empty (a new
        // database); an existing one keeps its page size.
        c.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))
            .db("set the page size")?;
        let mode: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .db("enable WAL")?;
        if mode != "wal" && self.path != Path::new(":memory:") {
            log::warn!(
                "SQLite refused WAL mode for {} (got {mode})",
                self.path.display()
            );
        }
        c.execute_batch(&format!(
            "PRAGMA synchronous = {};
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA cache_size = -{};",
            pragma(self.options.synchronous),
            self.options.page_cache_kib
        ))
        .db("configure the connection")?;
        c.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let latest = head_version();
        if let Some(current) = self.schema_version()?
            && current.version >= latest
        {
            return current.refuse_newer(latest, &self.path.display().to_string());
        }
        let runner = embedded::migrations::runner();
        // Two processes may open a new home at once: if the other one won
        // the race, our attempt fails and the schema is already there.
        let mut last = None;
        for _ in 0..3 {
            match runner.run(&mut self.conn) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    thread::sleep(Duration::from_millis(50));
                    if let Some(v) = self.schema_version()?
                        && v.version >= latest
                    {
                        return Ok(());
                    }
                }
            }
        }
        match last {
            Some(e) => Err(Error::Migrate(Box::new(e))),
            None => Ok(()),
        }
    }

    /// Applies pending migrations (they are applied on open too) and returns
    /// the resulting version.
    pub fn migrate_to_head(&mut self) -> Result<SchemaVersion> {
        self.migrate()?;
        self.current_version()?
            .ok_or_else(|| Error::InvalidArgument {
                what: "database",
                message: "no migration is recorded after migrating".to_owned(),
            })
    }

    fn schema_version(&self) -> Result<Option<SchemaVersion>> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master
                 WHERE type = 'table' AND name = 'refinery_schema_history')",
                [],
                |r| r.get(0),
            )
            .db("read the schema version")?;
        if !exists {
            return Ok(None);
        }
        let row = self
            .conn
            .query_row(
                "SELECT version, name FROM refinery_schema_history
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .db("read the schema version")?;
        Ok(row.map(|(version, name)| SchemaVersion {
            version,
            name,
            head: false,
        }))
    }

    /// The applied migration head, like `alembic current`.
    pub fn current_version(&self) -> Result<Option<SchemaVersion>> {
        let latest = head_version();
        Ok(self.schema_version()?.map(|mut v| {
            v.head = v.version >= latest;
            v
        }))
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The queue policy in force.
    pub fn policy(&self) -> &QueuePolicy {
        &self.options.policy
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction and commits it. While
    /// another process holds the write lock, retries with a short backoff up
    /// to the busy deadline.
    ///
    /// The file must still be the one opened, before and after the commit
    /// ([`SqliteStore::check_identity`]); log lines the transaction deferred are
    /// written only once both hold.
    pub(crate) fn write<T>(
        &mut self,
        action: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        deferred::discard();
        let result = self.write_inner(action, f);
        let result = result.and_then(|v| self.check_identity().map(|()| v));
        match result {
            Ok(v) => {
                let made = deferred::take();
                if let Some(j) = &mut self.journal {
                    j.extend(made);
                }
                Ok(v)
            }
            Err(e) => {
                deferred::discard();
                Err(self.classify(e))
            }
        }
    }

    fn write_inner<T>(
        &mut self,
        action: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.check_identity()?;
        let lock = Arc::clone(&self.write_lock);
        let _turn = lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = self.options.busy_deadline;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let tx = loop {
            match self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
            {
                Ok(tx) => break tx,
                Err(e) if is_busy(&e) => {
                    if start.elapsed() >= deadline {
                        return Err(Error::Busy {
                            action,
                            waited_secs: start.elapsed().as_secs(),
                        });
                    }
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(Error::Db {
                        action,
                        source: Box::new(source),
                    });
                }
            }
        };
        let value = f(&tx)?;
        tx.commit().db(action)?;
        Ok(value)
    }

    /// Runs `f` in a read transaction (one consistent snapshot).
    pub(crate) fn read<T>(
        &mut self,
        action: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let (path, wait) = (self.path.clone(), self.busy_wait());
        let run = || {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .db(action)?;
            let value = f(&tx)?;
            tx.finish().db(action)?;
            Ok(value)
        };
        run().map_err(|e| classify(&path, wait, e))
    }

    /// Runs `f` inside one write transaction with a [`WriteTx`], so that the
    /// caller can record a run and enqueue its job atomically.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let policy = self.options.policy.clone();
        self.write("write a transaction", |tx| {
            f(&WriteTx {
                tx,
                policy: &policy,
            })
        })
    }

    /// A value from the home's metadata table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM bundleq_meta WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .db("read home metadata")
            .map_err(|e| self.classify(e))
    }

    /// The one number `sql` counts for `tenant` (bound to `?1`).
    fn count_of_tenant(
        &mut self,
        action: &'static str,
        sql: &str,
        tenant: uuid::Uuid,
    ) -> Result<u64> {
        self.read(action, |tx| {
            let n: i64 = tx
                .prepare_cached(sql)
                .and_then(|mut s| s.query_row([tenant.to_string()], |r| r.get(0)))
                .db(action)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// A metadata value that is a UUID (a damaged one is [`Error::Corrupt`]).
    pub fn meta_uuid(&self, key: &str) -> Result<Option<uuid::Uuid>> {
        self.meta(key)?
            .map(|text| convert::uuid_text(&text, "read home metadata"))
            .transpose()
            .map_err(|e| self.classify(e))
    }

    /// Sets a value in the home's metadata table unless it is already set;
    /// returns the value in force.
    pub fn meta_init(&mut self, key: &str, value: &str) -> Result<String> {
        self.write("write home metadata", |tx| {
            tx.execute(
                "INSERT INTO bundleq_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO NOTHING",
                [key, value],
            )
            .db("write home metadata")?;
            tx.query_row(
                "SELECT value FROM bundleq_meta WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .db("read home metadata")
        })
    }

    /// The query plans SQLite picks for the claim, for failing the jobs
    /// lost at their last attempt and for a batch of successes, one line
    /// per step.
    pub fn explain_claim(&self) -> Result<Vec<String>> {
        jobs::explain_claim(&self.conn)
    }

    /// Keeps (or stops keeping) the transitions of committed transactions.
    pub fn keep_transitions(&mut self, keep: bool) {
        self.journal = keep.then(Vec::new);
    }

    /// The transitions kept since the last call.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// `PRAGMA data_version`: changes whenever another connection commits.
    /// Reading it is the cheapest way for an idle pool to see new work.
    ///
    /// It also checks that the database file is still the one opened, so
    /// an idle pool notices a deleted database within one poll interval.
    pub fn data_version(&self) -> Result<u64> {
        self.check_identity()?;
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
            .db("read the data version")
            .map(|v| v as u64)
            .map_err(|e| self.classify(e))
    }

    /// What an idle pool does: if the WAL grew past its usual size (a long
    /// reader kept checkpoints from finishing), truncate it if nothing is in
    /// the way, without waiting.
    pub fn idle_maintenance(&self) -> Result<()> {
        if self.wal_bytes() > WAL_SHRINK_BYTES {
            self.checkpoint_if_free()?;
        }
        Ok(())
    }

    /// Copies the WAL into the database and truncates it
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`); returns false when readers kept
    /// it from finishing.
    pub fn checkpoint(&self) -> Result<bool> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .db("checkpoint the WAL")?;
        Ok(busy == 0)
    }

    /// Size of the write-ahead log file, 0 when there is none.
    pub fn wal_bytes(&self) -> u64 {
        std::fs::metadata(with_suffix(&self.path, "-wal")).map_or(0, |m| m.len())
    }

    /// A TRUNCATE checkpoint that never waits: if a reader or another writer
    /// is in the way it gives up at once (and says so). Used by an idle pool
    /// to shrink a WAL that grew while a reader held an old snapshot.
    pub fn checkpoint_if_free(&self) -> Result<bool> {
        self.conn
            .busy_timeout(Duration::ZERO)
            .db("set the busy timeout")?;
        let done = self.checkpoint();
        self.conn
            .busy_timeout(self.busy_wait())
            .db("set the busy timeout")?;
        match done {
            Ok(ok) => Ok(ok),
            Err(e) if sqlite_error(&e).is_some_and(is_busy) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a sound database, else what
    /// SQLite found wrong (at most 100 lines). A database too damaged to be
    /// checked gives SQLite's error as the one line.
    ///
    /// A sound database's search shards are checked too (their FTS5 index
    /// against the text it was made from), each line of theirs naming the
    /// shard.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let found = check_integrity(&self.conn).map_err(|e| self.classify(e))?;
        if found != ["ok"] {
            return Ok(found);
        }
        let mut problems = Vec::new();
        for (k, path) in self.shard_files_unchecked() {
            let found = self
                .shard_for_check(k)
                .and_then(|conn| check_integrity(&conn));
            match found {
                _ if !path.exists() => problems.push(format!(
                    "search shard {k}: its file {} is missing",
                    path.display()
                )),
                Ok(lines) if lines == ["ok"] => {}
                Ok(lines) => {
                    problems.extend(lines.into_iter().map(|l| format!("search shard {k}: {l}")))
                }
                Err(e) => problems.push(format!("search shard {k}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(found)
        } else {
            Ok(problems)
        }
    }

    /// Each column of a table: name, declared type, nullable.
    pub fn column_types(&self, table: &str) -> Result<Vec<(String, String, bool)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, type, \"notnull\" = 0 FROM pragma_table_info(?1) ORDER BY cid")
            .db("read table columns")?;
        let rows = stmt
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .db("read table columns")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db("read table columns")
    }

    /// The column names of a table, in order (for schema tests).
    pub fn table_columns(&self, table: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .db("read table columns")?;
        let rows = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .db("read table columns")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db("read table columns")
    }
}

/// A write transaction handed to [`SqliteStore::transaction`]'s closure.
#[derive(Debug)]
pub(crate) struct WriteTx<'a> {
    tx: &'a Transaction<'a>,
    policy: &'a QueuePolicy,
}

/// `PRAGMA integrity_check` on `conn`'s main database: `["ok"]`, what is
/// wrong, or the error of a file too damaged to check as the one line.
fn check_integrity(conn: &Connection) -> Result<Vec<String>> {
    let run = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA integrity_check(100)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    match run() {
        Ok(lines) => Ok(lines),
        Err(e) if is_corrupt(&e) => Ok(vec![e.to_string()]),
        Err(source) => Err(Error::Db {
            action: "check integrity",
            source: Box::new(source),
        }),
    }
}

/// `path` with `suffix` appended to its file name (`bundleq.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// `file:<path>?immutable=1`, with the characters a URI reserves escaped.
fn immutable_uri(path: &Path) -> PathBuf {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    PathBuf::from(uri)
}

/// Turns SQLite's busy, read-only and corruption errors into bundleq's own,
/// naming the database.
fn classify(path: &Path, waited: Duration, e: Error) -> Error {
    let (action, sqlite) = match &e {
        Error::Db { action, source } => (*action, source.downcast_ref::<rusqlite::Error>()),
        Error::Migrate(m) => {
            // The SQLite error inside refinery's, if there is one.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = m.source();
            let mut found = None;
            while let Some(c) = cause {
                if let Some(sqlite) = c.downcast_ref::<rusqlite::Error>() {
                    found = Some(sqlite);
                    break;
                }
                cause = c.source();
            }
            ("migrate the database schema", found)
        }
        _ => return e,
    };
    let Some(sqlite) = sqlite else {
        return e;
    };
    if convert::is_unreadable_value(sqlite) {
        return Error::Corrupt {
            path: path.to_owned(),
            detail: format!("{action}: a stored value does not parse: {sqlite}"),
        };
    }
    if is_busy(sqlite) {
        return Error::Busy {
            action,
            waited_secs: waited.as_secs().max(1),
        };
    }
    if is_corrupt(sqlite) {
        return Error::Corrupt {
            path: path.to_owned(),
            detail: match sqlite.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => "not a database file".to_owned(),
                _ => "SQLITE_CORRUPT: the database disk image is malformed".to_owned(),
            },
        };
    }
    if matches!(
        sqlite.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly)
    ) {
        return Error::ReadOnly {
            action,
            path: path.to_owned(),
        };
    }
    e
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;

    const _: () = assert!(BRIEF_PAGE_CACHE_KIB < PAGE_CACHE_KIB);
    use crate::store::{BRIEF_PAGE_CACHE_KIB, PAGE_CACHE_KIB, StoreOptions};

    fn cache_kib(store: &SqliteStore) -> i64 {
        let size: i64 = store
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        -size
    }

    #[test]
    fn each_connection_keeps_the_page_cache_its_options_ask_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundleq.db");
        let brief = StoreOptions {
            page_cache_kib: BRIEF_PAGE_CACHE_KIB,
            ..StoreOptions::default()
        };
        let made = SqliteStore::create(&path, StoreOptions::default()).unwrap();
        assert_eq!(cache_kib(&made), i64::from(PAGE_CACHE_KIB));
        let writer = SqliteStore::open(&path, brief.clone()).unwrap();
        assert_eq!(cache_kib(&writer), i64::from(BRIEF_PAGE_CACHE_KIB));
        let reader = SqliteStore::open_read_only(&path, brief).unwrap();
        assert_eq!(cache_kib(&reader), i64::from(BRIEF_PAGE_CACHE_KIB));
    }

    #[test]
    fn the_build_scripts_head_is_the_newest_embedded_migration() {
        let newest = super::embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max();
        assert_eq!(Some(super::head_version()), newest);
    }
}

//! The storage layer: the only module that runs SQL.
//!
//! It owns the SQLite connection (one per [`Store`]; a `Connection` is `Send`
//! but not `Sync`, so each thread opens its own), applies the embedded
//! migrations on open, and exposes the queue and run operations as methods
//! that take `now` explicitly. Workers, ingestion and the CLI never see SQL,
//! which keeps a second backend (PostgreSQL with `FOR UPDATE SKIP LOCKED`)
//! a matter of implementing this module again.
//!
//! Invariants:
//! - every transaction that may write starts with `BEGIN IMMEDIATE`, and a
//!   busy database is retried with a short backoff up to a deadline, so
//!   `SQLITE_BUSY` never reaches a user as such;
//! - no statement outlives the call that stepped it (cached statements are
//!   reset when dropped), so no read snapshot is held open between calls and
//!   checkpoints can always shrink the WAL.

mod baseline;
mod jobs;
mod runs;
mod sources;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use baseline::{BaselineFigures, run_baseline};
pub use jobs::{
    Attempt, Claim, ClaimToken, Completion, Job, JobFilter, NewJob, PruneFilter, Report, Stats,
};
pub use runs::{NewRun, Run, RunInsert, RunSummary};
pub use sources::{NewSource, RunSources, SearchHit};

use crate::error::{DbContext, Error, IoContext, Result};
use crate::state::Backoff;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How hard SQLite works to make a commit durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync the WAL at every commit: an acknowledged write survives power
    /// loss and OS crashes. The default.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, but a power loss
    /// or OS crash may undo the last commits. Faster.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// The rules a store applies to jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuePolicy {
    /// A running job whose `locked_at` is older than this is presumed lost
    /// and may be claimed again (orphan rescue). Live workers heartbeat well
    /// within it.
    pub lock_timeout: Duration,
    /// Delay between a retryable failure and the next attempt.
    pub backoff: Backoff,
    /// `max_attempts` for jobs enqueued without one.
    pub max_attempts: u32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            lock_timeout: Duration::from_secs(30 * 60),
            backoff: Backoff::default(),
            max_attempts: 3,
        }
    }
}

/// How to open a store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOptions {
    /// Durability of each commit.
    pub synchronous: Synchronous,
    /// How long a write waits for another process's transaction before it
    /// gives up with [`Error::Busy`].
    pub busy_deadline: Duration,
    /// The state machine's parameters.
    pub policy: QueuePolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous: Synchronous::Full,
            busy_deadline: Duration::from_secs(60),
            policy: QueuePolicy::default(),
        }
    }
}

/// The applied schema version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    /// Migration number, e.g. 1 for `V1__initial_schema.sql`.
    pub version: i64,
    /// Migration name, e.g. `initial_schema`.
    pub name: String,
    /// True when no embedded migration is newer.
    pub head: bool,
}

/// A connection to a bundleq database and the queue policy it applies.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
    /// Shared by every `Store` made with [`Store::reopen`] from this one:
    /// held across each write transaction so that threads of one process
    /// queue on a mutex instead of racing for SQLite's lock (whose busy
    /// handler sleeps and is unfair). Other processes are handled by the
    /// `BEGIN IMMEDIATE` retry loop.
    write_lock: Arc<Mutex<()>>,
}

impl Store {
    /// Creates the database file (mode 0600) if it does not exist, then
    /// opens it and applies migrations.
    pub fn create(path: &Path, options: StoreOptions) -> Result<Store> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .io("create database", path)?;
        Store::open(path, options)
    }

    /// Opens an existing database and applies pending migrations.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).db("open the database")?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            options,
            write_lock: Arc::new(Mutex::new(())),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens a second connection to the same database with the same options
    /// (for another thread).
    pub fn reopen(&self) -> Result<Store> {
        let mut store = Store::open(&self.path, self.options.clone())?;
        store.write_lock = Arc::clone(&self.write_lock);
        Ok(store)
    }

    fn configure(&mut self) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(5))
            .db("set the busy timeout")?;
        // journal_mode answers with a row; WAL lets readers run beside the
        // single writer.
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
             PRAGMA cache_size = -16384;",
            self.options.synchronous.pragma()
        ))
        .db("configure the connection")?;
        c.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let runner = embedded::migrations::runner();
        let latest = runner
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .max()
            .unwrap_or(0);
        if let Some(current) = self.schema_version()?
            && current.version >= i64::from(latest)
        {
            return Ok(());
        }
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
                        && v.version >= i64::from(latest)
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
        let latest = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max()
            .unwrap_or(0);
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction and commits it. While
    /// another process holds the write lock, retries with a short backoff up
    /// to the busy deadline.
    pub(crate) fn write<T>(
        &mut self,
        action: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
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
                Err(source) => return Err(Error::Db { action, source }),
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .db(action)?;
        let value = f(&tx)?;
        tx.finish().db(action)?;
        Ok(value)
    }

    /// Runs `f` inside one write transaction with a [`WriteTx`], so that the
    /// caller can record a run and enqueue its job atomically.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&WriteTx<'_>) -> Result<T>) -> Result<T> {
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

    /// The query plan SQLite picks for the claim, one line per step.
    pub fn explain_claim(&self) -> Result<Vec<String>> {
        jobs::explain_claim(&self.conn)
    }

    /// `PRAGMA data_version`: changes whenever another connection commits.
    /// Reading it is the cheapest way for an idle pool to see new work.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .db("read the data version")
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
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
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
            .busy_timeout(Duration::from_secs(5))
            .db("set the busy timeout")?;
        match done {
            Ok(ok) => Ok(ok),
            Err(Error::Db { source, .. }) if is_busy(&source) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a sound database.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .db("check integrity")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .db("check integrity")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .db("check integrity")
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

/// A write transaction handed to [`Store::transaction`]'s closure.
#[derive(Debug)]
pub struct WriteTx<'a> {
    tx: &'a Transaction<'a>,
    policy: &'a QueuePolicy,
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

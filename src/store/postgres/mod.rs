//! The PostgreSQL backend: the only code that runs SQL against a
//! PostgreSQL server, and the only code naming the `postgres` crate.
//!
//! Several processes on several hosts work one queue here: claims take
//! their rows with `FOR UPDATE SKIP LOCKED`, reports pass the same fence as
//! on SQLite, and the times that decide claims, locks and retries are the
//! server's (`now()`, read once per transaction), so hosts whose clocks
//! disagree cannot steal or strand each other's jobs. Source objects live
//! in the database (`objects`, `object_chunks`), so every host reads the
//! bytes another accepted. Idle pools wake on `LISTEN`/`NOTIFY`.
//!
//! Invariants:
//! - one connection per [`PgStore`]; every write is one transaction, retried
//!   from the start on a serialization failure or a deadlock;
//! - a lost connection is dropped and made again at the next call: the call
//!   that saw it fails with [`Error::Db`] (not fatal), and a report whose
//!   commit may or may not have happened is safe to send again (the fence);
//! - a transition is handed to the journal only after its commit;
//! - migrations (`migrations/postgres/`) run under an advisory lock, so
//!   processes starting at once do not race.

mod baseline;
mod jobs;
mod runs;
mod upkeep;

pub use baseline::Scratch;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Row, Statement};

use crate::error::{Error, Result};
use crate::store::{QueuePolicy, SchemaVersion, StoreOptions, Synchronous, Transition};
use crate::timestamp::Timestamp;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The key of the advisory lock held while migrating (any fixed number).
const MIGRATION_LOCK: i64 = 0x6275_6e64_6c65_7101;

/// The key of the transaction lock under which claims count the running
/// jobs of capped types (so two claimers cannot both take the last place).
const CAPS_LOCK: i64 = 0x6275_6e64_6c65_7102;

/// The key of the transaction lock that recording runs shares and a sweep
/// of unreferenced objects holds alone: a run's objects stored before its
/// transaction are checked under it, so a sweep never removes an object
/// that a run committed since names.
const OBJECTS_LOCK: i64 = 0x6275_6e64_6c65_7103;

/// Where a PostgreSQL database is: its connection string (a URL or the
/// `key=value` form), as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    pub(super) text: String,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgLocation({})", self.shown())
    }
}

impl PgLocation {
    /// Parses a connection string; its error says what is wrong with it.
    pub fn parse(text: &str) -> std::result::Result<PgLocation, String> {
        let text = text.trim();
        text.parse::<postgres::Config>()
            .map_err(|e| format!("invalid PostgreSQL connection string: {e}"))?;
        Ok(PgLocation {
            text: text.to_owned(),
        })
    }

    pub(super) fn config(&self) -> postgres::Config {
        // Parsed when the location was made.
        let mut config = self.text.parse::<postgres::Config>().unwrap_or_default();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives(true);
        config.application_name("bundleq");
        config
    }

    /// The connection string with any password hidden, for messages.
    pub fn shown(&self) -> String {
        let Ok(config) = self.text.parse::<postgres::Config>() else {
            return "postgres://?".to_owned();
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        format!(
            "postgres://{}@{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        )
    }
}

/// A connection to a bundleq database on PostgreSQL.
pub struct PgStore {
    location: PgLocation,
    /// `None` after the connection was lost: made again at the next call.
    client: Option<Client>,
    options: StoreOptions,
    /// Prepared statements of this connection, by their text.
    cache: HashMap<String, Statement>,
    journal: Option<Vec<Transition>>,
    /// The `NOTIFY` channel of this database's schema.
    channel: String,
    /// Notifications seen so far: the "has anything changed?" token.
    seen: u64,
    read_only: bool,
    /// This connection listens for notifications (only the ones that read
    /// them do: the client keeps what it receives until it is read).
    listening: bool,
    /// The server's clock as last read, and this host's monotonic clock
    /// then: a transaction's time is that reading plus the monotonic time
    /// since, so it is the server's clock without a round trip per
    /// transaction, and a jump of this host's wall clock changes nothing.
    server_clock: Option<(Timestamp, Instant)>,
}

/// How long a reading of the server's clock is used before it is read
/// again (the monotonic clock drifts by parts per million).
const CLOCK_READING_FOR: Duration = Duration::from_secs(10);

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A postgres error with the action that failed.
pub(super) trait PgContext<T> {
    fn pg(self, action: &'static str) -> Result<T>;
}

impl<T> PgContext<T> for std::result::Result<T, postgres::Error> {
    fn pg(self, action: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            action,
            source: Box::new(PgError(e)),
        })
    }
}

/// A postgres error shown in one line with what the server said (the
/// crate's own text is only "db error" for those).
#[derive(Debug)]
struct PgError(postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&said(&self.0))
    }
}

/// What a postgres error means, in one line: what the server said, or
/// the connection's trouble with its causes.
fn said(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("the database server said: {}", db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// A migration's failure with what the server said (refinery's own text
/// is only "db error" for those).
#[derive(Debug)]
struct MigrationError(refinery::Error);

impl std::fmt::Display for MigrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&self.0);
        while let Some(c) = cause {
            if let Some(pg) = c.downcast_ref::<postgres::Error>() {
                return write!(f, "{}", said(pg));
            }
            cause = c.source();
        }
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for MigrationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The postgres error inside a store error, if it is one.
fn pg_error(e: &Error) -> Option<&postgres::Error> {
    match e {
        Error::Db { source, .. } | Error::Migrate(source) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                if let Some(pg) = c.downcast_ref::<postgres::Error>() {
                    return Some(pg);
                }
                cause = c.source();
            }
            None
        }
        _ => None,
    }
}

/// True when the transaction may simply be run again: a serialization
/// failure or a deadlock (PostgreSQL rolled it back).
fn is_retryable(e: &Error) -> bool {
    pg_error(e)
        .and_then(|p| p.code())
        .is_some_and(|c| matches!(c.code(), "40001" | "40P01"))
}

/// True when the connection is gone (closed, or the server shut down).
fn is_disconnect(e: &Error) -> bool {
    pg_error(e).is_some_and(|p| {
        p.is_closed()
            || p.code()
                .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
    })
}

impl PgStore {
    fn connect(location: &PgLocation, options: StoreOptions) -> Result<PgStore> {
        let mut store = PgStore {
            location: location.clone(),
            client: None,
            options,
            cache: HashMap::new(),
            journal: None,
            channel: String::new(),
            seen: 0,
            read_only: false,
            listening: false,
            server_clock: None,
        };
        store.client()?;
        Ok(store)
    }

    /// The connection, made again if it was lost.
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            self.cache.clear();
            self.server_clock = None;
            let mut client = self
                .location
                .config()
                .connect(NoTls)
                .pg("connect to the database")?;
            let mut setup = String::from("SET TIME ZONE 'UTC';");
            if self.options.synchronous == Synchronous::Normal {
                setup.push_str("SET synchronous_commit = off;");
            }
            if self.read_only {
                setup.push_str("SET default_transaction_read_only = on;");
            }
            client
                .batch_execute(&setup)
                .pg("configure the connection")?;
            let schema: Option<String> = client
                .query_one("SELECT current_schema()", &[])
                .pg("read the schema")?
                .get(0);
            let Some(schema) = schema else {
                return Err(Error::InvalidArgument {
                    what: "database",
                    message: format!(
                        "{}: no schema to work in (the search_path names none that exists)",
                        self.location.shown()
                    ),
                });
            };
            self.channel = channel_of(&schema);
            if self.listening {
                listen(&mut client, &self.channel)?;
            }
            self.client = Some(client);
        }
        match &mut self.client {
            Some(c) => Ok(c),
            None => Err(Error::InvalidArgument {
                what: "database",
                message: "no connection".to_owned(),
            }),
        }
    }

    /// Notes a lost connection (made again at the next call).
    fn after_error(&mut self, e: Error) -> Error {
        if is_disconnect(&e) {
            self.client = None;
        }
        e
    }

    /// Creates the schema's tables if they do not exist, then opens.
    pub fn create(location: &PgLocation, options: StoreOptions) -> Result<PgStore> {
        PgStore::open(location, options)
    }

    /// Opens the database and applies pending migrations.
    pub fn open(location: &PgLocation, options: StoreOptions) -> Result<PgStore> {
        let mut store = PgStore::connect(location, options)?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens the database for reading only; a schema behind head, or one a
    /// later release migrated, is an error naming the fix.
    pub fn open_read_only(location: &PgLocation, options: StoreOptions) -> Result<PgStore> {
        let mut store = PgStore {
            read_only: true,
            ..PgStore::connect(location, options)?
        };
        store.client = None;
        store.client()?;
        let current = store.current_version()?;
        if let Some(v) = &current {
            v.refuse_newer(PgStore::latest(), &location.shown())?;
        }
        if !current.is_some_and(|v| v.head) {
            return Err(Error::InvalidArgument {
                what: "database",
                message: format!(
                    "{} needs a schema migration; run `bundleq db migrate` as a user who can write it",
                    location.shown()
                ),
            });
        }
        Ok(store)
    }

    /// Opens the database as it is, without looking at its schema.
    pub fn open_unchecked(location: &PgLocation, options: StoreOptions) -> Result<PgStore> {
        PgStore::connect(location, options)
    }

    /// A second connection with the same options.
    pub fn reopen(&self) -> Result<PgStore> {
        let mut store = PgStore::connect(&self.location, self.options.clone())?;
        store.read_only = self.read_only;
        Ok(store)
    }

    fn latest() -> i64 {
        embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max()
            .unwrap_or(0)
    }

    fn migrate(&mut self) -> Result<()> {
        let latest = PgStore::latest();
        if let Some(current) = self.schema_version()?
            && current.version >= latest
        {
            return current.refuse_newer(latest, &self.location.shown());
        }
        let result = (|| {
            let client = self.client()?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .pg("lock the schema for migration")?;
            let run = embedded::migrations::runner()
                .run(client)
                .map(|_| ())
                .map_err(|e| Error::Migrate(Box::new(MigrationError(e))));
            let unlock = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .pg("unlock the schema");
            run.and(unlock.map(|_| ()))
        })();
        result.map_err(|e| self.after_error(e))
    }

    /// Applies pending migrations and returns the resulting version.
    pub fn migrate_to_head(&mut self) -> Result<SchemaVersion> {
        self.migrate()?;
        self.current_version()?
            .ok_or_else(|| Error::InvalidArgument {
                what: "database",
                message: "no migration is recorded after migrating".to_owned(),
            })
    }

    fn schema_version(&mut self) -> Result<Option<SchemaVersion>> {
        let client = self.client()?;
        let exists: bool = client
            .query_one(
                "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                &[],
            )
            .pg("read the schema version")?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT version, name FROM refinery_schema_history ORDER BY version DESC LIMIT 1",
                &[],
            )
            .pg("read the schema version")?;
        Ok(row.map(|r| SchemaVersion {
            version: i64::from(r.get::<_, i32>(0)),
            name: r.get(1),
            head: false,
        }))
    }

    /// The applied migration head.
    pub fn current_version(&mut self) -> Result<Option<SchemaVersion>> {
        let latest = PgStore::latest();
        Ok(self.schema_version()?.map(|mut v| {
            v.head = v.version >= latest;
            v
        }))
    }

    /// Nothing to check: a server's database cannot be swapped under us.
    pub fn check_identity(&self) -> Result<()> {
        Ok(())
    }

    /// The server keeps its own house.
    pub fn idle_maintenance(&mut self) -> Result<()> {
        Ok(())
    }

    /// The server keeps its own write-ahead log: nothing to do.
    pub fn checkpoint(&mut self) -> Result<bool> {
        Ok(true)
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The queue policy in force.
    pub fn policy(&self) -> &QueuePolicy {
        &self.options.policy
    }

    /// Where the database is, for messages.
    pub fn shown(&self) -> String {
        self.location.shown()
    }

    /// Runs `f` in one transaction and commits it; a serialization failure
    /// or deadlock runs it again from the start. The transaction's time is
    /// the server's (or `now` when the store trusts its caller's clock).
    pub(super) fn write<T>(
        &mut self,
        action: &'static str,
        now: Timestamp,
        f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_as(action, now, false, f)
    }

    /// [`PgStore::write`] for work that `f` does in one statement: it runs
    /// as its own transaction, without `BEGIN` and `COMMIT` round trips.
    /// (A clock reading, when due, is a statement of its own before it.)
    pub(super) fn write_one<T>(
        &mut self,
        action: &'static str,
        now: Timestamp,
        f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_as(action, now, true, f)
    }

    fn write_as<T>(
        &mut self,
        action: &'static str,
        now: Timestamp,
        single: bool,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match self.attempt(action, now, single, &mut f) {
                Err(e) if is_retryable(&e) && start.elapsed() < self.options.busy_deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(self.after_error(e)),
                Ok((value, held)) => {
                    if let Some(j) = &mut self.journal {
                        j.extend(held);
                    }
                    return Ok(value);
                }
            }
        }
    }

    fn attempt<T>(
        &mut self,
        action: &'static str,
        now: Timestamp,
        single: bool,
        f: &mut impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<(T, Vec<Transition>)> {
        let caller_clock = self.options.caller_clock;
        let mode = if single { Mode::Single } else { Mode::Write };
        let (mut tx, server_clock) = self.begin(action, now, mode)?;
        if !caller_clock {
            let reading = match *server_clock {
                Some((at, when)) if when.elapsed() < CLOCK_READING_FOR => (at, when),
                _ => {
                    let asked = Instant::now();
                    let row = tx.one("SELECT statement_timestamp()", &[])?;
                    let at = Timestamp::from_offset(row.try_get(0).pg(action)?);
                    // The server read its clock about halfway through.
                    let when = asked + asked.elapsed() / 2;
                    *server_clock = Some((at, when));
                    (at, when)
                }
            };
            tx.now = reading.0.plus(reading.1.elapsed());
        }
        let value = f(&mut tx)?;
        if tx.notify && !tx.channel.is_empty() {
            let channel = tx.channel.to_owned();
            tx.execute("SELECT pg_notify($1, '')", &[&channel])?;
        }
        let Tx { tx, held, .. } = tx;
        tx.commit().pg(action)?;
        Ok((value, held))
    }

    /// A [`Tx`] on this store's connection (made again if it was lost),
    /// and the store's reading of the server's clock.
    fn begin(
        &mut self,
        action: &'static str,
        now: Timestamp,
        mode: Mode,
    ) -> Result<(Tx<'_>, &mut Option<(Timestamp, Instant)>)> {
        self.client()?;
        let PgStore {
            client,
            cache,
            options,
            channel,
            server_clock,
            ..
        } = self;
        let Some(client) = client else {
            return Err(Error::InvalidArgument {
                what: "database",
                message: "no connection".to_owned(),
            });
        };
        let conn = match mode {
            Mode::Single => Conn::Single(client),
            Mode::Write => Conn::Tx(client.transaction().pg(action)?),
            Mode::Read => Conn::Tx(
                client
                    .build_transaction()
                    .read_only(true)
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .start()
                    .pg(action)?,
            ),
        };
        let tx = Tx {
            tx: conn,
            cache,
            held: Vec::new(),
            now,
            policy: &options.policy,
            channel,
            notify: false,
            action,
        };
        Ok((tx, server_clock))
    }

    /// Runs `f` in a read-only transaction (one snapshot).
    pub(super) fn read<T>(
        &mut self,
        action: &'static str,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let now = Timestamp::now();
        let result = (|| {
            let (mut tx, _) = self.begin(action, now, Mode::Read)?;
            let value = f(&mut tx)?;
            tx.tx.commit().pg(action)?;
            Ok(value)
        })();
        result.map_err(|e| self.after_error(e))
    }

    /// A value from the database's metadata.
    pub fn meta(&mut self, key: &str) -> Result<Option<String>> {
        self.read("read metadata", |tx| {
            Ok(tx
                .opt("SELECT value FROM bundleq_meta WHERE key = $1", &[&key])?
                .map(|r| r.get(0)))
        })
    }

    /// A metadata value that is a UUID.
    pub fn meta_uuid(&mut self, key: &str) -> Result<Option<uuid::Uuid>> {
        let shown = self.shown();
        self.meta(key)?
            .map(|text| {
                uuid::Uuid::parse_str(&text).map_err(|e| Error::Corrupt {
                    path: shown.clone().into(),
                    detail: format!("metadata {key} is not a UUID: {e}"),
                })
            })
            .transpose()
    }

    /// Sets a metadata value unless it is set; returns the value in force.
    pub fn meta_init(&mut self, key: &str, value: &str) -> Result<String> {
        self.write("write metadata", Timestamp::now(), |tx| {
            tx.execute(
                "INSERT INTO bundleq_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )?;
            Ok(tx
                .one("SELECT value FROM bundleq_meta WHERE key = $1", &[&key])?
                .get(0))
        })
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

    /// Starts listening on this connection (from its first question on).
    fn start_listening(&mut self) -> Result<()> {
        if !self.listening {
            self.listening = true;
            let channel = self.channel.clone();
            listen(self.client()?, &channel)?;
        }
        Ok(())
    }

    /// The count of notifications seen (enqueues, retries, releases and
    /// resumes of any process announce themselves).
    pub fn data_version(&mut self) -> Result<u64> {
        let result = (|| {
            self.start_listening()?;
            let client = self.client()?;
            let n = client
                .notifications()
                .iter()
                .count()
                .pg("read the database's notifications")?;
            // A lost connection shows itself only when used.
            client
                .simple_query("")
                .pg("read the database's notifications")?;
            Ok(n as u64)
        })();
        match result {
            Ok(n) => {
                self.seen += n;
                Ok(self.seen)
            }
            Err(e) => Err(self.after_error(e)),
        }
    }

    /// Waits up to `timeout` for another connection's notification; true
    /// when one came.
    pub fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        let result = (|| {
            self.start_listening()?;
            let client = self.client()?;
            let mut n = client.notifications();
            let got = n
                .timeout_iter(timeout)
                .next()
                .pg("wait for notifications")?
                .is_some();
            Ok(got)
        })();
        match result {
            Ok(got) => {
                if got {
                    self.seen += 1;
                }
                Ok(got)
            }
            Err(e) => Err(self.after_error(e)),
        }
    }

    /// The query plan of the claim, one line per step.
    pub fn explain_claim(&mut self) -> Result<Vec<String>> {
        jobs::explain_claim(self)
    }

    /// The column names of a table, in order.
    pub fn table_columns(&mut self, table: &str) -> Result<Vec<String>> {
        self.read("read table columns", |tx| {
            Ok(tx
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                     ORDER BY ordinal_position",
                    &[&table],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    /// The type of each column of a table, as `information_schema` names it.
    pub fn column_types(&mut self, table: &str) -> Result<Vec<(String, String, bool)>> {
        self.read("read table columns", |tx| {
            Ok(tx
                .query(
                    "SELECT column_name::text, data_type::text, is_nullable = 'YES'
                     FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                     ORDER BY ordinal_position",
                    &[&table],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    /// A check that every table answers (PostgreSQL keeps its own pages
    /// consistent; damage shows as errors on read).
    pub fn integrity_check(&mut self) -> Result<Vec<String>> {
        self.read("check the database", |tx| {
            for table in [
                "research_jobs",
                "research_runs",
                "research_sources",
                "objects",
                "tenants",
            ] {
                tx.one(
                    &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1) AS t"),
                    &[],
                )?;
            }
            Ok(vec!["ok".to_owned()])
        })
    }
}

/// How a [`Tx`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A read-write transaction.
    Write,
    /// One statement, its own transaction.
    Single,
    /// A read-only transaction on one snapshot.
    Read,
}

/// Where a [`Tx`]'s statements run: an open transaction, or (for work
/// that is one statement) the connection itself, each statement its own
/// transaction — one round trip instead of three.
enum Conn<'a> {
    Tx(postgres::Transaction<'a>),
    Single(&'a mut Client),
}

impl Conn<'_> {
    fn prepare(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        match self {
            Conn::Tx(t) => t.prepare(sql),
            Conn::Single(c) => c.prepare(sql),
        }
    }

    fn query(
        &mut self,
        s: &Statement,
        p: &[Param<'_>],
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        match self {
            Conn::Tx(t) => t.query(s, p),
            Conn::Single(c) => c.query(s, p),
        }
    }

    fn query_opt(
        &mut self,
        s: &Statement,
        p: &[Param<'_>],
    ) -> std::result::Result<Option<Row>, postgres::Error> {
        match self {
            Conn::Tx(t) => t.query_opt(s, p),
            Conn::Single(c) => c.query_opt(s, p),
        }
    }

    fn query_one(
        &mut self,
        s: &Statement,
        p: &[Param<'_>],
    ) -> std::result::Result<Row, postgres::Error> {
        match self {
            Conn::Tx(t) => t.query_one(s, p),
            Conn::Single(c) => c.query_one(s, p),
        }
    }

    fn execute(
        &mut self,
        s: &Statement,
        p: &[Param<'_>],
    ) -> std::result::Result<u64, postgres::Error> {
        match self {
            Conn::Tx(t) => t.execute(s, p),
            Conn::Single(c) => c.execute(s, p),
        }
    }

    fn commit(self) -> std::result::Result<(), postgres::Error> {
        match self {
            Conn::Tx(t) => t.commit(),
            Conn::Single(_) => Ok(()),
        }
    }
}

/// A transaction of a [`PgStore`], with its prepared statements, its time
/// and the transitions it will report once committed.
pub(super) struct Tx<'a> {
    tx: Conn<'a>,
    cache: &'a mut HashMap<String, Statement>,
    held: Vec<Transition>,
    /// The transaction's time: the server's `now()` (or the caller's).
    now: Timestamp,
    policy: &'a QueuePolicy,
    channel: &'a str,
    /// Announce the commit to idle pools (`NOTIFY`).
    notify: bool,
    /// What the transaction does, for its errors.
    action: &'static str,
}

/// A statement parameter.
pub(super) type Param<'p> = &'p (dyn ToSql + Sync);

impl Tx<'_> {
    fn prepared(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).pg(self.action)?;
        if self.cache.len() > 256 {
            self.cache.clear();
        }
        self.cache.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let s = self.prepared(sql)?;
        self.tx.query(&s, params).pg(self.action)
    }

    pub(super) fn opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        let s = self.prepared(sql)?;
        self.tx.query_opt(&s, params).pg(self.action)
    }

    pub(super) fn one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row> {
        let s = self.prepared(sql)?;
        self.tx.query_one(&s, params).pg(self.action)
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let s = self.prepared(sql)?;
        self.tx.execute(&s, params).pg(self.action)
    }

    /// Holds a transition until the commit.
    pub(super) fn defer(&mut self, t: Transition) {
        self.held.push(t);
    }

    /// Announces this transaction's commit to idle pools.
    pub(super) fn notify(&mut self) {
        self.notify = true;
    }
}

/// The `NOTIFY` channel of a schema (an identifier of at most 63 bytes).
fn channel_of(schema: &str) -> String {
    let mut c = format!("bundleq {schema}");
    while c.len() > 63 {
        c.pop();
    }
    c
}

/// `LISTEN` on a schema's channel.
fn listen(client: &mut Client, channel: &str) -> Result<()> {
    client
        .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
        .pg("listen for changes")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column read with its type checked: a value that does not convert is
/// an error, never a panic.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).pg("read a column")
}

impl ToSql for Timestamp {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_offset().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <time::OffsetDateTime as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        time::OffsetDateTime::from_sql(ty, raw).map(Timestamp::from_offset)
    }

    fn accepts(ty: &Type) -> bool {
        <time::OffsetDateTime as FromSql>::accepts(ty)
    }
}

/// The benchmark's plain-SQL baseline in the (migrated) schema at
/// `location`, with `claimers` connections claiming at once.
pub(crate) fn run_baseline(
    location: &PgLocation,
    n: usize,
    claimers: usize,
    samples: usize,
) -> Result<crate::store::BaselineFigures> {
    baseline::run(location, n, claimers, samples)
}

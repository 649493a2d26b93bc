//! The storage layer: one interface over one backend per database.
//!
//! [`Store`] is what the rest of bundleq uses: enqueue, claim, report,
//! release, rescue, cancel, retry, the runs, sources, tenants and serves
//! of a home, and what an idle pool needs ("has anything changed?", idle
//! maintenance). It holds a private `Backend` — today `sqlite`, each
//! backend in its own folder with its own SQL and its own migrations
//! folder — and hands every call to it. The vocabulary (`model`) and the
//! search syntax (`search`) are shared by all backends.
//!
//! Why an enum and not a trait object: the set of backends is closed and
//! small, the calls are many and hot (claims and reports), and a new
//! backend must implement every one of them: with an enum, adding a
//! variant makes the compiler list every method that does not handle it
//! yet, and calls stay static.
//!
//! Invariants:
//! - only `store` runs SQL, and only `store::<backend>` names a database
//!   crate;
//! - a write is reported (returned, or journaled as a [`Transition`]) only
//!   after its commit, into the database that is still the one opened;
//! - the backend turns its busy, read-only and corruption errors into
//!   [`crate::Error::Busy`], [`crate::Error::ReadOnly`] and
//!   [`crate::Error::Corrupt`]: a database's own wording never reaches a
//!   user.

mod compact;
mod model;
mod postgres;
mod readers;
pub mod search;
mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use uuid::Uuid;

pub use model::{
    Attempt, BRIEF_PAGE_CACHE_KIB, BaselineFigures, Claim, ClaimToken, Completion, IdKind, Job,
    JobEvent, JobFilter, MIN_PREFIX, MIN_SHORT, MinuteCount, NewJob, NewObject, NewRun, NewSource,
    ObjectCheck, ObjectRef, PAGE_CACHE_KIB, Paused, PruneFilter, Pruned, PrunedRun, QueuePolicy,
    Report, Run, RunInsert, RunJob, RunSources, RunSummary, SchemaVersion, SearchHit, ServeRow,
    Stats, StoreOptions, StoredObject, Synchronous, Tenant, Transition, TransitionKind, TypePolicy,
    new_job_id, valid_tenant_name,
};
pub(crate) use model::{
    add_minute, earliest, new_tenant_id, short_form, truncate_error, user_action_detail,
};
pub use readers::Readers;

use crate::digest::Sha256Hex;
use crate::error::Result;
use crate::state::JobStatus;
use crate::timestamp::Timestamp;

/// Where a home's database is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (normally `<home>/bundleq.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`[database] url`, `BUNDLEQ_DATABASE_URL`).
    Postgres(PgLocation),
}

pub use postgres::{PgLocation, Scratch};

impl Location {
    /// A location as configured: a path (relative to `base`) for SQLite.
    pub fn parse(text: &str, base: &Path) -> std::result::Result<Location, String> {
        let text = text.trim();
        if text.contains("://") {
            return Err(format!(
                "{text:?} is a URL: give a PostgreSQL database as `url`, not `path`"
            ));
        }
        if text.is_empty() {
            return Err("the database location is empty".to_owned());
        }
        let p = Path::new(text);
        Ok(Location::Sqlite(if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }))
    }

    /// A database server's location: a `postgres://` or `postgresql://`
    /// URL, or PostgreSQL's `key=value` connection string.
    pub fn server(text: &str) -> std::result::Result<Location, String> {
        let text = text.trim();
        let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        let is_keywords = !text.contains("://") && text.contains('=');
        if !is_url && !is_keywords {
            return Err(format!(
                "{text:?} is not a PostgreSQL connection string (postgres://user@host/db, or host=/run/postgresql dbname=bundleq)"
            ));
        }
        PgLocation::parse(text).map(Location::Postgres)
    }

    /// The database file, for a file-based backend.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// True for a database server that several hosts may share.
    pub fn is_server(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// True when the database exists (a home without one is not a home).
    pub fn exists(&self) -> std::io::Result<bool> {
        match self {
            Location::Sqlite(p) => match std::fs::metadata(p) {
                Ok(m) => Ok(m.is_file()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
            // A server's database is there once a home was made on it; the
            // connection says otherwise when it is opened.
            Location::Postgres(_) => Ok(true),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(p) => write!(f, "{}", p.shown()),
        }
    }
}

/// "Has anything changed?": equal tokens mean no other connection wrote
/// in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeToken(u64);

/// The database a store talks to.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a store is made once per connection and moved rarely; boxing one side only moves the difference"
)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// A connection to a bundleq database and the queue policy it applies.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    location: Location,
}

/// Hands a call to the backend.
macro_rules! on_backend {
    ($self:expr, $b:ident => $call:expr) => {
        match &mut $self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

/// Hands a call that only reads to the backend.
macro_rules! on_backend_ref {
    ($self:expr, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    fn of(location: &Location, backend: Backend) -> Store {
        Store {
            backend,
            location: location.clone(),
        }
    }

    /// Creates the database (a file 0600 for SQLite) if it does not exist,
    /// then opens it and applies migrations.
    pub fn create(location: &Location, options: StoreOptions) -> Result<Store> {
        match location {
            Location::Sqlite(p) => Ok(Store::of(
                location,
                Backend::Sqlite(sqlite::SqliteStore::create(p, options)?),
            )),
            Location::Postgres(p) => Ok(Store::of(
                location,
                Backend::Postgres(postgres::PgStore::create(p, options)?),
            )),
        }
    }

    /// Opens an existing database and applies pending migrations. A
    /// database this user cannot write is [`crate::Error::ReadOnly`]; one a
    /// later release migrated is refused, naming both schemas.
    pub fn open(location: &Location, options: StoreOptions) -> Result<Store> {
        match location {
            Location::Sqlite(p) => Ok(Store::of(
                location,
                Backend::Sqlite(sqlite::SqliteStore::open(p, options)?),
            )),
            Location::Postgres(p) => Ok(Store::of(
                location,
                Backend::Postgres(postgres::PgStore::open(p, options)?),
            )),
        }
    }

    /// Opens a database for reading only: nothing is migrated or written.
    pub fn open_read_only(location: &Location, options: StoreOptions) -> Result<Store> {
        match location {
            Location::Sqlite(p) => Ok(Store::of(
                location,
                Backend::Sqlite(sqlite::SqliteStore::open_read_only(p, options)?),
            )),
            Location::Postgres(p) => Ok(Store::of(
                location,
                Backend::Postgres(postgres::PgStore::open_read_only(p, options)?),
            )),
        }
    }

    /// Opens a database as it is, without looking at its schema (for
    /// `bundleq db check` on a database that may be damaged).
    pub fn open_unchecked(location: &Location, options: StoreOptions) -> Result<Store> {
        match location {
            Location::Sqlite(p) => Ok(Store::of(
                location,
                Backend::Sqlite(sqlite::SqliteStore::open_unchecked(p, options)?),
            )),
            Location::Postgres(p) => Ok(Store::of(
                location,
                Backend::Postgres(postgres::PgStore::open_unchecked(p, options)?),
            )),
        }
    }

    /// A second connection to the same database for another thread (with
    /// SQLite it shares this one's write mutex).
    pub fn reopen(&self) -> Result<Store> {
        Ok(Store::of(
            &self.location,
            match &self.backend {
                Backend::Sqlite(b) => Backend::Sqlite(b.reopen()?),
                Backend::Postgres(b) => Backend::Postgres(b.reopen()?),
            },
        ))
    }

    /// Stores an object's bytes in the database in a transaction of its
    /// own, before the run naming it is recorded (a database server keeps
    /// every object, so that every host reads them).
    /// The bytes are read from `bytes` and must hash to `sha256` (or
    /// nothing is stored).
    pub fn put_object(&mut self, sha256: &Sha256Hex, bytes: &mut dyn std::io::Read) -> Result<()> {
        match &mut self.backend {
            Backend::Sqlite(_) => Err(crate::Error::InvalidArgument {
                what: "object",
                message: "a SQLite home keeps big objects as files under objects/".to_owned(),
            }),
            Backend::Postgres(b) => b.put_object(sha256, bytes),
        }
    }

    /// True when the database keeps every object, whatever its size (a
    /// server shared by several hosts); false when big ones are files.
    pub fn keeps_all_objects(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// True when [`Store::wait_for_change`] can wait for other processes'
    /// writes (PostgreSQL's `LISTEN`); SQLite has only polling.
    pub fn can_wait_for_change(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Waits up to `timeout` for another connection to enqueue, retry,
    /// release or resume something; true when it did. Without a way to wait
    /// (SQLite) it returns false at once.
    pub fn wait_for_change(&mut self, timeout: std::time::Duration) -> Result<bool> {
        match &mut self.backend {
            Backend::Sqlite(_) => Ok(false),
            Backend::Postgres(b) => b.wait_for_change(timeout),
        }
    }

    /// A pool of up to `cap` read connections for other threads.
    pub fn readers(&self, cap: usize) -> Readers {
        Readers::new(self.location.clone(), self.options().clone(), cap)
    }

    /// Where the database is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        on_backend_ref!(self, b => b.options())
    }

    /// The queue policy in force.
    pub fn policy(&self) -> &QueuePolicy {
        on_backend_ref!(self, b => b.policy())
    }

    /// Fails with [`crate::Error::DatabaseGone`] when the database is no
    /// longer the one opened (a SQLite file deleted or replaced).
    pub fn check_identity(&self) -> Result<()> {
        on_backend_ref!(self, b => b.check_identity())
    }

    /// "Has anything changed?": a token that changes whenever another
    /// connection commits (cheap enough for every poll; it also checks the
    /// database is still the one opened).
    pub fn changes(&mut self) -> Result<ChangeToken> {
        on_backend!(self, b => b.data_version().map(ChangeToken))
    }

    /// What an idle pool does for the database's upkeep (SQLite: shrink a
    /// WAL that grew while a reader held an old snapshot).
    pub fn idle_maintenance(&mut self) -> Result<()> {
        on_backend!(self, b => b.idle_maintenance())
    }

    /// Writes what is buffered into the database proper (SQLite: a TRUNCATE
    /// checkpoint of the WAL), so that measurements start from a clean
    /// state. Returns false when something kept it from finishing.
    pub fn checkpoint(&mut self) -> Result<bool> {
        on_backend!(self, b => b.checkpoint())
    }

    /// Keeps (or stops keeping) the [`Transition`]s of committed writes,
    /// for [`Store::take_transitions`]. Off by default.
    pub fn keep_transitions(&mut self, keep: bool) {
        on_backend!(self, b => b.keep_transitions(keep))
    }

    /// The transitions committed since the last call (when kept).
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        on_backend!(self, b => b.take_transitions())
    }

    /// Applies pending migrations and returns the resulting version.
    pub fn migrate_to_head(&mut self) -> Result<SchemaVersion> {
        on_backend!(self, b => b.migrate_to_head())
    }

    /// The applied migration head, like `alembic current`.
    pub fn current_version(&mut self) -> Result<Option<SchemaVersion>> {
        on_backend!(self, b => b.current_version())
    }

    /// The database's own consistency check: `["ok"]`, or what is wrong.
    pub fn integrity_check(&mut self) -> Result<Vec<String>> {
        on_backend!(self, b => b.integrity_check())
    }

    /// The query plan of the claim, one line per step (for tests that it is
    /// an index search); on SQLite followed by the plans of failing the
    /// jobs lost at their last attempt and of a batch of successes.
    pub fn explain_claim(&mut self) -> Result<Vec<String>> {
        on_backend!(self, b => b.explain_claim())
    }

    /// Adds the benchmark's commit floor to this database: a one-row table
    /// that [`Store::commit_floor`] updates.
    pub fn add_commit_floor(&mut self) -> Result<()> {
        on_backend!(self, b => b.add_commit_floor())
    }

    /// Times one commit of the benchmark's floor, the baseline's minimal
    /// commit (the one row updated, committed), on this store's own
    /// connection: timed in turns with the store's calls, it sees the disk
    /// as they do, and (on SQLite) leaves their pages cached as they were,
    /// where a commit from another connection would make the next call
    /// read its pages again.
    pub fn commit_floor(&mut self) -> Result<std::time::Duration> {
        on_backend!(self, b => b.commit_floor())
    }

    /// The column names of a table, in order (for schema tests).
    pub fn table_columns(&mut self, table: &str) -> Result<Vec<String>> {
        on_backend!(self, b => b.table_columns(table))
    }

    /// Each column of a table: name, declared type, nullable (for schema
    /// tests).
    pub fn column_types(&mut self, table: &str) -> Result<Vec<(String, String, bool)>> {
        on_backend!(self, b => b.column_types(table))
    }

    /// A value from the home's metadata.
    pub fn meta(&mut self, key: &str) -> Result<Option<String>> {
        on_backend!(self, b => b.meta(key))
    }

    /// A metadata value that is a UUID (one that does not parse is
    /// [`crate::Error::Corrupt`]).
    pub fn meta_uuid(&mut self, key: &str) -> Result<Option<Uuid>> {
        on_backend!(self, b => b.meta_uuid(key))
    }

    /// Sets a metadata value unless it is set; returns the value in force.
    pub fn meta_init(&mut self, key: &str, value: &str) -> Result<String> {
        on_backend!(self, b => b.meta_init(key, value))
    }

    /// Sets a metadata value, replacing the one in force.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        on_backend!(self, b => b.set_meta(key, value))
    }

    // --- objects: references, checks, sweeps ----------------------------

    /// Every source of a stored run that carries bytes, read from the
    /// stored bundles themselves (so runs not processed yet count), for
    /// every tenant; with `run`, that run's only. Ordered by digest.
    pub fn object_refs(&mut self, run: Option<(Uuid, Uuid)>) -> Result<Vec<ObjectRef>> {
        let shown = self.location.to_string();
        let mut refs = match run {
            Some(only) => {
                let bundles = on_backend!(self, b => b.stored_bundles(None, Some(only)))?;
                let mut refs = Vec::new();
                for bundle in &bundles {
                    refs.extend(bundle.object_refs(&shown)?);
                }
                refs
            }
            None => model::walk_refs(
                &shown,
                &mut |after| on_backend!(self, b => b.stored_bundles(after, None)),
            )?,
        };
        refs.sort_by(|a, b| (&a.sha256, a.run_id, a.idx).cmp(&(&b.sha256, b.run_id, b.idx)));
        Ok(refs)
    }

    /// Every run of every tenant, as (tenant, run), in key order.
    pub fn run_keys(&mut self) -> Result<Vec<(Uuid, Uuid)>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = on_backend!(self, b => b.stored_bundles(after, None))?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = Some((last.tenant_id, last.run_id));
            out.extend(page.iter().map(|b| (b.tenant_id, b.run_id)));
        }
    }

    /// Objects kept in the database, by digest, the first `limit` after
    /// `after` (paging).
    pub fn db_objects(
        &mut self,
        after: Option<&Sha256Hex>,
        limit: u32,
    ) -> Result<Vec<StoredObject>> {
        on_backend!(self, b => b.db_objects(after, limit))
    }

    /// The sizes of those of these objects that the database keeps.
    pub fn object_sizes(&mut self, shas: &[Sha256Hex]) -> Result<HashMap<Sha256Hex, u64>> {
        on_backend!(self, b => b.object_sizes(shas))
    }

    /// Removes (or, with `dry_run`, lists) the objects kept in the
    /// database that no stored run refers to, in one transaction: a run
    /// recorded meanwhile either committed first (its objects stay) or
    /// finds them gone and is refused ([`crate::Error::ObjectsGone`]).
    pub fn sweep_db_objects(&mut self, dry_run: bool) -> Result<Vec<StoredObject>> {
        on_backend!(self, b => b.sweep_db_objects(dry_run))
    }

    /// Removes (or, with `dry_run`, lists) search shard files that a
    /// process stopped while making them left unregistered beside the
    /// database, long enough ago that no maker can still be at work on them.
    /// None where there are no shards (PostgreSQL).
    pub fn sweep_leftover_shards(&mut self, dry_run: bool) -> Result<Vec<PathBuf>> {
        match &mut self.backend {
            Backend::Sqlite(b) => b.sweep_leftover_shards(dry_run),
            Backend::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// Records what checks of objects found, at `now`.
    pub fn record_checks(&mut self, checks: &[(Sha256Hex, bool)], now: Timestamp) -> Result<()> {
        on_backend!(self, b => b.record_checks(checks, now))
    }

    /// The last check of each of these objects that was ever checked.
    pub fn object_checks(&mut self, shas: &[Sha256Hex]) -> Result<HashMap<Sha256Hex, ObjectCheck>> {
        on_backend!(self, b => b.object_checks(shas))
    }

    /// Removes (or, with `dry_run`, lists) the runs of `tenant` accepted
    /// before `created_before` whose jobs have all finished, with those
    /// jobs, their history and their sources (and search index rows). Runs
    /// with a queued or running job are kept. Their objects stay until a
    /// sweep finds them unreferenced.
    pub fn prune_runs(
        &mut self,
        tenant: Uuid,
        created_before: Timestamp,
        dry_run: bool,
    ) -> Result<Vec<PrunedRun>> {
        on_backend!(self, b => b.prune_runs(tenant, created_before, dry_run))
    }

    /// Writes a consistent copy of the whole database to `dest` (a new
    /// file), taken in one read transaction while others keep writing.
    /// Only for a database in a file (SQLite): a server's database is
    /// copied with its own tools.
    pub fn copy_database_to(&mut self, dest: &Path) -> Result<()> {
        match &mut self.backend {
            Backend::Sqlite(b) => b.copy_to(dest),
            Backend::Postgres(_) => Err(crate::Error::InvalidArgument {
                what: "backup",
                message: "the database is on a PostgreSQL server, and every object with it: back it up with pg_dump (see the README)".to_owned(),
            }),
        }
    }

    /// Copies the database's search shards (SQLite: files beside it, see
    /// [`Store::index_apart`]) next to `dest_db`, a copy of the database
    /// made by [`Store::copy_database_to`] and already in place; returns
    /// the bytes copied (0 on PostgreSQL, which has none).
    pub fn copy_search_shards_next_to(&mut self, dest_db: &Path) -> Result<u64> {
        match &mut self.backend {
            Backend::Sqlite(b) => b.copy_shards_next_to(dest_db),
            Backend::Postgres(_) => Ok(0),
        }
    }

    // --- jobs -----------------------------------------------------------

    /// Enqueues one job.
    pub fn enqueue(&mut self, job: &NewJob, now: Timestamp) -> Result<Uuid> {
        on_backend!(self, b => b.enqueue(job, now))
    }

    /// Enqueues many jobs in one transaction; all or none.
    pub fn enqueue_many(&mut self, jobs: &[NewJob], now: Timestamp) -> Result<Vec<Uuid>> {
        on_backend!(self, b => b.enqueue_many(jobs, now))
    }

    /// Claims up to `n` jobs for `worker`: due queued jobs and running jobs
    /// whose lock expired, oldest first; a lost job at its last attempt is
    /// failed instead.
    pub fn claim(&mut self, n: u32, worker: &str, now: Timestamp) -> Result<Vec<Claim>> {
        on_backend!(self, b => b.claim(n, worker, now))
    }

    /// Refreshes the locks of live claims; returns how many still hold.
    pub fn heartbeat(&mut self, tokens: &[ClaimToken], now: Timestamp) -> Result<usize> {
        on_backend!(self, b => b.heartbeat(tokens, now))
    }

    /// Records one attempt's outcome, fenced by its claim.
    pub fn report(
        &mut self,
        token: &ClaimToken,
        outcome: &crate::Outcome,
        now: Timestamp,
    ) -> Result<Report> {
        let reports = self.report_many(&[(token.clone(), outcome.clone())], now)?;
        Ok(reports.into_iter().next().unwrap_or(Report::Stale))
    }

    /// Records many outcomes in one transaction, each fenced on its own.
    pub fn report_many(
        &mut self,
        reports: &[(ClaimToken, crate::Outcome)],
        now: Timestamp,
    ) -> Result<Vec<Report>> {
        let completions: Vec<Completion> = reports
            .iter()
            .map(|(t, o)| Completion::new(t.clone(), o.clone()))
            .collect();
        self.complete(&completions, now)
    }

    /// Records completions (with the sources of successful ones) in one
    /// transaction.
    pub fn complete(&mut self, completions: &[Completion], now: Timestamp) -> Result<Vec<Report>> {
        on_backend!(self, b => b.complete(completions, now))
    }

    /// One pool cycle in one transaction: record `completions`, then claim
    /// up to `n` jobs.
    pub fn cycle(
        &mut self,
        completions: &[Completion],
        n: u32,
        worker: &str,
        now: Timestamp,
    ) -> Result<(Vec<Report>, Vec<Claim>)> {
        on_backend!(self, b => b.cycle(completions, n, worker, now))
    }

    /// Gives started claims back at shutdown (see
    /// [`crate::state::RELEASE_ALLOWANCE`]).
    pub fn release(&mut self, tokens: &[ClaimToken], now: Timestamp) -> Result<Vec<Report>> {
        on_backend!(self, b => b.release(tokens, now))
    }

    /// Gives back claims whose handler never started, leaving no trace.
    pub fn release_unstarted(
        &mut self,
        tokens: &[ClaimToken],
        now: Timestamp,
    ) -> Result<Vec<Report>> {
        on_backend!(self, b => b.release_unstarted(tokens, now))
    }

    /// Worker names holding running jobs.
    pub fn running_workers(&mut self) -> Result<Vec<String>> {
        on_backend!(self, b => b.running_workers())
    }

    /// Rescues at once the running jobs of workers that are provably gone.
    pub fn rescue_workers(
        &mut self,
        workers: &[String],
        now: Timestamp,
    ) -> Result<Vec<(Uuid, JobStatus)>> {
        on_backend!(self, b => b.rescue_workers(workers, now))
    }

    /// Cancels a queued or failed job of `tenant`.
    pub fn cancel(&mut self, tenant: Uuid, id: Uuid, now: Timestamp) -> Result<Job> {
        on_backend!(self, b => b.cancel(tenant, id, now))
    }

    /// Queues a failed or cancelled job of `tenant` again, attempts reset:
    /// due at once, or scheduled for `at`.
    pub fn retry(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        now: Timestamp,
        at: Option<Timestamp>,
    ) -> Result<Job> {
        on_backend!(self, b => b.retry(tenant, id, now, at))
    }

    /// Pauses claims of `job_type` (of every type when `None`) in every
    /// process working this database, from their next claim on; running
    /// jobs finish. False when it was paused already.
    pub fn pause(&mut self, job_type: Option<&str>, now: Timestamp) -> Result<bool> {
        on_backend!(self, b => b.pause(job_type, now))
    }

    /// Lifts the pause of `job_type`; with `None`, every pause. Returns the
    /// pauses lifted (none: it was not paused).
    pub fn resume(&mut self, job_type: Option<&str>) -> Result<Vec<Paused>> {
        on_backend!(self, b => b.resume(job_type))
    }

    /// The pauses in force, oldest first.
    pub fn paused(&mut self) -> Result<Vec<Paused>> {
        on_backend!(self, b => b.paused())
    }

    /// One job of `tenant`.
    pub fn job(&mut self, tenant: Uuid, id: Uuid) -> Result<Job> {
        on_backend!(self, b => b.job(tenant, id))
    }

    /// A job's attempt history, oldest first.
    pub fn attempts(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<Attempt>> {
        on_backend!(self, b => b.attempts(tenant, id))
    }

    /// Manual actions on a job, oldest first.
    pub fn events(&mut self, tenant: Uuid, id: Uuid) -> Result<Vec<JobEvent>> {
        on_backend!(self, b => b.events(tenant, id))
    }

    /// Records a manual action on a job in its history.
    pub fn note_event(
        &mut self,
        tenant: Uuid,
        id: Uuid,
        action: &'static str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        on_backend!(self, b => b.note_event(tenant, id, action, detail, now))
    }

    /// Jobs of `tenant` matching `filter`, newest first.
    pub fn jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<Vec<Job>> {
        on_backend!(self, b => b.jobs(tenant, filter))
    }

    /// How many jobs of `tenant` match `filter` (its limit and page aside).
    pub fn count_jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<u64> {
        on_backend!(self, b => b.count_jobs(tenant, filter))
    }

    /// Jobs of `tenant` that finished (succeeded or failed for good), and
    /// attempts that failed and wait for a retry, per minute since `since`
    /// (minutes with none left out). Reads every job row of the tenant:
    /// callers cache it.
    pub fn throughput(&mut self, tenant: Uuid, since: Timestamp) -> Result<Vec<MinuteCount>> {
        on_backend!(self, b => b.throughput(tenant, since))
    }

    /// The plan of a job listing, one line per step (SQLite; empty on a
    /// database server), for tests that check it walks an index.
    pub fn explain_jobs(&mut self, tenant: Uuid, filter: &JobFilter) -> Result<Vec<String>> {
        match &mut self.backend {
            Backend::Sqlite(b) => b.explain_jobs(tenant, filter),
            Backend::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// Counts for `bundleq status`.
    pub fn stats(&mut self, tenant: Uuid, now: Timestamp) -> Result<Stats> {
        on_backend!(self, b => b.stats(tenant, now))
    }

    /// Jobs per status over all tenants.
    pub fn counts_all(&mut self) -> Result<BTreeMap<JobStatus, u64>> {
        on_backend!(self, b => b.counts_all())
    }

    /// When the next queued job (of any tenant) is due, if any is queued.
    pub fn next_due(&mut self, now: Timestamp) -> Result<Option<Timestamp>> {
        on_backend!(self, b => b.next_due(now))
    }

    /// The oldest lock of any running job.
    pub fn oldest_lock(&mut self) -> Result<Option<Timestamp>> {
        on_backend!(self, b => b.oldest_lock())
    }

    /// Deletes (or, with `dry_run`, lists) finished jobs of `tenant`.
    pub fn prune(
        &mut self,
        tenant: Uuid,
        filter: &PruneFilter,
        dry_run: bool,
    ) -> Result<Vec<Pruned>> {
        on_backend!(self, b => b.prune(tenant, filter, dry_run))
    }

    // --- runs, sources, tenants, serves, ids -----------------------------

    /// Records runs and enqueues their jobs in one transaction. The same
    /// bytes again for a tenant are a duplicate; another bundle under a run
    /// id already taken is a conflict; an unknown tenant is an error.
    pub fn insert_runs(&mut self, runs: &[NewRun], now: Timestamp) -> Result<Vec<RunInsert>> {
        on_backend!(self, b => b.insert_runs(runs, now))
    }

    /// The bytes of an object kept in the database, if it is there (bigger
    /// objects, and those of earlier releases, are files: see `objects`).
    pub fn object(&mut self, sha256: &Sha256Hex) -> Result<Option<Vec<u8>>> {
        on_backend!(self, b => b.object(sha256))
    }

    /// Runs of `tenant`, newest first.
    pub fn runs(&mut self, tenant: Uuid, limit: Option<u32>) -> Result<Vec<RunSummary>> {
        on_backend!(self, b => b.runs(tenant, None, limit))
    }

    /// The runs of `tenant` older than `before` (the last run of the page
    /// before: its `created_at` and id), newest first, at most `limit`.
    pub fn runs_before(
        &mut self,
        tenant: Uuid,
        before: (Timestamp, Uuid),
        limit: Option<u32>,
    ) -> Result<Vec<RunSummary>> {
        on_backend!(self, b => b.runs(tenant, Some(before), limit))
    }

    /// How many runs `tenant` has.
    pub fn count_runs(&mut self, tenant: Uuid) -> Result<u64> {
        on_backend!(self, b => b.count_runs(tenant))
    }

    /// How many sources the handlers of `tenant`'s runs recorded.
    pub fn count_sources(&mut self, tenant: Uuid) -> Result<u64> {
        on_backend!(self, b => b.count_sources(tenant))
    }

    /// The bundle JSON of one run, as received.
    pub fn run_bundle_json(&mut self, tenant: Uuid, id: Uuid) -> Result<String> {
        on_backend!(self, b => b.run_bundle_json(tenant, id))
    }

    /// One run of `tenant` and its bundle JSON as received (rebuilt once,
    /// not parsed).
    pub fn run_with_bundle(&mut self, tenant: Uuid, id: Uuid) -> Result<(RunSummary, String)> {
        on_backend!(self, b => b.stored_run(tenant, id))
    }

    /// One run of `tenant`, with its bundle.
    pub fn run(&mut self, tenant: Uuid, id: Uuid) -> Result<Run> {
        on_backend!(self, b => b.run(tenant, id))
    }

    /// Indexes, on the calling thread, the text of every source of
    /// `run_id` whose bytes are more than `min_size`, where the backend
    /// indexes apart from its one writer (SQLite: in a search shard, a file
    /// beside the database that this thread alone is writing, so workers
    /// index big texts in parallel), and marks those sources
    /// `indexed_apart`: recording them then indexes nothing. A no-op where
    /// writers are many (PostgreSQL indexes each source with its row).
    pub fn index_apart(
        &mut self,
        tenant: Uuid,
        run_id: Uuid,
        sources: &mut [NewSource],
        min_size: u64,
    ) -> Result<()> {
        match &mut self.backend {
            Backend::Sqlite(b) => b.index_apart(tenant, run_id, sources, min_size),
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Sources of `tenant` matching `query` (see [`search`]), best first,
    /// at most `limit`, and how many match in all.
    pub fn search(
        &mut self,
        tenant: Uuid,
        query: &str,
        run: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<SearchHit>, u64)> {
        on_backend!(self, b => b.search(tenant, query, run, limit))
    }

    /// Every tenant, by name.
    pub fn tenants(&mut self) -> Result<Vec<Tenant>> {
        on_backend!(self, b => b.tenants())
    }

    /// The tenant named by `key` (its id or its name).
    pub fn tenant(&mut self, key: &str) -> Result<Tenant> {
        on_backend!(self, b => b.tenant(key))
    }

    /// Creates a tenant.
    pub fn create_tenant(
        &mut self,
        name: &str,
        id: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Tenant> {
        on_backend!(self, b => b.create_tenant(name, id, now))
    }

    /// Makes sure tenant `id` exists (named `name` when created).
    pub fn ensure_tenant(&mut self, id: Uuid, name: &str, now: Timestamp) -> Result<()> {
        on_backend!(self, b => b.ensure_tenant(id, name, now))
    }

    /// Writes (or refreshes) a serve's row.
    pub fn report_serve(&mut self, row: &ServeRow) -> Result<()> {
        on_backend!(self, b => b.report_serve(row))
    }

    /// Removes the rows of these workers.
    pub fn forget_serves(&mut self, workers: &[String]) -> Result<()> {
        on_backend!(self, b => b.forget_serves(workers))
    }

    /// Every serve row, most recently heard from first.
    pub fn serves(&mut self) -> Result<Vec<ServeRow>> {
        on_backend!(self, b => b.serves())
    }

    /// The short form of each id.
    pub fn short_ids(
        &mut self,
        kind: IdKind,
        tenant: Uuid,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>> {
        on_backend!(self, b => b.short_ids(kind, tenant, ids))
    }

    /// The one id of `tenant` starting with `prefix`.
    pub fn resolve(&mut self, kind: IdKind, tenant: Uuid, prefix: &str) -> Result<Uuid> {
        on_backend!(self, b => b.resolve(kind, tenant, prefix))
    }
}

/// The benchmark's plain-statement baseline, run by the backend of
/// `location` in a new database there: `n` jobs, and `samples` minimal
/// commits.
///
/// On PostgreSQL the schema at `location` must exist and be migrated
/// (`Store::create`), and `claimers` connections claim at once; SQLite has
/// one writer and ignores it.
pub fn run_baseline(
    location: &Location,
    synchronous: Synchronous,
    n: usize,
    claimers: usize,
    samples: usize,
) -> Result<BaselineFigures> {
    match location {
        Location::Sqlite(p) => sqlite::run_baseline(p, synchronous, n, samples),
        Location::Postgres(p) => postgres::run_baseline(p, n, claimers, samples),
    }
}

/// A scratch database for a benchmark on a database server: a new schema
/// in the database at `location`, dropped with everything in it when the
/// returned guard is dropped. `None` for SQLite (a temp folder does).
pub fn scratch(location: &Location) -> Result<Option<(Location, Scratch)>> {
    match location {
        Location::Sqlite(_) => Ok(None),
        Location::Postgres(p) => {
            let s = Scratch::new(p)?;
            Ok(Some((Location::Postgres(s.location()), s)))
        }
    }
}

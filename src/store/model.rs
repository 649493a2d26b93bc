//! The storage layer's vocabulary, the same for every backend: what is
//! written (`NewJob`, `NewRun`, `Completion`…), what is read back (`Job`,
//! `Run`, `Stats`…), the options a store is opened with, and the
//! [`Transition`]s a store reports after a commit so that callers (the
//! pool, the CLI) can say what happened in the seed's words. Nothing here
//! knows SQL.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::digest::Sha256Hex;
use crate::state::{Backoff, JobStatus, Outcome};
use crate::timestamp::Timestamp;

/// A job to enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// Tenant that owns the job.
    pub tenant_id: Uuid,
    /// The research run the job works on.
    pub run_id: Uuid,
    /// Selects the handler.
    pub job_type: String,
    /// Handed to the handler.
    pub payload: serde_json::Value,
    /// Attempts allowed; the store's default when `None`.
    pub max_attempts: Option<u32>,
    /// Not due before this time (queued with `retry_at` set and no
    /// attempt made); due at once when `None`.
    pub not_before: Option<Timestamp>,
}

/// One `research_jobs` row. Serialises with the column names as keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    /// Job id (UUIDv7).
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The run it works on.
    pub run_id: Uuid,
    /// Selects the handler.
    pub job_type: String,
    /// Where it is in the state machine.
    pub status: JobStatus,
    /// Claims so far (counted at claim).
    pub attempts: u32,
    /// Claims allowed.
    pub max_attempts: u32,
    /// When a queued job that failed becomes due again.
    pub retry_at: Option<Timestamp>,
    /// When the current claim was made or last heartbeat.
    pub locked_at: Option<Timestamp>,
    /// Who holds the current claim.
    pub locked_by: Option<String>,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// The handler's input.
    pub payload_json: serde_json::Value,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When its row last changed state.
    pub updated_at: Timestamp,
}

/// One row of a job's attempt history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attempt {
    /// Attempt row id.
    pub id: Uuid,
    /// The job.
    pub job_id: Uuid,
    /// 1 for the first claim.
    pub attempt: u32,
    /// Who claimed it.
    pub worker: String,
    /// Claim time.
    pub started_at: Timestamp,
    /// When it ended; `None` while it runs.
    pub finished_at: Option<Timestamp>,
    /// `succeeded`, `retry`, `failed`, `lost` or `released`.
    pub outcome: Option<String>,
    /// The error it ended with.
    pub error: Option<String>,
    /// The tail of what the handler wrote to stdout.
    pub output: Option<String>,
}

/// A manual action on a job, for its history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobEvent {
    /// When it happened.
    pub at: Timestamp,
    /// `retry`, `cancel` or `release`.
    pub action: String,
    /// What it did.
    pub detail: Option<String>,
}

/// A job `prune` deleted (or, with a dry run, would delete).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pruned {
    /// Job id.
    pub id: Uuid,
    /// Its finished state.
    pub status: JobStatus,
    /// Its type.
    pub job_type: String,
    /// When it finished.
    pub updated_at: Timestamp,
}

/// The proof of one claim, which a worker presents with every report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClaimToken {
    /// The job.
    pub job_id: Uuid,
    /// The claiming worker (`locked_by`).
    pub worker: String,
    /// `attempts` after the claim.
    pub attempt: u32,
    /// `max_attempts` of the job.
    pub max_attempts: u32,
    /// The job's type (its backoff may be its own).
    pub job_type: String,
    /// The claim's id, new at every claim: reports are fenced by it, and
    /// it becomes the id of the attempt's history row.
    pub attempt_id: Uuid,
}

/// A claimed job and its token.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The job as it is after the claim.
    pub job: Job,
    /// What the worker presents when it reports.
    pub token: ClaimToken,
    /// The worker that lost this job's previous claim, if this was a rescue.
    pub rescued_from: Option<String>,
}

/// A worker's report on one claim: the outcome, and what a successful
/// handler wants recorded in the same transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The claim reported on.
    pub token: ClaimToken,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// Sources to record if (and only if) the job is marked succeeded.
    pub sources: Option<RunSources>,
    /// What the handler printed (the tail), kept with the attempt.
    pub output: Option<String>,
    /// The next steps of the job's run: job types enqueued for the same
    /// run (with the same payload) in the transaction that marks the job
    /// succeeded, each unless the run already has a job of that type.
    pub then: Vec<String>,
}

impl Completion {
    /// A completion with no side effects.
    pub fn new(token: ClaimToken, outcome: Outcome) -> Completion {
        Completion {
            token,
            outcome,
            sources: None,
            output: None,
            then: Vec::new(),
        }
    }
}

/// What became of a worker's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The report was applied; the job is now in this state.
    Applied(JobStatus),
    /// The claim no longer holds (rescued, cancelled or pruned): nothing
    /// changed.
    Stale,
}

/// Which jobs to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this job type.
    pub job_type: Option<String>,
    /// Only jobs of this run.
    pub run_id: Option<Uuid>,
    /// Only jobs whose payload or last error contain this text (as is,
    /// case-sensitive).
    pub text: Option<String>,
    /// Only jobs older than this one (its `created_at` and id): the next
    /// page after a page that ended with it.
    pub before: Option<(Timestamp, Uuid)>,
    /// At most this many (newest first); all when `None`.
    pub limit: Option<u32>,
}

/// Jobs that finished in one minute, for the dashboard's chart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: Timestamp,
    /// Jobs that succeeded in it.
    pub succeeded: u64,
    /// Jobs that failed for good in it.
    pub failed: u64,
    /// Attempts that failed and wait for a retry.
    pub retried: u64,
}

/// Which finished jobs to delete.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneFilter {
    /// Jobs whose last change is older than this.
    pub finished_before: Timestamp,
    /// Only these finished states (all finished states when empty).
    pub statuses: Vec<JobStatus>,
}

/// Counts for `bundleq status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Jobs per status (every status present, zero included).
    pub counts: BTreeMap<JobStatus, u64>,
    /// Queued jobs due now.
    pub ready: u64,
    /// Queued jobs not due yet that never ran: scheduled for later
    /// (`submit --not-before`, `job retry --at`).
    pub scheduled: u64,
    /// Queued jobs not due yet after a failed attempt: waiting out a
    /// backoff.
    pub retrying: u64,
    /// Per job type: `ready`, `scheduled`, `running`, `succeeded`,
    /// `failed`, `cancelled` (only those that are not zero).
    pub by_type: BTreeMap<String, BTreeMap<String, u64>>,
    /// `created_at` of the oldest queued job.
    pub oldest_queued: Option<Timestamp>,
    /// The earliest future `retry_at`.
    pub next_retry: Option<Timestamp>,
}

/// A run to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The bundle's `run_id`.
    pub id: Uuid,
    /// The bundle's title.
    pub title: String,
    /// sha256 of the bundle's bytes, lowercase hex.
    pub bundle_sha256: String,
    /// The bundle JSON as received.
    pub bundle_json: String,
    /// `submit`, `inbox` or `api`.
    pub origin: &'static str,
    /// The file name it arrived under, if any.
    pub origin_name: Option<String>,
    /// The inbox claim (batch) that records it, for crash recovery.
    pub inbox_claim: Option<String>,
    /// The job enqueued with it (its type, payload and attempts).
    pub job: RunJob,
    /// Source bytes kept in the database, stored in the same transaction
    /// when the run is new (never for a duplicate or a conflict).
    pub objects: Vec<NewObject>,
    /// Digests of the run's objects stored before this transaction (files,
    /// or on a database server its own transactions). A database that
    /// keeps them checks, in the run's transaction, that they are still
    /// there; a run whose object a concurrent sweep removed is refused
    /// ([`crate::Error::ObjectsGone`]) rather than recorded without it.
    pub stored: Vec<Sha256Hex>,
}

impl NewRun {
    /// A new run recorded through the library (origin `api`): `bundle_json`
    /// under its own digest, with a `job_type` job of empty payload and no
    /// objects.
    pub fn from_api(tenant_id: Uuid, title: String, bundle_json: String, job_type: &str) -> NewRun {
        NewRun {
            tenant_id,
            id: Uuid::now_v7(),
            title,
            bundle_sha256: Sha256Hex::of(bundle_json.as_bytes()).to_string(),
            bundle_json,
            origin: "api",
            origin_name: None,
            inbox_claim: None,
            job: RunJob {
                job_type: job_type.to_owned(),
                payload: serde_json::json!({}),
                max_attempts: None,
                not_before: None,
            },
            objects: Vec::new(),
            stored: Vec::new(),
        }
    }
}

/// One source of a stored run that carries bytes (inline `content` or a
/// `path` in a bundle folder): the run refers to the object with its
/// digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// The run's tenant.
    pub tenant_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The source's position in the bundle's `sources`.
    pub idx: u32,
    /// The source's uri.
    pub uri: String,
    /// The digest of its bytes, which names the object.
    pub sha256: Sha256Hex,
}

/// An object kept in the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredObject {
    /// Its digest.
    pub sha256: Sha256Hex,
    /// Its size in bytes.
    pub size: u64,
}

impl StoredObject {
    /// An object's row as a database lists it: its digest as hex, checked.
    pub(crate) fn from_row(hex: &str, size: i64) -> crate::Result<StoredObject> {
        let sha256 = Sha256Hex::parse(hex).ok_or_else(|| crate::Error::Db {
            action: "list objects",
            source: format!("an object is keyed by {hex:?}, not a sha256").into(),
        })?;
        Ok(StoredObject {
            sha256,
            size: u64::try_from(size).unwrap_or(0),
        })
    }
}

/// What the last check of an object found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectCheck {
    /// When its bytes were last read and hashed.
    pub checked_at: Timestamp,
    /// They matched the digest.
    pub ok: bool,
}

/// A run removed by `prune --runs` (or that would be, with `--dry-run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrunedRun {
    /// The run.
    pub id: Uuid,
    /// Its title.
    pub title: String,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// How many (finished) jobs went with it.
    pub jobs: u64,
}

/// Source bytes to keep in the database, under their digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewObject {
    /// sha256 of `bytes`.
    pub sha256: Sha256Hex,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// They are the text of an inline source (`content`) of the run's
    /// bundle, which the store may then keep once.
    pub inline: bool,
}

/// The job a new run is recorded with.
#[derive(Clone, Debug, PartialEq)]
pub struct RunJob {
    /// Selects the handler.
    pub job_type: String,
    /// Handed to the handler.
    pub payload: serde_json::Value,
    /// Attempts allowed; the store's default when `None`.
    pub max_attempts: Option<u32>,
    /// Not due before this time (scheduled); due at once when `None`.
    pub not_before: Option<Timestamp>,
}

/// What recording a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunInsert {
    /// A new run was recorded and its job enqueued.
    Inserted {
        /// The job.
        job_id: Uuid,
    },
    /// The same bytes were already accepted for this tenant as this run.
    Duplicate {
        /// The run they were accepted as.
        run_id: Uuid,
        /// The inbox claim that recorded that run, if one did.
        inbox_claim: Option<String>,
        /// The name it arrived under.
        origin_name: Option<String>,
    },
    /// This run id is taken in this tenant by a bundle with other bytes.
    Conflict {
        /// sha256 of the bundle already recorded under this run id.
        existing_sha256: String,
    },
}

/// A run without its bundle, for listings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Title from the bundle.
    pub title: String,
    /// sha256 of the bundle bytes.
    pub bundle_sha256: String,
    /// How it arrived.
    pub origin: String,
    /// Under what name.
    pub origin_name: Option<String>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A run with its bundle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    /// Everything the listing has.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// The bundle as received.
    pub bundle_json: serde_json::Value,
}

/// One source to record for a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSource {
    /// Position in the bundle's `sources`.
    pub idx: u32,
    /// Where it came from.
    pub uri: String,
    /// Its title.
    pub title: Option<String>,
    /// Digest of its bytes.
    pub sha256: String,
    /// Its media type.
    pub media_type: Option<String>,
    /// When it was retrieved.
    pub retrieved_at: Option<Timestamp>,
    /// Size of the bytes kept under `objects/`, if any.
    pub size: Option<u64>,
    /// Text to index, if the bytes are text.
    pub text: Option<String>,
    /// The search shard that already holds this source's text and index
    /// row ([`crate::Store::index_apart`]); recording the source then
    /// indexes nothing. `None` for everything else.
    pub indexed_apart: Option<u32>,
}

/// All sources of one run, replacing whatever was recorded before (so a
/// job that runs again records them once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSources {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// Its sources.
    pub sources: Vec<NewSource>,
}

/// A search result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchHit {
    /// The run the source belongs to.
    pub run_id: Uuid,
    /// The source's position in its bundle.
    pub idx: u32,
    /// The source's uri.
    pub uri: String,
    /// The source's title.
    pub title: Option<String>,
    /// Matching text with the hits in `[` `]`.
    pub snippet: String,
    /// The title of the run.
    pub run_title: String,
    /// FTS5 bm25 rank: lower is better (an internal, not in `--json`).
    #[serde(skip)]
    pub rank: f64,
}

/// One tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Its id, used in rows, bundles and inbox folder names.
    pub id: Uuid,
    /// A short name people use instead of the id (`--tenant NAME`).
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A tenant name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`,
/// starting with a letter or digit, and not itself a UUID.
pub fn valid_tenant_name(name: &str) -> std::result::Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(1..=64).contains(&name.len()) || !ok_chars || !first_ok {
        return Err(format!(
            "invalid tenant name {name:?}: use 1-64 characters of a-z, 0-9, '_', '-', '.', starting with a letter or digit"
        ));
    }
    if Uuid::try_parse(name).is_ok() {
        return Err(format!(
            "invalid tenant name {name:?}: a name must not look like a UUID (give the id with --id)"
        ));
    }
    Ok(())
}

/// One serve process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServeRow {
    /// Its worker id (`locked_by` of its jobs).
    pub worker: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Worker threads.
    pub workers: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last reported.
    pub heartbeat_at: Timestamp,
    /// Jobs whose handler was running then.
    pub running: u32,
    /// Jobs claimed ahead for workers that were still busy then.
    pub claimed_ahead: u32,
}

/// Errors stored in `last_error` and attempt rows are cut to this many
/// bytes (at a character boundary), by every backend.
pub(crate) const MAX_ERROR_BYTES: usize = 8 * 1024;

/// `message` cut to [`MAX_ERROR_BYTES`].
pub(crate) fn truncate_error(message: &str) -> &str {
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl Claim {
    /// The claim of `job` (as it is after the claim) by `worker`, whose
    /// claim id is `attempt_id`.
    pub(crate) fn of(
        job: Job,
        worker: &str,
        attempt_id: Uuid,
        rescued_from: Option<String>,
    ) -> Claim {
        Claim {
            token: ClaimToken {
                job_id: job.id,
                worker: worker.to_owned(),
                attempt: job.attempts,
                max_attempts: job.max_attempts,
                job_type: job.job_type.clone(),
                attempt_id,
            },
            job,
            rescued_from,
        }
    }
}

impl PruneFilter {
    /// The states whose jobs it prunes: those asked for, all finished ones
    /// when none was; an unfinished state is refused.
    pub(crate) fn finished_statuses(&self) -> crate::Result<Vec<&'static str>> {
        if let Some(s) = self.statuses.iter().find(|s| !s.is_finished()) {
            return Err(crate::Error::InvalidArgument {
                what: "status",
                message: format!("only finished jobs can be pruned, not {s} ones"),
            });
        }
        Ok(if self.statuses.is_empty() {
            JobStatus::ALL
                .iter()
                .filter(|s| s.is_finished())
                .map(|s| s.as_str())
                .collect()
        } else {
            self.statuses.iter().map(|s| s.as_str()).collect()
        })
    }
}

/// How a user's retry or cancel is recorded among a job's events.
pub(crate) fn user_action_detail(
    from: JobStatus,
    action: &str,
    at: Option<crate::timestamp::Timestamp>,
) -> String {
    format!(
        "{from} -> {}{}",
        if action == "cancel" {
            "cancelled"
        } else {
            "queued"
        },
        at.map(|t| format!(", not before {t}")).unwrap_or_default()
    )
}

/// The id of a tenant about to be created as `name`: `id`, or a new UUIDv7;
/// a bad name or the nil UUID is refused.
pub(crate) fn new_tenant_id(name: &str, id: Option<Uuid>) -> crate::Result<Uuid> {
    valid_tenant_name(name).map_err(|message| crate::Error::InvalidArgument {
        what: "tenant name",
        message,
    })?;
    let id = id.unwrap_or_else(Uuid::now_v7);
    if id.is_nil() {
        return Err(crate::Error::InvalidArgument {
            what: "tenant id",
            message: "the nil UUID cannot be a tenant".to_owned(),
        });
    }
    Ok(id)
}

/// A new job id: UUIDv7 with random bits after the millisecond (no
/// counter), so ids made in the same millisecond part after 15 characters
/// and short ids stay short; the timestamp prefix keeps the B-tree compact.
pub fn new_job_id() -> Uuid {
    Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
}

/// Shortest prefix shown.
pub const MIN_SHORT: usize = 8;

/// Shortest prefix accepted.
pub const MIN_PREFIX: usize = 4;

/// The kind of id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A job (`research_jobs.id`, unique across tenants).
    Job,
    /// A run (`research_runs.id`, unique within a tenant).
    Run,
}

impl IdKind {
    /// "job" or "run", for messages.
    pub fn noun(self) -> &'static str {
        match self {
            IdKind::Job => "job",
            IdKind::Run => "run",
        }
    }

    /// `prefix` as a backend looks it up (trimmed, lowercase), or why it
    /// cannot name an id.
    pub(crate) fn check_prefix(self, prefix: &str) -> crate::Result<String> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.len() < MIN_PREFIX
            || p.len() > 36
            || !p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(crate::Error::InvalidArgument {
                what: "id",
                message: format!(
                    "{prefix:?} is not a {} id or a prefix of one ({MIN_PREFIX} to 36 characters of 0-9, a-f and '-')",
                    self.noun()
                ),
            });
        }
        Ok(p)
    }

    /// What resolving `prefix` found: the one id, or an error saying none
    /// or several (`found` are the first few matches, in order).
    pub(crate) fn resolved(
        self,
        prefix: &str,
        tenant: Uuid,
        found: &[String],
    ) -> crate::Result<String> {
        match found {
            [] => Err(match self {
                IdKind::Job => crate::Error::JobNotFound {
                    id: prefix.to_owned(),
                    tenant: tenant.to_string(),
                },
                IdKind::Run => crate::Error::RunNotFound {
                    id: prefix.to_owned(),
                    tenant: tenant.to_string(),
                },
            }),
            [one] => Ok(one.clone()),
            many => Err(crate::Error::InvalidArgument {
                what: "id",
                message: format!(
                    "{prefix:?} names more than one {}: {}{}; give more characters",
                    self.noun(),
                    many.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                    if many.len() > 5 { ", …" } else { "" }
                ),
            }),
        }
    }
}

/// The short form of `id`: one character more than it shares with its
/// nearest neighbours, at least [`MIN_SHORT`].
pub(crate) fn short_form(id: &str, neighbours: &[&str]) -> String {
    let longest = neighbours
        .iter()
        .map(|o| {
            id.bytes()
                .zip(o.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    let len = (longest + 1).max(MIN_SHORT).min(id.len());
    id[..len].to_owned()
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
    /// What differs for some job types (`[handlers.X]`): attempts,
    /// backoff, and how many of its jobs may run at once.
    pub types: BTreeMap<String, TypePolicy>,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            lock_timeout: Duration::from_secs(30 * 60),
            backoff: Backoff::default(),
            max_attempts: 3,
            types: BTreeMap::new(),
        }
    }
}

impl QueuePolicy {
    /// `max_attempts` of a new job of `job_type` that names none.
    pub fn max_attempts_for(&self, job_type: &str) -> u32 {
        self.types
            .get(job_type)
            .and_then(|t| t.max_attempts)
            .unwrap_or(self.max_attempts)
    }

    /// The backoff after a failed attempt of a job of `job_type`.
    pub fn backoff_for(&self, job_type: &str) -> &Backoff {
        self.types
            .get(job_type)
            .and_then(|t| t.backoff.as_ref())
            .unwrap_or(&self.backoff)
    }

    /// The job types with a concurrency cap, and their caps.
    pub fn caps(&self) -> impl Iterator<Item = (&str, u32)> {
        self.types
            .iter()
            .filter_map(|(name, t)| t.concurrency.map(|c| (name.as_str(), c)))
    }
}

/// The rules of one job type that differ from the queue's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypePolicy {
    /// Attempts allowed to its new jobs.
    pub max_attempts: Option<u32>,
    /// Delays between its attempts.
    pub backoff: Option<Backoff>,
    /// At most this many of its jobs run at once, across every process
    /// working the database (enforced by the claim).
    pub concurrency: Option<u32>,
}

/// A job type whose claims are paused (`bundleq pause`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Paused {
    /// The job type; `None` for every type (`pause --all`).
    pub job_type: Option<String>,
    /// Since when.
    pub since: Timestamp,
}

/// How to open a store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOptions {
    /// Durability of each commit.
    pub synchronous: Synchronous,
    /// How long a write waits for another process's transaction before it
    /// gives up with [`crate::Error::Busy`].
    pub busy_deadline: Duration,
    /// The state machine's parameters.
    pub policy: QueuePolicy,
    /// A database server (PostgreSQL) decides claims, locks and retries by
    /// its own clock, so that hosts whose clocks disagree cannot steal or
    /// strand each other's jobs. True makes it use the `now` its caller
    /// passes instead (tests that drive time by hand). SQLite, on one
    /// machine, always uses the caller's.
    pub caller_clock: bool,
    /// How much memory SQLite may keep of the database's pages, per
    /// connection, in KiB (PostgreSQL ignores it). A process pays for every
    /// KiB of cache it fills, in page faults, once: the default
    /// ([`PAGE_CACHE_KIB`]) suits a process that runs a while; a short
    /// command that reads a lot once (`search` over a million sources) is
    /// faster with [`BRIEF_PAGE_CACHE_KIB`].
    pub page_cache_kib: u32,
}

/// The default [`StoreOptions::page_cache_kib`]: 16 MiB.
pub const PAGE_CACHE_KIB: u32 = 16 * 1024;

/// [`StoreOptions::page_cache_kib`] for a short command that only reads:
/// 2 MiB, SQLite's own default.
pub const BRIEF_PAGE_CACHE_KIB: u32 = 2 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous: Synchronous::Full,
            busy_deadline: Duration::from_secs(60),
            policy: QueuePolicy::default(),
            caller_clock: false,
            page_cache_kib: PAGE_CACHE_KIB,
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

impl SchemaVersion {
    /// An error when this schema is newer than `latest`, the newest this
    /// release knows: the database at `place` was written by a newer
    /// release, whose records this one could misread or write without what
    /// they need.
    pub(crate) fn refuse_newer(&self, latest: i64, place: &str) -> crate::Result<()> {
        if self.version <= latest {
            return Ok(());
        }
        Err(crate::Error::InvalidArgument {
            what: "database",
            message: format!(
                "{place} was written by a newer release of bundleq (schema V{} {}; this one knows up to V{latest}): use that release or a later one",
                self.version, self.name
            ),
        })
    }
}

/// What the baseline reached.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BaselineFigures {
    /// Jobs enqueued per second (1,000 per transaction).
    pub enqueue_per_s: f64,
    /// Jobs claimed and completed per second (100 per transaction each).
    pub claim_complete_per_s: f64,
    /// N divided by the whole time.
    pub lifecycle_per_s: f64,
    /// Median time of the cheapest durable write: a transaction updating
    /// one row of a one-row table, committed (the floor under any claim,
    /// which is a committed transaction too), microseconds.
    pub commit_p50_us: f64,
}

/// A state change a store made and committed, for the caller to report
/// (the store itself says nothing: see `worker::log_transitions`).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The job.
    pub job_id: Uuid,
    /// What happened to it.
    pub kind: TransitionKind,
}

/// What happened to a job.
#[derive(Clone, Debug, PartialEq)]
pub enum TransitionKind {
    /// Its handler succeeded.
    Succeeded {
        /// The attempt.
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
    },
    /// The attempt failed and the job waits out a backoff.
    WillRetry {
        /// The attempt.
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
        /// The wait.
        delay: Duration,
        /// When it is due again.
        retry_at: Timestamp,
        /// The error.
        error: String,
    },
    /// The job failed for good.
    Failed {
        /// Attempts it had.
        attempts: u32,
        /// Why.
        error: String,
    },
    /// A running job whose lock expired was claimed again.
    Rescued {
        /// The worker that lost it.
        from: String,
        /// The new attempt.
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
    },
    /// A running job of a worker proved gone was queued again at once.
    RescuedAtOnce {
        /// Why (the worker and the attempt it died in).
        error: String,
        /// The lost attempt (it counts).
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
    },
    /// A report whose claim no longer held changed nothing.
    Stale {
        /// The worker that reported.
        worker: String,
        /// Its attempt.
        attempt: u32,
    },
    /// A claim was given back at shutdown.
    Released {
        /// What became of the attempt.
        note: String,
        /// True when the interrupted attempt counts against `max_attempts`
        /// (its free interruptions are used up).
        counts: bool,
    },
    /// A user retried or cancelled the job.
    ByUser {
        /// `retry` or `cancel`.
        action: &'static str,
        /// Before.
        from: JobStatus,
        /// After.
        to: JobStatus,
    },
    /// The next step of a run was queued when the step before it
    /// succeeded (the transition's job is the new one).
    StepQueued {
        /// Its job type.
        job_type: String,
        /// The run.
        run_id: Uuid,
        /// The job whose success queued it.
        after: Uuid,
    },
}

/// A run's bundle as the database keeps it: compact JSON and its holes
/// (see `store::compact`).
#[derive(Clone, Debug)]
pub(crate) struct StoredBundle {
    /// The run's tenant.
    pub tenant_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The stored (compact) JSON.
    pub json: String,
    /// Where inline texts were cut out, if any were.
    pub holes: Option<String>,
}

impl StoredBundle {
    /// The sources of this run that carry bytes; a stored bundle that does
    /// not parse is `Corrupt` (named by `shown`, the database).
    pub(crate) fn object_refs(&self, shown: &str) -> crate::Result<Vec<ObjectRef>> {
        super::compact::object_refs(
            self.tenant_id,
            self.run_id,
            &self.json,
            self.holes.as_deref(),
        )
        .map_err(|detail| crate::Error::Corrupt {
            path: shown.into(),
            detail: format!("the stored bundle of run {}: {detail}", self.run_id),
        })
    }
}

/// Walks every stored bundle, a page at a time (`page(after)` returns the
/// bundles after the key given, empty at the end), and collects the
/// sources that carry bytes.
pub(crate) fn walk_refs(
    shown: &str,
    page: &mut dyn FnMut(Option<(Uuid, Uuid)>) -> crate::Result<Vec<StoredBundle>>,
) -> crate::Result<Vec<ObjectRef>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let bundles = page(after)?;
        let Some(last) = bundles.last() else {
            return Ok(out);
        };
        after = Some((last.tenant_id, last.run_id));
        for b in &bundles {
            out.extend(b.object_refs(shown)?);
        }
    }
}

/// The digests every stored bundle refers to (see [`walk_refs`]).
pub(crate) fn referenced_digests(
    shown: &str,
    page: &mut dyn FnMut(Option<(Uuid, Uuid)>) -> crate::Result<Vec<StoredBundle>>,
) -> crate::Result<std::collections::HashSet<Sha256Hex>> {
    Ok(walk_refs(shown, page)?
        .into_iter()
        .map(|r| r.sha256)
        .collect())
}

/// Adds `n` jobs of kind `what` (`succeeded`, `failed`, `retry`) to the
/// minute named by its text (`YYYY-MM-DDTHH:MM`).
pub(crate) fn add_minute(
    per: &mut BTreeMap<String, MinuteCount>,
    minute: &str,
    what: &str,
    n: i64,
) {
    let Some(at) = Timestamp::parse(&format!("{minute}:00.000000Z")) else {
        return;
    };
    let entry = per.entry(minute.to_owned()).or_insert(MinuteCount {
        minute: at,
        succeeded: 0,
        failed: 0,
        retried: 0,
    });
    let n = u64::try_from(n).unwrap_or(0);
    match what {
        "succeeded" => entry.succeeded += n,
        "failed" => entry.failed += n,
        _ => entry.retried += n,
    }
}

/// The earlier of two optional times.
pub(crate) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

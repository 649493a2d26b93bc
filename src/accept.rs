//! The accept path shared by `bundleq submit` and the inbox: read, hash,
//! validate, store source bytes, then record the run and enqueue its job in
//! one transaction. An invalid bundle never becomes a job.
//!
//! Invariants: the database is written only for a valid bundle, and only
//! after its source objects are durable; the same bytes for the same tenant
//! are recognised (by sha256) and enqueue nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use serde::Serialize;
use uuid::Uuid;

use crate::bundle::{
    Bundle, Follow, Limits, ReadBundle, Sha256Hex, SourceBody, ValidationError, ValidationErrors,
    read_bundle,
};
use crate::error::{IoContext, Result};
use crate::home::Home;
use crate::objects::{Objects, in_database};
use crate::store::{NewObject, NewRun, RunInsert, RunJob, Store};
use crate::timestamp::Timestamp;

/// How many bundles share one transaction in [`accept_many`].
pub const BATCH: usize = 256;

/// What happened to one bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Recorded as a new run, with its job enqueued.
    Accepted {
        /// The run.
        run_id: Uuid,
        /// Its job.
        job_id: Uuid,
    },
    /// These bytes were already accepted for the tenant; nothing enqueued.
    Duplicate {
        /// The run they were accepted as.
        run_id: Uuid,
    },
    /// An inbox entry this very claim recorded before a crash: accepted,
    /// nothing enqueued again.
    Recovered {
        /// The run it was accepted as.
        run_id: Uuid,
    },
    /// Valid (only from [`check`], which writes nothing).
    Valid {
        /// The bundle's run id.
        run_id: Uuid,
    },
    /// Refused; every error listed.
    Invalid {
        /// What is wrong.
        errors: ValidationErrors,
    },
}

/// The verdict on one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptReport {
    /// The file or folder given.
    pub path: PathBuf,
    /// sha256 of the bundle JSON bytes; absent when they were not all read
    /// (too large, not a bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Hex>,
    /// What happened.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Where bundles come from, recorded with the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `bundleq submit`.
    Submit,
    /// The drop folder.
    Inbox,
    /// A library call.
    Api,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Submit => "submit",
            Origin::Inbox => "inbox",
            Origin::Api => "api",
        }
    }
}

/// One bundle to accept: where to read it now, and what to record about
/// where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Where the bundle is read from.
    pub path: PathBuf,
    /// The path reported and logged (for an inbox entry: where it was
    /// dropped, not where it was claimed).
    pub shown: PathBuf,
    /// The name it arrived under (`origin_name`).
    pub name: Option<String>,
    /// The inbox claim it belongs to, recorded with its run.
    pub claim: Option<String>,
}

impl Input {
    /// A path given by a user: read and shown as given.
    pub fn path(path: &Path) -> Input {
        Input {
            path: path.to_owned(),
            shown: path.to_owned(),
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
            claim: None,
        }
    }
}

/// How a batch is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptOptions {
    /// The tenant every bundle is accepted for.
    pub tenant: Uuid,
    /// Where they come from.
    pub origin: Origin,
    /// How their top-level path is opened.
    pub follow: Follow,
    /// The time recorded.
    pub now: Timestamp,
    /// When given, a bundle whose `job_type` is not one of these is
    /// refused (no handler here would ever run it).
    pub known_types: Option<Vec<String>>,
    /// Runs are not due before this time (scheduled); at once when `None`.
    pub not_before: Option<Timestamp>,
}

/// Checks bundles without writing anything.
pub fn check(
    path: &Path,
    limits: &Limits,
    tenant: Option<Uuid>,
    follow: Follow,
) -> Result<AcceptReport> {
    let read = read_bundle(path, limits, None, follow)?;
    let verdict = match tenant_checked(read.verdict, tenant) {
        Ok(b) => Verdict::Valid { run_id: b.run_id() },
        Err(errors) => Verdict::Invalid { errors },
    };
    Ok(AcceptReport {
        path: read.path,
        sha256: read.sha256,
        verdict,
    })
}

fn tenant_checked(
    verdict: std::result::Result<Bundle, ValidationErrors>,
    tenant: Option<Uuid>,
) -> std::result::Result<Bundle, ValidationErrors> {
    let bundle = verdict?;
    match (bundle.tenant_id(), tenant) {
        (Some(own), Some(t)) if own != t => Err(ValidationErrors::one(ValidationError::new(
            "tenant_id",
            format!("the bundle belongs to tenant {own}, but is being submitted for tenant {t}"),
            Some(own.to_string()),
        ))),
        _ => Ok(bundle),
    }
}

/// A bundle read, validated and with its objects stored, waiting for its
/// transaction.
struct Ready {
    input: Input,
    sha256: Sha256Hex,
    json: String,
    bundle: Bundle,
    /// Its small source objects, stored with its run.
    objects: Vec<NewObject>,
    /// Its objects stored before its transaction (files, or on a database
    /// server their own transactions).
    stored: Vec<Sha256Hex>,
}

impl Ready {
    /// Bytes it holds in memory until it is recorded.
    fn bytes(&self) -> u64 {
        self.json.len() as u64
            + self
                .objects
                .iter()
                .map(|o| o.bytes.len() as u64)
                .sum::<u64>()
    }
}

/// Accepts one bundle for `tenant` (a path a user gave).
pub fn accept(
    store: &mut Store,
    home: &Home,
    path: &Path,
    tenant: Uuid,
    origin: Origin,
    now: Timestamp,
) -> Result<AcceptReport> {
    let mut out = accept_many(store, home, &[path.to_owned()], tenant, origin, now);
    out.pop().unwrap_or_else(|| {
        Err(crate::Error::InvalidArgument {
            what: "path",
            message: "nothing to accept".to_owned(),
        })
    })
}

/// Accepts many bundles (paths a user gave) for `tenant`, in batches that
/// share a transaction. Each path gets its own result: an unreadable file
/// does not stop the others.
pub fn accept_many(
    store: &mut Store,
    home: &Home,
    paths: &[PathBuf],
    tenant: Uuid,
    origin: Origin,
    now: Timestamp,
) -> Vec<Result<AcceptReport>> {
    let inputs: Vec<Input> = paths.iter().map(|p| Input::path(p)).collect();
    let options = AcceptOptions {
        tenant,
        origin,
        follow: Follow::Link,
        now,
        known_types: None,
        not_before: None,
    };
    accept_inputs(store, home, &inputs, &options)
}

/// Accepts many bundles, in batches that share a transaction. Each input
/// gets its own result. After a fatal error (the database gone or damaged)
/// the first result of the batch that met it is that error, and every
/// later input is an error without being read.
pub fn accept_inputs(
    store: &mut Store,
    home: &Home,
    inputs: &[Input],
    options: &AcceptOptions,
) -> Vec<Result<AcceptReport>> {
    let mut out: Vec<Result<AcceptReport>> = Vec::with_capacity(inputs.len());
    let mut first_of_batch = 0;
    let streamed = accept_stream(store, home, inputs, options, &mut |batch| {
        first_of_batch = out.len();
        out.extend(batch);
        true
    });
    let mut why = "the database became unusable".to_owned();
    if let Err(e) = streamed {
        why = e.to_string();
        match out.get_mut(first_of_batch) {
            Some(first) => *first = Err(e),
            // It stopped before its first batch (the objects could not be
            // locked, say): the first input says why.
            None if !inputs.is_empty() => out.push(Err(e)),
            None => {}
        }
    }
    out.resize_with(inputs.len(), || {
        Err(crate::Error::InvalidArgument {
            what: "bundle",
            message: format!("not read: {why}"),
        })
    });
    out
}

/// Accepts bundles batch by batch, handing each batch's results (in input
/// order) to `on_batch` as soon as the batch's transaction has committed;
/// `on_batch` returns false to stop there (what was committed stays).
/// Returns how many inputs were handled, or the fatal error that stopped
/// the stream after its batch was handed on.
///
/// Reading, hashing and validating (and storing big objects as files) run
/// on up to [`PREPARERS`] threads, at most [`READ_AHEAD`] bundles and
/// [`HELD_BYTES`] ahead of the one being recorded; the calling thread, the
/// only one that writes the database, records them in input order, in
/// batches of at most [`BATCH`] bundles or [`BATCH_BYTES`].
pub fn accept_stream(
    store: &mut Store,
    home: &Home,
    inputs: &[Input],
    options: &AcceptOptions,
    on_batch: &mut dyn FnMut(Vec<Result<AcceptReport>>) -> bool,
) -> Result<usize> {
    let objects = home.object_store();
    // Objects stored from here on are named by no committed run until
    // their batch commits: no sweep may run meanwhile.
    let _lease = objects.lease()?;
    let limits = home.config().limits.clone();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, PREPARERS)
        .min(inputs.len().max(1));
    let flow = Flow {
        state: Mutex::new(FlowState::default()),
        changed: Condvar::new(),
    };
    let (prepared_tx, prepared) = crossbeam_channel::unbounded::<Prepared>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let prepared_tx = prepared_tx.clone();
            let (flow, limits, objects) = (&flow, &limits, &objects);
            scope.spawn(move || {
                // A private folder stages the files of bundle folders;
                // everything staged is moved or read before the next.
                let staging = objects.staging();
                while let Some(index) = flow.take(inputs.len()) {
                    let input = &inputs[index];
                    let outcome = match &staging {
                        Ok(dir) => prepare(input, limits, objects, options, dir.path()),
                        Err(e) => Err(crate::Error::Record {
                            path: input.shown.clone(),
                            message: e.to_string(),
                        }),
                    };
                    let bytes = match &outcome {
                        Ok(Ok(r)) => r.bytes(),
                        // A refused bundle leaves what it staged: gone
                        // before the next is read.
                        _ => {
                            if let Ok(dir) = &staging {
                                clear_folder(dir.path());
                            }
                            0
                        }
                    };
                    flow.hold(bytes);
                    let item = Prepared {
                        index,
                        bytes,
                        outcome,
                    };
                    if prepared_tx.send(item).is_err() {
                        break;
                    }
                }
            });
        }
        drop(prepared_tx);
        let outcome = record_in_order(store, inputs.len(), &prepared, &flow, options, on_batch);
        // Preparers stop before their next bundle.
        flow.stop();
        drop(prepared);
        outcome
    })
}

/// Removes the files in `dir` (best effort: what is left goes with the
/// folder when the stream ends).
fn clear_folder(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Up to this many threads read and validate bundles ahead of the writer.
pub const PREPARERS: usize = 4;
/// Bundles read ahead of the next one to record, at most.
pub const READ_AHEAD: usize = BATCH;
/// Bytes of bundles read and not yet recorded (their JSON and the small
/// objects held for their transaction), at most; each preparing thread may
/// pass it by the one bundle it is reading, and the next bundle to record
/// is always read.
pub const HELD_BYTES: u64 = 32 * 1024 * 1024;
/// A batch is recorded once it holds this many bytes.
pub const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Small objects of one bundle held in memory for its transaction, at
/// most: past it they are stored as files first, like big ones.
const BUNDLE_HELD_OBJECTS: u64 = 8 * 1024 * 1024;

/// Which bundle is read next, which is recorded next, and how many bytes
/// read bundles hold: shared by the preparing threads and the writer.
struct Flow {
    state: Mutex<FlowState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct FlowState {
    next_input: usize,
    next_record: usize,
    held: u64,
    stop: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Take {
    Go(usize),
    Wait,
    Done,
}

impl FlowState {
    /// Whether a preparing thread may read the next input now: the one
    /// the writer needs always; another only within [`READ_AHEAD`] of it
    /// and while less than [`HELD_BYTES`] are held.
    fn next_take(&self, inputs: usize) -> Take {
        if self.stop || self.next_input >= inputs {
            return Take::Done;
        }
        let i = self.next_input;
        let needed = i == self.next_record;
        let room = i < self.next_record + READ_AHEAD && self.held < HELD_BYTES;
        if needed || room {
            Take::Go(i)
        } else {
            Take::Wait
        }
    }
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next input to read, once the read-ahead allows it; `None` when
    /// every input was taken or the stream stopped.
    fn take(&self, inputs: usize) -> Option<usize> {
        let mut st = self.lock();
        loop {
            match st.next_take(inputs) {
                Take::Go(i) => {
                    st.next_input += 1;
                    return Some(i);
                }
                Take::Done => return None,
                Take::Wait => st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    fn hold(&self, bytes: u64) {
        self.lock().held += bytes;
    }

    /// The writer needs input `next_record` now.
    fn needs(&self, next_record: usize) {
        let mut st = self.lock();
        if st.next_record != next_record {
            st.next_record = next_record;
            self.changed.notify_all();
        }
    }

    /// Bundles holding `bytes` were recorded.
    fn release(&self, bytes: u64) {
        let mut st = self.lock();
        st.held = st.held.saturating_sub(bytes);
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

/// One input read and validated: its report, or its bundle ready to
/// record.
struct Prepared {
    index: usize,
    bytes: u64,
    outcome: Result<std::result::Result<Ready, AcceptReport>>,
}

/// The writer's side of [`accept_stream`]: takes prepared inputs in input
/// order and records them batch by batch.
fn record_in_order(
    store: &mut Store,
    inputs: usize,
    prepared: &crossbeam_channel::Receiver<Prepared>,
    flow: &Flow,
    options: &AcceptOptions,
    on_batch: &mut dyn FnMut(Vec<Result<AcceptReport>>) -> bool,
) -> Result<usize> {
    let mut early: BTreeMap<usize, Prepared> = BTreeMap::new();
    let mut batch: Vec<Prepared> = Vec::new();
    let mut batch_bytes = 0;
    let mut next = 0;
    while next < inputs {
        let Some(item) = early.remove(&next) else {
            flow.needs(next);
            match prepared.recv() {
                Ok(item) => {
                    early.insert(item.index, item);
                    continue;
                }
                // Every preparer ended without it: nothing more will come.
                Err(_) => break,
            }
        };
        next += 1;
        batch_bytes += item.bytes;
        batch.push(item);
        if batch.len() < BATCH && batch_bytes < BATCH_BYTES && next < inputs {
            continue;
        }
        let (results, fatal) = record_batch(store, std::mem::take(&mut batch), options);
        flow.release(std::mem::take(&mut batch_bytes));
        let go_on = on_batch(results);
        if let Some(e) = fatal {
            return Err(e);
        }
        if !go_on {
            break;
        }
    }
    Ok(next)
}

/// Records a batch in one transaction: every input's result, in input
/// order, and the fatal error that must stop the stream, if any.
fn record_batch(
    store: &mut Store,
    batch: Vec<Prepared>,
    options: &AcceptOptions,
) -> (Vec<Result<AcceptReport>>, Option<crate::Error>) {
    let mut results: Vec<Option<Result<AcceptReport>>> = Vec::with_capacity(batch.len());
    let mut ready: Vec<(usize, Ready)> = Vec::new();
    for item in batch {
        match item.outcome {
            Ok(Ok(r)) => {
                ready.push((results.len(), r));
                results.push(None);
            }
            Ok(Err(report)) => results.push(Some(Ok(report))),
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let fatal = match record(store, &mut ready, options) {
        Ok(verdicts) => {
            for ((index, r), verdict) in ready.into_iter().zip(verdicts) {
                results[index] = Some(Ok(AcceptReport {
                    path: r.input.shown,
                    sha256: Some(r.sha256),
                    verdict,
                }));
            }
            None
        }
        Err(e) => {
            let text = e.to_string();
            for (index, r) in ready {
                results[index] = Some(Err(crate::Error::Record {
                    path: r.input.shown,
                    message: text.clone(),
                }));
            }
            e.is_fatal().then_some(e)
        }
    };
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(no_verdict())))
        .collect();
    (results, fatal)
}

/// Checks bundle JSON held in memory (e.g. read from standard input)
/// without writing anything; `shown` names it in the report.
pub fn check_bytes(
    bytes: &[u8],
    shown: &Path,
    limits: &Limits,
    tenant: Option<Uuid>,
) -> AcceptReport {
    let verdict = match tenant_checked(crate::bundle::validate_bytes(bytes, limits), tenant) {
        Ok(b) => Verdict::Valid { run_id: b.run_id() },
        Err(errors) => Verdict::Invalid { errors },
    };
    AcceptReport {
        path: shown.to_owned(),
        sha256: (bytes.len() as u64 <= limits.max_bundle_bytes).then(|| Sha256Hex::of(bytes)),
        verdict,
    }
}

fn no_verdict() -> crate::Error {
    crate::Error::InvalidArgument {
        what: "bundle",
        message: "no verdict".to_owned(),
    }
}

/// Reads and validates one bundle, stores its big objects as files (durable
/// before this returns) and keeps its small ones for its run's transaction.
fn prepare(
    input: &Input,
    limits: &Limits,
    objects: &Objects,
    options: &AcceptOptions,
    staging: &Path,
) -> Result<std::result::Result<Ready, AcceptReport>> {
    let ReadBundle {
        sha256,
        json,
        verdict,
        ..
    } = read_bundle(&input.path, limits, Some(staging), options.follow)?;
    let verdict = verdict.and_then(|b| match &options.known_types {
        Some(types) if !types.iter().any(|t| t == b.job_type()) => {
            Err(ValidationErrors::one(ValidationError::new(
                "job_type",
                format!(
                    "no handler is configured for this job type here (configured: {}); add [handlers.{}] to bundleq.toml, or submit with --allow-unknown-type if another host runs it",
                    types.join(", "),
                    b.job_type()
                ),
                Some(b.job_type().to_owned()),
            )))
        }
        _ => Ok(b),
    });
    let bundle = match tenant_checked(verdict, Some(options.tenant)) {
        Ok(b) => b,
        Err(errors) => {
            return Ok(Err(AcceptReport {
                path: input.shown.clone(),
                sha256,
                verdict: Verdict::Invalid { errors },
            }));
        }
    };
    // A file named by several sources was staged once: store it once.
    let mut stored: std::collections::HashSet<&Sha256Hex> = std::collections::HashSet::new();
    let mut small = Vec::new();
    let mut before = Vec::new();
    let mut held = 0u64;
    let mut hold = |size: u64| {
        let fits = in_database(size) && held + size <= BUNDLE_HELD_OBJECTS;
        if fits {
            held += size;
        }
        fits
    };
    for source in bundle.sources() {
        if !stored.insert(source.sha256()) {
            continue;
        }
        let sha256 = source.sha256().clone();
        match source.body() {
            SourceBody::File(f) => {
                if let Some(staged) = &f.staged {
                    if hold(f.size) {
                        let bytes = std::fs::read(staged).io("read staged file", staged)?;
                        std::fs::remove_file(staged).io("remove staged file", staged)?;
                        // The copy is private, but what goes into the
                        // database under a digest must be those bytes.
                        if Sha256Hex::of(&bytes) != sha256 {
                            return Err(crate::Error::Io {
                                action: "check staged file",
                                path: staged.clone(),
                                source: std::io::Error::other(
                                    "its bytes changed after they were hashed",
                                ),
                            });
                        }
                        small.push(NewObject {
                            sha256,
                            bytes,
                            inline: false,
                        });
                    } else {
                        objects.commit_staged(staged, &sha256)?;
                        before.push(sha256);
                    }
                }
            }
            SourceBody::Inline(text) => {
                if hold(text.len() as u64) {
                    let bytes = text.as_bytes().to_vec();
                    small.push(NewObject {
                        sha256,
                        bytes,
                        inline: true,
                    });
                } else {
                    objects.put(text.as_bytes(), &sha256)?;
                    before.push(sha256);
                }
            }
            SourceBody::Reference => {}
        }
    }
    // A valid bundle was read whole, as UTF-8.
    let (Some(sha256), Some(json)) = (sha256, json) else {
        return Err(no_verdict());
    };
    Ok(Ok(Ready {
        input: input.clone(),
        sha256,
        json,
        bundle,
        objects: small,
        stored: before,
    }))
}

/// One transaction for a batch: each run recorded and its job enqueued,
/// unless its bytes were seen before.
/// The bundles' JSON and objects move into the store call (they are the
/// batch's bulk; nothing is copied).
fn record(
    store: &mut Store,
    ready: &mut [(usize, Ready)],
    options: &AcceptOptions,
) -> Result<Vec<Verdict>> {
    let AcceptOptions {
        tenant,
        origin,
        now,
        not_before,
        ..
    } = options.clone();
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let runs: Vec<NewRun> = ready
        .iter_mut()
        .map(|(_, r)| {
            let b = &r.bundle;
            NewRun {
                tenant_id: tenant,
                id: b.run_id(),
                title: b.title().to_owned(),
                bundle_sha256: r.sha256.to_string(),
                bundle_json: std::mem::take(&mut r.json),
                origin: origin.as_str(),
                origin_name: r.input.name.clone(),
                inbox_claim: r.input.claim.clone(),
                // Every run starts with process_bundle; the bundle's own
                // job type is queued when it succeeds.
                job: RunJob {
                    job_type: crate::bundle::DEFAULT_JOB_TYPE.to_owned(),
                    payload: serde_json::json!({
                        "run_id": b.run_id(),
                        "tenant_id": tenant,
                        "bundle_sha256": r.sha256,
                    }),
                    max_attempts: None,
                    not_before,
                },
                objects: std::mem::take(&mut r.objects),
                stored: std::mem::take(&mut r.stored),
            }
        })
        .collect();
    let inserted = store.insert_runs(&runs, now)?;
    Ok(ready
        .iter()
        .zip(inserted)
        .map(|((_, r), insert)| {
            let run_id = r.bundle.run_id();
            match insert {
                RunInsert::Inserted { job_id } => Verdict::Accepted { run_id, job_id },
                RunInsert::Duplicate {
                    run_id,
                    inbox_claim,
                    origin_name,
                } => {
                    let ours = r.input.claim.is_some()
                        && inbox_claim == r.input.claim
                        && origin_name == r.input.name;
                    if ours {
                        Verdict::Recovered { run_id }
                    } else {
                        Verdict::Duplicate { run_id }
                    }
                }
                RunInsert::Conflict { existing_sha256 } => Verdict::Invalid {
                    errors: ValidationErrors::one(ValidationError::new(
                        "run_id",
                        format!(
                            "run {run_id} already exists in this tenant with a different bundle (sha256 {existing_sha256})"
                        ),
                        Some(run_id.to_string()),
                    )),
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{FlowState, HELD_BYTES, READ_AHEAD, Take};

    #[test]
    fn read_ahead_stops_at_its_caps_but_never_for_the_bundle_the_writer_needs() {
        let state = |next_input, next_record, held| FlowState {
            next_input,
            next_record,
            held,
            stop: false,
        };
        assert_eq!(state(3, 1, 0).next_take(10), Take::Go(3));
        // Bytes held up to the cap: the next bundle waits...
        assert_eq!(state(3, 1, HELD_BYTES).next_take(10), Take::Wait);
        // ...unless the writer needs it, however much is held.
        assert_eq!(state(3, 3, u64::MAX).next_take(10), Take::Go(3));
        // Never more than READ_AHEAD bundles ahead.
        let far = 1 + READ_AHEAD;
        assert_eq!(state(far, 1, 0).next_take(far + 5), Take::Wait);
        assert_eq!(state(far - 1, 1, 0).next_take(far + 5), Take::Go(far - 1));
        // Done when every input was taken, or the stream stopped.
        assert_eq!(state(10, 10, 0).next_take(10), Take::Done);
        let stopped = FlowState {
            stop: true,
            ..state(3, 3, 0)
        };
        assert_eq!(stopped.next_take(10), Take::Done);
    }
}

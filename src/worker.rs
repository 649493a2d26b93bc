//! The worker pool behind `bundleq serve`: one coordinator thread that owns
//! the database connection, and N worker threads that run handlers, joined
//! by crossbeam channels.
//!
//! The coordinator is the pool's only writer (SQLite serialises writers, and
//! its busy handler is unfair, so threads of one process must not race for
//! the lock). Each turn of its loop is one transaction that records every
//! outcome that arrived since the last turn and claims jobs for the free
//! capacity (the workers plus an adaptive prefetch: as many jobs as the
//! workers finish during one commit, at most `prefetch`): claims and
//! outcomes travel in batches,
//! which is where the throughput comes from. While jobs run it heartbeats
//! their locks; when idle it sleeps until the earliest of: a wake-up from
//! this process, the next retry or lock expiry, or the poll interval, at
//! which it only reads `PRAGMA data_version` to see whether another process
//! wrote anything. There is no busy loop.
//!
//! With a [`Presence`] the pool is known to other processes of the home:
//! at start and at every heartbeat it also rescues at once the jobs of
//! workers that are provably gone (their presence lock is free), instead of
//! waiting for their locks to expire.
//!
//! Invariants: a handler's panic is caught and counted as a failed attempt;
//! a worker thread that dies anyway trips an orderly shutdown; at shutdown
//! no job is left `running` by this pool: unstarted claims are released at
//! once, running ones get the grace period, then are released too. A fatal
//! store error (the database deleted, replaced or damaged) stops the pool at
//! once with that error: nothing more is claimed, recorded or released.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, select, unbounded};
use serde::Serialize;
use uuid::Uuid;

use crate::config::WorkersConfig;
use crate::error::{Error, Result};
use crate::handler::{Handlers, JobContext};
use crate::presence::Presence;
use crate::state::{JobStatus, Outcome};
use crate::store::{Claim, ClaimToken, Completion, Report, Store};
use crate::timestamp::Clock;

/// How often a busy or idle pool refreshes its row in `serves` (its lock
/// heartbeat may be rarer).
const SERVE_REPORT_EVERY: Duration = Duration::from_secs(10);
/// With `once`, a store error that repeats this many times in a row (one
/// try a second) ends the run with that error.
const ONCE_GIVE_UP: u32 = 10;
/// Most jobs claimed in one transaction.
const MAX_CLAIM_BATCH: usize = 512;
/// A WAL larger than this is truncated when the pool goes idle (SQLite's
/// automatic checkpoints keep it near 4 MiB while no reader blocks them).
const WAL_SHRINK_BYTES: u64 = 8 * 1024 * 1024;

/// How the pool runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Worker threads.
    pub workers: usize,
    /// Jobs claimed ahead of free workers.
    pub prefetch: usize,
    /// Longest idle sleep before looking for work written by other processes.
    pub poll_interval: Duration,
    /// How long shutdown waits for running jobs.
    pub grace_period: Duration,
    /// Stop once nothing is due (`serve --once`).
    pub once: bool,
    /// How often a busy pool logs a summary line.
    pub summary_interval: Duration,
    /// This process's presence in the home: names the pool's worker and
    /// lets it prove other workers gone. Without one the pool makes up a
    /// name, and its jobs are rescued only after their locks expire.
    pub presence: Option<Arc<Presence>>,
}

impl PoolConfig {
    /// The pool a home's `[workers]` section asks for.
    pub fn from_config(w: &WorkersConfig) -> PoolConfig {
        PoolConfig {
            workers: w.count,
            prefetch: w.prefetch,
            poll_interval: w.poll_interval,
            grace_period: w.grace_period,
            once: false,
            summary_interval: Duration::from_secs(10),
            presence: None,
        }
    }
}

/// Something the pool did, for tests and embedders that want to wait on
/// events instead of sleeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolEvent {
    /// An outcome was recorded (or found stale).
    Reported {
        /// The job.
        job_id: Uuid,
        /// What the store made of it.
        report: Report,
    },
    /// A claim was given back at shutdown.
    Released {
        /// The job.
        job_id: Uuid,
    },
    /// Nothing is due; the pool is about to sleep.
    Idle,
}

/// Controls a running pool from other threads: shut it down, wake it.
#[derive(Clone, Debug)]
pub struct PoolControl {
    /// Set once; the coordinator checks it every turn.
    quit: Arc<AtomicBool>,
    /// A wake-up for the coordinator's idle sleep (capacity 1: one pending
    /// wake-up is as good as many).
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    /// Where [`PoolEvent`]s go, if anyone listens.
    events: Option<Sender<PoolEvent>>,
}

impl Default for PoolControl {
    fn default() -> Self {
        PoolControl::new()
    }
}

impl PoolControl {
    /// A control for a pool not yet started.
    pub fn new() -> PoolControl {
        let (wake_tx, wake_rx) = bounded(1);
        PoolControl {
            quit: Arc::new(AtomicBool::new(false)),
            wake_tx,
            wake_rx,
            events: None,
        }
    }

    /// Sends the pool's events to `tx`.
    pub fn with_events(mut self, tx: Sender<PoolEvent>) -> PoolControl {
        self.events = Some(tx);
        self
    }

    /// Asks the pool to stop: no new claims; running jobs get the grace
    /// period.
    pub fn shutdown(&self) {
        self.quit.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// True once shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }

    /// Tells an idle pool that work was just enqueued in this process.
    pub fn wake(&self) {
        let _ = self.wake_tx.try_send(());
    }

    fn emit(&self, e: PoolEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }
}

/// What a pool did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Claims made.
    pub claimed: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Reports ignored because their claim no longer held.
    pub stale: u64,
    /// Claims given back at shutdown.
    pub released: u64,
    /// Claims that could not be given back at shutdown (left `running`,
    /// to be rescued).
    pub unreleased: u64,
}

enum Msg {
    /// A finished attempt and how long its handler ran.
    Done(Completion, Duration),
    WorkerDied(String),
}

/// A worker thread's last word if it unwinds outside a handler.
struct DeathNotice {
    tx: Sender<Msg>,
    name: String,
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = self.tx.send(Msg::WorkerDied(self.name.clone()));
        }
    }
}

/// A copy of a fatal error (they carry no source that cannot be cloned).
fn clone_fatal(e: &Error) -> Error {
    match e {
        Error::DatabaseGone { path, what } => Error::DatabaseGone {
            path: path.clone(),
            what,
        },
        Error::Corrupt { path, detail } => Error::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => Error::InvalidArgument {
            what: "store",
            message: other.to_string(),
        },
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

fn worker_loop(jobs: Receiver<Claim>, done: Sender<Msg>, handlers: Handlers, stop: Receiver<()>) {
    for claim in jobs.iter() {
        let job = &claim.job;
        let mut ctx = JobContext::new(job, &stop);
        let started = Instant::now();
        let outcome = match handlers.get(&job.job_type) {
            None => Outcome::Fail(format!(
                "no handler is configured for job type {:?}",
                job.job_type
            )),
            Some(h) => catch_unwind(AssertUnwindSafe(|| h.handle(&mut ctx))).unwrap_or_else(|p| {
                Outcome::Retry(format!("handler panicked: {}", panic_text(p.as_ref())))
            }),
        };
        let completion = Completion {
            token: claim.token.clone(),
            outcome,
            sources: ctx.take_sources(),
            output: ctx.take_output(),
        };
        if done.send(Msg::Done(completion, started.elapsed())).is_err() {
            break;
        }
    }
}

pub use crate::presence::worker_id;

struct Coordinator<'a> {
    store: Store,
    config: &'a PoolConfig,
    clock: Arc<dyn Clock>,
    control: &'a PoolControl,
    worker: String,
    /// Claims handed to workers (running or waiting in the job channel).
    in_flight: HashMap<Uuid, ClaimToken>,
    /// Outcomes not yet committed.
    pending: Vec<Completion>,
    stats: PoolStats,
    last_heartbeat: Instant,
    heartbeat_every: Duration,
    /// Set when the last claim found nothing: the `data_version` then and
    /// when something becomes due on its own.
    idle: Option<(i64, Option<Instant>)>,
    summary: (Instant, u64),
    last_error: Option<(String, Instant)>,
    /// A fatal store error: the pool stops and returns it.
    fatal: Option<Error>,
    /// Store errors in a row (for `once`).
    failures: u32,
    /// The home's `claims/` folder (for the presence sweep).
    claims_root: std::path::PathBuf,
    /// The job channel, to tell claims waiting for a worker from running ones.
    backlog: Receiver<Claim>,
    /// This pool's row in `serves` (when it has a presence), and when it
    /// was last written.
    serve_row: Option<(crate::store::ServeRow, Instant)>,
    /// Moving averages (seconds) of one handler run and of one claim
    /// transaction: they size the prefetch.
    avg_job: f64,
    avg_cycle: f64,
}

impl Coordinator<'_> {
    /// Jobs to hold: the workers plus as many as they get through while one
    /// claim transaction commits (none for slow jobs, up to
    /// `config.prefetch` for fast ones), so fast jobs travel in large
    /// batches and slow ones are not hoarded away from other processes.
    fn capacity(&self) -> usize {
        let per_commit = self.config.workers as f64 * self.avg_cycle / self.avg_job.max(1e-7);
        self.config.workers + (per_commit.ceil() as usize).min(self.config.prefetch)
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Done(c, took) => {
                self.avg_job = 0.9 * self.avg_job + 0.1 * took.as_secs_f64();
                self.pending.push(c);
            }
            Msg::WorkerDied(name) => {
                log::error!("Worker thread {name} died; shutting down the pool");
                self.control.shutdown();
            }
        }
    }

    fn emit(&self, e: PoolEvent) {
        self.control.emit(e);
    }

    fn log_store_error(&mut self, e: &crate::Error) {
        if e.is_fatal() {
            if self.fatal.is_none() {
                self.fatal = Some(clone_fatal(e));
                self.control.shutdown();
            }
            return;
        }
        let text = e.to_string();
        let repeat = matches!(&self.last_error, Some((t, at)) if *t == text && at.elapsed() < Duration::from_secs(60));
        if !repeat {
            log::error!("{text}; will try again");
            self.last_error = Some((text, Instant::now()));
        }
    }

    fn record(&mut self, reports: Vec<Report>, done: &[Completion]) {
        for (c, report) in done.iter().zip(reports) {
            self.in_flight.remove(&c.token.job_id);
            match report {
                Report::Applied(JobStatus::Succeeded) => self.stats.succeeded += 1,
                Report::Applied(JobStatus::Queued) => {
                    self.stats.retried += 1;
                    // Its retry may already be due: look again.
                    self.idle = None;
                }
                Report::Applied(_) => self.stats.failed += 1,
                Report::Stale => self.stats.stale += 1,
            }
            self.emit(PoolEvent::Reported {
                job_id: c.token.job_id,
                report,
            });
        }
    }

    /// When the next job becomes due by the clock alone (a retry_at, or a
    /// lock that will expire), as an `Instant`.
    fn next_wakeup(&mut self) -> Result<Option<Instant>> {
        let now = self.clock.now();
        let due = self.store.next_due(now)?;
        let lock_expiry = self
            .store
            .oldest_lock()?
            .map(|t| t.plus(self.store.policy().lock_timeout));
        let soonest = match (due, lock_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(soonest.map(|t| Instant::now() + t.since(now)))
    }

    /// On going idle: if the WAL grew past its usual size (a long reader
    /// kept checkpoints from finishing), try to truncate it, without waiting.
    fn shrink_wal(&mut self) {
        if self.store.wal_bytes() > WAL_SHRINK_BYTES
            && let Err(e) = self.store.checkpoint_if_free()
        {
            self.log_store_error(&e);
        }
    }

    /// Rescues at once the jobs of workers that are provably gone.
    fn rescue_gone(&mut self) {
        let Some(presence) = self.config.presence.clone() else {
            return;
        };
        let workers = match self.store.running_workers() {
            Ok(w) => w,
            Err(e) => return self.log_store_error(&e),
        };
        let gone: Vec<_> = workers.iter().filter_map(|w| presence.gone(w)).collect();
        if !gone.is_empty() {
            let ids: Vec<String> = gone.iter().map(|g| g.id().to_owned()).collect();
            match self.store.rescue_workers(&ids, self.clock.now()) {
                Ok(jobs) => {
                    log::warn!(
                        "Rescued {} job(s) of {} worker(s) whose process is gone: {}",
                        jobs.len(),
                        ids.len(),
                        ids.join(", ")
                    );
                    for g in gone {
                        // Its inbox claims, if any, are the inbox's to take
                        // over: keep the lock file that proves it gone.
                        if !self.claims_root.join(g.id()).exists() {
                            g.forget();
                        }
                    }
                    if let Err(e) = self.store.forget_serves(&ids) {
                        self.log_store_error(&e);
                    }
                    self.idle = None;
                }
                Err(e) => return self.log_store_error(&e),
            }
        }
        presence.sweep(&self.claims_root, &workers);
    }

    /// Writes this pool's row in `serves` when it is due (every 10 s at
    /// most, and at every heartbeat).
    fn report_serve_if_due(&mut self, force: bool) {
        let Some((mut row, written)) = self.serve_row.take() else {
            return;
        };
        if !force && written.elapsed() < SERVE_REPORT_EVERY.min(self.heartbeat_every) {
            self.serve_row = Some((row, written));
            return;
        }
        let waiting = self.backlog.len();
        row.heartbeat_at = self.clock.now();
        row.claimed_ahead = u32::try_from(waiting).unwrap_or(u32::MAX);
        row.running =
            u32::try_from(self.in_flight.len().saturating_sub(waiting)).unwrap_or(u32::MAX);
        if let Err(e) = self.store.report_serve(&row) {
            self.log_store_error(&e);
        }
        self.serve_row = Some((row, Instant::now()));
    }

    fn heartbeat_if_due(&mut self) {
        self.report_serve_if_due(false);
        if self.last_heartbeat.elapsed() < self.heartbeat_every {
            return;
        }
        self.rescue_gone();
        if self.in_flight.is_empty() {
            self.last_heartbeat = Instant::now();
            return;
        }
        let tokens: Vec<ClaimToken> = self.in_flight.values().cloned().collect();
        match self.store.heartbeat(&tokens, self.clock.now()) {
            Ok(held) if held < tokens.len() => log::warn!(
                "{} of {} running jobs lost their lock (rescued elsewhere); their results will be ignored",
                tokens.len() - held,
                tokens.len()
            ),
            Ok(_) => {}
            Err(e) => self.log_store_error(&e),
        }
        self.last_heartbeat = Instant::now();
    }

    fn summary_if_due(&mut self) {
        let (since, done_before) = self.summary;
        let elapsed = since.elapsed();
        if elapsed < self.config.summary_interval {
            return;
        }
        let done = self.stats.succeeded + self.stats.failed + self.stats.retried;
        if done > done_before
            && let Ok(counts) = self.store.counts_all()
        {
            let n = |s: JobStatus| counts.get(&s).copied().unwrap_or(0);
            log::info!(
                "{:.1} jobs/s; queued {}, running {}, failed {}, succeeded {}",
                (done - done_before) as f64 / elapsed.as_secs_f64(),
                n(JobStatus::Queued),
                n(JobStatus::Running),
                n(JobStatus::Failed),
                n(JobStatus::Succeeded),
            );
        }
        self.summary = (Instant::now(), done);
    }
}

/// Runs the pool on this thread until shutdown (or, with `once`, until
/// nothing is due), then returns what it did.
pub fn run_pool(
    store: Store,
    handlers: Handlers,
    config: &PoolConfig,
    clock: Arc<dyn Clock>,
    control: &PoolControl,
) -> Result<PoolStats> {
    let (job_tx, job_rx) = bounded::<Claim>(config.workers + config.prefetch);
    let (done_tx, done_rx) = unbounded::<Msg>();
    // Dropping stop_tx tells handlers the pool no longer waits for them.
    let (stop_tx, stop_rx) = bounded::<()>(0);
    for i in 0..config.workers {
        let (jobs, done, handlers, stop) = (
            job_rx.clone(),
            done_tx.clone(),
            handlers.clone(),
            stop_rx.clone(),
        );
        let name = format!("bundleq-worker-{i}");
        let notice = DeathNotice {
            tx: done_tx.clone(),
            name: name.clone(),
        };
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _notice = notice;
                worker_loop(jobs, done, handlers, stop);
            })
            .map_err(|source| crate::Error::Io {
                action: "start worker thread",
                path: name.into(),
                source,
            })?;
    }
    drop(done_tx);
    let lock_timeout = store.policy().lock_timeout;
    let mut co = Coordinator {
        store,
        config,
        clock,
        control,
        worker: config
            .presence
            .as_ref()
            .map_or_else(worker_id, |p| p.id().to_owned()),
        in_flight: HashMap::new(),
        pending: Vec::new(),
        stats: PoolStats::default(),
        last_heartbeat: Instant::now(),
        heartbeat_every: (lock_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60)),
        idle: None,
        summary: (Instant::now(), 0),
        last_error: None,
        fatal: None,
        failures: 0,
        claims_root: config
            .presence
            .as_ref()
            .map(|p| p.claims_root())
            .unwrap_or_default(),
        backlog: job_rx.clone(),
        serve_row: None,
        // Until measured, assume jobs of 50 ms: a fresh pool claims little
        // beyond its workers and ramps up as fast jobs complete, so a job
        // that crashes the process takes few unstarted claims down with it.
        avg_job: 0.05,
        avg_cycle: 0.001,
    };
    log::info!(
        "Worker pool {} started: {} workers, lock timeout {}",
        co.worker,
        config.workers,
        crate::timestamp::config_duration(lock_timeout)
    );
    co.rescue_gone();
    if let Some(p) = &config.presence {
        let now = co.clock.now();
        co.serve_row = Some((
            crate::store::ServeRow {
                worker: p.id().to_owned(),
                host: p.host().to_owned(),
                pid: std::process::id(),
                workers: u32::try_from(config.workers).unwrap_or(u32::MAX),
                started_at: now,
                heartbeat_at: now,
                running: 0,
                claimed_ahead: 0,
            },
            Instant::now(),
        ));
        co.report_serve_if_due(true);
    }

    loop {
        // Everything that finished since the last turn.
        for msg in done_rx.try_iter() {
            co.on_msg(msg);
        }
        if control.is_shutting_down() {
            break;
        }

        let capacity = co.capacity();
        let free = capacity.saturating_sub(co.in_flight.len());
        let want_claim = free > 0
            && match co.idle {
                None => true,
                Some((version, due)) => {
                    due.is_some_and(|d| Instant::now() >= d)
                        || co.store.data_version().map_or(true, |v| v != version)
                }
            };
        let mut full_batch = false;
        if want_claim || !co.pending.is_empty() {
            let n = if want_claim {
                free.min(MAX_CLAIM_BATCH)
            } else {
                0
            };
            let done = std::mem::take(&mut co.pending);
            let worker = co.worker.clone();
            let began = Instant::now();
            let result = co.store.cycle(&done, n as u32, &worker, co.clock.now());
            if n > 0 {
                co.avg_cycle = 0.8 * co.avg_cycle + 0.2 * began.elapsed().as_secs_f64();
            }
            match result {
                Ok((reports, claims)) => {
                    co.failures = 0;
                    co.record(reports, &done);
                    co.stats.claimed += claims.len() as u64;
                    full_batch = n > 0 && claims.len() == n;
                    for claim in claims {
                        co.in_flight.insert(claim.job.id, claim.token.clone());
                        // Never blocks: the channel holds `capacity` claims
                        // and we never have more than that in flight.
                        if job_tx.send(claim).is_err() {
                            break;
                        }
                    }
                    if want_claim && !full_batch {
                        co.shrink_wal();
                        match (co.store.data_version(), co.next_wakeup()) {
                            (Ok(v), Ok(due)) => co.idle = Some((v, due)),
                            (Err(e), _) | (_, Err(e)) => {
                                co.log_store_error(&e);
                                co.idle = None;
                            }
                        }
                    } else if full_batch {
                        co.idle = None;
                    }
                    co.last_error = None;
                }
                Err(e) => {
                    co.log_store_error(&e);
                    co.pending = done;
                    co.failures += 1;
                    if config.once && co.failures >= ONCE_GIVE_UP && co.fatal.is_none() {
                        // `--once` is for scripts: an error that does not
                        // pass ends the run instead of retrying forever.
                        co.fatal = Some(Error::InvalidArgument {
                            what: "store",
                            message: format!("gave up after {ONCE_GIVE_UP} tries: {e}"),
                        });
                    }
                    if co.fatal.is_some() {
                        break;
                    }
                    // Back off, but stay responsive to shutdown.
                    let _ = control
                        .wake_rx
                        .recv_timeout(config.poll_interval.min(Duration::from_secs(1)));
                    continue;
                }
            }
        }
        co.heartbeat_if_due();
        co.summary_if_due();

        if config.once && co.in_flight.is_empty() && co.pending.is_empty() && co.idle.is_some() {
            break;
        }
        if full_batch || (co.idle.is_none() && co.in_flight.len() < capacity) {
            continue; // more may be waiting: claim before sleeping
        }
        if co.idle.is_some() && co.in_flight.is_empty() {
            co.emit(PoolEvent::Idle);
        }
        // Sleep until something happens.
        let mut wait = co.heartbeat_every;
        if let Some((_, due)) = co.idle {
            wait = wait.min(config.poll_interval);
            if let Some(d) = due {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
        }
        select! {
            recv(done_rx) -> msg => match msg {
                Ok(msg) => co.on_msg(msg),
                Err(_) => {
                    log::error!("All worker threads are gone; shutting down the pool");
                    control.shutdown();
                }
            },
            recv(control.wake_rx) -> _ => co.idle = None,
            default(wait) => {}
        }
    }

    if let Some(e) = co.fatal.take() {
        // Nothing may be written: tell running handlers to stop, and leave
        // every claim as it is (the next serve on a sound database rescues
        // them).
        drop(job_tx);
        drop(stop_tx);
        return Err(e);
    }
    shutdown(&mut co, job_tx, &job_rx, &done_rx, stop_tx);
    if let Some(e) = co.fatal.take() {
        return Err(e);
    }
    if co.serve_row.is_some()
        && let Err(e) = co.store.forget_serves(std::slice::from_ref(&co.worker))
    {
        co.log_store_error(&e);
    }
    log::info!(
        "Worker pool {} stopped: {} succeeded, {} failed, {} to retry, {} given back",
        co.worker,
        co.stats.succeeded,
        co.stats.failed,
        co.stats.retried,
        co.stats.released
    );
    Ok(co.stats)
}

/// Stops claiming, gives back claims no worker started, waits up to the
/// grace period for running jobs, then gives back what is still running.
fn shutdown(
    co: &mut Coordinator<'_>,
    job_tx: Sender<Claim>,
    job_rx: &Receiver<Claim>,
    done_rx: &Receiver<Msg>,
    stop_tx: Sender<()>,
) {
    drop(job_tx);
    let unstarted: Vec<ClaimToken> = job_rx.try_iter().map(|c| c.token).collect();
    release(co, &unstarted, false);

    let deadline = Instant::now() + co.config.grace_period;
    if !co.in_flight.is_empty() {
        log::info!(
            "Shutting down: waiting up to {} for {} running jobs",
            crate::timestamp::human_duration(co.config.grace_period),
            co.in_flight.len()
        );
    }
    loop {
        if !co.pending.is_empty() {
            let done = std::mem::take(&mut co.pending);
            match co.store.complete(&done, co.clock.now()) {
                Ok(reports) => co.record(reports, &done),
                Err(e) => {
                    co.log_store_error(&e);
                    co.pending = done;
                }
            }
        }
        if co.in_flight.is_empty() || Instant::now() >= deadline {
            break;
        }
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(msg) => {
                co.on_msg(msg);
                for msg in done_rx.try_iter() {
                    co.on_msg(msg);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    // Tell handlers still running that nobody waits for them any more.
    drop(stop_tx);
    let left: Vec<ClaimToken> = co.in_flight.values().cloned().collect();
    if !left.is_empty() {
        log::warn!(
            "Grace period over: giving back {} running jobs; they will run again",
            left.len()
        );
    }
    release(co, &left, true);
}

/// Gives claims back; `started` ones count against the release allowance
/// (see [`crate::state::RELEASE_ALLOWANCE`]).
fn release(co: &mut Coordinator<'_>, tokens: &[ClaimToken], started: bool) {
    if tokens.is_empty() || co.fatal.is_some() {
        return;
    }
    let mut pause = Duration::from_millis(50);
    for _ in 0..10 {
        let now = co.clock.now();
        let released = if started {
            co.store.release(tokens, now)
        } else {
            co.store.release_unstarted(tokens, now)
        };
        match released {
            Ok(reports) => {
                for (t, r) in tokens.iter().zip(reports) {
                    co.in_flight.remove(&t.job_id);
                    if r != Report::Stale {
                        co.stats.released += 1;
                        co.emit(PoolEvent::Released { job_id: t.job_id });
                    }
                }
                return;
            }
            Err(e) => {
                co.log_store_error(&e);
                if co.fatal.is_some() {
                    return;
                }
                thread::sleep(pause);
                pause *= 2;
            }
        }
    }
    co.stats.unreleased += tokens.len() as u64;
    log::error!(
        "Could not give back {} jobs; the next serve rescues them",
        tokens.len()
    );
}

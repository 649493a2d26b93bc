//! The coordinator: the pool's one connection to the store and its loop.
//!
//! Each turn ([`Coordinator::run`]): take what the workers finished, then
//! in one store call record those outcomes and claim jobs for the free
//! capacity ([`Coordinator::cycle`]), heartbeat and summarise when due, and
//! sleep when nothing more can be done ([`Coordinator::sleep`]). Whether the
//! pool is busy or waiting is [`Idle`]; shutdown is [`Coordinator::stop`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, select};
use uuid::Uuid;

use super::journal::log_transitions;
use super::threads::Msg;
use super::{PoolConfig, PoolControl, PoolEvent, PoolStats, worker_id};
use crate::error::{Error, Result};
use crate::state::JobStatus;
use crate::store::{ChangeToken, Claim, ClaimToken, Completion, Report, ServeRow, Store};
use crate::timestamp::Clock;

/// How often a pool updates its row in `serves` (at most).
const SERVE_REPORT_EVERY: Duration = Duration::from_secs(10);
/// `serve --once` gives up after this many store errors in a row.
const ONCE_GIVE_UP: u32 = 10;
/// The most jobs one claim takes.
const MAX_CLAIM_BATCH: usize = 512;

/// Whether the pool expects work without being told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Idle {
    /// The last claim was full, a retry was just scheduled, or this process
    /// was woken: claim again before sleeping.
    Busy,
    /// The last claim found less than it asked for. Claim again only when
    /// the store changed since `seen` or when `due` (the next retry or lock
    /// expiry) has come.
    Waiting {
        seen: ChangeToken,
        due: Option<Instant>,
    },
}

pub(super) struct Coordinator<'a> {
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
    idle: Idle,
    /// Wake-ups asked for before the last claim began.
    claimed_after_wakes: u64,
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
    serve_row: Option<(ServeRow, Instant)>,
    /// Moving averages (seconds) of one handler run and of one claim
    /// transaction: they size the prefetch.
    avg_job: f64,
    avg_cycle: f64,
}

/// A copy of a fatal error to keep (errors are not `Clone`: they may hold
/// an I/O error).
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

impl<'a> Coordinator<'a> {
    /// A coordinator for a pool about to start: says so, rescues the jobs
    /// of workers proved gone, and registers the pool in `serves`.
    pub(super) fn new(
        mut store: Store,
        config: &'a PoolConfig,
        clock: Arc<dyn Clock>,
        control: &'a PoolControl,
        backlog: Receiver<Claim>,
    ) -> Coordinator<'a> {
        store.keep_transitions(true);
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
            idle: Idle::Busy,
            claimed_after_wakes: 0,
            summary: (Instant::now(), 0),
            last_error: None,
            fatal: None,
            failures: 0,
            claims_root: config
                .presence
                .as_ref()
                .map(|p| p.claims_root())
                .unwrap_or_default(),
            backlog,
            serve_row: None,
            // Until measured, assume jobs of 50 ms: a fresh pool claims
            // little beyond its workers and ramps up as fast jobs complete,
            // so a job that crashes the process takes few unstarted claims
            // down with it.
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
                ServeRow {
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
        co
    }

    /// Runs turns until shutdown is asked for, a fatal error stops the pool,
    /// or (with `once`) nothing is left to do.
    pub(super) fn run(&mut self, job_tx: &Sender<Claim>, done_rx: &Receiver<Msg>) {
        loop {
            for msg in done_rx.try_iter() {
                self.on_msg(msg);
            }
            if self.control.is_shutting_down() {
                return;
            }
            let capacity = self.capacity();
            let free = capacity.saturating_sub(self.in_flight.len());
            let n = if free > 0 && self.work_may_be_due() {
                free.min(MAX_CLAIM_BATCH)
            } else {
                0
            };
            let mut full_batch = false;
            if n > 0 || !self.pending.is_empty() {
                match self.cycle(n, job_tx) {
                    Ok(full) => full_batch = full,
                    Err(e) => {
                        if self.on_cycle_error(&e) {
                            return;
                        }
                        continue;
                    }
                }
            }
            self.heartbeat_if_due();
            self.summary_if_due();

            let waiting = matches!(self.idle, Idle::Waiting { .. });
            if self.config.once && waiting && self.in_flight.is_empty() && self.pending.is_empty() {
                return;
            }
            if full_batch || (!waiting && self.in_flight.len() < capacity) {
                continue; // more may be waiting: claim before sleeping
            }
            self.sleep(done_rx);
        }
    }

    /// Jobs to hold: the workers plus as many as they get through while one
    /// claim transaction commits (none for slow jobs, up to
    /// `config.prefetch` for fast ones), so fast jobs travel in large
    /// batches and slow ones are not hoarded away from other processes.
    fn capacity(&self) -> usize {
        let per_commit = self.config.workers as f64 * self.avg_cycle / self.avg_job.max(1e-7);
        self.config.workers + (per_commit.ceil() as usize).min(self.config.prefetch)
    }

    /// Whether claiming may find something: always when busy; when waiting,
    /// once something became due or another connection wrote.
    fn work_may_be_due(&mut self) -> bool {
        match self.idle {
            Idle::Busy => true,
            Idle::Waiting { seen, due } => {
                due.is_some_and(|d| Instant::now() >= d)
                    || self.store.changes().map_or(true, |now| now != seen)
            }
        }
    }

    /// One store call: records the pending outcomes and claims up to `n`
    /// jobs, which go to the workers. Returns true when the claim came back
    /// full (more may be waiting).
    fn cycle(&mut self, n: usize, job_tx: &Sender<Claim>) -> Result<bool> {
        let done = std::mem::take(&mut self.pending);
        if n > 0 {
            self.claimed_after_wakes = self.control.wakes();
        }
        let began = Instant::now();
        let now = self.clock.now();
        let result = self.store.cycle(&done, n as u32, &self.worker, now);
        self.journal();
        if n > 0 {
            self.avg_cycle = 0.8 * self.avg_cycle + 0.2 * began.elapsed().as_secs_f64();
        }
        let (reports, claims) = match result {
            Ok(r) => r,
            Err(e) => {
                self.pending = done;
                return Err(e);
            }
        };
        self.failures = 0;
        self.last_error = None;
        self.record(reports, &done);
        self.stats.claimed += claims.len() as u64;
        let full = n > 0 && claims.len() == n;
        for claim in claims {
            self.in_flight.insert(claim.job.id, claim.token.clone());
            // Never blocks: the channel holds `capacity` claims and we
            // never have more than that in flight.
            if job_tx.send(claim).is_err() {
                break;
            }
        }
        if full {
            self.idle = Idle::Busy;
        } else if n > 0 {
            self.go_idle();
        }
        Ok(full)
    }

    /// The last claim found less than it asked for: tidy the database while
    /// nothing runs, and note what would make work due.
    fn go_idle(&mut self) {
        if let Err(e) = self.store.idle_maintenance() {
            self.log_store_error(&e);
        }
        self.idle = match (self.store.changes(), self.next_wakeup()) {
            (Ok(seen), Ok(due)) => Idle::Waiting { seen, due },
            (Err(e), _) | (_, Err(e)) => {
                self.log_store_error(&e);
                Idle::Busy
            }
        };
    }

    /// Handles a failed cycle; true when the pool must stop.
    fn on_cycle_error(&mut self, e: &Error) -> bool {
        self.log_store_error(e);
        self.failures += 1;
        if self.config.once && self.failures >= ONCE_GIVE_UP && self.fatal.is_none() {
            // `--once` is for scripts: an error that does not pass ends the
            // run instead of retrying forever.
            self.fatal = Some(Error::InvalidArgument {
                what: "store",
                message: format!("gave up after {ONCE_GIVE_UP} tries: {e}"),
            });
        }
        if self.fatal.is_some() {
            return true;
        }
        // Back off, but stay responsive to shutdown.
        let _ = self
            .control
            .wake_rx
            .recv_timeout(self.config.poll_interval.min(Duration::from_secs(1)));
        false
    }

    /// Sleeps until something happens: a worker finishes, this process
    /// wakes the pool, the next due time, a heartbeat, or the poll interval.
    fn sleep(&mut self, done_rx: &Receiver<Msg>) {
        let mut wait = self.heartbeat_every;
        if let Idle::Waiting { due, .. } = self.idle {
            if self.in_flight.is_empty() {
                self.emit(PoolEvent::Idle {
                    wakes: self.claimed_after_wakes,
                });
            }
            wait = wait.min(self.config.poll_interval);
            if let Some(d) = due {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
        }
        select! {
            recv(done_rx) -> msg => match msg {
                Ok(msg) => self.on_msg(msg),
                Err(_) => {
                    log::error!("All worker threads are gone; shutting down the pool");
                    self.control.shutdown();
                }
            },
            recv(self.control.wake_rx) -> _ => self.idle = Idle::Busy,
            default(wait) => {}
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Done(c, took) => {
                self.avg_job = 0.9 * self.avg_job + 0.1 * took.as_secs_f64();
                self.pending.push(*c);
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

    /// Logs what the store committed.
    fn journal(&mut self) {
        log_transitions(&self.store.take_transitions());
    }

    fn log_store_error(&mut self, e: &Error) {
        if e.is_fatal() {
            if self.fatal.is_none() {
                self.fatal = Some(clone_fatal(e));
                self.control.shutdown();
            }
            return;
        }
        let text = e.to_string();
        let repeat = matches!(&self.last_error,
            Some((t, at)) if *t == text && at.elapsed() < Duration::from_secs(60));
        if !repeat {
            log::error!("{text}; will try again");
            self.last_error = Some((text, Instant::now()));
        }
    }

    fn record(&mut self, reports: Vec<Report>, done: &[Completion]) {
        for (c, report) in done.iter().zip(reports) {
            self.in_flight.remove(&c.token.job_id);
            match report {
                Report::Applied(JobStatus::Succeeded) => {
                    self.stats.succeeded += 1;
                    if !c.then.is_empty() {
                        // The run's next step may have been queued: look.
                        self.idle = Idle::Busy;
                    }
                }
                Report::Applied(JobStatus::Queued) => {
                    self.stats.retried += 1;
                    // Its retry may already be due: look again.
                    self.idle = Idle::Busy;
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
            let rescued = self.store.rescue_workers(&ids, self.clock.now());
            self.journal();
            match rescued {
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
                    self.idle = Idle::Busy;
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

    /// Ends the pool: on a fatal error, tells running handlers to stop and
    /// writes nothing (the next serve on a sound database rescues the
    /// claims); otherwise gives back unstarted claims, waits up to the grace
    /// period for running jobs, gives back what still runs, and leaves
    /// `serves`.
    pub(super) fn stop(
        mut self,
        job_tx: Sender<Claim>,
        done_rx: &Receiver<Msg>,
        stop_tx: Sender<()>,
    ) -> Result<PoolStats> {
        if let Some(e) = self.fatal.take() {
            drop(job_tx);
            drop(stop_tx);
            return Err(e);
        }
        self.shutdown(job_tx, done_rx, stop_tx);
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        if self.serve_row.is_some()
            && let Err(e) = self.store.forget_serves(std::slice::from_ref(&self.worker))
        {
            self.log_store_error(&e);
        }
        log::info!(
            "Worker pool {} stopped: {} succeeded, {} failed, {} to retry, {} given back",
            self.worker,
            self.stats.succeeded,
            self.stats.failed,
            self.stats.retried,
            self.stats.released
        );
        Ok(self.stats)
    }

    /// Stops claiming, gives back claims no worker started, waits up to the
    /// grace period for running jobs, then gives back what is still running.
    fn shutdown(&mut self, job_tx: Sender<Claim>, done_rx: &Receiver<Msg>, stop_tx: Sender<()>) {
        drop(job_tx);
        let unstarted: Vec<ClaimToken> = self.backlog.try_iter().map(|c| c.token).collect();
        self.release(&unstarted, false);

        let deadline = Instant::now() + self.config.grace_period;
        if !self.in_flight.is_empty() {
            log::info!(
                "Shutting down: waiting up to {} for {} running jobs",
                crate::timestamp::human_duration(self.config.grace_period),
                self.in_flight.len()
            );
        }
        loop {
            self.record_pending();
            if self.in_flight.is_empty() || Instant::now() >= deadline {
                break;
            }
            match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(msg) => {
                    self.on_msg(msg);
                    for msg in done_rx.try_iter() {
                        self.on_msg(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // Tell handlers still running that nobody waits for them any more.
        drop(stop_tx);
        let left: Vec<ClaimToken> = self.in_flight.values().cloned().collect();
        if !left.is_empty() {
            log::warn!(
                "Grace period over: giving back {} running jobs; they will run again",
                left.len()
            );
        }
        self.release(&left, true);
    }

    /// Records the outcomes that arrived (during shutdown, without claiming).
    fn record_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let done = std::mem::take(&mut self.pending);
        let result = self.store.complete(&done, self.clock.now());
        self.journal();
        match result {
            Ok(reports) => self.record(reports, &done),
            Err(e) => {
                self.log_store_error(&e);
                self.pending = done;
            }
        }
    }

    /// Gives claims back; `started` ones count against the release
    /// allowance (see [`crate::state::RELEASE_ALLOWANCE`]).
    fn release(&mut self, tokens: &[ClaimToken], started: bool) {
        if tokens.is_empty() || self.fatal.is_some() {
            return;
        }
        let mut pause = Duration::from_millis(50);
        for _ in 0..10 {
            let now = self.clock.now();
            let released = if started {
                self.store.release(tokens, now)
            } else {
                self.store.release_unstarted(tokens, now)
            };
            self.journal();
            match released {
                Ok(reports) => {
                    for (t, r) in tokens.iter().zip(reports) {
                        self.in_flight.remove(&t.job_id);
                        if r != Report::Stale {
                            self.stats.released += 1;
                            self.emit(PoolEvent::Released { job_id: t.job_id });
                        }
                    }
                    return;
                }
                Err(e) => {
                    self.log_store_error(&e);
                    if self.fatal.is_some() {
                        return;
                    }
                    // Stay responsive to nothing but time here: the pool is
                    // already stopping.
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        }
        self.stats.unreleased += tokens.len() as u64;
        log::error!(
            "Could not give back {} jobs; the next serve rescues them",
            tokens.len()
        );
    }
}

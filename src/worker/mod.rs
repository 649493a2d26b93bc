//! The worker pool behind `bundleq serve`: one coordinator thread that owns
//! the database connection, and N worker threads that run handlers, joined
//! by crossbeam channels. `coordinator` holds the loop, `threads` the
//! worker threads, `journal` the log lines in the seed's wording.
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
//! which it only asks the store whether another process wrote anything
//! ([`Store::changes`]). There is no busy loop.
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
//! Every thread the pool starts is joined before [`run_pool`] returns.

mod coordinator;
mod journal;
mod threads;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use serde::Serialize;
use uuid::Uuid;

pub use crate::presence::worker_id;
pub use journal::log_transitions;

use crate::config::WorkersConfig;
use crate::error::Result;
use crate::handler::Handlers;
use crate::presence::Presence;
use crate::store::{Claim, Report, Store};
use crate::timestamp::Clock;

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
    /// Nothing is due; the pool is about to sleep. Its last claim was made
    /// after the first `wakes` wake-ups (see [`PoolControl::wake`]), so a
    /// waiter can tell this idle from one that came before its wake-up.
    Idle {
        /// Wake-ups asked for before the claim that found nothing.
        wakes: u64,
    },
}

/// Controls a running pool from other threads: shut it down, wake it.
#[derive(Clone, Debug)]
pub struct PoolControl {
    /// Set once; the coordinator checks it every turn.
    quit: Arc<AtomicBool>,
    /// Wake-ups asked for so far.
    wakes: Arc<AtomicU64>,
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
            wakes: Arc::new(AtomicU64::new(0)),
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

    /// Tells an idle pool that work was just enqueued (or a clock moved):
    /// it claims again at once. Returns the number of wake-ups asked for
    /// so far, this one included (see [`PoolEvent::Idle`]).
    pub fn wake(&self) -> u64 {
        let n = self.wakes.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.wake_tx.try_send(());
        n
    }

    /// Makes an idle pool claim again without counting a wake-up (another
    /// process announced new work).
    fn nudge(&self) {
        let _ = self.wake_tx.try_send(());
    }

    /// Wake-ups asked for so far.
    fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::SeqCst)
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

/// Runs the pool on this thread until shutdown (or, with `once`, until
/// nothing is due), then returns what it did. The worker threads are
/// joined before it returns.
pub fn run_pool(
    store: Store,
    handlers: Handlers,
    config: &PoolConfig,
    clock: Arc<dyn Clock>,
    control: &PoolControl,
) -> Result<PoolStats> {
    let (job_tx, job_rx) = bounded::<Claim>(config.workers + config.prefetch);
    let (done_tx, done_rx) = unbounded::<threads::Msg>();
    // Dropping stop_tx tells handlers the pool no longer waits for them.
    let (stop_tx, stop_rx) = bounded::<()>(0);
    // Where the database can announce other processes' writes (PostgreSQL's
    // LISTEN), a connection of its own waits for them and wakes the pool;
    // polling stays the fallback.
    let listener = if store.can_wait_for_change() {
        Some(store.reopen()?)
    } else {
        None
    };
    // Set when the coordinator is done (also without a shutdown: `once`).
    let pool_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(mut listener) = listener {
            let pool_done = &pool_done;
            let poll = config.poll_interval.min(std::time::Duration::from_secs(1));
            std::thread::Builder::new()
                .name("bundleq-listener".to_owned())
                .spawn_scoped(scope, move || {
                    while !control.is_shutting_down() && !pool_done.load(Ordering::SeqCst) {
                        match listener.wait_for_change(std::time::Duration::from_millis(250)) {
                            Ok(true) => control.nudge(),
                            Ok(false) => {}
                            // The coordinator reports the database's
                            // troubles; this waits and listens again.
                            Err(_) => std::thread::sleep(poll),
                        }
                    }
                })
                .map_err(|source| crate::Error::Io {
                    action: "start listener thread",
                    path: "bundleq-listener".into(),
                    source,
                })?;
        }
        for i in 0..config.workers {
            let (jobs, done, handlers, stop) = (
                job_rx.clone(),
                done_tx.clone(),
                handlers.clone(),
                stop_rx.clone(),
            );
            let name = format!("bundleq-worker-{i}");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, move || {
                    threads::worker(&name, jobs, done, handlers, stop)
                })
                .map_err(|source| crate::Error::Io {
                    action: "start worker thread",
                    path: format!("bundleq-worker-{i}").into(),
                    source,
                })?;
        }
        drop(done_tx);
        let mut co = coordinator::Coordinator::new(store, config, clock, control, job_rx);
        co.run(&job_tx, &done_rx);
        let stopped = co.stop(job_tx, &done_rx, stop_tx);
        pool_done.store(true, Ordering::SeqCst);
        stopped
    })
}

//! The worker pool driven through the library: retries, permanent
//! failures, panics, wake-ups, heartbeats and shutdown. Tests wait on the
//! pool's events, never on sleeps.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bundleq::handler::{Handlers, JobContext};
use bundleq::state::Backoff;
use bundleq::store::{JobFilter, QueuePolicy, Report, StoreOptions, Synchronous};
use bundleq::worker::{PoolConfig, PoolControl, PoolEvent, PoolStats, run_pool};
use bundleq::{JobStatus, Outcome, Store, SystemClock};
use common::{Backend, job};
use crossbeam_channel::{Receiver, unbounded};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn store_with(b: Backend, lock_timeout: Duration) -> (tempfile::TempDir, Store) {
    store_with_sync(b, lock_timeout, Synchronous::Full)
}

fn store_with_sync(
    b: Backend,
    lock_timeout: Duration,
    synchronous: Synchronous,
) -> (tempfile::TempDir, Store) {
    b.store_with(StoreOptions {
        synchronous,
        policy: QueuePolicy {
            lock_timeout,
            // Retries are due at once, so tests need not wait out a backoff.
            backoff: Backoff {
                base: Duration::ZERO,
                cap: Duration::ZERO,
                jitter: 0.0,
            },
            max_attempts: 3,
            ..QueuePolicy::default()
        },
        ..StoreOptions::default()
    })
}

fn config(workers: usize) -> PoolConfig {
    PoolConfig {
        workers,
        prefetch: 8,
        poll_interval: Duration::from_millis(50),
        grace_period: Duration::from_secs(10),
        once: false,
        summary_interval: Duration::from_secs(10),
        presence: None,
    }
}

struct Running {
    control: PoolControl,
    events: Receiver<PoolEvent>,
    handle: thread::JoinHandle<PoolStats>,
}

fn start(store: Store, handlers: Handlers, config: PoolConfig) -> Running {
    let (tx, events) = unbounded();
    let control = PoolControl::new().with_events(tx);
    let c = control.clone();
    let handle = thread::spawn(move || {
        run_pool(store, handlers, &config, Arc::new(SystemClock), &c).unwrap()
    });
    Running {
        control,
        events,
        handle,
    }
}

impl Running {
    /// Waits until `n` jobs reached a final state (succeeded or failed).
    fn wait_finished(&self, n: usize) {
        let mut done = 0;
        while done < n {
            match self
                .events
                .recv_timeout(WAIT)
                .expect("pool made no progress")
            {
                PoolEvent::Reported {
                    report: Report::Applied(s),
                    ..
                } if s.is_finished() => done += 1,
                _ => {}
            }
        }
    }

    /// Waits until the pool goes idle after a claim made since its
    /// `wakes`-th wake-up (0: any idle).
    fn wait_idle(&self, wakes: u64) {
        wait_idle(&self.events, wakes);
    }

    fn stop(self) -> PoolStats {
        self.control.shutdown();
        self.handle.join().unwrap()
    }
}

/// Waits for an `Idle` event that follows a claim made after `wakes`
/// wake-ups: an earlier, stale one (still in the channel from before the
/// wake-up) does not count.
fn wait_idle(events: &Receiver<PoolEvent>, wakes: u64) {
    loop {
        if let PoolEvent::Idle { wakes: seen } =
            events.recv_timeout(WAIT).expect("pool never went idle")
            && seen >= wakes
        {
            return;
        }
    }
}

/// A `process_bundle` handler answering `outcome(n)` on its n-th call
/// (from 0), and the count of its calls.
fn counted(outcome: impl Fn(u32) -> Outcome + Send + Sync + 'static) -> (Handlers, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let mut handlers = Handlers::new();
    handlers.register("process_bundle", move |_: &mut JobContext<'_>| {
        outcome(c.fetch_add(1, Ordering::SeqCst))
    });
    (handlers, calls)
}

fn a_job_failing_transiently_twice_then_succeeding_ends_succeeded_after_three_attempts(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let tenant = Uuid::now_v7();
    let id = store
        .enqueue(&job(tenant), bundleq::Timestamp::now())
        .unwrap();
    let (handlers, calls) = counted(|call| {
        if call < 2 {
            Outcome::Retry("flaky".into())
        } else {
            Outcome::Succeeded
        }
    });
    let pool = start(store.reopen().unwrap(), handlers, config(2));
    pool.wait_finished(1);
    let stats = pool.stop();
    assert_eq!((stats.succeeded, stats.retried), (1, 2));
    let j = store.job(tenant, id).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 3));
    let history = store.attempts(tenant, id).unwrap();
    let outcomes: Vec<_> = history.iter().map(|a| a.outcome.clone().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "retry", "succeeded"]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

fn a_permanent_failure_is_not_retried(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let tenant = Uuid::now_v7();
    let id = store
        .enqueue(&job(tenant), bundleq::Timestamp::now())
        .unwrap();
    let (handlers, calls) = counted(|_| Outcome::Fail("1 validation error for RunBundleV1".into()));
    let pool = start(store.reopen().unwrap(), handlers, config(2));
    pool.wait_finished(1);
    pool.wait_idle(0);
    pool.stop();
    let j = store.job(tenant, id).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Failed, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn a_panicking_handler_counts_as_an_attempt_and_the_pool_goes_on(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let tenant = Uuid::now_v7();
    let now = bundleq::Timestamp::now();
    let mut poison = job(tenant);
    poison.job_type = "poison".into();
    let poison_id = store.enqueue(&poison, now).unwrap();
    store.enqueue_many(&vec![job(tenant); 20], now).unwrap();
    let mut handlers = Handlers::new();
    handlers.register("poison", |_: &mut JobContext<'_>| -> Outcome {
        panic!("boom")
    });
    handlers.register("process_bundle", |_: &mut JobContext<'_>| {
        Outcome::Succeeded
    });
    let pool = start(store.reopen().unwrap(), handlers, config(3));
    pool.wait_finished(21);
    let stats = pool.stop();
    assert_eq!((stats.succeeded, stats.failed, stats.retried), (20, 1, 2));
    let j = store.job(tenant, poison_id).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Failed, 3));
    assert_eq!(j.last_error.as_deref(), Some("handler panicked: boom"));
}

fn an_unknown_job_type_fails_with_a_clear_error(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let tenant = Uuid::now_v7();
    let mut j = job(tenant);
    j.job_type = "nobody_handles_this".into();
    let id = store.enqueue(&j, bundleq::Timestamp::now()).unwrap();
    let pool = start(store.reopen().unwrap(), Handlers::new(), config(1));
    pool.wait_finished(1);
    pool.stop();
    let j = store.job(tenant, id).unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert!(
        j.last_error
            .unwrap()
            .contains("no handler is configured for job type")
    );
}

fn an_idle_pool_picks_up_work_enqueued_by_another_connection(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let mut handlers = Handlers::new();
    handlers.register("process_bundle", |_: &mut JobContext<'_>| {
        Outcome::Succeeded
    });
    let pool = start(store.reopen().unwrap(), handlers, config(2));
    pool.wait_idle(0);
    let tenant = Uuid::now_v7();
    store
        .enqueue_many(&vec![job(tenant); 5], bundleq::Timestamp::now())
        .unwrap();
    // Found by the cheap "anything changed?" poll, without a wake-up.
    pool.wait_finished(5);
    assert_eq!(pool.stop().succeeded, 5);
}

fn a_wake_up_claims_at_once_without_waiting_for_the_poll(b: Backend) {
    // Neither the poll nor a heartbeat comes within the test's patience:
    // only the wake-up can make the pool look.
    let (_dir, mut store) = store_with(b, Duration::from_secs(3600));
    let (handlers, calls) = counted(|_| Outcome::Succeeded);
    let pool = start(
        store.reopen().unwrap(),
        handlers,
        PoolConfig {
            poll_interval: Duration::from_secs(3600),
            ..config(1)
        },
    );
    pool.wait_idle(0);
    store
        .enqueue(&job(Uuid::now_v7()), bundleq::Timestamp::now())
        .unwrap();
    pool.control.wake();
    pool.wait_finished(1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stop().succeeded, 1);
}

fn heartbeats_keep_a_live_long_job_from_being_rescued(b: Backend) {
    // Heartbeats come every lock_timeout / 4: a stall of up to 4.5 s of a
    // loaded test machine still leaves the lock fresh. What is tested is
    // the heartbeat, not the disk: without an fsync at each commit, a
    // heartbeat cannot wait seconds behind other tests' writeback (with
    // one, it did under the full suite).
    let (_dir, mut store) = store_with_sync(b, Duration::from_secs(6), Synchronous::Normal);
    let tenant = Uuid::now_v7();
    let id = store
        .enqueue(&job(tenant), bundleq::Timestamp::now())
        .unwrap();
    let mut handlers = Handlers::new();
    // The job itself takes more than two lock timeouts.
    handlers.register("process_bundle", |_: &mut JobContext<'_>| {
        thread::sleep(Duration::from_secs(13));
        Outcome::Succeeded
    });
    let pool = start(store.reopen().unwrap(), handlers, config(1));
    // The pool holds it first (a rival started before that would simply
    // claim the queued job).
    common::wait_until("the pool to claim the job", || {
        store.job(tenant, id).unwrap().status == JobStatus::Running
    });
    // Meanwhile a rival keeps trying to rescue it.
    let mut rival = store.reopen().unwrap();
    let rival_thread = thread::spawn(move || {
        let mut rescued = 0;
        for _ in 0..130 {
            rescued += rival
                .claim(1, "rival", bundleq::Timestamp::now())
                .unwrap()
                .len();
            thread::sleep(Duration::from_millis(100));
        }
        rescued
    });
    pool.wait_finished(1);
    assert_eq!(rival_thread.join().unwrap(), 0, "a live job was rescued");
    pool.stop();
    let j = store.job(tenant, id).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 1));
}

fn shutdown_gives_back_unstarted_and_overdue_jobs_and_leaves_nothing_running(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let tenant = Uuid::now_v7();
    store
        .enqueue_many(&vec![job(tenant); 10], bundleq::Timestamp::now())
        .unwrap();
    let started = Arc::new(Mutex::new(HashMap::new()));
    let s = Arc::clone(&started);
    let (started_tx, started_rx) = unbounded();
    let mut handlers = Handlers::new();
    // Runs until the pool stops waiting for it.
    handlers.register("process_bundle", move |ctx: &mut JobContext<'_>| {
        s.lock().unwrap().insert(ctx.job.id, ());
        started_tx.send(()).unwrap();
        let _ = ctx.stop.recv();
        Outcome::Retry("interrupted".into())
    });
    let mut cfg = config(2);
    cfg.grace_period = Duration::from_millis(200);
    let pool = start(store.reopen().unwrap(), handlers, cfg);
    started_rx.recv_timeout(WAIT).unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    let stats = pool.stop();
    // Two were running past the grace period; the rest of what the pool
    // held had not started. All of it is given back.
    assert!(
        stats.claimed > 2,
        "the pool held an unstarted claim too: {stats:?}"
    );
    assert_eq!(stats.released, stats.claimed);
    let jobs = store.jobs(tenant, &JobFilter::default()).unwrap();
    assert!(
        jobs.iter()
            .all(|j| j.status == JobStatus::Queued && j.attempts == 0),
        "{jobs:#?}"
    );
    assert_eq!(started.lock().unwrap().len(), 2);
}

fn a_zombie_worker_reporting_after_its_job_was_rescued_changes_nothing(b: Backend) {
    let (_dir, mut store) = store_with(b, Duration::from_secs(60));
    let tenant = Uuid::now_v7();
    let id = store
        .enqueue(&job(tenant), bundleq::Timestamp::now())
        .unwrap();
    let (started_tx, started_rx) = unbounded();
    let (go_tx, go_rx) = unbounded::<()>();
    let mut handlers = Handlers::new();
    handlers.register("process_bundle", move |_: &mut JobContext<'_>| {
        started_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        Outcome::Succeeded
    });
    let pool = start(store.reopen().unwrap(), handlers, config(1));
    started_rx.recv_timeout(WAIT).unwrap();
    // Another worker, whose clock says the lock expired, rescues the job
    // and completes it.
    let future = bundleq::Timestamp::now().plus(Duration::from_secs(120));
    let rescue = store.claim(1, "rescuer", future).unwrap().remove(0);
    assert_eq!(rescue.job.id, id);
    assert_eq!(
        store
            .report(&rescue.token, &Outcome::Succeeded, future)
            .unwrap(),
        Report::Applied(JobStatus::Succeeded)
    );
    // Now the original worker finishes and reports.
    go_tx.send(()).unwrap();
    loop {
        match pool.events.recv_timeout(WAIT).unwrap() {
            PoolEvent::Reported { job_id, report } if job_id == id => {
                assert_eq!(report, Report::Stale);
                break;
            }
            _ => {}
        }
    }
    let stats = pool.stop();
    assert_eq!((stats.stale, stats.succeeded), (1, 0));
    let j = store.job(tenant, id).unwrap();
    assert_eq!(
        (j.status, j.attempts, j.locked_by),
        (JobStatus::Succeeded, 2, None)
    );
    let history = store.attempts(tenant, id).unwrap();
    let outcomes: Vec<_> = history.iter().map(|a| a.outcome.clone().unwrap()).collect();
    assert_eq!(outcomes, ["lost", "succeeded"], "completed exactly once");
}

fn with_an_injected_clock_a_retry_waits_out_its_backoff_and_no_longer(b: Backend) {
    // The default policy: 30 s, 60 s, … backoff.
    let (_dir, mut store) = b.store_with(StoreOptions::default());
    let clock = bundleq::ManualClock::new(common::t0());
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), common::t0()).unwrap();
    let (handlers, calls) = counted(|call| {
        if call == 0 {
            Outcome::Retry("first try".into())
        } else {
            Outcome::Succeeded
        }
    });
    let (tx, events) = unbounded();
    let control = PoolControl::new().with_events(tx);
    let (pool_store, pool_clock, pool_control) =
        (store.reopen().unwrap(), clock.clone(), control.clone());
    let handle = thread::spawn(move || {
        run_pool(
            pool_store,
            handlers,
            &config(1),
            Arc::new(pool_clock),
            &pool_control,
        )
        .unwrap()
    });
    let next_report = || loop {
        if let PoolEvent::Reported { report, .. } = events.recv_timeout(WAIT).unwrap() {
            return report;
        }
    };
    assert_eq!(next_report(), Report::Applied(JobStatus::Queued));
    let j = store.job(tenant, id).unwrap();
    assert_eq!(j.retry_at, Some(common::t0().plus(Duration::from_secs(30))));
    // 29 s later by the injected clock: still not due, however often the
    // pool looks.
    clock.advance(Duration::from_secs(29));
    let woken = control.wake();
    wait_idle(&events, woken);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // One more second: due, claimed at once on a wake-up.
    clock.advance(Duration::from_secs(1));
    control.wake();
    assert_eq!(next_report(), Report::Applied(JobStatus::Succeeded));
    control.shutdown();
    handle.join().unwrap();
    let j = store.job(tenant, id).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 2));
}

for_each_backend!(
    a_job_failing_transiently_twice_then_succeeding_ends_succeeded_after_three_attempts,
    a_permanent_failure_is_not_retried,
    a_panicking_handler_counts_as_an_attempt_and_the_pool_goes_on,
    an_unknown_job_type_fails_with_a_clear_error,
    an_idle_pool_picks_up_work_enqueued_by_another_connection,
    a_wake_up_claims_at_once_without_waiting_for_the_poll,
    heartbeats_keep_a_live_long_job_from_being_rescued,
    shutdown_gives_back_unstarted_and_overdue_jobs_and_leaves_nothing_running,
    a_zombie_worker_reporting_after_its_job_was_rescued_changes_nothing,
    with_an_injected_clock_a_retry_waits_out_its_backoff_and_no_longer,
);

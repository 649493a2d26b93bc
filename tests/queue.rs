//! The job store's state machine, driven through the library with time
//! injected: the seed's proof outputs made executable, rescue, fencing and
//! concurrent claims. Part of the conformance suite: every test runs on
//! every backend.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use bundleq::store::{JobFilter, NewJob, PruneFilter, Report};
use bundleq::{Error, JobStatus, Outcome};
use common::{Backend, job, secs, t0};
use uuid::Uuid;

fn seed_retry_progression_queued_0_1_2_then_failed_3(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(1800));
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();

    let j = store.job(tenant, id).unwrap();
    assert_eq!(
        (j.status, j.attempts, j.max_attempts, j.retry_at),
        (JobStatus::Queued, 0, 3, None)
    );

    let mut now = t0();
    for (attempt, delay) in [(1u32, 30u64), (2, 60)] {
        let claims = store.claim(1, "w1", now).unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].token.attempt, attempt);
        let msg = format!("Simulated failure {attempt}");
        let r = store
            .report(&claims[0].token, &Outcome::Retry(msg.clone()), now)
            .unwrap();
        assert_eq!(r, Report::Applied(JobStatus::Queued));
        let j = store.job(tenant, id).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!(j.attempts, attempt);
        assert_eq!(j.retry_at, Some(now.plus(secs(delay))));
        assert_eq!(j.last_error.as_deref(), Some(msg.as_str()));
        assert_eq!((j.locked_at, j.locked_by), (None, None));
        // Not due before its retry_at.
        assert!(
            store
                .claim(1, "w1", now.plus(secs(delay - 1)))
                .unwrap()
                .is_empty()
        );
        now = now.plus(secs(delay));
    }
    let claims = store.claim(1, "w1", now).unwrap();
    assert_eq!(claims[0].token.attempt, 3);
    let r = store
        .report(
            &claims[0].token,
            &Outcome::Retry("Simulated failure 3".into()),
            now,
        )
        .unwrap();
    assert_eq!(r, Report::Applied(JobStatus::Failed));
    let j = store.job(tenant, id).unwrap();
    assert_eq!(
        (j.status, j.attempts, j.retry_at),
        (JobStatus::Failed, 3, None)
    );
    assert_eq!(j.last_error.as_deref(), Some("Simulated failure 3"));
    // Never a fourth run.
    assert!(
        store
            .claim(1, "w1", now.plus(secs(86_400)))
            .unwrap()
            .is_empty()
    );
    let history = store.attempts(tenant, id).unwrap();
    let outcomes: Vec<_> = history
        .iter()
        .map(|a| a.outcome.as_deref().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "failed"]);
}

fn regression_validation_error_is_never_retried(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(1800));
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    let c = store.claim(1, "w", t0()).unwrap().remove(0);
    let err =
        "1 validation error for RunBundleV1\nsources.0.sha256: sha256 must be 64 hex characters";
    store
        .report(&c.token, &Outcome::Fail(err.into()), t0())
        .unwrap();
    let j = store.job(tenant, id).unwrap();
    assert_eq!(
        (j.status, j.attempts, j.retry_at),
        (JobStatus::Failed, 1, None)
    );
    assert!(
        store
            .claim(10, "w", t0().plus(secs(86_400)))
            .unwrap()
            .is_empty()
    );
}

fn expired_running_job_is_rescued_and_a_fresh_one_is_not(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(600));
    let tenant = Uuid::now_v7();
    let old = store.enqueue(&job(tenant), t0()).unwrap();
    let fresh = store.enqueue(&job(tenant), t0().plus(secs(1))).unwrap();
    assert_eq!(store.claim(1, "dead", t0()).unwrap()[0].job.id, old);
    assert_eq!(
        store.claim(1, "alive", t0().plus(secs(500))).unwrap()[0]
            .job
            .id,
        fresh
    );

    // At t0+601 only the first lock is older than the 600 s timeout.
    let rescued = store.claim(10, "rescuer", t0().plus(secs(601))).unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].job.id, old);
    assert_eq!(rescued[0].job.attempts, 2);
    assert_eq!(rescued[0].rescued_from.as_deref(), Some("dead"));
    let history = store.attempts(tenant, old).unwrap();
    assert_eq!(history[0].outcome.as_deref(), Some("lost"));
    assert_eq!(history[1].worker, "rescuer");
    assert_eq!(
        store.job(tenant, fresh).unwrap().locked_by.as_deref(),
        Some("alive")
    );
}

fn regression_job_abandoned_max_attempts_times_fails_and_never_runs_a_fourth_time(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    let mut now = t0();
    for attempt in 1..=3 {
        let c = store.claim(1, &format!("crashing-{attempt}"), now).unwrap();
        assert_eq!(c.len(), 1, "attempt {attempt}");
        assert_eq!(c[0].token.attempt, attempt);
        now = now.plus(secs(61));
    }
    assert!(store.claim(1, "next", now).unwrap().is_empty());
    let j = store.job(tenant, id).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Failed, 3));
    let err = j.last_error.unwrap();
    assert!(
        err.contains("worker crashing-3 was lost during attempt 3/3"),
        "{err}"
    );
    assert!(
        store
            .attempts(tenant, id)
            .unwrap()
            .iter()
            .all(|a| a.outcome.as_deref() == Some("lost"))
    );
}

fn fenced_report_from_a_rescued_worker_changes_nothing(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    let zombie = store.claim(1, "w", t0()).unwrap().remove(0);
    // The same worker name re-claims its own rescued job: a new claim.
    let later = t0().plus(secs(61));
    let owner = store.claim(1, "w", later).unwrap().remove(0);
    assert_eq!(owner.job.id, id);

    for outcome in [
        Outcome::Succeeded,
        Outcome::Fail("late".into()),
        Outcome::Retry("late".into()),
    ] {
        assert_eq!(
            store.report(&zombie.token, &outcome, later).unwrap(),
            Report::Stale
        );
    }
    assert_eq!(
        store
            .heartbeat(std::slice::from_ref(&zombie.token), later)
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .release(std::slice::from_ref(&zombie.token), later)
            .unwrap(),
        [Report::Stale]
    );
    let j = store.job(tenant, id).unwrap();
    assert_eq!(
        (j.status, j.attempts, j.last_error),
        (JobStatus::Running, 2, None)
    );

    assert_eq!(
        store
            .report(&owner.token, &Outcome::Succeeded, later)
            .unwrap(),
        Report::Applied(JobStatus::Succeeded)
    );
    // And a second report of the owner is stale too: exactly one completion.
    assert_eq!(
        store
            .report(&owner.token, &Outcome::Fail("x".into()), later)
            .unwrap(),
        Report::Stale
    );
    assert_eq!(store.job(tenant, id).unwrap().status, JobStatus::Succeeded);
}

fn zombie_cannot_complete_after_user_retry_resets_attempts(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let mut one = job(tenant);
    one.max_attempts = Some(1);
    let id = store.enqueue(&one, t0()).unwrap();
    let zombie = store.claim(1, "w", t0()).unwrap().remove(0);
    let later = t0().plus(secs(61));
    assert!(store.claim(1, "w", later).unwrap().is_empty()); // lost at max: failed
    store.retry(tenant, id, later, None).unwrap();
    let again = store.claim(1, "w", later).unwrap().remove(0);
    // Same worker name, same attempt number, but a different claim.
    assert_eq!((again.token.worker.as_str(), again.token.attempt), ("w", 1));
    assert_eq!(
        store
            .report(&zombie.token, &Outcome::Succeeded, later)
            .unwrap(),
        Report::Stale
    );
    assert_eq!(store.job(tenant, id).unwrap().status, JobStatus::Running);
}

fn heartbeat_keeps_a_live_long_job_from_rescue(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    store.enqueue(&job(tenant), t0()).unwrap();
    let c = store.claim(1, "w", t0()).unwrap().remove(0);
    for minute in 1..=10 {
        let now = t0().plus(secs(50 * minute));
        assert_eq!(
            store
                .heartbeat(std::slice::from_ref(&c.token), now)
                .unwrap(),
            1
        );
        assert!(
            store
                .claim(1, "other", now.plus(secs(30)))
                .unwrap()
                .is_empty()
        );
    }
}

fn release_gives_the_attempt_back_and_the_job_is_due_at_once(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    let c = store.claim(1, "w", t0()).unwrap().remove(0);
    assert_eq!(
        store.release(&[c.token], t0()).unwrap(),
        [Report::Applied(JobStatus::Queued)]
    );
    let j = store.job(tenant, id).unwrap();
    assert_eq!(
        (j.status, j.attempts, j.retry_at, j.locked_by),
        (JobStatus::Queued, 0, None, None)
    );
    let again = store.claim(1, "w2", t0()).unwrap();
    assert_eq!(again[0].token.attempt, 1);
    let history = store.attempts(tenant, id).unwrap();
    assert_eq!(history[0].outcome.as_deref(), Some("released"));
}

fn cancel_and_retry_follow_the_state_machine(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    // queued -> cancelled -> queued
    assert_eq!(
        store.cancel(tenant, id, t0()).unwrap().status,
        JobStatus::Cancelled
    );
    assert!(matches!(
        store.cancel(tenant, id, t0()),
        Err(Error::InvalidTransition { .. })
    ));
    let j = store.retry(tenant, id, t0(), None).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Queued, 0));
    // running cannot be cancelled or retried
    let c = store.claim(1, "w", t0()).unwrap().remove(0);
    assert!(matches!(
        store.cancel(tenant, id, t0()),
        Err(Error::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.retry(tenant, id, t0(), None),
        Err(Error::InvalidTransition { .. })
    ));
    store.report(&c.token, &Outcome::Succeeded, t0()).unwrap();
    // succeeded is final for users too
    assert!(matches!(
        store.retry(tenant, id, t0(), None),
        Err(Error::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.cancel(tenant, id, t0()),
        Err(Error::InvalidTransition { .. })
    ));
    // a job waiting out a backoff can be cancelled; retry_at is cleared
    let id2 = store.enqueue(&job(tenant), t0()).unwrap();
    let c = store.claim(1, "w", t0()).unwrap().remove(0);
    store
        .report(&c.token, &Outcome::Retry("x".into()), t0())
        .unwrap();
    let j = store.cancel(tenant, id2, t0()).unwrap();
    assert_eq!((j.status, j.retry_at), (JobStatus::Cancelled, None));
    // other tenants see nothing
    let other = Uuid::now_v7();
    assert!(matches!(
        store.cancel(other, id2, t0()),
        Err(Error::JobNotFound { .. })
    ));
    assert!(matches!(
        store.job(other, id2),
        Err(Error::JobNotFound { .. })
    ));
}

fn prune_deletes_only_old_finished_jobs_of_the_tenant(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let other = Uuid::now_v7();
    let done = store.enqueue(&job(tenant), t0()).unwrap();
    let queued = store.enqueue(&job(tenant), t0()).unwrap();
    let others = store.enqueue(&job(other), t0()).unwrap();
    let mut claims = store.claim(3, "w", t0()).unwrap();
    claims.retain(|c| c.job.id != queued);
    for c in &claims {
        store.report(&c.token, &Outcome::Succeeded, t0()).unwrap();
    }
    let release: Vec<_> = store.jobs(tenant, &JobFilter::default()).unwrap();
    assert_eq!(release.len(), 2);
    let filter = PruneFilter {
        finished_before: t0().plus(secs(1)),
        statuses: vec![],
    };
    // A dry run says what would go and deletes nothing.
    let would = store.prune(tenant, &filter, true).unwrap();
    assert_eq!(would.iter().map(|p| p.id).collect::<Vec<_>>(), [done]);
    assert!(store.job(tenant, done).is_ok());
    let pruned = store.prune(tenant, &filter, false).unwrap();
    assert_eq!(pruned, would);
    assert!(store.job(tenant, done).is_err());
    assert!(store.job(tenant, queued).is_ok());
    assert_eq!(
        store.job(other, others).unwrap().status,
        JobStatus::Succeeded
    );
    assert!(store.attempts(tenant, done).unwrap().is_empty());
    let bad = PruneFilter {
        finished_before: t0(),
        statuses: vec![JobStatus::Queued],
    };
    assert!(store.prune(tenant, &bad, false).is_err());
}

fn attempts_never_exceed_max_attempts_even_when_claims_race_rescues(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(10));
    let tenant = Uuid::now_v7();
    let mut j = job(tenant);
    j.max_attempts = Some(2);
    let ids = store.enqueue_many(&vec![j; 50], t0()).unwrap();
    let mut now = t0();
    for round in 0..6 {
        let _ = store.claim(100, &format!("w{round}"), now).unwrap();
        now = now.plus(secs(11));
    }
    for id in ids {
        let j = store.job(tenant, id).unwrap();
        assert!(j.attempts <= j.max_attempts);
        assert_eq!(j.status, JobStatus::Failed);
    }
}

fn two_threads_on_separate_connections_claim_each_of_10000_jobs_exactly_once(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(1800));
    let tenant = Uuid::now_v7();
    let jobs: Vec<_> = (0..10_000).map(|_| job(tenant)).collect();
    store.enqueue_many(&jobs, t0()).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let mut s = store.reopen().unwrap();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                loop {
                    let claims = s.claim(7, &format!("w{w}"), t0()).unwrap();
                    if claims.is_empty() {
                        break got;
                    }
                    got.extend(claims.into_iter().map(|c| c.job.id));
                }
            })
        })
        .collect();
    let results: Vec<Vec<Uuid>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let total: usize = results.iter().map(Vec::len).sum();
    let distinct: HashSet<_> = results.iter().flatten().collect();
    assert_eq!(total, 10_000);
    assert_eq!(distinct.len(), 10_000);
}

fn claim_is_oldest_first(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let a = store.enqueue(&job(tenant), t0()).unwrap();
    let b = store.enqueue(&job(tenant), t0().plus(secs(1))).unwrap();
    let c = store.claim(2, "w", t0().plus(secs(2))).unwrap();
    assert_eq!(c.iter().map(|c| c.job.id).collect::<Vec<_>>(), [a, b]);
}

fn a_clock_moved_backwards_never_gets_a_job_claimed_twice(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let later = t0().plus(secs(3600));
    let id = store.enqueue(&job(tenant), later).unwrap();
    let first = store.claim(1, "w1", later).unwrap().remove(0);
    // The clock jumps an hour back: the lock looks fresh (even from the
    // future), not expired.
    assert!(store.claim(10, "w2", t0()).unwrap().is_empty());
    // A heartbeat from the back-dated clock does not age the lock.
    assert_eq!(
        store
            .heartbeat(std::slice::from_ref(&first.token), t0())
            .unwrap(),
        1
    );
    assert_eq!(store.job(tenant, id).unwrap().locked_at, Some(later));
    assert!(
        store
            .claim(10, "w2", later.plus(secs(59)))
            .unwrap()
            .is_empty()
    );
    // A retry scheduled before the jump is not due early either.
    store
        .report(&first.token, &Outcome::Retry("x".into()), later)
        .unwrap();
    assert!(store.claim(10, "w2", t0()).unwrap().is_empty());
    assert_eq!(
        store.claim(10, "w2", later.plus(secs(30))).unwrap().len(),
        1
    );
}

fn every_attempt_is_in_the_history_once_whatever_path_the_job_took(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let outcomes = |store: &mut bundleq::Store, id| -> Vec<(u32, Option<String>, String)> {
        store
            .attempts(tenant, id)
            .unwrap()
            .into_iter()
            .map(|a| (a.attempt, a.outcome, a.worker))
            .collect()
    };
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    // Running: shown, unfinished.
    let c = store.claim(1, "w1", t0()).unwrap().remove(0);
    assert_eq!(outcomes(&mut store, id), [(1, None, "w1".to_owned())]);
    // A retry, then a permanent failure.
    store
        .report(&c.token, &Outcome::Retry("flaky".into()), t0())
        .unwrap();
    let c = store.claim(1, "w2", t0().plus(secs(30))).unwrap().remove(0);
    store
        .report(
            &c.token,
            &Outcome::Fail("broken".into()),
            t0().plus(secs(31)),
        )
        .unwrap();
    let failed = store.attempts(tenant, id).unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1].outcome.as_deref(), Some("failed"));
    assert_eq!(failed[1].error.as_deref(), Some("broken"));
    assert_eq!(failed[1].finished_at, Some(t0().plus(secs(31))));
    assert_eq!(failed[1].started_at, t0().plus(secs(30)));
    // A user's retry keeps the failed attempt; the new one succeeds.
    store.retry(tenant, id, t0().plus(secs(40)), None).unwrap();
    let c = store.claim(1, "w3", t0().plus(secs(41))).unwrap().remove(0);
    store
        .report(&c.token, &Outcome::Succeeded, t0().plus(secs(42)))
        .unwrap();
    assert_eq!(
        outcomes(&mut store, id),
        [
            (1, Some("retry".to_owned()), "w1".to_owned()),
            (2, Some("failed".to_owned()), "w2".to_owned()),
            (1, Some("succeeded".to_owned()), "w3".to_owned()),
        ]
    );
    // A cancelled job keeps the attempt that failed it.
    let other = store.enqueue(&job(tenant), t0()).unwrap();
    let c = store.claim(1, "w4", t0()).unwrap().remove(0);
    assert_eq!(c.job.id, other);
    store
        .report(&c.token, &Outcome::Fail("no".into()), t0())
        .unwrap();
    store.cancel(tenant, other, t0().plus(secs(1))).unwrap();
    assert_eq!(
        outcomes(&mut store, other),
        [(1, Some("failed".to_owned()), "w4".to_owned())]
    );
}

/// Puts jobs into `tenant`'s queue, a second apart from `start`: first the
/// ones a claim decides — succeeded (a), failed (a), waiting 30 s for a
/// retry (b), running (b) —, with `queued: false`; then, with `queued:
/// true`, the ones left queued or cancelled — cancelled (a), ready (a and
/// b), scheduled an hour ahead (a). (A claim takes the oldest due job of
/// any tenant: the claimed ones come first.)
fn jobs_of_each_fate(
    store: &mut bundleq::Store,
    tenant: Uuid,
    start: bundleq::Timestamp,
    queued: bool,
) {
    let typed = |t: &str| NewJob {
        job_type: t.to_owned(),
        ..job(tenant)
    };
    let at = |s: u64| start.plus(secs(s));
    if !queued {
        for (i, (ty, outcome)) in [
            ("a", Some(Outcome::Succeeded)),
            ("a", Some(Outcome::Fail("broken".into()))),
            ("b", Some(Outcome::Retry("later".into()))),
            ("b", None),
        ]
        .into_iter()
        .enumerate()
        {
            let now = at(i as u64);
            store.enqueue(&typed(ty), now).unwrap();
            let claims = store.claim(1, "w1", now).unwrap();
            assert_eq!(claims.len(), 1);
            assert_eq!(claims[0].job.tenant_id, tenant);
            if let Some(o) = outcome {
                store.report(&claims[0].token, &o, now).unwrap();
            }
        }
        return;
    }
    let cancelled = store.enqueue(&typed("a"), at(4)).unwrap();
    store.cancel(tenant, cancelled, at(4)).unwrap();
    store.enqueue(&typed("a"), at(5)).unwrap();
    store.enqueue(&typed("b"), at(6)).unwrap();
    store
        .enqueue(
            &NewJob {
                not_before: Some(at(3600)),
                ..typed("a")
            },
            at(7),
        )
        .unwrap();
}

/// `tenant`'s stats, `start` being the start given to
/// [`jobs_of_each_fate`], read 10 s after it.
fn check_fates(store: &mut bundleq::Store, tenant: Uuid, start: bundleq::Timestamp) {
    let s = store.stats(tenant, start.plus(secs(10))).unwrap();
    let count = |st: JobStatus| s.counts.get(&st).copied().unwrap_or(0);
    assert_eq!(
        [
            count(JobStatus::Queued),
            count(JobStatus::Running),
            count(JobStatus::Succeeded),
            count(JobStatus::Failed),
            count(JobStatus::Cancelled)
        ],
        [4, 1, 1, 1, 1],
        "{s:?}"
    );
    assert_eq!((s.ready, s.scheduled, s.retrying), (2, 1, 1), "{s:?}");
    let of = |t: &str| {
        s.by_type[t]
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("a"),
        [
            ("cancelled", 1),
            ("failed", 1),
            ("ready", 1),
            ("scheduled", 1),
            ("succeeded", 1)
        ]
    );
    assert_eq!(of("b"), [("ready", 1), ("retrying", 1), ("running", 1)]);
    // The oldest queued job is the one waiting for its retry (enqueued 2 s
    // in), due 30 s after its failure, before the scheduled one.
    assert_eq!(s.oldest_queued, Some(start.plus(secs(2))));
    assert_eq!(s.next_retry, Some(start.plus(secs(32))));
}

fn status_counts_every_bucket_of_a_tenant_alone_or_among_others(b: Backend) {
    // A tenant alone in its database (SQLite then reads the table in order).
    let (_dir, mut store) = b.temp_store(secs(1800));
    let a = Uuid::now_v7();
    jobs_of_each_fate(&mut store, a, t0(), false);
    jobs_of_each_fate(&mut store, a, t0(), true);
    check_fates(&mut store, a, t0());
    // Two tenants in one database: each counts only its own.
    let (_dir2, mut store) = b.temp_store(secs(1800));
    let other = Uuid::now_v7();
    let later = t0().plus(secs(10));
    jobs_of_each_fate(&mut store, a, t0(), false);
    jobs_of_each_fate(&mut store, other, later, false);
    jobs_of_each_fate(&mut store, a, t0(), true);
    jobs_of_each_fate(&mut store, other, later, true);
    check_fates(&mut store, a, t0());
    check_fates(&mut store, other, later);
    let nobody = store.stats(Uuid::now_v7(), later).unwrap();
    assert_eq!(nobody.counts.values().sum::<u64>(), 0);
    assert_eq!((nobody.oldest_queued, nobody.next_retry), (None, None));
}

for_each_backend!(
    seed_retry_progression_queued_0_1_2_then_failed_3,
    regression_validation_error_is_never_retried,
    expired_running_job_is_rescued_and_a_fresh_one_is_not,
    regression_job_abandoned_max_attempts_times_fails_and_never_runs_a_fourth_time,
    fenced_report_from_a_rescued_worker_changes_nothing,
    zombie_cannot_complete_after_user_retry_resets_attempts,
    heartbeat_keeps_a_live_long_job_from_rescue,
    release_gives_the_attempt_back_and_the_job_is_due_at_once,
    cancel_and_retry_follow_the_state_machine,
    prune_deletes_only_old_finished_jobs_of_the_tenant,
    attempts_never_exceed_max_attempts_even_when_claims_race_rescues,
    two_threads_on_separate_connections_claim_each_of_10000_jobs_exactly_once,
    claim_is_oldest_first,
    a_clock_moved_backwards_never_gets_a_job_claimed_twice,
    every_attempt_is_in_the_history_once_whatever_path_the_job_took,
    a_job_enqueued_not_before_a_time_is_claimed_then_and_not_earlier,
    status_counts_every_bucket_of_a_tenant_alone_or_among_others,
);

fn a_job_enqueued_not_before_a_time_is_claimed_then_and_not_earlier(b: Backend) {
    let (_dir, mut store) = b.temp_store(secs(600));
    let tenant = Uuid::now_v7();
    let later = NewJob {
        not_before: Some(t0().plus(secs(3600))),
        ..job(tenant)
    };
    let parked = store.enqueue(&later, t0()).unwrap();
    // Younger than the parked one, but due: claimed first.
    let due = store.enqueue(&job(tenant), t0().plus(secs(1))).unwrap();
    let j = store.job(tenant, parked).unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Queued, 0));
    assert_eq!(j.retry_at, Some(t0().plus(secs(3600))));
    let first = store.claim(10, "w", t0().plus(secs(2))).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job.id, due);
    store
        .report(&first[0].token, &Outcome::Succeeded, t0().plus(secs(3)))
        .unwrap();
    assert!(
        store
            .claim(10, "w", t0().plus(secs(3599)))
            .unwrap()
            .is_empty()
    );
    let at = store.claim(10, "w", t0().plus(secs(3600))).unwrap();
    assert_eq!(at.len(), 1);
    assert_eq!((at[0].job.id, at[0].job.attempts), (parked, 1));
}

//! Model test: random sequences of enqueue (due or scheduled) / claim /
//! report (a success may queue the run's next step) / heartbeat / release /
//! cancel / retry (at once or scheduled) / pause / resume / worker deaths /
//! clock moves against a tiny in-memory model of SPEC §2, with two job
//! types, one of them capped at `CAP_B` running jobs. Tokens that are never reported stand for
//! crashed workers; a report on a token whose claim was rescued must change
//! nothing; a worker proved dead has its jobs rescued at once; releases at
//! shutdown are free only up to the allowance. After every step each row
//! must equal the model and keep the invariants. Part of the conformance
//! suite: it runs on every backend.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bundleq::state::{Backoff, ReleaseDecision, decide_release};
use bundleq::store::{
    ClaimToken, Completion, JobFilter, QueuePolicy, Report, StoreOptions, TypePolicy,
};
use bundleq::{Error, JobStatus, Outcome, Store, Timestamp};
use common::{Backend, job, t0};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use uuid::Uuid;

const LOCK_TIMEOUT: u64 = 60;
/// At most this many jobs of type `b` run at once.
const CAP_B: u32 = 2;
const TYPES: [&str; 2] = ["a", "b"];

#[derive(Clone, Debug)]
enum Op {
    /// `later`: scheduled this many seconds ahead.
    Enqueue {
        max: u32,
        ty: u8,
        later: Option<u64>,
    },
    Claim {
        n: u32,
        worker: u8,
    },
    /// A success of kind 3 queues a `b` step for the job's run.
    Report {
        pick: usize,
        kind: u8,
    },
    Heartbeat {
        pick: usize,
    },
    Release {
        pick: usize,
    },
    Advance {
        secs: u64,
    },
    Cancel {
        pick: usize,
    },
    Retry {
        pick: usize,
        later: Option<u64>,
    },
    WorkerDies {
        worker: u8,
    },
    /// `None`: every type.
    Pause {
        ty: Option<u8>,
    },
    Resume {
        ty: Option<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..=4, 0u8..2, proptest::option::weighted(0.2, 1u64..100))
            .prop_map(|(max, ty, later)| Op::Enqueue { max, ty, later }),
        4 => (1u32..=3, 0u8..3).prop_map(|(n, worker)| Op::Claim { n, worker }),
        4 => (any::<usize>(), 0u8..4).prop_map(|(pick, kind)| Op::Report { pick, kind }),
        1 => any::<usize>().prop_map(|pick| Op::Heartbeat { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        3 => prop_oneof![Just(0u64), 1u64..40, Just(61), 100u64..200].prop_map(|secs| Op::Advance { secs }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (any::<usize>(), proptest::option::weighted(0.3, 1u64..100))
            .prop_map(|(pick, later)| Op::Retry { pick, later }),
        1 => (0u8..3).prop_map(|worker| Op::WorkerDies { worker }),
        1 => proptest::option::weighted(0.8, 0u8..2).prop_map(|ty| Op::Pause { ty }),
        1 => proptest::option::weighted(0.8, 0u8..2).prop_map(|ty| Op::Resume { ty }),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct MJob {
    status: JobStatus,
    attempts: u32,
    max: u32,
    retry_at: Option<Timestamp>,
    locked_at: Option<Timestamp>,
    locked_by: Option<String>,
    /// The attempt row of the claim that holds the job, if running.
    claim: Option<Uuid>,
    /// Releases at shutdown so far (the allowance is for the job's life).
    released: u32,
    ty: &'static str,
    run: Uuid,
}

struct Model {
    jobs: BTreeMap<Uuid, MJob>,
    order: Vec<Uuid>,
    tokens: Vec<ClaimToken>,
    now: Timestamp,
    /// Paused types; `"*"` for every type.
    paused: Vec<&'static str>,
}

impl MJob {
    fn queued(max: u32, ty: &'static str, run: Uuid, retry_at: Option<Timestamp>) -> MJob {
        MJob {
            status: JobStatus::Queued,
            attempts: 0,
            max,
            retry_at,
            locked_at: None,
            locked_by: None,
            claim: None,
            released: 0,
            ty,
            run,
        }
    }
}

impl Model {
    fn holds(&self, t: &ClaimToken) -> bool {
        let j = &self.jobs[&t.job_id];
        j.status == JobStatus::Running && j.claim == Some(t.attempt_id)
    }
}

fn check(store: &mut Store, tenant: Uuid, model: &Model) {
    let rows = store.jobs(tenant, &JobFilter::default()).unwrap();
    assert_eq!(rows.len(), model.jobs.len());
    for row in rows {
        let m = &model.jobs[&row.id];
        assert!(row.attempts <= row.max_attempts);
        assert_eq!(row.status == JobStatus::Running, row.locked_by.is_some());
        let got = (
            row.status,
            row.attempts,
            row.max_attempts,
            row.retry_at,
            row.locked_at,
            row.locked_by,
        );
        let want = (
            m.status,
            m.attempts,
            m.max,
            m.retry_at,
            m.locked_at,
            m.locked_by.clone(),
        );
        assert_eq!(got, want, "job {}", row.id);
    }
}

fn step(store: &mut Store, tenant: Uuid, m: &mut Model, op: &Op) {
    let expiry = m.now.minus(Duration::from_secs(LOCK_TIMEOUT));
    match *op {
        Op::Enqueue { max, ty, later } => {
            // Distinct creation times keep "oldest first" unambiguous.
            m.now = m.now.plus(Duration::from_millis(1));
            let ty = TYPES[usize::from(ty)];
            let mut j = job(tenant);
            j.max_attempts = Some(max);
            j.job_type = ty.to_owned();
            j.not_before = later.map(|s| m.now.plus(Duration::from_secs(s)));
            let id = store.enqueue(&j, m.now).unwrap();
            m.order.push(id);
            m.jobs
                .insert(id, MJob::queued(max, ty, j.run_id, j.not_before));
        }
        Op::Claim { n, worker } => {
            let now = m.now;
            // Lost at the last attempt: failed, not claimed.
            for j in m.jobs.values_mut() {
                if j.status == JobStatus::Running
                    && j.locked_at < Some(expiry)
                    && j.attempts >= j.max
                {
                    *j = MJob {
                        status: JobStatus::Failed,
                        locked_at: None,
                        locked_by: None,
                        claim: None,
                        ..j.clone()
                    };
                }
            }
            let paused = |ty: &str| m.paused.iter().any(|p| *p == "*" || *p == ty);
            let eligible: Vec<Uuid> = m
                .jobs
                .iter()
                .filter(|(_, j)| !paused(j.ty))
                .filter(|(_, j)| match j.status {
                    JobStatus::Queued => j.retry_at.is_none_or(|r| r <= now),
                    JobStatus::Running => j.locked_at < Some(expiry),
                    _ => false,
                })
                .map(|(id, _)| *id)
                .collect();
            // The cap counts running jobs whose lock is live.
            let live_b = m
                .jobs
                .values()
                .filter(|j| {
                    j.ty == "b" && j.status == JobStatus::Running && j.locked_at >= Some(expiry)
                })
                .count() as u32;
            let room_b = CAP_B.saturating_sub(live_b) as usize;
            let eligible_b = eligible.iter().filter(|id| m.jobs[*id].ty == "b").count();
            let expected = (eligible.len() - eligible_b + eligible_b.min(room_b)).min(n as usize);
            let name = format!("w{worker}");
            let claims = store.claim(n, &name, now).unwrap();
            assert_eq!(claims.len(), expected, "claim count");
            let claimed_b = claims.iter().filter(|c| c.job.job_type == "b").count();
            assert!(
                claimed_b <= room_b,
                "claimed {claimed_b} b jobs with room for {room_b}"
            );
            for c in claims {
                assert!(eligible.contains(&c.job.id), "claimed an ineligible job");
                let j = m.jobs.get_mut(&c.job.id).unwrap();
                j.status = JobStatus::Running;
                j.attempts += 1;
                j.retry_at = None;
                j.locked_at = Some(now);
                j.locked_by = Some(name.clone());
                j.claim = Some(c.token.attempt_id);
                assert_eq!(c.token.attempt, j.attempts);
                m.tokens.push(c.token);
            }
        }
        Op::Report { pick, kind } => {
            if m.tokens.is_empty() {
                return;
            }
            let t = m.tokens[pick % m.tokens.len()].clone();
            let outcome = match kind {
                0 | 3 => Outcome::Succeeded,
                1 => Outcome::Retry("transient".into()),
                _ => Outcome::Fail("permanent".into()),
            };
            let holds = m.holds(&t);
            let got = if kind == 3 {
                let mut c = Completion::new(t.clone(), outcome.clone());
                c.then = vec!["b".to_owned()];
                store.complete(&[c], m.now).unwrap().remove(0)
            } else {
                store.report(&t, &outcome, m.now).unwrap()
            };
            if !holds {
                assert_eq!(got, Report::Stale);
                return;
            }
            if kind == 3 {
                // The next step is queued unless the run has a `b` job.
                let run = m.jobs[&t.job_id].run;
                let steps = store
                    .jobs(
                        tenant,
                        &JobFilter {
                            run_id: Some(run),
                            job_type: Some("b".into()),
                            ..JobFilter::default()
                        },
                    )
                    .unwrap();
                let had_b = m.jobs.values().any(|j| j.run == run && j.ty == "b");
                assert_eq!(steps.len(), 1, "one b step per run");
                if !had_b {
                    let step = &steps[0];
                    assert_eq!(step.attempts, 0);
                    assert_eq!(step.status, JobStatus::Queued);
                    m.order.push(step.id);
                    m.jobs.insert(step.id, MJob::queued(3, "b", run, None));
                }
            }
            let j = m.jobs.get_mut(&t.job_id).unwrap();
            j.locked_at = None;
            j.locked_by = None;
            j.claim = None;
            j.status = match outcome {
                Outcome::Succeeded => JobStatus::Succeeded,
                Outcome::Retry(_) if j.attempts < j.max => {
                    j.retry_at = Some(
                        m.now
                            .plus(backoff(j.ty).delay(j.attempts, &t.job_id.to_string())),
                    );
                    JobStatus::Queued
                }
                _ => JobStatus::Failed,
            };
            assert_eq!(got, Report::Applied(j.status));
        }
        Op::Heartbeat { pick } => {
            if m.tokens.is_empty() {
                return;
            }
            let t = m.tokens[pick % m.tokens.len()].clone();
            let holds = m.holds(&t);
            assert_eq!(
                store.heartbeat(std::slice::from_ref(&t), m.now).unwrap(),
                usize::from(holds)
            );
            if holds {
                m.jobs.get_mut(&t.job_id).unwrap().locked_at = Some(m.now);
            }
        }
        Op::Release { pick } => {
            if m.tokens.is_empty() {
                return;
            }
            let t = m.tokens[pick % m.tokens.len()].clone();
            let holds = m.holds(&t);
            let got = store.release(std::slice::from_ref(&t), m.now).unwrap();
            if holds {
                let j = m.jobs.get_mut(&t.job_id).unwrap();
                let decision = decide_release(j.attempts, j.max, j.released);
                let (status, attempts) = match decision {
                    ReleaseDecision::GiveBack => (JobStatus::Queued, j.attempts - 1),
                    ReleaseDecision::Requeue => (JobStatus::Queued, j.attempts),
                    ReleaseDecision::Fail => (JobStatus::Failed, j.attempts),
                };
                assert_eq!(got, [Report::Applied(status)]);
                *j = MJob {
                    status,
                    attempts,
                    locked_at: None,
                    locked_by: None,
                    claim: None,
                    retry_at: None,
                    released: j.released + 1,
                    ..j.clone()
                };
            } else {
                assert_eq!(got, [Report::Stale]);
            }
        }
        Op::Advance { secs } => m.now = m.now.plus(Duration::from_secs(secs)),
        Op::WorkerDies { worker } => {
            let name = format!("w{worker}");
            let rescued = store
                .rescue_workers(std::slice::from_ref(&name), m.now)
                .unwrap();
            let mut expected = 0;
            for (id, j) in &mut m.jobs {
                if j.status == JobStatus::Running && j.locked_by.as_deref() == Some(&name) {
                    expected += 1;
                    j.status = if j.attempts >= j.max {
                        JobStatus::Failed
                    } else {
                        JobStatus::Queued
                    };
                    j.locked_at = None;
                    j.locked_by = None;
                    j.claim = None;
                    j.retry_at = None;
                    assert!(rescued.contains(&(*id, j.status)), "{id}: {rescued:?}");
                }
            }
            assert_eq!(rescued.len(), expected);
        }
        Op::Pause { ty } => {
            let ty = ty.map(|t| TYPES[usize::from(t)]);
            let new = store.pause(ty, m.now).unwrap();
            let key = ty.unwrap_or("*");
            assert_eq!(new, !m.paused.contains(&key));
            if new {
                m.paused.push(key);
            }
        }
        Op::Resume { ty } => {
            let ty = ty.map(|t| TYPES[usize::from(t)]);
            let lifted = store.resume(ty).unwrap();
            let before = m.paused.len();
            m.paused.retain(|p| ty.is_some_and(|t| *p != t));
            assert_eq!(lifted.len(), before - m.paused.len());
        }
        Op::Cancel { pick } | Op::Retry { pick, .. } => {
            if m.order.is_empty() {
                return;
            }
            let id = m.order[pick % m.order.len()];
            let j = m.jobs.get_mut(&id).unwrap();
            let cancel = matches!(op, Op::Cancel { .. });
            let at = match op {
                Op::Retry { later, .. } => later.map(|s| m.now.plus(Duration::from_secs(s))),
                _ => None,
            };
            let result = if cancel {
                store.cancel(tenant, id, m.now)
            } else {
                store.retry(tenant, id, m.now, at)
            };
            let allowed = if cancel {
                j.status.can_cancel()
            } else {
                j.status.can_retry()
            };
            if !allowed {
                assert!(
                    matches!(result, Err(Error::InvalidTransition { .. })),
                    "{result:?}"
                );
                return;
            }
            result.unwrap();
            if cancel {
                j.status = JobStatus::Cancelled;
                j.retry_at = None;
            } else {
                j.status = JobStatus::Queued;
                j.attempts = 0;
                j.retry_at = at;
            }
        }
    }
}

/// The backoff of a job type: `b` has its own.
fn backoff(ty: &str) -> Backoff {
    if ty == "b" {
        Backoff {
            base: Duration::from_secs(7),
            cap: Duration::from_secs(50),
            jitter: 0.0,
        }
    } else {
        Backoff::default()
    }
}

/// Runs 64 random sequences of operations against the backend's store and
/// the model (a failure is shrunk to the shortest sequence that fails).
fn store_matches_the_state_machine_model(b: Backend) {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..80), |ops| {
        let mut types = BTreeMap::new();
        types.insert(
            "b".to_owned(),
            TypePolicy {
                concurrency: Some(CAP_B),
                backoff: Some(backoff("b")),
                ..TypePolicy::default()
            },
        );
        let (_dir, mut store) = b.store_with(StoreOptions {
            policy: QueuePolicy {
                lock_timeout: Duration::from_secs(LOCK_TIMEOUT),
                types,
                ..QueuePolicy::default()
            },
            ..StoreOptions::default()
        });
        let tenant = Uuid::now_v7();
        let mut model = Model {
            jobs: BTreeMap::new(),
            order: Vec::new(),
            tokens: Vec::new(),
            now: t0(),
            paused: Vec::new(),
        };
        for op in &ops {
            step(&mut store, tenant, &mut model, op);
            check(&mut store, tenant, &model);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

for_each_backend!(store_matches_the_state_machine_model);

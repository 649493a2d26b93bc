//! Model test: random sequences of enqueue / claim / report / heartbeat /
//! release / cancel / retry / worker deaths / clock moves against a tiny
//! in-memory model of SPEC §2. Tokens that are never reported stand for
//! crashed workers; a report on a token whose claim was rescued must change
//! nothing; a worker proved dead has its jobs rescued at once; releases at
//! shutdown are free only up to the allowance. After every step each row
//! must equal the model and keep the invariants. Part of the conformance
//! suite: it runs on every backend.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bundleq::state::{Backoff, ReleaseDecision, decide_release};
use bundleq::store::{ClaimToken, JobFilter, Report};
use bundleq::{Error, JobStatus, Outcome, Store, Timestamp};
use common::{Backend, job, t0};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use uuid::Uuid;

const LOCK_TIMEOUT: u64 = 60;

#[derive(Clone, Debug)]
enum Op {
    Enqueue { max: u32 },
    Claim { n: u32, worker: u8 },
    Report { pick: usize, kind: u8 },
    Heartbeat { pick: usize },
    Release { pick: usize },
    Advance { secs: u64 },
    Cancel { pick: usize },
    Retry { pick: usize },
    WorkerDies { worker: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..=4).prop_map(|max| Op::Enqueue { max }),
        4 => (1u32..=3, 0u8..3).prop_map(|(n, worker)| Op::Claim { n, worker }),
        4 => (any::<usize>(), 0u8..3).prop_map(|(pick, kind)| Op::Report { pick, kind }),
        1 => any::<usize>().prop_map(|pick| Op::Heartbeat { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        3 => prop_oneof![Just(0u64), 1u64..40, Just(61), 100u64..200].prop_map(|secs| Op::Advance { secs }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
        1 => (0u8..3).prop_map(|worker| Op::WorkerDies { worker }),
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
}

struct Model {
    jobs: BTreeMap<Uuid, MJob>,
    order: Vec<Uuid>,
    tokens: Vec<ClaimToken>,
    now: Timestamp,
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
        Op::Enqueue { max } => {
            // Distinct creation times keep "oldest first" unambiguous.
            m.now = m.now.plus(Duration::from_millis(1));
            let mut j = job(tenant);
            j.max_attempts = Some(max);
            let id = store.enqueue(&j, m.now).unwrap();
            m.order.push(id);
            m.jobs.insert(
                id,
                MJob {
                    status: JobStatus::Queued,
                    attempts: 0,
                    max,
                    retry_at: None,
                    locked_at: None,
                    locked_by: None,
                    claim: None,
                    released: 0,
                },
            );
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
            let eligible: Vec<Uuid> = m
                .jobs
                .iter()
                .filter(|(_, j)| match j.status {
                    JobStatus::Queued => j.retry_at.is_none_or(|r| r <= now),
                    JobStatus::Running => j.locked_at < Some(expiry),
                    _ => false,
                })
                .map(|(id, _)| *id)
                .collect();
            let name = format!("w{worker}");
            let claims = store.claim(n, &name, now).unwrap();
            assert_eq!(claims.len(), eligible.len().min(n as usize), "claim count");
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
                0 => Outcome::Succeeded,
                1 => Outcome::Retry("transient".into()),
                _ => Outcome::Fail("permanent".into()),
            };
            let holds = m.holds(&t);
            let got = store.report(&t, &outcome, m.now).unwrap();
            if !holds {
                assert_eq!(got, Report::Stale);
                return;
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
                            .plus(Backoff::default().delay(j.attempts, &t.job_id.to_string())),
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
        Op::Cancel { pick } | Op::Retry { pick } => {
            if m.order.is_empty() {
                return;
            }
            let id = m.order[pick % m.order.len()];
            let j = m.jobs.get_mut(&id).unwrap();
            let cancel = matches!(op, Op::Cancel { .. });
            let result = if cancel {
                store.cancel(tenant, id, m.now)
            } else {
                store.retry(tenant, id, m.now)
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
                j.retry_at = None;
            }
        }
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
        let (_dir, mut store) = b.temp_store(Duration::from_secs(LOCK_TIMEOUT));
        let tenant = Uuid::now_v7();
        let mut model = Model {
            jobs: BTreeMap::new(),
            order: Vec::new(),
            tokens: Vec::new(),
            now: t0(),
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

//! The job state machine: states, events and the pure rules between them.
//!
//! This module owns the *rules*; `store` applies them to rows. The same rules
//! stand as SQL `CHECK` constraints in `migrations/V1__initial_schema.sql`:
//! status is one of [`JobStatus`], `0 <= attempts <= max_attempts`, and a row
//! holds a lock (`locked_at`, `locked_by`) exactly when it is `running`.
//!
//! | from | event | to |
//! |---|---|---|
//! | — | enqueue | `queued` (attempts 0) |
//! | — | enqueue scheduled (`not_before`) | `queued` (attempts 0, `retry_at` = the time) |
//! | `queued`, due, its type not paused and under its concurrency cap | claim | `running` (attempts + 1) |
//! | `queued`, due, its type paused or at its cap | claim | `queued` (passed over) |
//! | `running`, lock expired, attempts < max, type not paused, under its cap | claim (rescue) | `running` (attempts + 1) |
//! | `running`, lock expired, attempts = max | claim (rescue) | `failed` ("worker lost") |
//! | `running` | success | `succeeded` |
//! | `running` | success naming next steps | `succeeded`; for each next step the run has no job of: a new job `queued` (attempts 0), in the same transaction |
//! | `running` | retryable error, attempts < max | `queued` (retry_at = now + backoff) |
//! | `running` | retryable error at max, or permanent error | `failed` |
//! | `running` | release at shutdown, interrupted fewer than [`RELEASE_ALLOWANCE`] times before | `queued` (attempts − 1: the interrupted attempt is given back) |
//! | `running` | release at shutdown, after that, attempts < max | `queued` (the attempt counts) |
//! | `running` | release at shutdown, after that, attempts = max | `failed` |
//! | `running` | release of a claim whose handler never started | `queued` (attempts − 1; no history row) |
//! | `running`, its worker provably dead (its presence lock is free) | rescue | `queued` (the attempt counts); `failed` at max |
//! | `queued` / `failed` | cancel | `cancelled` |
//! | `failed` / `cancelled` | retry | `queued` (attempts 0; `retry_at` = the time given, if any) |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::timestamp::Timestamp;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be claimed; due when `retry_at` is NULL or not in the future.
    Queued,
    /// Claimed by a worker that holds the lock (`locked_at`, `locked_by`).
    Running,
    /// The handler finished successfully. Terminal.
    Succeeded,
    /// Gave up: a permanent error, or retries exhausted. A user may retry it.
    Failed,
    /// Withdrawn by a user before it succeeded. A user may retry it.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// True for states no worker will move the job out of.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// A user may cancel a job in this state.
    pub fn can_cancel(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Failed)
    }

    /// A user may retry a job in this state.
    pub fn can_retry(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?} (expected one of: queued, running, succeeded, failed, cancelled)"
                )
            })
    }
}

/// What a handler reports about one attempt. A failure is data, not a Rust
/// error: the worker records it and the state machine decides what follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The work is done.
    Succeeded,
    /// A transient failure: try again later if attempts remain.
    Retry(String),
    /// A permanent failure (for example invalid input): never retried.
    Fail(String),
}

/// How long to wait before attempt `n + 1` after attempt `n` failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt; doubles with each further one.
    pub base: Duration,
    /// Upper bound of any delay.
    pub cap: Duration,
    /// Fraction (0..=1) by which a delay may be spread either way, so that
    /// jobs that failed together do not all come back together.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            jitter: 0.0,
        }
    }
}

impl Backoff {
    /// `base × 2^(attempt−1)`, capped, then spread by `jitter`. The spread is
    /// derived from `seed` (the job id) and the attempt, so it is
    /// reproducible and needs no random number generator.
    pub fn delay(&self, attempt: u32, seed: &str) -> Duration {
        let exp = attempt.saturating_sub(1).min(62);
        let raw = self
            .base
            .saturating_mul(1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX));
        let raw = if exp > 31 { self.cap } else { raw };
        let capped = raw.min(self.cap);
        if self.jitter <= 0.0 {
            return capped;
        }
        let jitter = self.jitter.min(1.0);
        // FNV-1a over the seed and attempt: a cheap, stable spread in [-1, 1].
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes().chain(attempt.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let factor = (1.0 + jitter * unit).max(0.0);
        Duration::from_secs_f64(capped.as_secs_f64() * factor).min(self.cap)
    }
}

/// How many times a job's interrupted attempts are given back at shutdown
/// (not counted). Later interruptions count like any attempt, so a job's
/// handler starts at most `max_attempts + RELEASE_ALLOWANCE` times between
/// user retries, however often its serve is restarted.
pub const RELEASE_ALLOWANCE: u32 = 2;

/// What happens to a running job whose worker gives it back at shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseDecision {
    /// Back to `queued` with the attempt given back (`attempts − 1`).
    GiveBack,
    /// Back to `queued`; the interrupted attempt counts.
    Requeue,
    /// The interrupted attempt was the last one: `failed`.
    Fail,
}

/// The pure rule for a release at shutdown: the first
/// [`RELEASE_ALLOWANCE`] interruptions of a job are free, later ones count.
pub fn decide_release(attempts: u32, max_attempts: u32, released_before: u32) -> ReleaseDecision {
    if released_before < RELEASE_ALLOWANCE {
        ReleaseDecision::GiveBack
    } else if attempts < max_attempts {
        ReleaseDecision::Requeue
    } else {
        ReleaseDecision::Fail
    }
}

/// What happens to a running job whose attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureDecision {
    /// Back to `queued`, due again at `retry_at`.
    Retry {
        /// The wait before the next attempt.
        delay: Duration,
        /// `now + delay`.
        retry_at: Timestamp,
    },
    /// To `failed`, for good.
    Fail,
}

/// The pure rule for a failed attempt: a permanent error, or a retryable one
/// with no attempts left, fails the job; otherwise it waits out the backoff.
pub fn decide_failure(
    attempts: u32,
    max_attempts: u32,
    permanent: bool,
    backoff: &Backoff,
    job_id: &str,
    now: Timestamp,
) -> FailureDecision {
    if permanent || attempts >= max_attempts {
        FailureDecision::Fail
    } else {
        let delay = backoff.delay(attempts, job_id);
        FailureDecision::Retry {
            delay,
            retry_at: now.plus(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_and_caps() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=9).map(|a| b.delay(a, "j").as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(b.delay(u32::MAX, "j"), b.cap);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_is_stable() {
        let b = Backoff {
            jitter: 0.5,
            ..Backoff::default()
        };
        for seed in ["a", "b", "c", "d"] {
            let d = b.delay(2, seed).as_secs_f64();
            assert!((30.0..=90.0).contains(&d), "{d}");
            assert_eq!(b.delay(2, seed), b.delay(2, seed));
        }
    }

    #[test]
    fn permanent_errors_and_exhausted_attempts_fail() {
        let now = Timestamp::from_unix_seconds(0).unwrap();
        let b = Backoff::default();
        assert_eq!(
            decide_failure(1, 3, true, &b, "j", now),
            FailureDecision::Fail
        );
        assert_eq!(
            decide_failure(3, 3, false, &b, "j", now),
            FailureDecision::Fail
        );
        assert_eq!(
            decide_failure(2, 3, false, &b, "j", now),
            FailureDecision::Retry {
                delay: Duration::from_secs(60),
                retry_at: now.plus(Duration::from_secs(60))
            }
        );
    }

    #[test]
    fn releases_are_free_up_to_the_allowance_then_count() {
        assert_eq!(decide_release(3, 3, 0), ReleaseDecision::GiveBack);
        assert_eq!(
            decide_release(1, 3, RELEASE_ALLOWANCE - 1),
            ReleaseDecision::GiveBack
        );
        assert_eq!(
            decide_release(1, 3, RELEASE_ALLOWANCE),
            ReleaseDecision::Requeue
        );
        assert_eq!(
            decide_release(3, 3, RELEASE_ALLOWANCE),
            ReleaseDecision::Fail
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}

//! The log lines of job state changes, in the reference design's wording.
//!
//! The store decides and commits; it returns what happened as
//! [`Transition`]s and says nothing itself. Whoever made the change (the
//! pool, or the CLI for `job retry`/`cancel`/`release`) passes them here,
//! so a line is written only for a change that was committed, and written
//! the same way whichever backend made it.

use log::Level;

use crate::store::{Transition, TransitionKind};
use crate::timestamp::human_duration;

fn attempts_word(n: u32) -> &'static str {
    if n == 1 { "attempt" } else { "attempts" }
}

/// The level and text of one transition's log line.
pub fn describe(t: &Transition) -> (Level, String) {
    let id = t.job_id;
    match &t.kind {
        TransitionKind::Succeeded {
            attempt,
            max_attempts,
        } => (
            Level::Debug,
            format!("Job {id} succeeded (attempt {attempt}/{max_attempts})"),
        ),
        TransitionKind::WillRetry {
            attempt,
            max_attempts,
            delay,
            retry_at,
            error,
        } => (
            Level::Warn,
            format!(
                "Job {id} failed (attempt {attempt}/{max_attempts}), will retry in {} at {retry_at}: {error}",
                human_duration(*delay)
            ),
        ),
        TransitionKind::Failed { attempts, error } => (
            Level::Error,
            format!(
                "Job {id} permanently failed after {attempts} {}: {error}",
                attempts_word(*attempts)
            ),
        ),
        TransitionKind::Rescued {
            from,
            attempt,
            max_attempts,
        } => (
            Level::Warn,
            format!("Job {id} rescued from lost worker {from}; attempt {attempt}/{max_attempts}"),
        ),
        TransitionKind::RescuedAtOnce {
            error,
            attempt,
            max_attempts,
        } => (
            Level::Warn,
            format!(
                "Job {id} rescued at once: {error}; attempt {attempt}/{max_attempts} counts, it runs again"
            ),
        ),
        TransitionKind::Stale { worker, attempt } => (
            Level::Warn,
            format!(
                "Job {id}: ignored the report of worker {worker} for attempt {attempt}: that claim no longer holds the job"
            ),
        ),
        TransitionKind::Released { note, counts } => {
            if *counts {
                (Level::Warn, format!("Job {id} {note}; it will run again"))
            } else {
                (
                    Level::Info,
                    format!("Job {id} released at shutdown; it will run again"),
                )
            }
        }
        TransitionKind::ByUser { action, from, to } => (
            Level::Info,
            format!("Job {id}: {from} -> {to} ({action} by a user)"),
        ),
        TransitionKind::StepQueued {
            job_type,
            run_id,
            after,
        } => (
            Level::Info,
            format!(
                "Job {id} queued: step {job_type} of run {run_id}, after job {after} succeeded"
            ),
        ),
    }
}

/// Writes the log line of each transition.
pub fn log_transitions(transitions: &[Transition]) {
    for t in transitions {
        let (level, text) = describe(t);
        log::log!(level, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::timestamp::Timestamp;

    /// The wording the reference design's acceptance evidence shows.
    #[test]
    fn lines_read_as_in_the_reference_design() {
        let job_id = Uuid::nil();
        let retry_at = Timestamp::parse("2026-01-02T03:04:05.000000Z").expect("timestamp");
        let retry = Transition {
            job_id,
            kind: TransitionKind::WillRetry {
                attempt: 1,
                max_attempts: 3,
                delay: Duration::from_secs(30),
                retry_at,
                error: "timeout".into(),
            },
        };
        assert_eq!(
            describe(&retry),
            (
                Level::Warn,
                format!(
                    "Job {job_id} failed (attempt 1/3), will retry in 30s at 2026-01-02T03:04:05.000000Z: timeout"
                )
            )
        );
        let failed = Transition {
            job_id,
            kind: TransitionKind::Failed {
                attempts: 1,
                error: "invalid bundle".into(),
            },
        };
        assert_eq!(
            describe(&failed),
            (
                Level::Error,
                format!("Job {job_id} permanently failed after 1 attempt: invalid bundle")
            )
        );
        let failed3 = Transition {
            job_id,
            kind: TransitionKind::Failed {
                attempts: 3,
                error: "x".into(),
            },
        };
        assert!(describe(&failed3).1.contains("after 3 attempts: x"));
    }
}

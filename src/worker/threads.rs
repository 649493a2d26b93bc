//! The pool's worker threads: each takes claims from the job channel, runs
//! the job's handler (a panic is caught and counted as a failed attempt),
//! and sends the completion back to the coordinator.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::handler::{Handlers, JobContext};
use crate::state::Outcome;
use crate::store::{Claim, Completion};

/// What a worker thread tells the coordinator.
pub(super) enum Msg {
    /// A finished attempt and how long its handler ran.
    Done(Box<Completion>, Duration),
    WorkerDied(String),
}

/// A worker thread's last word if it unwinds outside a handler.
pub(super) struct DeathNotice {
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

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// A worker thread: runs handlers for the claims it is sent until the job
/// channel closes; if it dies outside a handler, says so.
pub(super) fn worker(
    name: &str,
    jobs: Receiver<Claim>,
    done: Sender<Msg>,
    handlers: Handlers,
    stop: Receiver<()>,
) {
    let _notice = DeathNotice {
        tx: done.clone(),
        name: name.to_owned(),
    };
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
        let mut then = ctx.take_then();
        for step in handlers.followers(&job.job_type) {
            if !then.contains(step) {
                then.push(step.clone());
            }
        }
        let completion = Completion {
            token: claim.token.clone(),
            outcome,
            sources: ctx.take_sources(),
            output: ctx.take_output(),
            then,
        };
        if done
            .send(Msg::Done(Box::new(completion), started.elapsed()))
            .is_err()
        {
            break;
        }
    }
}

//! Handlers: what a worker runs for a job, chosen by `job_type`.
//!
//! A handler returns an [`Outcome`] (succeeded / retry / fail), never a
//! Rust error: a failure is data the state machine acts on. A panicking
//! handler is caught by the pool and counted as a failed attempt.
//!
//! Built in: `process_bundle` ([`ProcessBundle`]); configured per job type:
//! external commands ([`ExternalCommand`]); library users implement
//! [`Handler`] and register it in [`Handlers`].

mod child;
mod external;
pub mod guard;
mod process_bundle;

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;

pub use external::{ExternalCommand, ExternalConfig};
pub use guard::GuardProgram;
pub use process_bundle::ProcessBundle;

use crate::error::Result;
use crate::home::Home;
use crate::state::Outcome;
use crate::store::{Job, Readers, RunSources};

/// Work for one job type.
pub trait Handler: Send + Sync {
    /// Runs one attempt of `ctx.job`.
    fn handle(&self, ctx: &mut JobContext<'_>) -> Outcome;
}

impl<F> Handler for F
where
    F: Fn(&mut JobContext<'_>) -> Outcome + Send + Sync,
{
    fn handle(&self, ctx: &mut JobContext<'_>) -> Outcome {
        self(ctx)
    }
}

/// What a handler gets: the job, the attempt number, a stop signal, and a
/// place for results the pool records together with the outcome.
#[derive(Debug)]
pub struct JobContext<'a> {
    /// The job as claimed (attempts already counts this attempt).
    pub job: &'a Job,
    /// Disconnects when the pool stops waiting for this job (shutdown grace
    /// period over): a long handler should give up when it does.
    pub stop: &'a Receiver<()>,
    pub(crate) sources: Option<RunSources>,
    pub(crate) output: Option<String>,
    pub(crate) then: Vec<String>,
}

impl<'a> JobContext<'a> {
    /// A context for `job` (for tests and custom pools).
    pub fn new(job: &'a Job, stop: &'a Receiver<()>) -> Self {
        JobContext {
            job,
            stop,
            sources: None,
            output: None,
            then: Vec::new(),
        }
    }

    /// Asks the pool to queue a job of `job_type` for this job's run (with
    /// this job's payload) in the transaction that marks it succeeded,
    /// unless the run has a job of that type already: the run's next step.
    pub fn then(&mut self, job_type: &str) {
        if !self.then.iter().any(|t| t == job_type) {
            self.then.push(job_type.to_owned());
        }
    }

    /// Takes the next steps asked for (the pool does this after the
    /// handler).
    pub fn take_then(&mut self) -> Vec<String> {
        std::mem::take(&mut self.then)
    }

    /// Asks the pool to record these sources in the same transaction that
    /// marks the job succeeded (ignored for any other outcome).
    pub fn record_sources(&mut self, sources: RunSources) {
        self.sources = Some(sources);
    }

    /// Takes the recorded sources (the pool does this after the handler).
    pub fn take_sources(&mut self) -> Option<RunSources> {
        self.sources.take()
    }

    /// Keeps what the handler printed (its tail) with the attempt.
    pub fn set_output(&mut self, output: String) {
        self.output = (!output.is_empty()).then_some(output);
    }

    /// Takes the output (the pool does this after the handler).
    pub fn take_output(&mut self) -> Option<String> {
        self.output.take()
    }
}

/// Handlers by job type.
#[derive(Clone, Default)]
pub struct Handlers {
    by_type: HashMap<String, Arc<dyn Handler>>,
    /// The configured steps after each job type (`after = "X"`).
    followers: HashMap<String, Vec<String>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<&String> = self.by_type.keys().collect();
        types.sort();
        f.debug_struct("Handlers").field("types", &types).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// The built-in `process_bundle` plus the external commands configured
    /// in the home's `bundleq.toml`, each run under `guard` when given (see
    /// [`guard`]; `bundleq serve` always gives one).
    /// Handlers read the database through one pool of at most a
    /// connection per worker.
    pub fn for_home(home: &Home, guard: Option<GuardProgram>) -> Handlers {
        let reads = Readers::at(
            &home.location(),
            &home.config().store_options(),
            home.config().workers.count,
        );
        let mut h = Handlers::new();
        h.register(
            crate::bundle::DEFAULT_JOB_TYPE,
            ProcessBundle::new(home.clone(), reads.clone()),
        );
        for (job_type, cfg) in &home.config().handlers {
            if let Some(external) = cfg.external() {
                h.register(
                    job_type,
                    ExternalCommand::new(external, home.clone(), reads.clone(), guard.clone()),
                );
            }
            h.followers
                .insert(job_type.clone(), home.config().followers(job_type));
        }
        h.followers.insert(
            crate::bundle::DEFAULT_JOB_TYPE.to_owned(),
            home.config().followers(crate::bundle::DEFAULT_JOB_TYPE),
        );
        h
    }

    /// Checks every configured external command of `home` (the program
    /// exists and may be executed): the first problem, naming its table.
    pub fn check_commands(home: &Home) -> Result<()> {
        for (job_type, cfg) in &home.config().handlers {
            let Some(cfg) = cfg.external() else { continue };
            if let Err(why) = ExternalCommand::check_program(&cfg) {
                return Err(crate::Error::Config {
                    path: home.root().join(crate::home::CONFIG_FILE),
                    message: format!("handlers.{job_type}.command: {why}"),
                });
            }
        }
        Ok(())
    }

    /// Registers (or replaces) the handler for `job_type`.
    pub fn register(&mut self, job_type: &str, handler: impl Handler + 'static) {
        self.by_type.insert(job_type.to_owned(), Arc::new(handler));
    }

    /// The handler for `job_type`.
    pub fn get(&self, job_type: &str) -> Option<Arc<dyn Handler>> {
        self.by_type.get(job_type).cloned()
    }

    /// Sets the steps queued for a run after a job of `job_type` succeeds
    /// (besides those its handler asks for with [`JobContext::then`]).
    pub fn set_followers(&mut self, job_type: &str, followers: Vec<String>) {
        self.followers.insert(job_type.to_owned(), followers);
    }

    /// The steps that follow a job of `job_type` in every run.
    pub fn followers(&self, job_type: &str) -> &[String] {
        self.followers.get(job_type).map_or(&[], Vec::as_slice)
    }
}

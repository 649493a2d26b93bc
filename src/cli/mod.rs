//! Command-line interface (binary only): the clap definitions, dispatch to
//! the library, and rendering of results as tables or JSON. Output goes to
//! stdout; errors go to stderr as one line.

mod bench;
mod commands;
mod output;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use bundleq::JobStatus;

pub use output::clean;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: an error (I/O, database, unknown id, refused transition).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: `serve --once` ran jobs that failed or wait for a retry.
pub const EXIT_JOBS_FAILED: u8 = 3;
/// Exit status: invalid input data (EX_DATAERR), e.g. an invalid bundle.
pub const EXIT_DATA: u8 = 65;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   error (I/O, database, unknown id, refused transition, bad configuration)
  2   usage error (unknown command or flag, malformed argument)
  3   serve --once: some job failed, or failed and waits for a retry
  65  invalid input data (EX_DATAERR): a bundle failed validation

Output: a closed pipe (`bundleq jobs | head -1`) ends the output quietly;
control characters in bundle text, file names and handler output are shown
escaped (\\e, \\x07, \\r) and never reach the terminal raw.

Environment:
  BUNDLEQ_HOME  home folder (same as --home)
  RUST_LOG      log filter, e.g. RUST_LOG=debug (default: warn; info for serve)";

/// bundleq: an embedded, durable job engine for research run bundles.
///
/// One folder (the home) holds the SQLite database, the configuration file and
/// the drop folders. Run `bundleq init` once, then submit bundles and work them.
#[derive(Debug, Parser)]
#[command(name = "bundleq", version, after_long_help = EXIT_CODES_HELP, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Home folder holding bundleq.db, bundleq.toml, inbox/, accepted/ and
    /// rejected/ [default: $XDG_DATA_HOME/bundleq or ~/.local/share/bundleq]
    #[arg(long, global = true, env = "BUNDLEQ_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Tenant to read and write, by name or id; it must exist (see
    /// `bundleq tenants`) [default: the home's default tenant]
    #[arg(long, global = true, value_name = "NAME|UUID")]
    pub tenant: Option<String>,
    /// Print JSON for scripts instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a home (folders 0700, database and configuration 0600, a
    /// tenant named "default"). Safe to run again; an existing folder is
    /// made private.
    Init {
        /// Also make DIR an inbox of this home: create it (0700) if missing
        /// and mark it with a .bundleq-inbox file. Everything already in DIR
        /// will be ingested and moved to accepted/ or rejected/.
        #[arg(long, value_name = "DIR")]
        inbox: Option<PathBuf>,
    },
    /// Validate bundles and accept the valid ones: each becomes a run with a
    /// queued job, in one transaction. Invalid ones are refused with every
    /// error listed (exit 65); the same bytes again are reported as a
    /// duplicate and enqueue nothing.
    Submit {
        /// Bundle files (*.json) or bundle folders (NAME.bundle/)
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Check bundles without writing anything (exit 65 if any is invalid).
    /// Works without a home, with the default limits.
    Validate {
        /// Bundle files (*.json) or bundle folders (NAME.bundle/)
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Watch the inbox and work jobs with a pool of threads until
    /// SIGINT/SIGTERM (or, with --once, ingest the inbox once and work until
    /// nothing is due). On a signal: stop claiming, let running jobs finish
    /// within the grace period, give back the rest, exit 0.
    Serve(ServeArgs),
    /// One pass over the inbox: ingest every complete bundle, move it to
    /// accepted/ or rejected/, and exit (for cron and scripts).
    Ingest {
        /// Drop folder to scan: <home>/inbox or a folder adopted with
        /// `init --inbox` [default: [inbox] path, else <home>/inbox]
        #[arg(long, value_name = "DIR")]
        inbox: Option<PathBuf>,
    },
    /// List this home's tenants, or create one. Every command works on one
    /// tenant (--tenant NAME|UUID); unknown ones are refused.
    Tenants {
        #[command(subcommand)]
        command: Option<TenantsCommand>,
    },
    /// Measure the engine in temp homes against a plain-SQLite baseline
    /// measured in the same run; prints a table (or --json).
    Bench(BenchArgs),
    /// Search the text of processed sources (all words must match).
    Search {
        /// Words to look for
        #[arg(required = true)]
        query: Vec<String>,
        /// Only sources of this run
        #[arg(long, value_name = "RUN_ID")]
        run: Option<Uuid>,
        /// Show at most this many hits
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Inspect or migrate the database schema.
    #[command(subcommand)]
    Db(DbCommand),
    /// List jobs, newest first.
    Jobs(JobsArgs),
    /// Show, retry or cancel one job.
    #[command(subcommand)]
    Job(JobCommand),
    /// List runs, newest first.
    Runs {
        /// Show at most this many
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one run.
    #[command(subcommand)]
    Run(RunCommand),
    /// Job counts per status, the oldest queued job and the next retry.
    Status,
    /// Delete finished jobs (succeeded, failed, cancelled) and their attempt
    /// history. Runs are kept.
    Prune {
        /// Delete jobs that finished longer ago than this (e.g. 7d, 12h)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        finished_before: std::time::Duration,
        /// Only jobs in this finished state (repeatable)
        #[arg(long, value_parser = parse_status)]
        status: Vec<JobStatus>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List the tenants (the default).
    List,
    /// Create a tenant.
    Create {
        /// Its name: 1-64 characters of a-z, 0-9, '_', '-', '.'
        name: String,
        /// Its id, e.g. one other systems already use in bundles' tenant_id
        /// or as an inbox/<uuid>/ folder [default: a new UUID]
        #[arg(long, value_name = "UUID")]
        id: Option<Uuid>,
    },
}

impl Command {
    /// Commands that keep running and report progress through the log.
    pub fn is_long_running(&self) -> bool {
        matches!(self, Command::Serve(_))
    }

    /// Commands that write the database. The others also work on a home
    /// this user may only read.
    pub fn writes(&self) -> bool {
        match self {
            Command::Submit { .. }
            | Command::Serve(_)
            | Command::Ingest { .. }
            | Command::Prune { .. }
            | Command::Init { .. } => true,
            Command::Job(cmd) => !matches!(cmd, JobCommand::Show { .. }),
            Command::Db(cmd) => matches!(cmd, DbCommand::Migrate),
            Command::Tenants { command } => matches!(command, Some(TenantsCommand::Create { .. })),
            _ => false,
        }
    }
}

/// Options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Jobs for the baseline and the engine life cycle
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Worker threads of the pool
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Durability of every database in the run
    #[arg(long, value_enum, default_value_t = SyncArg::Full)]
    pub sync: SyncArg,
    /// Jobs queued for the large-queue claim cost and memory figures
    #[arg(long, default_value_t = 1_000_000)]
    pub big_queue: usize,
    /// Files dropped at once for the ingest figure
    #[arg(long, default_value_t = 10_000)]
    pub drop_files: usize,
    /// Samples per latency figure
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// How long to watch an idle serve's CPU use, in seconds
    #[arg(long, default_value_t = 10)]
    pub idle_seconds: u64,
    /// Where to put the temp homes [default: the system temp folder]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `--sync` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncArg {
    /// fsync every commit (the default)
    Full,
    /// fsync at checkpoints only
    Normal,
}

/// Options of `serve`; each overrides `bundleq.toml`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Worker threads [config: workers.count, default 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Work everything that is due, then exit (exit 3 if any job failed or
    /// waits for a retry)
    #[arg(long)]
    pub once: bool,
    /// Rescue running jobs whose worker was silent this long [config:
    /// queue.lock_timeout, default 30m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<std::time::Duration>,
    /// Longest idle sleep before looking for work from other processes
    /// [config: workers.poll_interval, default 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
    /// How long running jobs may finish after SIGINT/SIGTERM [config:
    /// workers.grace_period, default 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace_period: Option<std::time::Duration>,
    /// Drop folder to watch: <home>/inbox or a folder adopted with
    /// `init --inbox` [default: [inbox] path, else <home>/inbox]
    #[arg(long, value_name = "DIR")]
    pub inbox: Option<PathBuf>,
    /// Do not watch the inbox; only work jobs
    #[arg(long, conflicts_with = "inbox")]
    pub no_inbox: bool,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print the applied migration head, like `alembic current`.
    Current,
    /// Apply pending migrations (opening a home applies them too).
    Migrate,
    /// Check the database for damage (SQLite's integrity_check); exit 1 if
    /// any is found.
    Check,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this status (queued, running, succeeded, failed, cancelled)
    #[arg(long, value_parser = parse_status)]
    pub status: Option<JobStatus>,
    /// Only jobs of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// Only jobs of this run
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<Uuid>,
    /// Show at most this many
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job's columns and its attempt history.
    Show { id: Uuid },
    /// Queue a failed or cancelled job again, attempts reset to 0.
    Retry { id: Uuid },
    /// Cancel a queued or failed job.
    Cancel { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// A run, its bundle and its jobs.
    Show { id: Uuid },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    bundleq::timestamp::parse_duration(s)
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    s.parse()
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let code = match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            output::error_line(&e);
            EXIT_ERROR
        }
    };
    ExitCode::from(output::finish(code))
}

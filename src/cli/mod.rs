//! Command-line interface (binary only): the clap definitions, dispatch to
//! the library, and rendering of results as tables or JSON. Output goes to
//! stdout; errors go to stderr as one line (a JSON object with `--json`).

mod bench;
mod commands;
mod custody;
mod output;
mod render;
mod show;
mod signals;
mod submit;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

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
/// Exit status: interrupted by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    error (I/O, database, unknown id or tenant, refused transition, bad
       configuration); verify: a problem found; backup: the copy is not
       sound
  2    usage error (unknown command or flag, malformed argument)
  3    serve --once: some job failed, or failed and waits for a retry
  65   invalid input data (EX_DATAERR): a bundle failed validation
  130  submit interrupted by Ctrl-C (what was committed is said)

Output: tables fit the terminal (80 columns when not a terminal; --wide for
every column); times are relative (--utc for absolute); ids are shown short
and accepted short. --json prints JSON (JSON Lines for streams) and errors as
JSON on stderr. A closed pipe ends the output quietly; control characters in
bundle text, file names and handler output are shown escaped.

Environment:
  BUNDLEQ_HOME  home folder (same as --home)
  RUST_LOG      log filter, e.g. RUST_LOG=debug (default: warn; info for serve)";

/// bundleq: an embedded, durable job engine for research run bundles.
///
/// One folder (the home) holds the SQLite database, the configuration file and
/// the drop folders. Run `bundleq init` once, then submit bundles (or drop them
/// into the inbox) and work them with `bundleq serve`.
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
    /// Home folder holding bundleq.db, bundleq.toml and the drop folders
    /// [default: $XDG_DATA_HOME/bundleq or ~/.local/share/bundleq]
    #[arg(long, global = true, env = "BUNDLEQ_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Tenant to read and write, by name or id; it must exist (see
    /// `bundleq tenants`) [default: the home's default tenant]
    #[arg(long, global = true, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Print JSON for scripts (JSON Lines for streams) instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// Show times as absolute UTC timestamps instead of "3m ago"
    #[arg(long, global = true)]
    pub utc: bool,
    /// Show every column, ids and texts in full, whatever the terminal width
    #[arg(long, global = true)]
    pub wide: bool,
    /// Print less: no progress bar, no per-item lines, only the summary and
    /// errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more: more log lines (-v info, -vv debug), payloads in `job show`
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a home (folders 0700, database and configuration 0600, a
    /// tenant named "default"). Safe to run again; an existing folder is
    /// made private.
    #[command(after_help = "Examples:
  bundleq --home ~/lab init
  bundleq init --inbox /data/instrument-drops   # also adopt a drop folder
  bundleq --home ~/lab init --database postgres://bundleq@db.lab.example/bundleq
                                # one queue for several hosts (PostgreSQL)")]
    Init {
        /// Keep the queue in this PostgreSQL database instead of a SQLite
        /// file in the home: a `postgres://user@host/db` URL or a
        /// `host=/run/postgresql dbname=bundleq` connection string, written
        /// to bundleq.toml as `[database] url`. The homes of every host
        /// working one queue name the same database.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// Also make DIR an inbox of this home: create it (0700) if missing
        /// and mark it with a .bundleq-inbox file. Everything already in DIR
        /// will be ingested and moved to accepted/ or rejected/.
        #[arg(long, value_name = "DIR")]
        inbox: Option<PathBuf>,
    },
    /// Validate bundles and accept the valid ones: each becomes a run with a
    /// queued job, in one transaction per batch. Verdicts are printed as each
    /// batch commits; invalid bundles are listed with every error (exit 65);
    /// the same bytes again are a duplicate and enqueue nothing. Ctrl-C stops
    /// after the batch being committed and says what was.
    #[command(after_help = "Examples:
  bundleq submit run-42.json
  bundleq submit results/                # every *.json and NAME.bundle/ in it
  bundleq submit -r results/             # and in its subfolders
  bundleq --json submit runs/*.json      # one JSON object per line")]
    Submit(SubmitArgs),
    /// Check bundles without writing anything (exit 65 if any is invalid).
    /// Works without a home, with the default limits.
    #[command(after_help = "Examples:
  bundleq validate run-42.json survey.bundle
  bundleq validate -r results/
  generate-bundle | bundleq validate -    # from standard input")]
    Validate(ValidateArgs),
    /// Watch the inbox and work jobs with a pool of threads until
    /// SIGINT/SIGTERM/SIGHUP (or, with --once, ingest the inbox once and work
    /// until nothing is due). On a signal: stop claiming, let running jobs
    /// finish within the grace period, give back the rest, exit 0.
    #[command(after_help = "Examples:
  bundleq serve                          # watch <home>/inbox, 4 workers
  bundleq serve --workers 8 --inbox /data/drops
  bundleq serve --once                   # for cron: drain and exit
  bundleq serve --http                   # and the dashboard on 127.0.0.1:7878")]
    Serve(ServeArgs),
    /// One pass over the inbox: ingest every complete bundle, move it to
    /// accepted/ or rejected/, and exit (for cron and scripts).
    #[command(after_help = "Examples:
  bundleq ingest
  bundleq ingest --wait                  # also wait for entries still being written")]
    Ingest {
        /// Drop folder to scan: <home>/inbox or a folder adopted with
        /// `init --inbox` [default: [inbox] path, else <home>/inbox]
        #[arg(long, value_name = "DIR")]
        inbox: Option<PathBuf>,
        /// Wait (up to 5 minutes) for entries still being written, and
        /// ingest them too
        #[arg(long)]
        wait: bool,
    },
    /// List this home's tenants, or create one. Every command works on one
    /// tenant (--tenant NAME|UUID); unknown ones are refused.
    #[command(after_help = "Examples:
  bundleq tenants
  bundleq tenants create lab-b
  bundleq tenants create field-station --id 0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a99")]
    Tenants {
        #[command(subcommand)]
        command: Option<TenantsCommand>,
    },
    /// List jobs, newest first.
    #[command(after_help = "Examples:
  bundleq jobs
  bundleq jobs --status failed --type summarise
  bundleq jobs --run 0192c3c0 --limit 10")]
    Jobs(JobsArgs),
    /// Show, retry, cancel or release one job.
    #[command(subcommand)]
    Job(JobCommand),
    /// List runs, newest first.
    #[command(after_help = "Examples:
  bundleq runs
  bundleq runs --limit 5 --utc")]
    Runs {
        /// Show at most this many
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u32,
    },
    /// Show one run.
    #[command(subcommand)]
    Run(RunCommand),
    /// What is happening: jobs ready, scheduled and running (per job type),
    /// the serve processes working the queue, the inbox and recent
    /// rejections.
    #[command(after_help = "Examples:
  bundleq status
  bundleq status --watch                 # refresh every 2 seconds")]
    Status {
        /// Refresh every SECONDS until interrupted
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Search the text of processed sources.
    ///
    /// Words must all match; `glac*` matches a prefix; "quoted phrases"
    /// match in order; OR, NOT and parentheses combine them.
    #[command(after_help = "Examples:
  bundleq search glacier retreat
  bundleq search 'glac* NOT moraine'
  bundleq search '\"terminus retreat\" OR calving'")]
    Search {
        /// Words and operators to look for
        #[arg(required = true, value_name = "QUERY")]
        query: Vec<String>,
        /// Only sources of this run
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// Show at most this many hits
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: u32,
    },
    /// Delete finished jobs (succeeded, failed, cancelled) and their attempt
    /// history; with --runs, also old runs whose jobs have all finished;
    /// then remove the stored objects no remaining run names, what a killed
    /// submit left staged, and search shard files a killed process left
    /// unregistered (untouched for an hour). Objects being stored by a
    /// running submit or ingest are never removed: prune waits for them (up
    /// to a minute).
    #[command(after_help = "Examples:
  bundleq prune --finished-before 30d --dry-run
  bundleq prune --finished-before 12h --status succeeded
  bundleq prune --runs 365d              # runs accepted over a year ago, and their bytes
  bundleq prune                          # only objects no run names")]
    Prune {
        /// Delete jobs that finished longer ago than this (a unit is needed:
        /// 12h, 30d, 1w)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        finished_before: Option<std::time::Duration>,
        /// Only jobs in this finished state (repeatable)
        #[arg(
            long,
            value_name = "STATUS",
            value_parser = parse_finished_status,
            requires = "finished_before"
        )]
        status: Vec<JobStatus>,
        /// Also delete runs accepted longer ago than this whose jobs have
        /// all finished, with their jobs, history, sources and search index
        /// entries (their objects go when no other run names them)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        runs: Option<std::time::Duration>,
        /// Only say what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-read every stored object and check it against its sha256; check
    /// that every source with bytes has its object, that every object is
    /// named by a run, and that every stored bundle rebuilds to the bytes
    /// accepted. Prints one line per problem (corrupt, missing, orphaned,
    /// bundle) and exits 1 if there is any. A full verification is recorded
    /// (shown by `status`), and each object's last check (shown by `run
    /// show`).
    #[command(after_help = "Examples:
  bundleq verify
  bundleq verify --run 0192c3c0          # one run's objects and bundle
  bundleq verify --sample 5              # hash about 5% of the objects
  bundleq verify --repair                # also remove orphaned objects")]
    Verify {
        /// Only this run's objects and bundle (no orphan check)
        #[arg(long, value_name = "RUN", conflicts_with = "repair")]
        run: Option<String>,
        /// Hash only about PERCENT of the objects, picked at random (every
        /// object is still looked for); not recorded as a full verification
        #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
        sample: Option<f64>,
        /// Remove the objects no run names (what `prune` also does); corrupt
        /// and missing objects cannot be repaired here: restore them from a
        /// backup
        #[arg(long)]
        repair: bool,
    },
    /// Write runs back as NAME.bundle/ folders (NAME is the run id): the
    /// bundle.json bytes exactly as accepted and every source file it names,
    /// each checked against its sha256 while written. Submitting the folder
    /// to another home gives the same run id, bundle sha256 and sources.
    /// An existing folder is never overwritten.
    #[command(after_help = "Examples:
  bundleq export 0192c3c0 --to /media/usb/handover
  bundleq export --all --to exports/     # every run of the tenant
  bundleq --home other submit exports/   # the round trip")]
    Export {
        /// The run (its id or a unique prefix)
        #[arg(
            value_name = "RUN",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        run: Option<String>,
        /// Every run of the tenant
        #[arg(long)]
        all: bool,
        /// Folder to write into (created if missing)
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Take a consistent copy of the home while it works: the database as
    /// of one moment (SQLite's online backup), then the object files it names,
    /// copied only when DEST lacks them (repeated backups into one folder
    /// are incremental), then verify the copy. DEST is a home of its own:
    /// `bundleq --home DEST status` and `verify` work on it. On PostgreSQL
    /// use pg_dump: every object is in the database.
    #[command(after_help = "Examples:
  bundleq backup /mnt/backup/lab
  bundleq backup --link /srv/lab-snapshots/today   # same disk: hard links
  bundleq --home /mnt/backup/lab verify")]
    Backup {
        /// The backup folder: new, empty, or an earlier backup
        #[arg(value_name = "DEST")]
        dest: PathBuf,
        /// Hard-link object files instead of copying them (DEST on the
        /// home's filesystem; protects against deletion, not disk damage)
        #[arg(long)]
        link: bool,
    },
    /// Stop claiming jobs of a type (or of every type with --all), in every
    /// serve working this database, from their next claim on, for every
    /// tenant. Running jobs finish; queued ones wait until `bundleq resume`.
    #[command(after_help = "Examples:
  bundleq pause summarise                # e.g. while its tool is updated
  bundleq pause --all                    # maintenance: nothing new starts
  bundleq status                         # shows what is paused, since when")]
    Pause(PauseArgs),
    /// Claim jobs of a paused type again (--all: lift every pause).
    #[command(after_help = "Examples:
  bundleq resume summarise
  bundleq resume --all")]
    Resume(PauseArgs),
    /// Inspect, migrate or check the database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Serve the dashboard and HTTP API without working jobs: a viewer for
    /// this home (or, on PostgreSQL, for the queue every host works). Runs
    /// until SIGINT/SIGTERM. Opening the URL it prints (it holds the
    /// home's token, <home>/http-token) lets the browser act: retry,
    /// cancel, pause, upload.
    #[command(after_help = "Examples:
  bundleq web                            # http://127.0.0.1:7878/
  bundleq web --http 8080 --read-only    # look, never change
  bundleq web --http 0.0.0.0:7878 --allow-host lab-queue.example.org
                                         # from other machines: token needed
  curl -H \"Authorization: Bearer $(cat ~/.local/share/bundleq/http-token)\" \\
       --data-binary @run-42.json http://127.0.0.1:7878/api/v1/bundles")]
    Web {
        /// Where to listen: HOST:PORT, or a port on loopback
        #[arg(long, value_name = "ADDR", default_value = web::DEFAULT_ADDR, value_parser = web::parse_addr)]
        http: std::net::SocketAddr,
        #[command(flatten)]
        web: WebArgs,
    },
    /// Measure the engine in temp homes against a plain-SQLite baseline
    /// measured in the same run; prints a table (or --json).
    #[command(after_help = "Examples:
  bundleq bench                          # about 4 minutes
  bundleq bench --sync normal --jobs 200000")]
    Bench(BenchArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  bundleq completions bash > ~/.local/share/bash-completion/completions/bundleq
  bundleq completions zsh > ~/.zfunc/_bundleq
  bundleq completions fish > ~/.config/fish/completions/bundleq.fish")]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    #[command(after_help = "Examples:
  bundleq man > ~/.local/share/man/man1/bundleq.1 && man bundleq")]
    Man,
}

/// Bundle paths for `submit` and `validate`.
#[derive(Debug, Args)]
pub struct PathsArgs {
    /// Bundle files (*.json), bundle folders (NAME.bundle/), or folders of
    /// bundles (their *.json files and NAME.bundle/ folders)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// In folders of bundles, also look in subfolders
    #[arg(short, long)]
    pub recursive: bool,
}

/// Options of `submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub paths: PathsArgs,
    /// Accept bundles whose job_type has no handler configured here (another
    /// host may have one)
    #[arg(long)]
    pub allow_unknown_type: bool,
    /// Schedule the runs: their jobs are not claimed before this time, a
    /// duration from now (8h) or an RFC 3339 time (2026-12-01T22:00:00Z)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub not_before: Option<bundleq::timestamp::When>,
}

/// The job type of `pause` and `resume`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The job type (process_bundle, or a [handlers.X] type)
    #[arg(
        value_name = "TYPE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub job_type: Option<String>,
    /// Every job type
    #[arg(long)]
    pub all: bool,
}

/// Options of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Bundle files, bundle folders, folders of bundles, or `-` for one
    /// bundle on standard input
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// In folders of bundles, also look in subfolders
    #[arg(short, long)]
    pub recursive: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List the tenants (the default).
    List,
    /// Create a tenant.
    Create {
        /// Its name: 1-64 characters of a-z, 0-9, '_', '-', '.'
        #[arg(value_name = "NAME")]
        name: String,
        /// Its id, e.g. one other systems already use in bundles' tenant_id
        /// or as an inbox/<uuid>/ folder [default: a new UUID]
        #[arg(long, value_name = "UUID")]
        id: Option<uuid::Uuid>,
    },
}

impl Command {
    /// Commands that keep running and report progress through the log.
    pub fn is_long_running(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::Web { .. })
    }

    /// Commands that write the database. The others also work on a home
    /// this user may only read.
    pub fn writes(&self) -> bool {
        match self {
            Command::Submit { .. }
            | Command::Serve(_)
            | Command::Ingest { .. }
            | Command::Pause(_)
            | Command::Resume(_)
            | Command::Init { .. } => true,
            Command::Prune { dry_run, .. } => !dry_run,
            Command::Verify { repair, .. } => *repair,
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
    /// A smoke run of about ten seconds: small sizes for every figure
    /// (each size flag still overrides); the figures mean nothing
    #[arg(long)]
    pub quick: bool,
    /// Jobs for the baseline and the engine life cycle [default: 100,000; --quick: 5,000]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Worker threads of the pool
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub workers: usize,
    /// Durability of every database in the run
    #[arg(long, value_enum, default_value_t = SyncArg::Full)]
    pub sync: SyncArg,
    /// Due jobs of the large queue (claim cost and memory figures), behind as many parked on a
    /// future retry time [default: 1,000,000; --quick: 20,000]
    #[arg(long, value_name = "N")]
    pub big_queue: Option<usize>,
    /// Files dropped at once for the ingest figure [default: 10,000; --quick: 300]
    #[arg(long, value_name = "N")]
    pub drop_files: Option<usize>,
    /// Samples per latency figure [default: 1,000; --quick: 100]
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Bundles of the submit figure (3 inline sources of 2 KiB each) [default: 10,000; --quick: 500]
    #[arg(long, value_name = "N")]
    pub submit_bundles: Option<usize>,
    /// Bundles of the footprint figure (10 inline sources of 1,100 bytes each, processed and
    /// indexed) [default: 10,000; --quick: 200]
    #[arg(long, value_name = "N")]
    pub footprint_bundles: Option<usize>,
    /// Bundles of one 1 MiB text file each, processed by one worker and by two [default: 48;
    /// --quick: 4]
    #[arg(long, value_name = "N")]
    pub scaling_bundles: Option<usize>,
    /// Sources indexed in the home that `search` is timed on [default: 1,000,000; --quick:
    /// 10,000]
    #[arg(long, value_name = "N")]
    pub search_sources: Option<usize>,
    /// How long to watch an idle serve's CPU use, in seconds [default: 10; --quick: 1]
    #[arg(long, value_name = "SECONDS")]
    pub idle_seconds: Option<u64>,
    /// Where to put the temp homes, made if missing; they are removed at the end [default: the
    /// system temp folder]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Measure on this PostgreSQL database instead (scratch schemas,
    /// dropped when done): the engine's life cycle with 1, 2 and 4 pools
    /// against a plain-SQL baseline with as many claiming connections,
    /// batched enqueue, and one-job claim latency
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
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
    /// Also serve the dashboard and HTTP API on ADDR (HOST:PORT, or a port
    /// on loopback) [default when given without ADDR: 127.0.0.1:7878]
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = web::DEFAULT_ADDR,
        value_parser = web::parse_addr
    )]
    pub http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// How the dashboard answers (`serve --http`, `web`).
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Also answer requests naming this Host (a name this machine is
    /// reached by; repeatable). Loopback names, the address listened on
    /// (any IP address when it is 0.0.0.0 or ::) and this machine's name
    /// are always allowed
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Refuse every change through the dashboard and the API (retry,
    /// cancel, pause, resume, upload): only look
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print the applied migration head, like `alembic current`.
    Current,
    /// Apply pending migrations (opening a home applies them too).
    Migrate,
    /// Check the database and its search shards for damage (SQLite's
    /// integrity_check); exit 1 if any is found.
    Check,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this status (queued, running, succeeded, failed, cancelled)
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    pub status: Option<JobStatus>,
    /// Only jobs of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// Only jobs of this run (an id or its short form)
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,
    /// Show at most this many
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job's columns and its history: every attempt (with its run time)
    /// and every manual action. -v adds the payload.
    #[command(after_help = "Examples:
  bundleq job show 01a2268d-68ab
  bundleq -v job show 01a2268d-68ab      # with payload_json")]
    Show {
        /// The job: its id or a prefix of it (as `jobs` shows)
        #[arg(value_name = "JOB")]
        id: String,
    },
    /// Queue a failed or cancelled job again, attempts reset to 0 (a step of
    /// a pipeline that then succeeds queues the steps after it). A job
    /// still running on a worker that is provably gone is rescued first.
    #[command(after_help = "Examples:
  bundleq job retry 01a2268d-68ab
  bundleq job retry 01a2268d-68ab --at 2h        # not before two hours from now
  bundleq job retry 01a2268d-68ab --at 2026-12-01T22:00:00Z")]
    Retry {
        /// The job: its id or a prefix of it
        #[arg(value_name = "JOB")]
        id: String,
        /// Not before this time: a duration from now (2h) or an RFC 3339
        /// time [default: at once]
        #[arg(long, value_name = "WHEN", value_parser = parse_when)]
        at: Option<bundleq::timestamp::When>,
    },
    /// Cancel a queued or failed job. A job still running on a worker that
    /// is provably gone is rescued first.
    Cancel {
        /// The job: its id or a prefix of it
        #[arg(value_name = "JOB")]
        id: String,
    },
    /// Free a job left `running` by a serve that is gone (after a hard stop):
    /// it is queued again at once, the lost attempt counted. A job whose
    /// worker is alive is refused, saying which process has it.
    Release {
        /// The job: its id or a prefix of it
        #[arg(value_name = "JOB")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// A run, its bundle and its jobs.
    #[command(after_help = "Examples:
  bundleq run show 0192c3c0-7a1e")]
    Show {
        /// The run: its id or a prefix of it (as `runs` shows)
        #[arg(value_name = "RUN")]
        id: String,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    bundleq::timestamp::parse_duration(s)
}

fn parse_when(s: &str) -> Result<bundleq::timestamp::When, String> {
    bundleq::timestamp::When::parse(s)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage above 0 and at most 100")),
    }
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    s.parse()
}

fn parse_finished_status(s: &str) -> Result<JobStatus, String> {
    let status: JobStatus = s.parse()?;
    if status.is_finished() {
        Ok(status)
    } else {
        Err(format!(
            "only finished jobs can be pruned (succeeded, failed, cancelled), not {s} ones"
        ))
    }
}

/// The whole command tree, for completions and the manual page.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    output::configure(cli.global.json);
    let code = match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            output::error_line(&e);
            EXIT_ERROR
        }
    };
    ExitCode::from(output::finish(code))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Every `bundleq …` line of every command's examples, as the shell
    /// would split it (up to a pipe, a redirection or a comment).
    fn examples(cmd: &clap::Command, out: &mut Vec<String>) {
        if let Some(help) = cmd.get_after_help() {
            for line in help.to_string().lines() {
                let line = line.trim_start();
                let Some(at) = line.find("bundleq ") else {
                    continue;
                };
                // `generate-bundle | bundleq validate -`: the bundleq part.
                if !line.starts_with("bundleq ") && !line[..at].trim_end().ends_with('|') {
                    continue;
                }
                let mut text = line[at..].to_owned();
                for stop in [" #", " |", " >", " &&"] {
                    if let Some(i) = text.find(stop) {
                        text.truncate(i);
                    }
                }
                out.push(text.trim_end_matches('\\').trim().to_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            examples(sub, out);
        }
    }

    #[test]
    fn every_help_example_parses() {
        let mut all = Vec::new();
        examples(&super::command(), &mut all);
        assert!(all.len() > 40, "{all:?}");
        for example in &all {
            let words = shell_words::split(example).unwrap_or_else(|e| panic!("{example}: {e}"));
            if let Err(e) = super::Cli::try_parse_from(&words) {
                panic!("the example `{example}` does not parse:\n{e}");
            }
        }
    }
}

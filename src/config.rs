//! `bundleq.toml`: the home's configuration, parsed into plain structs that
//! are passed explicitly to whatever needs them. Unknown keys are errors, so
//! a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::bundle::Limits;
use crate::error::{Error, IoContext, Result};
use crate::state::Backoff;
use crate::store::{QueuePolicy, StoreOptions, Synchronous, TypePolicy};
use crate::timestamp::parse_duration;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[queue]`
    pub queue: QueueConfig,
    /// `[limits]`: bounds on bundles.
    pub limits: Limits,
    /// `[workers]`: the worker pool.
    pub workers: WorkersConfig,
    /// `[inbox]`: the drop folder.
    pub inbox: InboxConfig,
    /// `[handlers.<job_type>]`: external commands, the pipeline's order
    /// (`after`) and per-type rules.
    pub handlers: BTreeMap<String, HandlerConfig>,
}

/// The longest pipeline a configuration may set up, in steps from
/// `process_bundle` to the last one.
pub const MAX_PIPELINE_STEPS: usize = 16;

/// `[workers]`: the worker pool of `bundleq serve`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Threads running handlers.
    pub count: usize,
    /// Most jobs claimed ahead of free workers. The pool prefetches as many
    /// as its workers finish during one commit: none for slow jobs, up to
    /// this many for fast ones, so claims and outcomes go to the database in
    /// batches.
    pub prefetch: usize,
    /// How often an idle pool looks for work from other processes.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long shutdown waits for running jobs before giving them back.
    #[serde(deserialize_with = "duration")]
    pub grace_period: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            count: 4,
            prefetch: 256,
            poll_interval: Duration::from_secs(1),
            grace_period: Duration::from_secs(30),
        }
    }
}

/// `[database]`: where the database is and how it is used.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Where the database is: a SQLite file, relative to the home
    /// [default: bundleq.db] (see [`crate::store::Location::parse`]).
    pub path: Option<String>,
    /// A PostgreSQL database instead (a `postgres://` URL or a
    /// `host=… dbname=…` connection string), shared by the homes of every
    /// host working one queue (see [`crate::store::Location::server`]).
    pub url: Option<String>,
    /// `full` (default) or `normal`.
    pub synchronous: Synchronous,
    /// How long a write waits for another process before giving up.
    #[serde(deserialize_with = "duration")]
    pub busy_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: None,
            url: None,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(60),
        }
    }
}

/// `[inbox]` in `bundleq.toml`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// The inbox folder, if not `<home>/inbox` (relative to the home). It
    /// must have been adopted with `bundleq init --inbox DIR` (or be empty).
    pub path: Option<PathBuf>,
    /// A file not renamed in is taken once unchanged for this long.
    #[serde(deserialize_with = "duration")]
    pub settle: Duration,
    /// Full rescan period, a safety net for lost or missing notifications.
    #[serde(deserialize_with = "duration")]
    pub rescan_interval: Duration,
    /// Use OS notifications; `false` for filesystems that send none (NFS,
    /// some FUSE mounts): then only the rescans find new entries.
    pub watch: bool,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            path: None,
            settle: Duration::from_secs(1),
            rescan_interval: Duration::from_secs(30),
            watch: true,
        }
    }
}

/// An external command: what runs a job of a configured type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalConfig {
    /// Program and arguments; never run through a shell.
    pub command: Vec<String>,
    /// Killed (with its process group) after this long.
    pub timeout: Duration,
}

/// How long an external command may run unless its table says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// `[handlers.<job_type>]` in `bundleq.toml`: the command of a step (every
/// type but the built-in `process_bundle`, whose table may only set its
/// rules), where it comes in a run's pipeline, and rules of its own.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandlerConfig {
    /// Program and arguments; never run through a shell.
    pub command: Option<Vec<String>>,
    /// Killed (with its process group) after this long [default: 10m].
    #[serde(deserialize_with = "some_duration")]
    pub timeout: Option<Duration>,
    /// The step this one follows: a job of this type is queued for a run
    /// when its job of type `after` succeeds.
    pub after: Option<String>,
    /// At most this many jobs of this type run at once, across every serve
    /// of the home.
    pub concurrency: Option<u32>,
    /// Attempts of a job of this type [default: queue.max_attempts].
    pub max_attempts: Option<u32>,
    /// Delay after its first failed attempt [default: queue.backoff_base].
    #[serde(deserialize_with = "some_duration")]
    pub backoff_base: Option<Duration>,
    /// Its longest delay [default: queue.backoff_cap].
    #[serde(deserialize_with = "some_duration")]
    pub backoff_cap: Option<Duration>,
    /// Spread of its delays [default: queue.backoff_jitter].
    pub backoff_jitter: Option<f64>,
}

impl HandlerConfig {
    /// The external command, for every type but `process_bundle`.
    pub fn external(&self) -> Option<ExternalConfig> {
        self.command.as_ref().map(|command| ExternalConfig {
            command: command.clone(),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }
}

fn some_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// `[queue]`: the state machine's parameters.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Attempts per job unless the job says otherwise.
    pub max_attempts: u32,
    /// A running job whose lock is older than this is rescued.
    #[serde(deserialize_with = "duration")]
    pub lock_timeout: Duration,
    /// Delay after the first failed attempt.
    #[serde(deserialize_with = "duration")]
    pub backoff_base: Duration,
    /// Longest delay.
    #[serde(deserialize_with = "duration")]
    pub backoff_cap: Duration,
    /// Spread of each delay, 0.0 to 1.0.
    pub backoff_jitter: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let policy = QueuePolicy::default();
        QueueConfig {
            max_attempts: policy.max_attempts,
            lock_timeout: policy.lock_timeout,
            backoff_base: policy.backoff.base,
            backoff_cap: policy.backoff.cap,
            backoff_jitter: policy.backoff.jitter,
        }
    }
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// The largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// "duplicate key `count` in [workers]" (or "duplicate table [x]"), for a
/// toml duplicate-key error at `span`.
fn duplicate_key_message(text: &str, span: std::ops::Range<usize>) -> String {
    let key = text
        .get(span.clone())
        .unwrap_or("")
        .trim()
        .trim_matches(['[', ']', '"', '\''])
        .to_owned();
    let before = text.get(..span.start).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    if line.starts_with('[') {
        return format!("duplicate table {line}: each table may appear once");
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .unwrap_or("the top level");
    format!("duplicate key `{key}` in {table}")
}

/// The file `init` writes: every key, commented, at its default.
pub const DEFAULT_CONFIG: &str = r#"# bundleq configuration. Every key is optional; the values shown are the defaults.
# To change one, uncomment its table header (once: a table may appear only once
# in the file) and the key. Durations take a unit: 250ms, 30s, 5m, 2h, 7d, 1w.

# [database]
# The database file, relative to the home.
# path = "bundleq.db"
# Or a PostgreSQL database shared by the homes of several hosts (one queue);
# the environment variable BUNDLEQ_DATABASE_URL overrides it.
# url = "postgres://bundleq@db.lab.example/bundleq"
# "full": every commit is fsynced, an acknowledged write survives power loss.
# "normal": faster; survives a crash of bundleq, but a power loss or OS crash
# may undo the last commits.
# synchronous = "full"
# How long a write waits for another bundleq process before giving up.
# busy_timeout = "60s"

# [queue]
# Attempts per job (a job that kills its worker counts too).
# max_attempts = 3
# A running job whose worker has not been heard from for this long is rescued.
# lock_timeout = "30m"
# Retry delays: base x 2^(attempt-1), at most cap, spread by +/- jitter.
# backoff_base = "30s"
# backoff_cap = "1h"
# backoff_jitter = 0.0

# [limits]
# Bounds on bundles; anything beyond them is refused with a clear error.
# max_bundle_bytes = 16777216        # bundle JSON file size
# max_depth = 64                     # JSON nesting
# max_string_bytes = 4194304         # any one JSON string
# max_title_chars = 500
# max_sources = 10000
# max_findings = 10000
# max_array_items = 10000            # any other array
# max_object_keys = 10000            # any one object
# max_source_file_bytes = 268435456  # one file of a NAME.bundle/ folder
# max_total_source_bytes = 1073741824  # all files of one bundle together

# [workers]
# Threads running handlers in `bundleq serve`.
# count = 4
# Most jobs claimed ahead of free workers. The pool holds as many extra
# jobs as its workers finish during one commit (none for slow jobs), so fast
# jobs are claimed and recorded in large batches.
# prefetch = 256
# How often an idle serve checks for work added by other processes.
# poll_interval = "1s"
# On SIGINT/SIGTERM, how long running jobs may finish before they are
# given back to the queue (a given-back attempt does not count).
# grace_period = "30s"

# [inbox]
# A file or NAME.bundle/ folder renamed into the inbox is taken at once; one
# written in place is taken once it has not changed for this long.
# settle = "1s"
# Full rescan period: a safety net for lost notifications and for
# filesystems that send none.
# rescan_interval = "30s"
# Use OS notifications; set to false on filesystems that send none (NFS,
# some FUSE mounts), where only the rescans find new entries.
# watch = true
# The drop folder, if not <home>/inbox (adopt it first: bundleq init --inbox DIR).
# path = "/data/drops"

# External commands, one table per job type. No shell is involved: the
# command runs as given, with the job's payload JSON on stdin (plus the run's
# bundle under "bundle", each source's stored file under "sources", the home
# under "home") and BUNDLEQ_JOB_ID, BUNDLEQ_ATTEMPT, BUNDLEQ_RUN_ID,
# BUNDLEQ_TENANT_ID, BUNDLEQ_HOME in its environment. Exit 0 = succeeded,
# 65 = failed for good, anything else (or the timeout) = retry later. The
# last 4 KiB of stdout are kept with the attempt, of stderr as its error.
#
# [handlers.summarise]
# command = ["/usr/local/bin/summarise", "--fast"]
# timeout = "10m"
#
# Pipelines: every run starts with the built-in process_bundle (sources
# verified and indexed); a bundle whose job_type is another type gets a job
# of that type when process_bundle succeeds. `after` chains more steps: a job
# of this type is queued for the run when its `after` step succeeds (several
# steps may follow one). A failed step stops the steps after it; retrying it
# (bundleq job retry) resumes the chain.
# after = "process_bundle"
# Per-type rules: how many of its jobs run at once across every serve of the
# home, its attempts and its backoff (defaults: the [queue] values).
# concurrency = 1
# max_attempts = 5
# backoff_base = "1m"
# backoff_cap = "2h"
# backoff_jitter = 0.1
#
# [handlers.process_bundle]
# The built-in step takes the rules too (no command, timeout or after).
# concurrency = 2
"#;

impl Config {
    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                text.get(..s.start)
                    .map_or(1, |t| t.matches('\n').count() + 1)
            });
            let mut message = e.message().trim().replace('\n', " ");
            if message.starts_with("duplicate key")
                && let Some(span) = e.span()
            {
                message = duplicate_key_message(text, span);
            }
            Error::Config {
                path: path.to_owned(),
                message: match line {
                    Some(l) => format!("line {l}: {message}"),
                    None => message,
                },
            }
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// Reads `path`, which must be a regular file of at most
    /// [`MAX_CONFIG_BYTES`]; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Config> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let too_big = |size: u64| Error::Config {
            path: path.to_owned(),
            message: format!(
                "the file is {size} bytes or more; a configuration file may be at most {MAX_CONFIG_BYTES} bytes"
            ),
        };
        let meta = file.metadata().io("inspect", path)?;
        if !meta.is_file() {
            return Err(Error::Config {
                path: path.to_owned(),
                message: "not a regular file".to_owned(),
            });
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(too_big(meta.len()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .io("read", path)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(too_big(bytes.len() as u64));
        }
        let text = String::from_utf8(bytes).map_err(|_| Error::Config {
            path: path.to_owned(),
            message: "the file is not valid UTF-8".to_owned(),
        })?;
        Config::parse(&text, path)
    }

    /// Checks values serde cannot: ranges and relations between keys.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |message: &str| {
            Err(Error::Config {
                path: path.to_owned(),
                message: message.to_owned(),
            })
        };
        if let Some(p) = &self.database.path
            && let Err(message) = crate::store::Location::parse(p, Path::new("/"))
        {
            return bad(&format!("database.path: {message}"));
        }
        if let Some(u) = &self.database.url {
            if self.database.path.is_some() {
                return bad("database: give `path` (SQLite) or `url` (PostgreSQL), not both");
            }
            if let Err(message) = crate::store::Location::server(u) {
                return bad(&format!("database.url: {message}"));
            }
        }
        let q = &self.queue;
        if q.max_attempts == 0 {
            return bad("queue.max_attempts must be at least 1");
        }
        if !(0.0..=1.0).contains(&q.backoff_jitter) {
            return bad("queue.backoff_jitter must be between 0.0 and 1.0");
        }
        if q.backoff_cap < q.backoff_base {
            return bad("queue.backoff_cap must not be shorter than queue.backoff_base");
        }
        if q.lock_timeout < Duration::from_secs(1) {
            return bad("queue.lock_timeout must be at least 1s");
        }
        if q.backoff_base.is_zero() {
            return bad(
                "queue.backoff_base must be more than 0s (a failed job would be retried at once, in a loop)",
            );
        }
        if self.database.busy_timeout.is_zero() {
            return bad("database.busy_timeout must be more than 0s");
        }
        if self.inbox.settle < Duration::from_millis(10) {
            return bad(
                "inbox.settle must be at least 10ms (a file still being written would be read)",
            );
        }
        let w = &self.workers;
        if w.count == 0 || w.count > 1024 {
            return bad("workers.count must be between 1 and 1024");
        }
        if w.poll_interval < Duration::from_millis(10) {
            return bad("workers.poll_interval must be at least 10ms");
        }
        if self.inbox.rescan_interval < Duration::from_millis(100) {
            return bad("inbox.rescan_interval must be at least 100ms");
        }
        for (job_type, h) in &self.handlers {
            if let Err(message) = self.check_handler(job_type, h) {
                return bad(&message);
            }
        }
        if let Err(message) = self.check_pipeline() {
            return bad(&message);
        }
        let l = &self.limits;
        if !(2..=128).contains(&l.max_depth) {
            return bad("limits.max_depth must be between 2 and 128");
        }
        let counts = [
            ("limits.max_bundle_bytes", l.max_bundle_bytes as usize),
            ("limits.max_string_bytes", l.max_string_bytes),
            ("limits.max_title_chars", l.max_title_chars),
            ("limits.max_sources", l.max_sources),
            ("limits.max_findings", l.max_findings),
            ("limits.max_array_items", l.max_array_items),
            ("limits.max_object_keys", l.max_object_keys),
            (
                "limits.max_source_file_bytes",
                l.max_source_file_bytes as usize,
            ),
            (
                "limits.max_total_source_bytes",
                l.max_total_source_bytes as usize,
            ),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return bad(&format!("{key} must be at least 1"));
        }
        Ok(())
    }

    fn check_handler(&self, job_type: &str, h: &HandlerConfig) -> std::result::Result<(), String> {
        let table = format!("[handlers.{job_type}]");
        if !crate::bundle::valid_job_type(job_type) {
            return Err(format!(
                "{table}: a job type is 1-64 characters of a-z, 0-9, '_', '-' or '.'"
            ));
        }
        if job_type == crate::bundle::DEFAULT_JOB_TYPE {
            if h.command.is_some() {
                return Err(format!(
                    "{table}: {job_type} is built in and cannot be replaced by a command; give your step another job type (its table may set only concurrency, max_attempts and backoff_*)"
                ));
            }
            if h.timeout.is_some() {
                return Err(format!(
                    "handlers.{job_type}.timeout: {job_type} runs inside serve and has no timeout"
                ));
            }
            if h.after.is_some() {
                return Err(format!(
                    "handlers.{job_type}.after: {job_type} is every run's first step and follows nothing"
                ));
            }
        } else {
            match &h.command {
                Some(c) if c.first().is_some_and(|p| !p.is_empty()) => {}
                _ => return Err(format!("handlers.{job_type}.command must name a program")),
            }
        }
        if h.timeout.is_some_and(|t| t.is_zero()) {
            return Err(format!("handlers.{job_type}.timeout must be more than 0s"));
        }
        if h.concurrency == Some(0) {
            return Err(format!(
                "handlers.{job_type}.concurrency must be at least 1 (to stop a type for a while: bundleq pause {job_type})"
            ));
        }
        if h.max_attempts == Some(0) {
            return Err(format!(
                "handlers.{job_type}.max_attempts must be at least 1"
            ));
        }
        if h.backoff_jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
            return Err(format!(
                "handlers.{job_type}.backoff_jitter must be between 0.0 and 1.0"
            ));
        }
        if h.backoff_base.is_some_and(|b| b.is_zero()) {
            return Err(format!(
                "handlers.{job_type}.backoff_base must be more than 0s"
            ));
        }
        let b = self.backoff_of(h);
        if b.cap < b.base {
            return Err(format!(
                "handlers.{job_type}.backoff_cap must not be shorter than its backoff_base"
            ));
        }
        Ok(())
    }

    /// Every `after` names a step that exists, no step follows itself
    /// around a loop, and no chain is longer than [`MAX_PIPELINE_STEPS`].
    fn check_pipeline(&self) -> std::result::Result<(), String> {
        let first = crate::bundle::DEFAULT_JOB_TYPE;
        for (job_type, h) in &self.handlers {
            let Some(after) = &h.after else { continue };
            if after != first && !self.handlers.contains_key(after) {
                return Err(format!(
                    "handlers.{job_type}.after: no step {after:?} (a step is {first} or a job type with a [handlers.X] table)"
                ));
            }
        }
        for job_type in self.handlers.keys() {
            // Walk back to the first step: a run's own job type follows
            // process_bundle, so a chain starting elsewhere is one longer.
            let mut seen = vec![job_type.as_str()];
            let mut at = job_type.as_str();
            while let Some(after) = self.handlers.get(at).and_then(|h| h.after.as_deref()) {
                if seen.contains(&after) {
                    seen.push(after);
                    let start = seen.iter().position(|s| *s == after).unwrap_or(0);
                    return Err(format!(
                        "[handlers.*] after: the steps {} follow each other in a loop",
                        seen[start..].join(" -> ")
                    ));
                }
                seen.push(after);
                at = after;
            }
            let steps = seen.len() + usize::from(at != first);
            if steps > MAX_PIPELINE_STEPS {
                return Err(format!(
                    "handlers.{job_type}.after: a run would take {steps} steps to reach {job_type}; a pipeline may have at most {MAX_PIPELINE_STEPS}"
                ));
            }
        }
        Ok(())
    }

    fn backoff_of(&self, h: &HandlerConfig) -> Backoff {
        Backoff {
            base: h.backoff_base.unwrap_or(self.queue.backoff_base),
            cap: h.backoff_cap.unwrap_or(self.queue.backoff_cap),
            jitter: h.backoff_jitter.unwrap_or(self.queue.backoff_jitter),
        }
    }

    /// The steps that follow `job_type` in every run (the types whose
    /// `after` names it), in name order.
    pub fn followers(&self, job_type: &str) -> Vec<String> {
        self.handlers
            .iter()
            .filter(|(_, h)| h.after.as_deref() == Some(job_type))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The steps of a run whose bundle names `bundle_job_type`, in the
    /// order they come: `process_bundle`, then the bundle's own type, then
    /// each configured follower after the step it follows. Each step once,
    /// with the step it follows.
    pub fn pipeline(&self, bundle_job_type: &str) -> Vec<(String, Option<String>)> {
        let first = crate::bundle::DEFAULT_JOB_TYPE.to_owned();
        let mut steps: Vec<(String, Option<String>)> = vec![(first.clone(), None)];
        let mut at = 0;
        while at < steps.len() {
            let step = steps[at].0.clone();
            let mut next = Vec::new();
            if step == first && bundle_job_type != first {
                next.push(bundle_job_type.to_owned());
            }
            next.extend(self.followers(&step));
            for n in next {
                if !steps.iter().any(|(s, _)| *s == n) {
                    steps.push((n, Some(step.clone())));
                }
            }
            at += 1;
        }
        steps
    }

    /// The store options this configuration asks for.
    pub fn store_options(&self) -> StoreOptions {
        let types = self
            .handlers
            .iter()
            .filter(|(_, h)| {
                h.max_attempts.is_some()
                    || h.concurrency.is_some()
                    || h.backoff_base.is_some()
                    || h.backoff_cap.is_some()
                    || h.backoff_jitter.is_some()
            })
            .map(|(name, h)| {
                let own_backoff = h.backoff_base.is_some()
                    || h.backoff_cap.is_some()
                    || h.backoff_jitter.is_some();
                (
                    name.clone(),
                    TypePolicy {
                        max_attempts: h.max_attempts,
                        backoff: own_backoff.then(|| self.backoff_of(h)),
                        concurrency: h.concurrency,
                    },
                )
            })
            .collect();
        StoreOptions {
            synchronous: self.database.synchronous,
            busy_deadline: self.database.busy_timeout,
            policy: QueuePolicy {
                lock_timeout: self.queue.lock_timeout,
                backoff: Backoff {
                    base: self.queue.backoff_base,
                    cap: self.queue.backoff_cap,
                    jitter: self.queue.backoff_jitter,
                },
                max_attempts: self.queue.max_attempts,
                types,
            },
            ..StoreOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_defaults() {
        let c = Config::parse(DEFAULT_CONFIG, Path::new("bundleq.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn bad_keys_and_values_name_the_key_on_one_line() {
        let p = Path::new("bundleq.toml");
        let e = Config::parse("[queue]\nmax_attempt = 3\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_attempt") && e.contains("line 2"), "{e}");
        assert!(!e.contains('\n'));
        let e = Config::parse("[queue]\nlock_timeout = \"soon\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("soon"), "{e}");
        let e = Config::parse("[queue]\nmax_attempts = 0\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue.max_attempts"), "{e}");
        let e = Config::parse("[database]\nsynchronous = \"off\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("off"), "{e}");
    }

    #[test]
    fn the_pipeline_lists_each_step_once_after_the_step_it_follows() {
        let text = "[handlers.summarise]\ncommand = [\"s\"]\n\
                    [handlers.publish]\ncommand = [\"p\"]\nafter = \"summarise\"\n\
                    [handlers.archive]\ncommand = [\"a\"]\nafter = \"summarise\"\n\
                    [handlers.notify]\ncommand = [\"n\"]\nafter = \"process_bundle\"\n\
                    [handlers.process_bundle]\nconcurrency = 2\nmax_attempts = 5\n";
        let c = Config::parse(text, Path::new("bundleq.toml")).unwrap();
        let steps: Vec<(String, Option<String>)> = c.pipeline("summarise");
        let names: Vec<(&str, Option<&str>)> = steps
            .iter()
            .map(|(s, a)| (s.as_str(), a.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("process_bundle", None),
                ("summarise", Some("process_bundle")),
                ("notify", Some("process_bundle")),
                ("archive", Some("summarise")),
                ("publish", Some("summarise")),
            ]
        );
        // A run of the built-in type alone gets the configured followers.
        assert_eq!(c.pipeline("process_bundle").len(), 2);
        assert_eq!(c.followers("summarise"), ["archive", "publish"]);
        let policy = c.store_options().policy;
        assert_eq!(policy.max_attempts_for("process_bundle"), 5);
        assert_eq!(policy.max_attempts_for("publish"), 3);
        assert_eq!(policy.caps().collect::<Vec<_>>(), [("process_bundle", 2)]);
    }
}

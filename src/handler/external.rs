//! External command handlers, configured per job type in `bundleq.toml`:
//!
//! ```toml
//! [handlers.summarise]
//! command = ["/usr/local/bin/summarise", "--fast"]
//! timeout = "10m"
//! ```
//!
//! The command runs without a shell (argv as given, nothing interpolated),
//! in its own process group, with an allow-listed environment plus
//! `BUNDLEQ_JOB_ID`, `BUNDLEQ_ATTEMPT`, `BUNDLEQ_RUN_ID` and
//! `BUNDLEQ_TENANT_ID`. Its stdin is the job's payload JSON with the run's
//! bundle under `"bundle"`. Exit 0 succeeds; exit 65 fails the job for good;
//! any other exit, a signal or the timeout is a retryable failure. On
//! timeout or shutdown the whole process group is killed; when the command
//! exits, whatever it left in its group is killed too. The tail of stderr
//! becomes the error.
//!
//! With a [`GuardProgram`] (what `bundleq serve` uses) the command runs
//! under a guard process that kills its group when serve dies, even by
//! `SIGKILL` (see [`super::guard`]). A program that cannot be found or run
//! is reported by [`ExternalCommand::check`] when serve starts.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

use super::child::ChildIo;
use super::guard::GuardProgram;
use super::{Handler, JobContext};
pub use crate::config::ExternalConfig;
use crate::error::IoContext;
use crate::state::Outcome;
use crate::store::Readers;

/// Exit code by which a command says the job can never succeed.
pub const EXIT_PERMANENT: i32 = 65;
/// How often a running command's handler looks whether the pool stopped
/// waiting for it.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Variables passed through from bundleq's environment; nothing else is.
const PASS_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// Runs a configured command for each job.
#[derive(Debug)]
pub struct ExternalCommand {
    config: ExternalConfig,
    reads: Readers,
    guard: Option<GuardProgram>,
    home: crate::home::Home,
}

impl ExternalCommand {
    /// A handler running `config.command` for jobs of `home` (whose
    /// database `reads` reads), under `guard` when given.
    pub fn new(
        config: ExternalConfig,
        home: crate::home::Home,
        reads: Readers,
        guard: Option<GuardProgram>,
    ) -> ExternalCommand {
        ExternalCommand {
            config,
            reads,
            guard,
            home,
        }
    }

    /// Checks that the program exists and may be executed (found in `PATH`
    /// when it names no folder), so a typo is reported when serve starts
    /// rather than by failing jobs.
    pub fn check(&self) -> Result<PathBuf, String> {
        ExternalCommand::check_program(&self.config)
    }

    /// [`ExternalCommand::check`] for a configuration alone.
    pub fn check_program(config: &ExternalConfig) -> Result<PathBuf, String> {
        let program = config.command.first().map_or("", String::as_str);
        resolve_program(program, std::env::var_os("PATH").as_deref())
    }
}

/// Where `program` would be run from, or why it cannot be.
fn resolve_program(program: &str, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let executable = |p: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", p.display()));
        }
        if meta.permissions().mode() & 0o111 == 0
            || rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_err()
        {
            return Err(format!("{} is not executable", p.display()));
        }
        Ok(())
    };
    if program.is_empty() {
        return Err("the command names no program".to_owned());
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).map(|()| p);
    }
    let dirs = path.map(std::env::split_paths).into_iter().flatten();
    let mut why = None;
    for dir in dirs {
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if candidate.exists() => why = Some(e),
            Err(_) => {}
        }
    }
    Err(why.unwrap_or_else(|| {
        format!(
            "program {program:?} was not found in PATH ({})",
            path.map_or_else(String::new, |p| p.to_string_lossy().into_owned())
        )
    }))
}

#[derive(Clone, Copy)]
enum Ended {
    Exited,
    TimedOut,
    Stopped,
}

/// For each source of the bundle: its index, uri, sha256, media type and
/// the path of its stored bytes (`null` when the bundle carries none), so a
/// handler can read `path` and `content` sources without knowing the
/// object store's layout. An object kept in the database is copied into
/// `scratch` (a private folder removed when the command has ended).
fn stored_sources(
    home: &crate::home::Home,
    store: &mut crate::store::Store,
    bundle: &serde_json::Value,
    scratch: &Path,
) -> crate::Result<serde_json::Value> {
    let objects = home.object_store();
    let empty = Vec::new();
    let mut list = Vec::new();
    for (idx, s) in bundle["sources"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let sha = s["sha256"]
            .as_str()
            .and_then(crate::bundle::Sha256Hex::parse);
        let file = match &sha {
            Some(h) => match objects.open(store, h)? {
                Some(crate::objects::Body::File(_)) => Some(objects.path_of(h)),
                Some(crate::objects::Body::Memory(bytes)) => {
                    let copy = scratch.join(h.as_str());
                    if !copy.exists() {
                        use std::io::Write;
                        use std::os::unix::fs::OpenOptionsExt;
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&copy)
                            .and_then(|mut f| f.write_all(&bytes))
                            .io("copy an object to", &copy)?;
                    }
                    Some(copy)
                }
                None => None,
            },
            None => None,
        };
        list.push(serde_json::json!({
            "idx": idx,
            "uri": s["uri"],
            "sha256": s["sha256"],
            "media_type": s["media_type"],
            "file": file.map(|p| p.display().to_string()),
        }));
    }
    Ok(serde_json::Value::Array(list))
}

fn pid_of(id: u32) -> Option<rustix::process::Pid> {
    i32::try_from(id)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
}

/// Kills a process group. Only called while its leader is not yet reaped,
/// so the id cannot belong to anybody else.
fn kill_group(pgid: u32) {
    if let Some(pid) = pid_of(pgid) {
        // ESRCH (the group is already gone) is the common, fine case.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

impl Handler for ExternalCommand {
    fn handle(&self, ctx: &mut JobContext<'_>) -> Outcome {
        let job = ctx.job;
        let Some((program, args)) = self.config.command.split_first() else {
            return Outcome::Fail(format!("handler for {} has an empty command", job.job_type));
        };
        let bundle = match self
            .reads
            .with(|s| s.run_bundle_json(job.tenant_id, job.run_id))
        {
            Ok(j) => match serde_json::from_str::<serde_json::Value>(&j) {
                Ok(v) => v,
                // Never hand the command `"bundle": null`: the run's stored
                // bundle could not be read this time.
                Err(e) => {
                    return Outcome::Retry(format!(
                        "the stored bundle of run {} could not be read: {e}",
                        job.run_id
                    ));
                }
            },
            Err(crate::Error::RunNotFound { .. }) => {
                return Outcome::Fail(format!(
                    "run {} of tenant {} does not exist",
                    job.run_id, job.tenant_id
                ));
            }
            // The database could not be read now: that may pass.
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        // Objects kept in the database are copied here for the command to
        // read; the folder goes when this returns.
        let objects = self.home.object_store();
        let scratch = match objects.staging() {
            Ok(dir) => dir,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let sources = match self
            .reads
            .with(|s| stored_sources(&self.home, s, &bundle, scratch.path()))
        {
            Ok(list) => list,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let mut input = job.payload_json.clone();
        if let serde_json::Value::Object(map) = &mut input {
            map.insert("bundle".to_owned(), bundle);
            map.insert("sources".to_owned(), sources);
            map.insert(
                "home".to_owned(),
                serde_json::Value::String(self.home.root().display().to_string()),
            );
        }
        let input = input.to_string().into_bytes();

        let mut cmd = match &self.guard {
            Some(g) => g.command(std::process::id(), &self.config.command),
            None => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        };
        cmd.env_clear()
            .envs(
                PASS_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .env("BUNDLEQ_JOB_ID", job.id.to_string())
            .env("BUNDLEQ_ATTEMPT", job.attempts.to_string())
            .env("BUNDLEQ_RUN_ID", job.run_id.to_string())
            .env("BUNDLEQ_TENANT_ID", job.tenant_id.to_string())
            .env("BUNDLEQ_HOME", self.home.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(format!("failed to start {program}: {e}")),
        };
        let pgid = child.id();
        let Some(pid) = pid_of(pgid) else {
            return Outcome::Retry(format!("{program} got an impossible process id {pgid}"));
        };
        let mut io = ChildIo::new(
            pid,
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take(),
            input,
        );
        let deadline = Instant::now() + self.config.timeout;
        let ended = loop {
            if io.exited() {
                break Ended::Exited;
            }
            // The pool drops the sender when it stops waiting for us.
            if let Err(TryRecvError::Disconnected) = ctx.stop.try_recv() {
                break Ended::Stopped;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ended::TimedOut;
            }
            io.step(left.min(STOP_CHECK));
        };
        if !matches!(ended, Ended::Exited) {
            match &self.guard {
                // The guard kills the handler's group, then exits.
                Some(_) => {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                None => kill_group(pgid),
            }
            if !io.wait_exit(Some(Duration::from_secs(5))) {
                kill_group(pgid);
                io.wait_exit(None);
            }
        }
        // Whatever the command left running in its group goes too: its
        // leader is not reaped yet, so the group id is still its own. Then
        // what it wrote before exiting is read (bounded: something outside
        // the group may still hold a pipe), and only then is it reaped.
        kill_group(pgid);
        io.drain(Duration::from_secs(5));
        let status: std::io::Result<ExitStatus> = child.wait();
        let (out, tail) = io.tails();
        ctx.set_output(out);
        let with_tail = |head: String| {
            if tail.is_empty() {
                head
            } else {
                format!("{head}: {tail}")
            }
        };
        match ended {
            Ended::TimedOut => Outcome::Retry(with_tail(format!(
                "{program} timed out after {} and was killed",
                crate::timestamp::human_duration(self.config.timeout)
            ))),
            Ended::Stopped => {
                Outcome::Retry(with_tail(format!("{program} was stopped at shutdown")))
            }
            Ended::Exited => match status {
                Err(e) => Outcome::Retry(format!("failed to wait for {program}: {e}")),
                Ok(s) => match s.code() {
                    Some(0) => Outcome::Succeeded,
                    Some(EXIT_PERMANENT) => Outcome::Fail(with_tail(format!(
                        "{program} exited with {EXIT_PERMANENT} (permanent failure)"
                    ))),
                    Some(code) => {
                        Outcome::Retry(with_tail(format!("{program} exited with {code}")))
                    }
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        let sig = s.signal().unwrap_or(0);
                        Outcome::Retry(with_tail(format!("{program} was killed by signal {sig}")))
                    }
                },
            },
        }
    }
}

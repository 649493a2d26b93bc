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

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, select};

use super::guard::GuardProgram;
use super::{Handler, JobContext, ReadConnections};
pub use crate::config::ExternalConfig;
use crate::state::Outcome;

/// Exit code by which a command says the job can never succeed.
pub const EXIT_PERMANENT: i32 = 65;
/// How much of stderr (for `last_error`) and of stdout (kept with the
/// attempt) is kept.
const TAIL_BYTES: usize = 4096;
/// Variables passed through from bundleq's environment; nothing else is.
const PASS_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// Runs a configured command for each job.
#[derive(Debug)]
pub struct ExternalCommand {
    config: ExternalConfig,
    reads: ReadConnections,
    guard: Option<GuardProgram>,
    home: crate::home::Home,
}

impl ExternalCommand {
    /// A handler running `config.command`, under `guard` when given.
    pub fn new(
        config: ExternalConfig,
        reads: ReadConnections,
        guard: Option<GuardProgram>,
    ) -> ExternalCommand {
        let home = reads.home().clone();
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
        let program = self.config.command.first().map_or("", String::as_str);
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
/// object store's layout.
fn stored_sources(home: &crate::home::Home, bundle: &serde_json::Value) -> serde_json::Value {
    let objects = crate::objects::Objects::new(home.objects());
    let list = bundle["sources"]
        .as_array()
        .map_or_else(Vec::new, |sources| {
            sources
                .iter()
                .enumerate()
                .map(|(idx, s)| {
                    let sha = s["sha256"]
                        .as_str()
                        .and_then(crate::bundle::Sha256Hex::parse);
                    let file = sha
                        .map(|h| objects.path_of(&h))
                        .filter(|p| p.is_file())
                        .map(|p| p.display().to_string());
                    serde_json::json!({
                        "idx": idx,
                        "uri": s["uri"],
                        "sha256": s["sha256"],
                        "media_type": s["media_type"],
                        "file": file,
                    })
                })
                .collect()
        });
    serde_json::Value::Array(list)
}

/// Reads a pipe to its end on a thread of its own, keeping the last
/// [`TAIL_BYTES`]; the tail arrives on the returned channel.
fn read_tail(mut pipe: impl Read + Send + 'static) -> crossbeam_channel::Receiver<String> {
    let (tx, rx) = bounded::<String>(1);
    thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * TAIL_BYTES {
                tail.drain(..tail.len() - TAIL_BYTES);
            }
        }
        let start = tail.len().saturating_sub(TAIL_BYTES);
        let _ = tx.send(String::from_utf8_lossy(&tail[start..]).trim().to_owned());
    });
    rx
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

/// Blocks until the child exits, without reaping it.
fn wait_exited(pid: u32) {
    let Some(pid) = pid_of(pid) else { return };
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
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
            Ok(j) => {
                serde_json::from_str::<serde_json::Value>(&j).unwrap_or(serde_json::Value::Null)
            }
            Err(crate::Error::RunNotFound { .. }) => {
                return Outcome::Fail(format!(
                    "run {} of tenant {} does not exist",
                    job.run_id, job.tenant_id
                ));
            }
            // The database could not be read now: that may pass.
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let sources = stored_sources(&self.home, &bundle);
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

        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input must not block us.
            thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let tail_rx = child.stderr.take().map(read_tail);
        let out_rx = child.stdout.take().map(read_tail);
        // Told when the child has exited; it is reaped only below, after
        // its group was killed.
        let (exit_tx, exit_rx) = bounded::<()>(1);
        thread::spawn(move || {
            wait_exited(pgid);
            let _ = exit_tx.send(());
        });

        let ended = select! {
            recv(exit_rx) -> _ => Ended::Exited,
            recv(ctx.stop) -> _ => Ended::Stopped,
            default(self.config.timeout) => Ended::TimedOut,
        };
        if !matches!(ended, Ended::Exited) {
            match (&self.guard, pid_of(pgid)) {
                // The guard kills the handler's group, then exits.
                (Some(_), Some(pid)) => {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                _ => kill_group(pgid),
            }
            if exit_rx.recv_timeout(Duration::from_secs(5)).is_err() {
                kill_group(pgid);
                let _ = exit_rx.recv();
            }
        }
        // Whatever the command left running in its group goes too.
        kill_group(pgid);
        let status: std::io::Result<ExitStatus> = child.wait();
        let tail_of = |rx: Option<crossbeam_channel::Receiver<String>>| {
            rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok())
                .unwrap_or_default()
        };
        let tail = tail_of(tail_rx);
        ctx.set_output(tail_of(out_rx));
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

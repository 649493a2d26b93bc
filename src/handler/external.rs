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

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, select};
use serde::Deserialize;

use super::{Handler, JobContext, ReadConnections};
use crate::state::Outcome;

/// Exit code by which a command says the job can never succeed.
pub const EXIT_PERMANENT: i32 = 65;
/// How much of stderr is kept for `last_error`.
const STDERR_TAIL_BYTES: usize = 4096;
/// Variables passed through from bundleq's environment; nothing else is.
const PASS_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// `[handlers.<job_type>]` in `bundleq.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Program and arguments; never run through a shell.
    pub command: Vec<String>,
    /// Killed (with its process group) after this long.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Runs a configured command for each job.
#[derive(Debug)]
pub struct ExternalCommand {
    config: ExternalConfig,
    reads: ReadConnections,
}

impl ExternalCommand {
    /// A handler running `config.command`.
    pub fn new(config: ExternalConfig, reads: ReadConnections) -> ExternalCommand {
        ExternalCommand { config, reads }
    }
}

#[derive(Clone, Copy)]
enum Ended {
    Exited,
    TimedOut,
    Stopped,
}

fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
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
        let bundle = self
            .reads
            .with(|s| s.run_bundle_json(job.tenant_id, job.run_id))
            .ok()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut input = job.payload_json.clone();
        if let serde_json::Value::Object(map) = &mut input {
            map.insert("bundle".to_owned(), bundle);
        }
        let input = input.to_string().into_bytes();

        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(
                PASS_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .env("BUNDLEQ_JOB_ID", job.id.to_string())
            .env("BUNDLEQ_ATTEMPT", job.attempts.to_string())
            .env("BUNDLEQ_RUN_ID", job.run_id.to_string())
            .env("BUNDLEQ_TENANT_ID", job.tenant_id.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
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
        let (tail_tx, tail_rx) = bounded::<String>(1);
        if let Some(mut stderr) = child.stderr.take() {
            thread::spawn(move || {
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL_BYTES {
                        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                    }
                }
                let start = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                let _ = tail_tx.send(String::from_utf8_lossy(&tail[start..]).trim().to_owned());
            });
        }
        let (status_tx, status_rx) = bounded(1);
        thread::spawn(move || {
            let _ = status_tx.send(child.wait());
        });

        let lost = || Err(std::io::Error::other("lost track of the process"));
        let (ended, exited): (Ended, Option<std::io::Result<ExitStatus>>) = select! {
            recv(status_rx) -> s => (Ended::Exited, Some(s.unwrap_or_else(|_| lost()))),
            recv(ctx.stop) -> _ => (Ended::Stopped, None),
            default(self.config.timeout) => (Ended::TimedOut, None),
        };
        // Whatever the command left running in its group goes too.
        kill_group(pgid);
        let status = exited.unwrap_or_else(|| status_rx.recv().unwrap_or_else(|_| lost()));
        let tail = tail_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
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

//! The handler guard: a small process between `serve` and an external
//! handler that makes the handler die with its serve, even when serve is
//! killed with `SIGKILL` (which no code of serve's can catch).
//!
//! serve starts the guard (the bundleq binary itself, with a hidden first
//! argument) in a new process group; the guard asks the kernel for `SIGTERM`
//! when its parent dies (`PR_SET_PDEATHSIG`), checks that the parent is
//! still the serve that started it, starts the handler in a process group
//! of its own, and waits. On `SIGTERM`, `SIGINT` or `SIGHUP` (serve's death,
//! serve's timeout or shutdown, a closed terminal) it kills the handler's
//! whole group with `SIGKILL`; when the handler exits it kills whatever the
//! handler left in its group, *before* reaping the handler, so the group id
//! cannot have been reused by then. It then ends the way the handler ended
//! (the same exit code, or the same signal), so serve sees the handler's
//! status unchanged.
//!
//! The guard inherits serve's presence lock (see [`crate::presence`]) and
//! so does the handler: a serve is proved gone only once its guards and
//! their handlers are gone too.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// The hidden first argument that makes the bundleq binary a guard.
pub const GUARD_ARG: &str = "__handler-guard";

/// Exit code of a guard whose serve died before the handler could start.
pub const EXIT_ORPHANED: i32 = 125;
/// Exit code of a guard that could not start its handler.
pub const EXIT_CANNOT_START: i32 = 127;

/// How serve starts a guard: a program and the arguments before the
/// guard's own (`<parent pid> -- <command…>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardProgram {
    /// The program (normally the running bundleq binary).
    pub program: PathBuf,
    /// Leading arguments (normally [`GUARD_ARG`]).
    pub args: Vec<OsString>,
}

impl GuardProgram {
    /// The running executable in guard mode. `/proc/self/exe` names the
    /// running binary even if its file was replaced by an upgrade.
    pub fn this_binary() -> GuardProgram {
        let proc_exe = PathBuf::from("/proc/self/exe");
        let program = if proc_exe.exists() {
            proc_exe
        } else {
            std::env::current_exe().unwrap_or(proc_exe)
        };
        GuardProgram {
            program,
            args: vec![GUARD_ARG.into()],
        }
    }

    /// The command that runs `argv` under this guard for a parent `pid`.
    pub fn command(&self, parent: u32, argv: &[String]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .arg(parent.to_string())
            .arg("--")
            .args(argv);
        cmd
    }
}

/// How a guard ends: the binary exits with the code, or raises the signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardExit {
    /// Exit with this code.
    pub code: i32,
    /// Or end by this signal (takes precedence).
    pub signal: Option<i32>,
    /// A line for the guard's stderr (which is the handler's), if any.
    pub message: Option<String>,
}

impl GuardExit {
    fn code(code: i32, message: impl Into<Option<String>>) -> GuardExit {
        GuardExit {
            code,
            signal: None,
            message: message.into(),
        }
    }
}

fn kill_group(pgid: Pid) {
    // ESRCH (nothing left in the group) is the normal case.
    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
}

/// Runs a guard: `args` is `<parent pid> -- <program> [args…]`.
pub fn run_guard(args: &[OsString]) -> GuardExit {
    let (Some(parent), Some("--")) = (
        args.first()
            .and_then(|a| a.to_str())
            .and_then(|a| a.parse::<i32>().ok())
            .and_then(Pid::from_raw),
        args.get(1).and_then(|a| a.to_str()),
    ) else {
        return GuardExit::code(
            2,
            "usage: bundleq __handler-guard <parent-pid> -- <program> [args...]".to_owned(),
        );
    };
    let Some((program, rest)) = args[2..].split_first() else {
        return GuardExit::code(2, "no program given".to_owned());
    };
    // Told when serve dies; then check it has not died already.
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::TERM)) {
        return GuardExit::code(EXIT_CANNOT_START, format!("cannot watch the parent: {e}"));
    }
    if rustix::process::getppid() != Some(parent) {
        return GuardExit::code(
            EXIT_ORPHANED,
            "serve exited before the handler started".to_owned(),
        );
    }
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            return GuardExit::code(EXIT_CANNOT_START, format!("cannot handle signals: {e}"));
        }
    };
    let mut child = match Command::new(program).args(rest).process_group(0).spawn() {
        Ok(c) => c,
        Err(e) => {
            return GuardExit::code(
                EXIT_CANNOT_START,
                format!("failed to start {}: {e}", program.to_string_lossy()),
            );
        }
    };
    let Some(pgid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return GuardExit::code(EXIT_CANNOT_START, "the handler has no pid".to_owned());
    };
    // Set (under the lock) once the handler is reaped: its group id must
    // not be signalled after that.
    let reaped = Arc::new(Mutex::new(false));
    {
        let reaped = Arc::clone(&reaped);
        let mut signals = signals;
        std::thread::spawn(move || {
            for _ in signals.forever() {
                let done = reaped.lock().unwrap_or_else(|e| e.into_inner());
                if !*done {
                    kill_group(pgid);
                }
            }
        });
    }
    // Wait for the handler to end without reaping it, so that its group id
    // stays ours while we kill what it left behind.
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pgid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    let status = {
        let mut done = reaped.lock().unwrap_or_else(|e| e.into_inner());
        kill_group(pgid);
        *done = true;
        child.wait()
    };
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => GuardExit::code(code, None),
            (None, Some(sig)) => GuardExit {
                code: 128 + sig,
                signal: Some(sig),
                message: None,
            },
            (None, None) => GuardExit::code(EXIT_CANNOT_START, "unknown exit status".to_owned()),
        },
        Err(e) => GuardExit::code(
            EXIT_CANNOT_START,
            format!("failed to wait for the handler: {e}"),
        ),
    }
}

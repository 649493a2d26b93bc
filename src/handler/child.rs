//! A running external command's pipes and exit, served on the handler's
//! own thread with `poll(2)`: its input is written as it reads it, the
//! tails of its stdout and stderr are kept, and its exit is seen (through a
//! pidfd, or `waitid(WNOWAIT)`) without reaping it, so its process-group id
//! stays its own until the group has been killed. No thread is started, so
//! none is left behind; a descendant that keeps a pipe open after the
//! command exited is not waited for longer than the drain limit.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, WaitIdOptions};

/// The most of each output stream that is kept (its end).
pub(super) const TAIL_BYTES: usize = 4096;

/// The last bytes of a stream.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * TAIL_BYTES {
            self.0.drain(..self.0.len() - TAIL_BYTES);
        }
    }

    fn text(&self) -> String {
        let start = self.0.len().saturating_sub(TAIL_BYTES);
        String::from_utf8_lossy(&self.0[start..]).trim().to_owned()
    }
}

/// The command's side of the conversation.
#[derive(Debug)]
pub(super) struct ChildIo {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    stdin: Option<ChildStdin>,
    input: Vec<u8>,
    written: usize,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: Tail,
    err: Tail,
    exited: bool,
}

fn nonblocking(fd: impl AsFd) {
    // Without it a full pipe would block this thread; failing to set it
    // leaves the blocking behaviour of before, which still completes.
    let _ = rustix::io::ioctl_fionbio(fd, true);
}

impl ChildIo {
    /// Serves the pipes of the child `pid`, writing `input` to its stdin.
    pub(super) fn new(
        pid: Pid,
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
        input: Vec<u8>,
    ) -> ChildIo {
        if let Some(s) = &stdin {
            nonblocking(s);
        }
        if let Some(s) = &stdout {
            nonblocking(s);
        }
        if let Some(s) = &stderr {
            nonblocking(s);
        }
        ChildIo {
            pid,
            pidfd: rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok(),
            stdin,
            input,
            written: 0,
            stdout,
            stderr,
            out: Tail::default(),
            err: Tail::default(),
            exited: false,
        }
    }

    /// True once the child has exited (it is not reaped).
    pub(super) fn exited(&mut self) -> bool {
        if !self.exited {
            self.exited = matches!(
                rustix::process::waitid(
                    rustix::process::WaitId::Pid(self.pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
                ),
                Ok(Some(_)) | Err(_)
            );
        }
        self.exited
    }

    /// Moves whatever the pipes allow, waiting at most `limit` for something
    /// to happen (a pipe ready, or the child's exit).
    pub(super) fn step(&mut self, limit: Duration) {
        const IN: PollFlags = PollFlags::IN;
        let (mut r_in, mut r_out, mut r_err) = (false, false, false);
        {
            let mut fds: Vec<(u8, PollFd<'_>)> = Vec::with_capacity(4);
            if let Some(s) = &self.stdin {
                fds.push((0, PollFd::new(s, PollFlags::OUT)));
            }
            if let Some(s) = &self.stdout {
                fds.push((1, PollFd::new(s, IN)));
            }
            if let Some(s) = &self.stderr {
                fds.push((2, PollFd::new(s, IN)));
            }
            if let Some(p) = &self.pidfd
                && !self.exited
            {
                fds.push((3, PollFd::new(p, IN)));
            }
            let timeout =
                rustix::time::Timespec::try_from(limit).unwrap_or(rustix::time::Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
            let (tags, mut polled): (Vec<u8>, Vec<PollFd<'_>>) = fds.into_iter().unzip();
            if polled.is_empty() {
                std::thread::sleep(limit);
                return;
            }
            if rustix::event::poll(&mut polled, Some(&timeout)).is_err() {
                return; // EINTR: the caller steps again
            }
            for (tag, fd) in tags.iter().zip(&polled) {
                if fd.revents().is_empty() {
                    continue;
                }
                match tag {
                    0 => r_in = true,
                    1 => r_out = true,
                    2 => r_err = true,
                    _ => {}
                }
            }
        }
        if r_in {
            self.write_input();
        }
        if r_out {
            read_available(&mut self.stdout, &mut self.out);
        }
        if r_err {
            read_available(&mut self.stderr, &mut self.err);
        }
    }

    fn write_input(&mut self) {
        let Some(stdin) = &mut self.stdin else { return };
        while self.written < self.input.len() {
            match stdin.write(&self.input[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EPIPE: the command does not read its input. Fine.
                Err(_) => break,
            }
        }
        // All written (or refused): closing tells the command it is all.
        self.stdin = None;
    }

    /// Steps until the child exits or `limit` passes; true if it exited.
    pub(super) fn wait_exit(&mut self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|l| Instant::now() + l);
        while !self.exited() {
            let left = deadline.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if deadline.is_some() && left.is_zero() {
                return false;
            }
            self.step(left.min(Duration::from_millis(100)));
        }
        true
    }

    /// After the exit: reads what is left in the pipes, until both end or
    /// `limit` passes (a descendant may hold them open), then closes them.
    pub(super) fn drain(&mut self, limit: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + limit;
        while self.stdout.is_some() || self.stderr.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.step(left);
        }
        self.stdout = None;
        self.stderr = None;
    }

    /// The tails of stdout and stderr.
    pub(super) fn tails(&self) -> (String, String) {
        (self.out.text(), self.err.text())
    }
}

/// Reads a non-blocking pipe until it would block; drops it at its end.
fn read_available<R: Read>(pipe: &mut Option<R>, tail: &mut Tail) {
    let Some(p) = pipe else { return };
    let mut buf = [0u8; 8192];
    loop {
        match p.read(&mut buf) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => tail.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                *pipe = None;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_end_of_a_long_stream() {
        let mut t = Tail::default();
        for i in 0..10_000u32 {
            t.push(format!("{i}\n").as_bytes());
        }
        let text = t.text();
        assert!(text.ends_with("9999"), "{text}");
        assert!(text.len() <= TAIL_BYTES);
        assert!(t.0.len() <= 2 * TAIL_BYTES);
    }
}

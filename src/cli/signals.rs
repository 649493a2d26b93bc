//! SIGINT, SIGTERM and SIGHUP for `serve` (binary only): the first signal
//! asks the pool to shut down gracefully (a closed terminal or ssh session,
//! SIGHUP, is no different from SIGTERM). Signals arriving within a second
//! of the first are the same request (GNU `timeout` sends two; a shell may
//! pass one to the whole group); one that comes later exits at once: the
//! handlers die with the process (see `handler::guard`) and its jobs are
//! rescued at once by the next serve, which can prove this one gone.

use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use bundleq::worker::PoolControl;
use bundleq::{Error, Result};

/// Signals closer together than this are one request.
const SAME_REQUEST: Duration = Duration::from_secs(1);

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "SIGTERM",
    }
}

/// Starts a thread that turns signals into a shutdown of `control`'s pool.
pub fn forward_to(control: PoolControl) -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| Error::Io {
        action: "install signal handlers",
        path: "SIGINT/SIGTERM/SIGHUP".into(),
        source,
    })?;
    std::thread::Builder::new()
        .name("bundleq-signals".to_owned())
        .spawn(move || {
            let mut first: Option<Instant> = None;
            for signal in signals.forever() {
                let name = name(signal);
                match first {
                    None => {
                        first = Some(Instant::now());
                        log::info!(
                            "Received {name}: finishing running jobs (send it again to exit at once)"
                        );
                        control.shutdown();
                    }
                    Some(at) if at.elapsed() < SAME_REQUEST => {
                        log::debug!("Received {name} again within a second: same request");
                    }
                    Some(_) => {
                        log::warn!(
                            "Second {name}: exiting now; handlers are killed and the next serve takes over their jobs"
                        );
                        std::process::exit(130);
                    }
                }
            }
        })
        .map_err(|source| Error::Io {
            action: "start the signal thread",
            path: "SIGINT/SIGTERM/SIGHUP".into(),
            source,
        })?;
    Ok(())
}

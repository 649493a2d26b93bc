//! SIGINT/SIGTERM for `serve` (binary only): the first signal asks the pool
//! to shut down gracefully; a second one exits at once (running jobs are
//! then rescued after the lock timeout).

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use bundleq::worker::PoolControl;
use bundleq::{Error, Result};

/// Starts a thread that turns signals into a shutdown of `control`'s pool.
pub fn forward_to(control: PoolControl) -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|source| Error::Io {
        action: "install signal handlers",
        path: "SIGINT/SIGTERM".into(),
        source,
    })?;
    std::thread::Builder::new()
        .name("bundleq-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                if control.is_shutting_down() {
                    log::warn!("Second {name}: exiting now; running jobs will be rescued after the lock timeout");
                    std::process::exit(130);
                }
                log::info!("Received {name}: finishing running jobs (send it again to exit at once)");
                control.shutdown();
            }
        })
        .map_err(|source| Error::Io {
            action: "start the signal thread",
            path: "SIGINT/SIGTERM".into(),
            source,
        })?;
    Ok(())
}

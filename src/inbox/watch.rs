//! Watching an inbox: OS notifications are hints that a scan is due (and
//! which entries were renamed in, hence complete); rescans on a timer are
//! the safety net; the scan is the truth.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select, unbounded};

use super::{Inbox, ScanSummary};
use crate::error::Result;
use crate::store::Store;
use crate::timestamp::Clock;

impl Inbox<'_> {
    /// Watches the inbox until `quit` disconnects: a scan at start, after
    /// each batch of OS notifications, when a waiting entry should have
    /// settled or is due again, and every rescan interval. `on_scan` gets
    /// each scan's summary (serve wakes its pool when anything was
    /// accepted). Returns an error only when it is fatal (the database is
    /// gone or damaged). Each scan's `now` is read from `clock`.
    pub fn watch(
        &mut self,
        store: &mut Store,
        quit: &Receiver<()>,
        on_scan: &dyn Fn(&ScanSummary),
        clock: &dyn Clock,
    ) -> Result<()> {
        let (tx, events) = unbounded::<notify::Result<notify::Event>>();
        let every = crate::timestamp::human_duration(self.config.rescan_interval);
        let _watcher = if self.config.watch {
            let watcher = notify::recommended_watcher(tx).and_then(|mut w| {
                notify::Watcher::watch(&mut w, &self.dir, notify::RecursiveMode::Recursive)
                    .map(|()| w)
            });
            match watcher {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!(
                        "Cannot watch {} for changes ({e}); scanning it every {every} instead",
                        self.dir.display(),
                    );
                    None
                }
            }
        } else {
            log::info!(
                "Inbox notifications are off; scanning {} every {every}",
                self.dir.display()
            );
            None
        };
        let mut renamed_in: HashSet<PathBuf> = HashSet::new();
        let mut next_scan = Instant::now();
        let mut errors_logged: Option<String> = None;
        loop {
            let wait = next_scan.saturating_duration_since(Instant::now());
            let mut hinted = false;
            select! {
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        hinted |= note_event(ev, &mut renamed_in);
                    }
                }
                recv(quit) -> _ => return Ok(()),
                default(wait) => {}
            }
            for ev in events.try_iter() {
                hinted |= note_event(ev, &mut renamed_in);
            }
            if !hinted && Instant::now() < next_scan {
                continue;
            }
            let mut rescan_at = Instant::now() + self.config.rescan_interval;
            match self.scan(store, &renamed_in, clock.now()) {
                Ok(summary) => {
                    errors_logged = None;
                    on_scan(&summary);
                    if let Some(d) = summary.next_check {
                        rescan_at = rescan_at.min(Instant::now() + d);
                    }
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    let text = e.to_string();
                    if errors_logged.as_deref() != Some(&text) {
                        log::error!("Inbox scan failed: {text}; retrying");
                        errors_logged = Some(text);
                    }
                    rescan_at = rescan_at.min(Instant::now() + Duration::from_secs(1));
                }
            }
            renamed_in.retain(|p| p.exists());
            next_scan = rescan_at;
        }
    }
}

/// Folds one notification into the scanner's hints; true when it calls
/// for a scan. Reads (including the scan's own listing) do not.
fn note_event(ev: notify::Result<notify::Event>, renamed_in: &mut HashSet<PathBuf>) -> bool {
    use notify::event::{EventKind, ModifyKind, RenameMode};
    match ev {
        Ok(ev) => {
            if ev.need_rescan() {
                log::warn!("The OS dropped inbox notifications; rescanning");
                return true;
            }
            match ev.kind {
                EventKind::Access(_) => false,
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    renamed_in.extend(ev.paths.iter().cloned());
                    true
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                    renamed_in.extend(ev.paths.get(1).cloned());
                    true
                }
                _ => true,
            }
        }
        Err(e) => {
            log::warn!("Inbox watcher error: {e}; rescanning");
            true
        }
    }
}

//! The overview's figures, cached: `status` counts every job of the
//! tenant and the chart reads every finished job of the last hour, which
//! takes long on a home of millions of jobs. The overview answers from the
//! last snapshot and, when that is older than its refresh age, starts a
//! new one on a thread of its own; only the first request waits.
//!
//! The refresh age is at least [`MIN_AGE`] and at least ten times what the
//! last snapshot took to read, so the dashboard never spends more than a
//! tenth of one core counting, however large the home.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bundleq::Timestamp;
use bundleq::store::MinuteCount;

use super::App;
use crate::cli::show::{StatusView, status_view};

/// A snapshot is never refreshed sooner than this.
pub const MIN_AGE: Duration = Duration::from_secs(2);
/// The chart's span.
pub const CHART_SPAN: Duration = Duration::from_secs(3600);

/// The overview's figures as of one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub status: StatusView,
    pub throughput: Vec<MinuteCount>,
    pub at: Timestamp,
    pub took: Duration,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Option<Arc<Snapshot>>,
    taken: Option<Instant>,
    refreshing: bool,
    /// Something changed through the dashboard: refresh at the next look.
    dirty: bool,
}

/// The cache of one server.
#[derive(Debug, Default)]
pub struct Cache {
    state: Mutex<State>,
    done: Condvar,
}

fn read(app: &App) -> bundleq::Result<Snapshot> {
    let start = Instant::now();
    let now = Timestamp::now();
    let since = Timestamp::from_system(std::time::SystemTime::now() - CHART_SPAN);
    let (status, throughput) = app.with_store(|store| {
        Ok((
            status_view(&app.home, store, app.tenant, now)?,
            store.throughput(app.tenant, since)?,
        ))
    })?;
    Ok(Snapshot {
        status,
        throughput,
        at: now,
        took: start.elapsed(),
    })
}

/// The overview's figures: the cached snapshot (refreshed in the
/// background when old), or the first one read now.
pub fn get(app: &Arc<App>) -> bundleq::Result<Arc<Snapshot>> {
    let cache = &app.overview;
    let mut state = cache.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(snapshot) = state.snapshot.clone() {
            let age = state.taken.map_or(Duration::MAX, |t| t.elapsed());
            let stale = state.dirty || age >= MIN_AGE.max(snapshot.took * 10);
            if stale && !state.refreshing {
                state.dirty = false;
                start_refresh(app, &mut state);
            }
            return Ok(snapshot);
        }
        if state.refreshing {
            state = cache.done.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        state.refreshing = true;
        drop(state);
        let read = read(app);
        let mut again = cache.state.lock().unwrap_or_else(|p| p.into_inner());
        again.refreshing = false;
        cache.done.notify_all();
        let snapshot = Arc::new(read?);
        again.snapshot = Some(Arc::clone(&snapshot));
        again.taken = Some(Instant::now());
        return Ok(snapshot);
    }
}

fn refresh(app: &Arc<App>) {
    let read = read(app);
    let cache = &app.overview;
    let mut state = cache.state.lock().unwrap_or_else(|p| p.into_inner());
    state.refreshing = false;
    match read {
        Ok(s) => {
            state.snapshot = Some(Arc::new(s));
            state.taken = Some(Instant::now());
        }
        Err(e) => log::warn!("http: the overview could not be read: {e}"),
    }
    cache.done.notify_all();
}

/// Starts reading the first snapshot in the background (when the server
/// starts), so the first look seldom waits for it.
pub fn warm(app: &Arc<App>) {
    let mut state = app.overview.state.lock().unwrap_or_else(|p| p.into_inner());
    if !state.refreshing && state.snapshot.is_none() {
        start_refresh(app, &mut state);
    }
}

/// Reads a new snapshot on a thread of its own (`state` is the cache's,
/// locked by the caller).
fn start_refresh(app: &Arc<App>, state: &mut State) {
    state.refreshing = true;
    let app = Arc::clone(app);
    let spawned = std::thread::Builder::new()
        .name("bundleq-http-overview".to_owned())
        .spawn(move || refresh(&app));
    if spawned.is_err() {
        state.refreshing = false;
    }
}

/// Marks the snapshot out of date (after a change made here).
pub fn invalidate(app: &App) {
    let mut state = app.overview.state.lock().unwrap_or_else(|p| p.into_inner());
    state.dirty = true;
}

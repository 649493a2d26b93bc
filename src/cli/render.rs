//! How results are shown to people: relative or absolute times, short or
//! full ids, tables fitted to the terminal. One [`View`] per run, built
//! from the global flags.

use std::collections::HashMap;

use uuid::Uuid;

use bundleq::store::IdKind;
use bundleq::{Result, Store, Timestamp};

use super::{Global, output};

/// The global display choices of one run.
#[derive(Debug)]
pub struct View {
    /// The time relative times are counted from.
    pub now: Timestamp,
    /// `--utc`: absolute times.
    pub utc: bool,
    /// `--wide`: every column, nothing cut.
    pub wide: bool,
    /// `-v`: more detail.
    pub verbose: bool,
    /// The width tables must fit (when not `--wide`).
    pub width: usize,
}

impl View {
    pub fn new(global: &Global) -> View {
        View {
            now: Timestamp::now(),
            utc: global.utc,
            wide: global.wide,
            verbose: global.verbose > 0,
            width: output::terminal_width(),
        }
    }

    /// The width to fit, or none with `--wide` or `--utc` (absolute times
    /// are never cut).
    pub fn fit(&self) -> Option<usize> {
        (!self.wide && !self.utc).then_some(self.width)
    }

    /// A time as "3m ago" / "in 25s", or absolute with `--utc`/`--wide`.
    pub fn time(&self, t: Timestamp) -> String {
        if self.utc || self.wide {
            t.to_string()
        } else {
            bundleq::timestamp::relative(t, self.now)
        }
    }

    /// An optional time, `-` when absent.
    pub fn opt_time(&self, t: Option<Timestamp>) -> String {
        t.map_or_else(|| "-".to_owned(), |t| self.time(t))
    }
}

/// Ids shown short (full with `--wide`).
#[derive(Debug)]
pub struct Ids(HashMap<Uuid, String>);

impl Ids {
    /// The short forms of `ids` of this kind.
    pub fn of(
        store: &mut Store,
        view: &View,
        kind: IdKind,
        tenant: Uuid,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> Result<Ids> {
        let ids: Vec<Uuid> = ids.into_iter().collect();
        if view.wide {
            return Ok(Ids(ids.iter().map(|i| (*i, i.to_string())).collect()));
        }
        Ok(Ids(store.short_ids(kind, tenant, &ids)?))
    }

    /// Every id shown in full.
    pub fn full() -> Ids {
        Ids(HashMap::new())
    }

    /// How to show `id`.
    pub fn show(&self, id: Uuid) -> String {
        self.0.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }
}

/// "… and 12 more (--limit to see them)" under a list cut at its limit.
pub fn more_line(shown: usize, total: u64) {
    let more = total.saturating_sub(shown as u64);
    if more > 0 {
        output::line(format!("… and {more} more (raise --limit to see them)"));
    }
}

/// A duration as people read it: `850ms`, `4.2s`, `3m12s`, `2h05m`.
pub fn took(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", d.as_secs_f64()),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

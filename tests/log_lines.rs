//! The state-change log lines keep the seed's wording. The store says
//! nothing itself: it returns what it committed, and the journal
//! (`worker::log_transitions`) writes the lines.

mod common;

use std::sync::Mutex;

use bundleq::Outcome;
use common::{job, secs, t0, temp_store};
use uuid::Uuid;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("bundleq") {
            LINES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn retry_and_permanent_failure_lines_match_the_seed() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let (_dir, mut store) = temp_store(secs(1800));
    store.keep_transitions(true);
    let tenant = Uuid::now_v7();
    let id = store.enqueue(&job(tenant), t0()).unwrap();
    let mut now = t0();
    for (n, delay) in [(1, 30), (2, 60), (3, 0)] {
        let c = store.claim(1, "w", now).unwrap().remove(0);
        let msg = format!("Simulated failure {n}");
        store.report(&c.token, &Outcome::Retry(msg), now).unwrap();
        now = now.plus(secs(delay));
    }
    // A zombie's late report is refused and says so.
    let id2 = store.enqueue(&job(tenant), t0()).unwrap();
    let zombie = store.claim(1, "zombie", t0()).unwrap().remove(0);
    let _owner = store
        .claim(1, "owner", t0().plus(secs(1801)))
        .unwrap()
        .remove(0);
    store
        .report(&zombie.token, &Outcome::Succeeded, t0().plus(secs(1802)))
        .unwrap();
    assert_eq!(
        *LINES.lock().unwrap(),
        Vec::<String>::new(),
        "the store logs nothing itself"
    );
    bundleq::worker::log_transitions(&store.take_transitions());
    let lines = LINES.lock().unwrap().clone();
    let stale = format!(
        "Job {id2}: ignored the report of worker zombie for attempt 1: that claim no longer holds the job"
    );
    assert!(lines.contains(&stale), "{lines:#?}");
    let at1 = t0().plus(secs(30));
    let at2 = t0().plus(secs(30 + 60));
    let want = [
        format!("Job {id} failed (attempt 1/3), will retry in 30s at {at1}: Simulated failure 1"),
        format!("Job {id} failed (attempt 2/3), will retry in 60s at {at2}: Simulated failure 2"),
        format!("Job {id} permanently failed after 3 attempts: Simulated failure 3"),
    ];
    for w in &want {
        assert!(lines.contains(w), "missing log line {w:?} in {lines:#?}");
    }
}

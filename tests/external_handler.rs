//! Threads and processes are joined, not left behind: the external command
//! handler starts no thread, kills a command's leftovers in its process
//! group, and never hands a command `"bundle": null`; the worker pool joins
//! its threads before `run_pool` returns. This file holds one test only, so
//! the thread count of the process is the code's under test.

mod common;

use std::fs;
use std::time::Duration;

use bundleq::handler::{ExternalCommand, ExternalConfig, Handler, JobContext};
use bundleq::store::{NewRun, Readers, RunInsert, RunJob};
use bundleq::{Home, Outcome, Timestamp};
use uuid::Uuid;

fn threads() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits until the process has `count` threads again: a thread that was
/// joined can still be listed in `/proc` for a moment (the kernel wakes the
/// joiner before it removes the task), but one left running never goes.
fn threads_back_to(count: usize, what: &str) {
    common::wait_until(what, || threads() == count);
    assert_eq!(threads(), count, "{what}");
}

/// Records a run whose stored bundle is `bundle_json` and claims its job.
fn claimed_job(home: &Home, bundle_json: &str) -> bundleq::store::Job {
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let run_id = Uuid::now_v7();
    let inserted = store
        .insert_runs(
            &[NewRun {
                tenant_id: tenant,
                id: run_id,
                title: "t".into(),
                bundle_sha256: format!("{}{}", run_id.simple(), Uuid::now_v7().simple()),
                bundle_json: bundle_json.into(),
                origin: "api",
                origin_name: None,
                inbox_claim: None,
                job: RunJob {
                    job_type: "ext".into(),
                    payload: serde_json::json!({}),
                    max_attempts: None,
                    not_before: None,
                },
                objects: Vec::new(),
                stored: Vec::new(),
            }],
            Timestamp::now(),
        )
        .unwrap();
    assert!(matches!(inserted[..], [RunInsert::Inserted { .. }]));
    store.claim(1, "w", Timestamp::now()).unwrap().remove(0).job
}

fn handler(home: &Home, script: &str) -> ExternalCommand {
    ExternalCommand::new(
        ExternalConfig {
            command: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_secs(60),
        },
        home.clone(),
        Readers::at(&home.location(), &home.config().store_options(), 1),
        None,
    )
}

#[test]
fn the_handler_leaves_no_thread_and_no_process_behind_and_never_sends_a_null_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (home, _) = Home::init(&dir.path().join("home")).unwrap();
    let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let pidfile = dir.path().join("left.pid");

    // A command that leaves a child in its group holding its stdout and
    // stderr open, and writes a large output it reads no input for.
    let job = claimed_job(&home, r#"{"bundle_version": 1}"#);
    let script = format!(
        "sleep 600 & echo $! > {}; head -c 200000 /dev/zero | tr '\\0' x; echo done",
        pidfile.display()
    );
    let h = handler(&home, &script);
    let before = threads();
    let mut ctx = JobContext::new(&job, &stop);
    assert_eq!(h.handle(&mut ctx), Outcome::Succeeded);
    threads_back_to(before, "every thread the handler started is gone");
    let output = ctx.take_output().unwrap();
    assert!(output.ends_with("xdone"), "the tail of stdout is kept");
    let left = fs::read_to_string(&pidfile).unwrap();
    let left = left.trim();
    common::wait_until("the left-behind child to be killed", || {
        fs::read_to_string(format!("/proc/{left}/stat")).map_or(true, |s| s.contains(") Z "))
    });

    // A stored bundle that cannot be read is a retry, not `"bundle": null`.
    let job = claimed_job(&home, r#"{"bundle_version": 1, "x": 1e400}"#);
    let marker = dir.path().join("ran");
    let h = handler(&home, &format!("touch {}", marker.display()));
    let mut ctx = JobContext::new(&job, &stop);
    match h.handle(&mut ctx) {
        Outcome::Retry(why) => assert!(why.contains("could not be read"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists(), "the command never ran");

    // A pool of four workers: every one of its threads is gone when
    // `run_pool` returns.
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    for _ in 0..8 {
        store
            .enqueue(&common::job(tenant), Timestamp::now())
            .unwrap();
    }
    let mut handlers = bundleq::handler::Handlers::new();
    handlers.register("process_bundle", |_: &mut JobContext<'_>| {
        std::thread::sleep(Duration::from_millis(20));
        Outcome::Succeeded
    });
    let before = threads();
    let stats = bundleq::worker::run_pool(
        store.reopen().unwrap(),
        handlers,
        &bundleq::worker::PoolConfig {
            once: true,
            poll_interval: Duration::from_millis(50),
            ..bundleq::worker::PoolConfig::from_config(&home.config().workers)
        },
        std::sync::Arc::new(bundleq::SystemClock),
        &bundleq::worker::PoolControl::new(),
    )
    .unwrap();
    assert_eq!(stats.succeeded, 8);
    threads_back_to(before, "every worker thread was joined");
}

//! Pipelines and queue controls on the real binary: every run is verified
//! and indexed by `process_bundle` before its own step; `after` chains
//! steps; a failed step stops the steps after it and `job retry` resumes
//! them; `pause`/`resume` hold a type across serve processes; a
//! `concurrency` cap holds across workers and processes; scheduled runs
//! wait for their time.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bundleq::accept::{self, AcceptOptions, Origin};
use bundleq::bundle::Follow;
use bundleq::{Home, JobStatus, Timestamp};
use common::{Backend, Bin, bundle_text, exits_within, wait_until, write_bundles};
use uuid::Uuid;

/// A bundle of `job_type` whose one inline source holds `word`.
fn bundle_with_word(dir: &Path, name: &str, job_type: &str, word: &str) -> PathBuf {
    let text = format!("Field notes on {word} at dawn.");
    let bundle = serde_json::json!({
        "bundle_version": 1,
        "run_id": Uuid::now_v7(),
        "job_type": job_type,
        "title": format!("Run {name}"),
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{
            "uri": "urn:notes:1",
            "sha256": bundleq::digest::Sha256Hex::of(text.as_bytes()).as_str(),
            "media_type": "text/plain",
            "content": text,
        }]
    });
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, bundle.to_string()).unwrap();
    path
}

/// `[handlers.X]` running `sh -c script` (with `$1` the bundleq binary and
/// `$2` the test's folder), plus the lines in `extra`.
fn handler(job_type: &str, script: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[handlers.{job_type}]\ncommand = [\"sh\", \"-c\", {script:?}, \"sh\", {:?}, {:?}]\n{extra}\n",
        common::exe().display().to_string(),
        dir.display().to_string()
    )
}

const FAST: &str = "[workers]\npoll_interval = \"50ms\"\n[inbox]\nsettle = \"50ms\"\n";

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The jobs of the home's default tenant, oldest first.
fn jobs(bin: &Bin) -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = bin
        .json(&["jobs", "--limit", "1000"])
        .as_array()
        .unwrap()
        .clone();
    all.sort_by(|a, b| {
        a["created_at"]
            .as_str()
            .unwrap()
            .cmp(b["created_at"].as_str().unwrap())
    });
    all
}

/// Each job as the values of `keys`, space-separated.
fn rows(jobs: &[serde_json::Value], keys: &[&str]) -> Vec<String> {
    jobs.iter()
        .map(|j| {
            keys.iter()
                .map(|k| match &j[*k] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `run show`'s pipeline: each step and its status.
fn pipeline(bin: &Bin, run: &str) -> Vec<String> {
    let shown = bin.json(&["run", "show", run]);
    rows(shown["pipeline"].as_array().unwrap(), &["step", "status"])
}

/// Where a second serve runs: the same home on SQLite (two processes of
/// one machine); on a database server, another home on the same database
/// (another host).
fn second_serve_home(backend: Backend, dir: &Path, first: &Bin, config: &str) -> Bin {
    match backend {
        Backend::Sqlite => Bin::new(&first.home),
        Backend::Postgres => backend.init_beside(dir, first, config),
    }
}

fn stop(serve: std::process::Child) {
    let (code, err) = Bin::terminate(serve);
    assert_eq!(code, Some(0), "{err}");
}

fn a_bundle_of_another_type_is_verified_and_indexed_then_run_once(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    // The step says what `search` finds when it runs: the run's text must
    // be indexed by then.
    let script = "hits=$(\"$1\" --home \"$BUNDLEQ_HOME\" --json search moraineword | grep -c '\"idx\"'); \
                  echo \"summarise $BUNDLEQ_RUN_ID attempt=$BUNDLEQ_ATTEMPT hits=$hits\" >> \"$2/ledger\"";
    let config = format!("{}{FAST}", handler("summarise", script, tmp.path(), ""));
    let (_d, bin) = backend.init_with(&config);
    let path = bundle_with_word(tmp.path(), "one", "summarise", "moraineword");
    bin.submit_all(&[path]);
    // Accepted as a process_bundle job alone: summarise is not reached yet.
    let queued = jobs(&bin);
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0]["job_type"], "process_bundle");

    let serve = bin.serve(&["--workers", "2"], false);
    wait_until("the summarise step", || lines(&ledger).len() == 1);
    wait_until("both steps succeeded", || {
        bin.jobs_with(JobStatus::Succeeded) == 2
    });
    stop(serve);

    let all = jobs(&bin);
    let run = all[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        lines(&ledger),
        [format!("summarise {run} attempt=1 hits=1")],
        "verified and indexed before it ran, exactly once"
    );
    assert_eq!(
        rows(&all, &["job_type", "status", "attempts"]),
        ["process_bundle succeeded 1", "summarise succeeded 1"]
    );
    assert_eq!(
        pipeline(&bin, &run),
        ["process_bundle succeeded", "summarise succeeded"]
    );
    let text = bin.ok(&["run", "show", &run]);
    assert!(
        text.contains("AFTER") && text.contains("summarise"),
        "{text}"
    );
}

fn a_three_step_chain_runs_in_order_through_a_step_that_fails_twice(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let log = |name: &str| format!("echo \"{name} $BUNDLEQ_ATTEMPT\" >> \"$2/ledger\"");
    // The middle step fails (retryably) on its first two attempts.
    let flaky = format!(
        "{}; if [ \"$BUNDLEQ_ATTEMPT\" -le 2 ]; then echo not yet >&2; exit 75; fi",
        log("check")
    );
    let config = format!(
        "{}{}{}{FAST}",
        handler("collect", &log("collect"), tmp.path(), ""),
        handler(
            "check",
            &flaky,
            tmp.path(),
            "after = \"collect\"\nbackoff_base = \"10ms\"\nbackoff_cap = \"20ms\"\nmax_attempts = 4"
        ),
        handler("publish", &log("publish"), tmp.path(), "after = \"check\"")
    );
    let (_d, bin) = backend.init_with(&config);
    let path = bundle_with_word(tmp.path(), "chain", "collect", "chainword");
    bin.submit_all(&[path]);
    let serve = bin.serve(&["--workers", "4"], false);
    wait_until("the last step", || lines(&ledger).len() == 5);
    wait_until("every step succeeded", || {
        bin.jobs_with(JobStatus::Succeeded) == 4
    });
    stop(serve);
    assert_eq!(
        lines(&ledger),
        ["collect 1", "check 1", "check 2", "check 3", "publish 1"]
    );
    // Each step's own rules: check may take 4 attempts.
    assert_eq!(
        rows(&jobs(&bin), &["job_type", "attempts", "max_attempts"]),
        [
            "process_bundle 1 3",
            "collect 1 3",
            "check 3 4",
            "publish 1 3"
        ]
    );
}

fn a_failed_step_stops_its_followers_until_it_is_retried(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    // Fails for good (exit 65) until the test creates `mended`.
    let first = "echo \"first $BUNDLEQ_ATTEMPT\" >> \"$2/ledger\"; \
                 if [ ! -e \"$2/mended\" ]; then echo broken input >&2; exit 65; fi";
    let second = "echo second >> \"$2/ledger\"";
    let config = format!(
        "{}{}{}{FAST}",
        handler("first", first, tmp.path(), ""),
        handler("second", second, tmp.path(), "after = \"first\""),
        handler("third", second, tmp.path(), "after = \"second\"")
    );
    let (_d, bin) = backend.init_with(&config);
    bin.submit_all(&[bundle_with_word(tmp.path(), "f", "first", "w")]);
    let out = bin.run(&["serve", "--once"]);
    assert_eq!(out.status.code(), Some(3), "some job failed");
    assert_eq!(lines(&ledger), ["first 1"]);
    let all = jobs(&bin);
    assert_eq!(all.len(), 2, "the followers have no job: {all:#?}");
    assert_eq!(all[1]["status"], "failed");
    let run = all[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        pipeline(&bin, &run),
        [
            "process_bundle succeeded",
            "first failed",
            "second stopped",
            "third stopped"
        ]
    );

    // Mended and retried: the chain goes on from there, each step once.
    fs::write(tmp.path().join("mended"), "").unwrap();
    let failed = all[1]["id"].as_str().unwrap().to_owned();
    bin.ok(&["job", "retry", &failed]);
    let out = bin.run(&["serve", "--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&ledger), ["first 1", "first 1", "second", "second"]);
    assert_eq!(bin.jobs_with(JobStatus::Succeeded), 4);
    assert_eq!(bin.jobs_total(), 4);
}

fn pause_holds_a_type_in_every_serve_and_resume_releases_it(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    // `hold` waits for the gate: two of them running at once prove that
    // both serves (one worker each, nothing claimed ahead) made claims.
    let hold = "echo start >> \"$2/holds\"; while [ ! -e \"$2/gate\" ]; do sleep 0.02; done";
    let work = "echo \"$BUNDLEQ_JOB_ID\" >> \"$2/worked\"";
    let config = format!(
        "{}{}[workers]\npoll_interval = \"50ms\"\ncount = 1\nprefetch = 0\n",
        handler("hold", hold, tmp.path(), ""),
        handler("work", work, tmp.path(), "")
    );
    let (_d, bin) = backend.init_with(&config);
    let paused = bin.json(&["pause", "work"]);
    assert_eq!(paused["paused"], "work");
    let status = bin.json(&["status"]);
    assert_eq!(status["paused"][0]["job_type"], "work", "{status:#}");
    assert!(bin.ok(&["status"]).contains("paused: work since"));

    bin.submit_all(&write_bundles(&tmp.path().join("w"), "w", "work", 6));
    let other = tempfile::tempdir().unwrap();
    let second = second_serve_home(backend, other.path(), &bin, &config);
    let a = bin.serve(&[], false);
    let b = second.serve(&[], false);
    wait_until("the work steps queued", || {
        jobs(&bin)
            .iter()
            .filter(|j| j["job_type"] == "work" && j["status"] == "queued")
            .count()
            == 6
    });
    // Claims made after the work steps were queued, in both serves.
    bin.submit_all(&write_bundles(&tmp.path().join("h"), "h", "hold", 2));
    wait_until("a hold step running in each serve", || {
        lines(&tmp.path().join("holds")).len() == 2
    });
    let all = jobs(&bin);
    let holders: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|j| j["job_type"] == "hold")
        .map(|j| j["locked_by"].as_str().unwrap())
        .collect();
    assert_eq!(holders.len(), 2, "one in each serve: {holders:?}");
    let work: Vec<&serde_json::Value> = all.iter().filter(|j| j["job_type"] == "work").collect();
    assert!(
        work.iter()
            .all(|j| j["status"] == "queued" && j["attempts"] == 0),
        "a paused type was claimed: {work:#?}"
    );
    assert!(lines(&tmp.path().join("worked")).is_empty());

    let resumed = bin.json(&["resume", "work"]);
    assert_eq!(resumed["resumed"][0]["job_type"], "work");
    fs::write(&gate, "").unwrap();
    wait_until("every job done", || {
        bin.jobs_with(JobStatus::Succeeded) == 16
    });
    assert_eq!(lines(&tmp.path().join("worked")).len(), 6);
    stop(a);
    stop(b);
    assert!(
        bin.json(&["status"])["paused"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn pause_all_stops_every_claim_and_resume_all_lifts_it(backend: Backend) {
    let (_d, bin) = backend.init_with(FAST);
    let tmp = tempfile::tempdir().unwrap();
    bin.ok(&["pause", "--all"]);
    assert!(bin.ok(&["pause", "--all"]).contains("paused already"));
    bin.submit_all(&write_bundles(tmp.path(), "p", "process_bundle", 3));
    let out = bin.run(&["serve", "--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(bin.jobs_with(JobStatus::Queued), 3, "nothing claimed");
    let text = bin.ok(&["resume", "process_bundle"]);
    assert!(text.contains("every type is paused"), "{text}");
    let lifted = bin.json(&["resume", "--all"]);
    assert_eq!(lifted["resumed"][0]["job_type"], serde_json::Value::Null);
    bin.ok(&["serve", "--once"]);
    assert_eq!(bin.jobs_with(JobStatus::Succeeded), 3);
    // Usage errors: a type or --all, not both, not neither.
    assert_eq!(bin.run(&["pause"]).status.code(), Some(2));
    assert_eq!(bin.run(&["pause", "x", "--all"]).status.code(), Some(2));
    let bad = bin.run(&["pause", "Bad Type"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a job type"));
}

fn a_concurrency_cap_holds_across_workers_and_serve_processes(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    // mkdir is atomic: a second copy running at once cannot take the lock
    // and says so in the ledger.
    let script = "if mkdir \"$2/lock\" 2>/dev/null; then echo ran >> \"$2/ledger\"; sleep 0.05; \
                  rmdir \"$2/lock\"; else echo OVERLAP >> \"$2/ledger\"; fi";
    let config = format!(
        "{}[workers]\npoll_interval = \"50ms\"\ncount = 4\n",
        handler("licensed", script, tmp.path(), "concurrency = 1")
    );
    let (_d, bin) = backend.init_with(&config);
    bin.submit_all(&write_bundles(&tmp.path().join("b"), "l", "licensed", 16));
    let other = tempfile::tempdir().unwrap();
    let second = second_serve_home(backend, other.path(), &bin, &config);
    let a = bin.serve(&[], false);
    let b = second.serve(&[], false);
    wait_until("every job done", || {
        bin.jobs_with(JobStatus::Succeeded) == 32
    });
    stop(a);
    stop(b);
    let ledger = lines(&tmp.path().join("ledger"));
    assert_eq!(ledger.len(), 16, "{ledger:?}");
    assert!(ledger.iter().all(|l| l == "ran"), "{ledger:?}");
}

fn submit_not_before_schedules_runs_and_job_retry_at_reschedules(backend: Backend) {
    let (_d, bin) = backend.init_with(FAST);
    let tmp = tempfile::tempdir().unwrap();
    bin.submit_all(&write_bundles(tmp.path(), "now", "process_bundle", 1));
    let later = write_bundles(&tmp.path().join("later"), "later", "process_bundle", 2);
    let mut args = vec!["submit", "--not-before", "2h"];
    let shown: Vec<String> = later.iter().map(|p| p.display().to_string()).collect();
    args.extend(shown.iter().map(String::as_str));
    bin.ok(&args);
    let s = bin.json(&["status"]);
    assert_eq!(
        (
            s["ready"].as_u64(),
            s["scheduled"].as_u64(),
            s["retrying"].as_u64()
        ),
        (Some(1), Some(2), Some(0)),
        "{s:#}"
    );
    assert!(bin.ok(&["status"]).contains("2 scheduled"));
    // serve --once works what is due and leaves the scheduled runs alone.
    let out = bin.run(&["serve", "--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(bin.jobs_with(JobStatus::Succeeded), 1);
    assert_eq!(bin.jobs_with(JobStatus::Queued), 2);
    let scheduled: Vec<serde_json::Value> = jobs(&bin)
        .into_iter()
        .filter(|j| j["status"] == "queued")
        .collect();
    for j in &scheduled {
        assert_eq!(j["attempts"], 0);
        let at = Timestamp::parse(j["retry_at"].as_str().unwrap()).unwrap();
        assert!(at > Timestamp::now().plus(Duration::from_secs(3600)), "{j}");
    }
    // A bad time is a usage error that says what to write.
    let bad = bin.run(&["submit", "--not-before", "tonight", &shown[0]]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    // job retry --at: a cancelled job comes back scheduled.
    let id = scheduled[0]["id"].as_str().unwrap();
    bin.ok(&["job", "cancel", id]);
    let j = bin.json(&["job", "retry", id, "--at", "2030-01-01T00:00:00Z"]);
    assert_eq!(
        (j["status"].as_str(), j["retry_at"].as_str()),
        (Some("queued"), Some("2030-01-01T00:00:00.000000Z"))
    );
}

#[test]
fn a_scheduled_run_is_not_claimed_before_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    let (home, _) = Home::init(&root).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let bundle = dir.path().join("b.json");
    fs::write(&bundle, bundle_text("process_bundle", 1)).unwrap();
    let t0 = common::t0();
    let at = t0.plus(Duration::from_secs(3600));
    let reports = accept::accept_inputs(
        &mut store,
        &home,
        &[accept::Input::path(&bundle)],
        &AcceptOptions {
            tenant,
            origin: Origin::Submit,
            follow: Follow::Link,
            now: t0,
            known_types: None,
            not_before: Some(at),
        },
    );
    assert!(
        matches!(
            reports[..],
            [Ok(accept::AcceptReport {
                verdict: accept::Verdict::Accepted { .. },
                ..
            })]
        ),
        "{reports:?}"
    );
    for early in [t0, at.minus(Duration::from_millis(1))] {
        assert!(store.claim(10, "w", early).unwrap().is_empty(), "{early}");
    }
    let claims = store.claim(10, "w", at).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].token.attempt, 1);
}

#[test]
fn pipelines_that_cannot_work_are_refused_when_the_config_is_read() {
    let cmd = "command = [\"true\"]";
    for (config, says) in [
        (
            format!("[handlers.a]\n{cmd}\nafter = \"b\"\n[handlers.b]\n{cmd}\nafter = \"a\"\n"),
            "loop",
        ),
        (format!("[handlers.a]\n{cmd}\nafter = \"a\"\n"), "loop"),
        (
            format!("[handlers.a]\n{cmd}\nafter = \"nope\"\n"),
            "no step \"nope\"",
        ),
        (
            format!("[handlers.a]\n{cmd}\nconcurrency = 0\n"),
            "concurrency",
        ),
        (
            "[handlers.process_bundle]\ncommand = [\"true\"]\n".to_owned(),
            "built in",
        ),
        (
            "[handlers.x]\nafter = \"process_bundle\"\n".to_owned(),
            "command",
        ),
        (
            (0..20)
                .map(|i| {
                    let after = if i == 0 {
                        "process_bundle".to_owned()
                    } else {
                        format!("s{}", i - 1)
                    };
                    format!("[handlers.s{i}]\n{cmd}\nafter = \"{after}\"\n")
                })
                .collect::<String>(),
            "at most 16",
        ),
    ] {
        let (_d, bin) = Bin::init_with(&config);
        let out = bin.run(&["status"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config}");
        assert!(err.contains(says), "{config}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

fn serve_once_stops_when_only_paused_work_is_left(backend: Backend) {
    let (_d, bin) = backend.init_with(FAST);
    let tmp = tempfile::tempdir().unwrap();
    bin.ok(&["pause", "process_bundle"]);
    bin.submit_all(&write_bundles(tmp.path(), "p", "process_bundle", 2));
    let mut serve = std::process::Command::new(common::exe())
        .args(["--home"])
        .arg(&bin.home)
        .args(["serve", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(
        exits_within(&mut serve, Duration::from_secs(60), "serve --once"),
        Some(0)
    );
    assert_eq!(bin.jobs_with(JobStatus::Queued), 2);
}

for_each_backend!(
    a_bundle_of_another_type_is_verified_and_indexed_then_run_once,
    a_three_step_chain_runs_in_order_through_a_step_that_fails_twice,
    a_failed_step_stops_its_followers_until_it_is_retried,
    pause_holds_a_type_in_every_serve_and_resume_releases_it,
    pause_all_stops_every_claim_and_resume_all_lifts_it,
    a_concurrency_cap_holds_across_workers_and_serve_processes,
    submit_not_before_schedules_runs_and_job_retry_at_reschedules,
    serve_once_stops_when_only_paused_work_is_left,
);

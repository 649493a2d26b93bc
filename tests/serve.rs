//! `bundleq serve` as a user runs it: the fixture bundles processed and
//! searchable, external command handlers (timeouts, exit codes, verbatim
//! input, allow-listed environment) and SIGTERM.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Bin, wait_until};

/// Writes a valid bundle with this job type and title; returns its path.
fn bundle(dir: &Path, name: &str, job_type: &str, title: &str) -> PathBuf {
    let p = dir.join(format!("{name}.json"));
    let b = serde_json::json!({
        "bundle_version": 1,
        "run_id": uuid::Uuid::now_v7(),
        "job_type": job_type,
        "title": title,
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{"uri": "https://example.org/x", "sha256": "a".repeat(64)}]
    });
    fs::write(&p, b.to_string()).unwrap();
    p
}

fn pid_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn serve_once_processes_every_fixture_and_search_finds_a_word_of_one_source() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid");
    let mut paths: Vec<String> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    paths.sort();
    let mut args = vec!["submit"];
    args.extend(paths.iter().map(String::as_str));
    bin.ok(&args);
    let out = bin.json(&["serve", "--once"]);
    assert_eq!(out["succeeded"], paths.len());
    let jobs = bin.json(&["jobs"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "succeeded"),
        "{jobs:#}"
    );

    // Every source of every fixture is recorded once: 1 + 3 + 1 + 2.
    assert_eq!(bin.store().count_sources(bin.tenant()).unwrap(), 7);
    // "zymurgy" occurs only in inline-content.json; "morteratsch" only in a
    // file of the directory bundle.
    for (word, run) in [
        ("zymurgy", "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a13"),
        ("morteratsch", "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a14"),
        (
            "photosynthesis canopies",
            "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a12",
        ),
    ] {
        let found = bin.json(&["search", word]);
        assert_eq!(found["total"], 1, "{word}: {found:#}");
        let hits = found["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "{word}: {hits:#?}");
        assert_eq!(hits[0]["run_id"], run);
        assert!(
            hits[0]["snippet"].as_str().unwrap().contains('['),
            "{hits:#?}"
        );
    }
    assert_eq!(
        bin.json(&[
            "search",
            "zymurgy",
            "--run",
            "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a12"
        ])["hits"],
        serde_json::json!([])
    );
    bin.ok(&["tenants", "create", "elsewhere"]);
    assert_eq!(
        bin.json(&["--tenant", "elsewhere", "search", "zymurgy"])["total"],
        0
    );
    // Text that would be FTS5 syntax is searched for as words.
    let out = bin.run(&["search", "\"unbalanced", "NEAR("]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_external_handler_past_its_timeout_is_killed_with_the_child_it_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let (_d, bin) = Bin::init_with(&format!(
        "[handlers.slow]\ncommand = [\"sh\", \"-c\", {script:?}]\ntimeout = \"1s\"\n"
    ));
    bin.ok(&[
        "submit",
        bundle(dir.path(), "slow", "slow", "slow one")
            .to_str()
            .unwrap(),
    ]);
    let started = Instant::now();
    let out = bin.run(&["--json", "serve", "--once"]);
    assert_eq!(out.status.code(), Some(3), "a retry is pending");
    assert!(started.elapsed() < Duration::from_secs(60));
    let child: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the handler's child to die", || !pid_alive(child));
    let jobs = bin.json(&["jobs"]);
    assert_eq!(jobs[0]["status"], "queued");
    assert!(
        jobs[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{jobs:#}"
    );
}

#[test]
fn exit_65_fails_for_good_and_other_exits_are_retried_with_the_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = Bin::init_with(concat!(
        "[handlers.invalid]\ncommand = [\"sh\", \"-c\", \"echo 'bad input' >&2; exit 65\"]\n",
        "[handlers.flaky]\ncommand = [\"sh\", \"-c\", \"echo 'try later' >&2; exit 7\"]\n",
        "[handlers.fine]\ncommand = [\"true\"]\n",
    ));
    for t in ["invalid", "flaky", "fine"] {
        bin.ok(&["submit", bundle(dir.path(), t, t, t).to_str().unwrap()]);
    }
    assert_eq!(bin.run(&["serve", "--once"]).status.code(), Some(3));
    let by_type = |t: &str| {
        let jobs = bin.json(&["jobs", "--type", t]);
        jobs[0].clone()
    };
    let invalid = by_type("invalid");
    assert_eq!(
        (invalid["status"].as_str(), invalid["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert!(
        invalid["last_error"]
            .as_str()
            .unwrap()
            .ends_with("exited with 65 (permanent failure): bad input")
    );
    let flaky = by_type("flaky");
    assert_eq!(flaky["status"], "queued");
    assert!(flaky["retry_at"].is_string());
    assert!(
        flaky["last_error"]
            .as_str()
            .unwrap()
            .ends_with("exited with 7: try later")
    );
    assert_eq!(by_type("fine")["status"], "succeeded");
}

#[test]
fn bundle_text_reaches_the_handler_verbatim_with_only_allow_listed_environment() {
    let dir = tempfile::tempdir().unwrap();
    let stdin_file = dir.path().join("stdin.json");
    let env_file = dir.path().join("env.txt");
    let script = format!(
        "cat > {}; env > {}",
        stdin_file.display(),
        env_file.display()
    );
    let (_d, bin) = Bin::init_with(&format!(
        "[handlers.echo]\ncommand = [\"sh\", \"-c\", {script:?}]\n"
    ));
    let title = "; rm -rf ~ $(id) `whoami` \"quoted\" 'single'";
    bin.ok(&[
        "submit",
        bundle(dir.path(), "echo", "echo", title).to_str().unwrap(),
    ]);
    // serve runs with SECRET_TOKEN in its own environment.
    let out = bin.serve(&["--once"], true).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let input: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&stdin_file).unwrap()).unwrap();
    assert_eq!(input["bundle"]["title"], title);
    let job = &bin.json(&["jobs"])[0];
    assert_eq!(input["run_id"], job["run_id"]);
    let env = fs::read_to_string(&env_file).unwrap();
    assert!(env.contains(&format!("BUNDLEQ_JOB_ID={}", job["id"].as_str().unwrap())));
    assert!(env.contains("BUNDLEQ_ATTEMPT=1"));
    assert!(env.contains(&format!(
        "BUNDLEQ_RUN_ID={}",
        job["run_id"].as_str().unwrap()
    )));
    assert!(env.contains(&format!(
        "BUNDLEQ_TENANT_ID={}",
        job["tenant_id"].as_str().unwrap()
    )));
    assert!(
        !env.contains("SECRET_TOKEN") && !env.contains("must-not-leak"),
        "{env}"
    );
}

/// Starts `serve` on `n` jobs whose handler sleeps `sleep` seconds, and
/// returns once all `n` have started (each handler leaves a mark first).
fn serve_slow_jobs(
    n: usize,
    sleep: &str,
    grace: &str,
) -> (
    (tempfile::TempDir, tempfile::TempDir),
    Bin,
    std::process::Child,
) {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    fs::create_dir(&marks).unwrap();
    let script = format!("touch {}/$BUNDLEQ_JOB_ID; sleep {sleep}", marks.display());
    let (home, bin) = Bin::init_with(&format!(
        "[handlers.slow]\ncommand = [\"sh\", \"-c\", {script:?}]\n"
    ));
    for i in 0..n {
        let path = bundle(dir.path(), &format!("s{i}"), "slow", &format!("slow {i}"));
        bin.ok(&["submit", path.to_str().unwrap()]);
    }
    let workers = n.to_string();
    let serve = bin.serve(&["--workers", &workers, "--grace-period", grace], false);
    wait_until("every job to start", || {
        fs::read_dir(&marks).unwrap().count() == n
    });
    ((dir, home), bin, serve)
}

#[test]
fn sigterm_while_8_slow_jobs_run_exits_0_within_the_grace_period_with_nothing_running() {
    let (_dirs, bin, mut serve) = serve_slow_jobs(8, "2", "20s");
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = serve.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(20));
    assert_eq!(
        bin.json(&["jobs", "--status", "running"]),
        serde_json::json!([])
    );
    // Each run's process_bundle step, then its slow step.
    assert_eq!(
        bin.json(&["jobs", "--status", "succeeded", "--type", "slow"])
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        bin.json(&["jobs", "--status", "succeeded"])
            .as_array()
            .unwrap()
            .len(),
        16
    );
}

#[test]
fn jobs_still_running_when_the_grace_period_ends_are_given_back_not_left_running() {
    let (_dirs, bin, mut serve) = serve_slow_jobs(3, "300", "500ms");
    Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(serve.wait().unwrap().code(), Some(0));
    let jobs = bin.json(&["jobs", "--type", "slow"]);
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    for j in jobs.as_array().unwrap() {
        assert_eq!(
            (j["status"].as_str(), j["attempts"].as_u64()),
            (Some("queued"), Some(0)),
            "{j:#}"
        );
        assert!(j["retry_at"].is_null());
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn regression_an_idle_serve_does_not_spin_on_its_own_inbox_scans() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let mut serve = bin.serve(&[], false);
    let marker = bin.home.join("inbox/.not-a-bundle");
    // Wait until it has started its pool (its first scan comes with it).
    wait_until("serve to start", || {
        !bin.json(&["status"])["serves"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    fs::write(&marker, "ignored").unwrap();
    let before = cpu_ticks(serve.id());
    std::thread::sleep(Duration::from_secs(2));
    let after = cpu_ticks(serve.id());
    Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    serve.wait().unwrap();
    // A busy loop burns ~200 ticks in 2 s; an idle serve close to none.
    assert!(
        after - before < 40,
        "idle serve used {} ticks in 2 s",
        after - before
    );
}

#[test]
fn search_finds_only_the_tenants_own_sources_whoever_else_shares_the_home() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    // One tenant alone (the index is asked alone), then two with the same
    // word (a join on the tenant), and a run of each (its few sources).
    let write = |name: &str, words: &str| {
        let text = format!("{words} in the moraine survey");
        let path = dir.path().join(format!("{name}.json"));
        let bundle = serde_json::json!({
            "bundle_version": 1,
            "run_id": uuid::Uuid::now_v7(),
            "title": name,
            "created_at": "2026-11-28T10:00:00Z",
            "sources": [{
                "uri": format!("https://example.org/{name}"),
                "sha256": bundleq::digest::Sha256Hex::of(text.as_bytes()).as_str(),
                "content": text,
            }]
        });
        fs::write(&path, bundle.to_string()).unwrap();
        path
    };
    let a1 = write("a1", "sedge tussock");
    let a2 = write("a2", "sedge only");
    let run_of = |out: Vec<serde_json::Value>| out[0]["run_id"].as_str().unwrap().to_owned();
    let run_a1 = run_of(bin.json_lines(&["submit", a1.to_str().unwrap()]));
    bin.json_lines(&["submit", a2.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    assert_eq!(bin.json(&["search", "sedge"])["total"], 2);
    assert_eq!(bin.json(&["search", "sedge", "--run", &run_a1])["total"], 1);

    bin.ok(&["tenants", "create", "lab-b"]);
    let b1 = write("b1", "sedge tussock tussock");
    bin.json_lines(&["--tenant", "lab-b", "submit", b1.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    let hits = |args: &[&str]| -> Vec<String> {
        bin.json(args)["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["run_title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(hits(&["search", "tussock"]), ["a1"]);
    assert_eq!(hits(&["--tenant", "lab-b", "search", "tussock"]), ["b1"]);
    assert_eq!(bin.json(&["search", "sedge"])["total"], 2);
    assert_eq!(
        bin.json(&["--tenant", "lab-b", "search", "sedge"])["total"],
        1
    );
    // Another tenant's run is not found at all.
    let out = bin.run(&["--tenant", "lab-b", "search", "sedge", "--run", &run_a1]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run"));
}

//! The command line as an operator lives with it, on the real binary:
//! streaming submit with a summary, folders of bundles and standard input,
//! durations with units and a safe prune, 80-column tables with short ids
//! and relative times, a status that says what is happening, stuck jobs
//! freed, JSON as a contract, search syntax, help and shell integration,
//! serve's log, what handlers get.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bin, bundle_text, exe, wait_until, write_bundles};

fn home(config: &str) -> (tempfile::TempDir, Bin) {
    Bin::init_with(config)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every line of `text` fits 80 columns.
fn fits_80(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "{what}: a line of {} columns:\n{line}\n{text}",
            line.chars().count()
        );
    }
}

// ---------------------------------------------------------------------
// 1. Long work shows progress and streams results.

/// Starts `submit` on `paths` and reads its first line of output.
fn submit_streaming(
    bin: &Bin,
    paths: &[PathBuf],
    stderr: Stdio,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = Command::new(exe())
        .arg("--home")
        .arg(&bin.home)
        .arg("submit")
        .args(paths)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out, first)
}

#[test]
fn submit_streams_verdicts_as_batches_commit_and_ends_with_a_summary() {
    let (d, bin) = home("");
    // The first paths exist; the rest are written only after the first
    // verdict was read. bundleq blocks writing verdicts once the pipe is
    // full (a few hundred lines), and reads at most two batches per
    // preparing thread ahead of the batch it records, so it can only
    // accept the rest if it reads bundles after printing verdicts.
    let ahead = (2 * bundleq::accept::PREPARERS + 4) * bundleq::accept::BATCH;
    let dir = d.path().join("many");
    fs::create_dir(&dir).unwrap();
    let paths: Vec<PathBuf> = (0..ahead + 6000)
        .map(|i| dir.join(format!("b{i:05}.json")))
        .collect();
    for p in &paths[..ahead] {
        fs::write(p, bundle_text("process_bundle", 0)).unwrap();
    }
    let (mut child, mut out, first) = submit_streaming(&bin, &paths, Stdio::null());
    assert!(first.starts_with("accepted"), "{first}");
    for (i, p) in paths.iter().enumerate().skip(ahead) {
        fs::write(p, bundle_text("process_bundle", i)).unwrap();
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some(format!("{} accepted, 0 duplicates, 0 invalid", paths.len()).as_str()),
        "{}",
        &rest[rest.len().saturating_sub(500)..]
    );
    assert_eq!(bin.jobs_total(), paths.len() as u64);
}

#[test]
fn ctrl_c_during_submit_stops_after_a_batch_and_says_what_was_committed() {
    let (d, bin) = home("");
    let paths = write_bundles(&d.path().join("b"), "b", "process_bundle", 6000);
    let (mut child, mut out, first) = submit_streaming(&bin, &paths, Stdio::piped());
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let committed = bin.jobs_total();
    if committed == 6000 {
        println!("skipped: submit finished before the interrupt arrived");
        return;
    }
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("the {committed} bundle(s) above were committed")),
        "{committed}: {err}"
    );
    assert_eq!(
        (first + &rest)
            .lines()
            .filter(|l| l.starts_with("accepted"))
            .count() as u64,
        committed
    );
}

#[test]
fn folders_of_bundles_recursive_and_stdin() {
    let (d, bin) = home("");
    let root = d.path().join("results");
    write_bundles(&root, "top", "process_bundle", 3);
    write_bundles(&root.join("deeper"), "deep", "process_bundle", 2);
    fs::write(root.join("notes.txt"), "not a bundle").unwrap();
    let folder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid/glacier-survey.bundle");
    let copy = root.join("survey.bundle");
    fs::create_dir(&copy).unwrap();
    for f in ["bundle.json", "report.txt"] {
        fs::copy(folder.join(f), copy.join(f)).unwrap();
    }
    fs::create_dir(copy.join("data")).unwrap();
    for e in fs::read_dir(folder.join("data")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy.join("data").join(e.file_name())).unwrap();
    }
    // Without --recursive: the folder's own bundles, and a note.
    let out = bin.run(&["validate", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("4 valid, 0 invalid\n"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("--recursive"), "{}", stderr(&out));
    let out = bin.run(&["submit", "-r", root.to_str().unwrap()]);
    assert!(
        stdout(&out).ends_with("6 accepted, 0 duplicates, 0 invalid\n"),
        "{}",
        stdout(&out)
    );
    // Standard input.
    let mut child = Command::new(exe())
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bundle_text("process_bundle", 1).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("valid      -  run "),
        "{}",
        stdout(&out)
    );
    let empty = d.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = bin.run(&["submit", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no bundles"), "{}", stderr(&out));
}

#[test]
fn the_readme_set_up_command_shows_cargo_s_progress() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let setup = readme
        .lines()
        .find(|l| l.starts_with("cargo build --release"))
        .expect("a set-up command");
    assert!(!setup.contains(" -q"), "{setup}");
}

// ---------------------------------------------------------------------
// 2. Destructive commands are safe.

#[test]
fn durations_need_a_unit_and_prune_says_what_it_deletes() {
    let (d, bin) = home("");
    for (args, code) in [
        (vec!["prune", "--finished-before", "30"], 2),
        (
            vec!["prune", "--finished-before", "30d", "--status", "queued"],
            2,
        ),
        (vec!["serve", "--once", "--grace-period", "5"], 2),
    ] {
        let out = bin.run(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    }
    fs::write(
        bin.home.join("bundleq.toml"),
        "[queue]\nlock_timeout = \"30\"\n",
    )
    .unwrap();
    let out = bin.run(&["status"]);
    assert!(stderr(&out).contains("needs a unit"), "{}", stderr(&out));
    fs::write(
        bin.home.join("bundleq.toml"),
        "[queue]\nlock_timeout = \"1w\"\n",
    )
    .unwrap();
    bin.ok(&["status"]);
    bin.submit_all(&write_bundles(
        &d.path().join("b"),
        "b",
        "process_bundle",
        3,
    ));
    bin.ok(&["serve", "--once"]);
    let dry = bin.ok(&["prune", "--finished-before", "0s", "--dry-run"]);
    assert!(dry.contains("would prune 3 finished job(s)"), "{dry}");
    assert_eq!(bin.jobs_total(), 3);
    let done = bin.ok(&["prune", "--finished-before", "0s"]);
    assert!(done.contains("pruned 3 finished job(s)"), "{done}");
    assert_eq!(
        done.lines().filter(|l| l.contains("succeeded")).count(),
        3,
        "{done}"
    );
    assert_eq!(bin.jobs_total(), 0);
}

// ---------------------------------------------------------------------
// 3. Tables fit an 80-column terminal.

/// A home with a few jobs in every state, long titles and long errors.
fn busy_home() -> (tempfile::TempDir, Bin) {
    let script = "echo 'a rather long error message from the handler that goes on and on for quite a while' >&2; exit 65";
    let (d, bin) = home(&format!(
        "[handlers.flaky-summariser]\ncommand = [\"sh\", \"-c\", {script:?}]\n"
    ));
    let mut paths = write_bundles(&d.path().join("a"), "a", "process_bundle", 3);
    paths.extend(write_bundles(
        &d.path().join("b"),
        "b",
        "flaky-summariser",
        2,
    ));
    for p in &paths {
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
        v["title"] = "A very long title of a research run that nobody would ever want to read in full in a table".into();
        fs::write(p, v.to_string()).unwrap();
    }
    bin.submit_all(&paths);
    bin.submit_all(&write_bundles(
        &d.path().join("c"),
        "c",
        "process_bundle",
        2,
    ));
    let _ = bin.run(&["serve", "--once", "--no-inbox"]);
    // One failed job is queued again by a user.
    let failed = bin.json(&["jobs", "--status", "failed"]);
    bin.ok(&["job", "retry", failed[0]["id"].as_str().unwrap()]);
    (d, bin)
}

#[test]
fn tables_fit_80_columns_with_short_ids_and_relative_times() {
    let (_d, bin) = busy_home();
    let jobs = bin.ok(&["jobs"]);
    fits_80("jobs", &jobs);
    fits_80("runs", &bin.ok(&["runs"]));
    fits_80("status", &bin.ok(&["status"]));
    let id = bin.json(&["jobs", "--status", "failed"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let show = bin.ok(&["job", "show", &id]);
    fits_80("job show", &show);
    assert!(jobs.contains(" ago") || jobs.contains("just now"), "{jobs}");
    assert!(!jobs.contains("2026-") && !jobs.contains("2027-"), "{jobs}");
    assert!(bin.ok(&["--utc", "jobs"]).contains('Z'));
    // Short ids, accepted wherever an id is.
    let first = jobs
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(first.len() >= 8 && first.len() < 36, "{first}");
    let full = bin.json(&["job", "show", first])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(full.starts_with(first));
    let run = bin
        .ok(&["runs"])
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    bin.ok(&["run", "show", &run]);
    bin.ok(&["jobs", "--run", &run]);
    // An ambiguous prefix says so.
    let out = bin.run(&["job", "show", &full[..4]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("more than one job"),
        "{}",
        stderr(&out)
    );
    // Payload only with -v; every column with --wide; a cut list says so.
    assert!(!show.contains("payload_json"));
    assert!(bin.ok(&["-v", "job", "show", &id]).contains("payload_json"));
    let wide = bin.ok(&["--wide", "jobs"]);
    assert!(wide.contains("LOCKED BY") && wide.contains(&full), "{wide}");
    let cut = bin.ok(&["jobs", "--limit", "2"]);
    // 7 runs: 7 process_bundle jobs and 2 steps after them.
    assert!(cut.contains("and 7 more"), "{cut}");
    // A succeeded job does not show an earlier attempt's error in tables.
    for line in jobs.lines().filter(|l| l.contains("succeeded")) {
        assert!(!line.contains("error"), "{line}");
    }
}

// ---------------------------------------------------------------------
// 4. The operator can see what is happening.

#[test]
fn status_says_what_is_ready_scheduled_running_who_works_the_queue_and_what_was_rejected() {
    let script = "sleep 30";
    let (d, bin) = home(&format!(
        "[handlers.slow]\ncommand = [\"sh\", \"-c\", {script:?}]\n[workers]\npoll_interval = \"50ms\"\n[inbox]\nsettle = \"50ms\"\n"
    ));
    bin.submit_all(&write_bundles(
        &d.path().join("b"),
        "b",
        "process_bundle",
        2,
    ));
    // One waiting out its backoff after a failed attempt.
    let mut store = bin.store();
    let now = bundleq::Timestamp::now();
    let claim = store.claim(1, "t", now).unwrap().remove(0);
    store
        .report(&claim.token, &bundleq::Outcome::Retry("later".into()), now)
        .unwrap();
    bin.submit_all(&write_bundles(&d.path().join("a"), "a", "slow", 1));
    // One scheduled for later.
    let later = write_bundles(&d.path().join("l"), "l", "process_bundle", 1);
    bin.ok(&["submit", "--not-before", "1h", later[0].to_str().unwrap()]);
    let s = bin.json(&["status"]);
    assert_eq!(
        (
            s["ready"].as_u64(),
            s["scheduled"].as_u64(),
            s["retrying"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{s:#}"
    );
    // The slow run starts with its process_bundle step.
    assert_eq!(s["by_type"]["process_bundle"]["ready"], 2, "{s:#}");
    assert_eq!(s["by_type"]["process_bundle"]["scheduled"], 1, "{s:#}");
    assert_eq!(s["by_type"]["process_bundle"]["retrying"], 1, "{s:#}");
    fs::write(
        bin.home.join("inbox/broken.json"),
        "{\"bundle_version\": 2}",
    )
    .unwrap();
    let mut serve = bin.serve(&["--workers", "2"], false);
    wait_until("the slow job to run and a serve to report", || {
        let s = bin.json(&["status"]);
        s["running"] == 1
            && s["serves"].as_array().is_some_and(|v| v.len() == 1)
            && s["recent_rejections"]
                .as_array()
                .is_some_and(|v| v.len() == 1)
    });
    let text = bin.ok(&["status"]);
    let pid = serve.id().to_string();
    assert!(text.contains("1 running"), "{text}");
    assert!(text.contains(&pid), "the serve's pid: {text}");
    assert!(
        text.contains("broken.json") && text.contains("bundle_version"),
        "{text}"
    );
    // --watch refreshes.
    let mut watch = Command::new(exe())
        .arg("--home")
        .arg(&bin.home)
        .args(["status", "--watch", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Two screens of it, read as they come.
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut screens = 0;
    while screens < 2 {
        let line = lines.next().expect("status --watch ended").unwrap();
        screens += usize::from(line.contains("jobs:"));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = serve.kill();
    let _ = serve.wait();
}

#[test]
fn claims_taken_ahead_of_free_workers_are_not_shown_as_running() {
    let (d, bin) = home("");
    bin.submit_all(&write_bundles(
        &d.path().join("a"),
        "a",
        "process_bundle",
        3,
    ));
    // Three jobs claimed by a serve that reports one handler running and
    // two claims waiting for a free worker.
    let mut store = bin.store();
    let now = bundleq::Timestamp::now();
    assert_eq!(store.claim(3, "h:1:a", now).unwrap().len(), 3);
    store
        .report_serve(&bundleq::store::ServeRow {
            worker: "h:1:a".into(),
            host: "h".into(),
            pid: 1,
            workers: 1,
            started_at: now,
            heartbeat_at: now,
            running: 1,
            claimed_ahead: 2,
        })
        .unwrap();
    let s = bin.json(&["status"]);
    assert_eq!(
        (s["running"].as_u64(), s["claimed_ahead"].as_u64()),
        (Some(1), Some(2)),
        "{s:#}"
    );
    assert!(bin.ok(&["status"]).contains("1 running (+2 claimed ahead)"));
}

#[test]
fn job_show_gives_each_attempt_s_run_time_and_the_manual_actions() {
    let (_d, bin) = busy_home();
    let failed = bin.json(&["jobs", "--type", "flaky-summariser"]);
    let id = failed[0]["id"].as_str().unwrap().to_owned();
    bin.ok(&["job", "cancel", &id]);
    let shown = bin.json(&["job", "show", &id]);
    let actions: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.ends_with(&["cancel"]), "{shown:#}");
    let text = bin.ok(&["job", "show", &id]);
    assert!(text.contains("attempt 1 failed"), "{text}");
    assert!(text.contains("cancel by a user"), "{text}");
    let ran = text
        .lines()
        .find(|l| l.contains("attempt 1 failed"))
        .unwrap();
    assert!(ran.contains("ms") || ran.contains('s'), "{ran}");
}

// ---------------------------------------------------------------------
// 5. Stuck jobs can be freed.

#[test]
fn a_job_left_running_by_a_killed_serve_can_be_released_and_a_live_one_cannot() {
    let (d, bin) = home(
        "[handlers.slow]\ncommand = [\"sleep\", \"60\"]\n[workers]\npoll_interval = \"50ms\"\n",
    );
    bin.submit_all(&write_bundles(&d.path().join("a"), "a", "slow", 1));
    let mut serve = bin.serve(&["--no-inbox"], false);
    wait_until("the job to run", || {
        bin.json(&["jobs", "--status", "running"])
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let id = bin.json(&["jobs"])[0]["id"].as_str().unwrap().to_owned();
    let out = bin.run(&["job", "release", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("which is alive") && stderr(&out).contains("SIGTERM"),
        "{}",
        stderr(&out)
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
    // Hard stop: the job stays running; release frees it at once.
    wait_until("the killed serve's handler to go", || {
        bin.run(&["job", "release", &id]).status.success()
    });
    let job = bin.json(&["job", "show", &id]);
    assert_eq!(job["status"], "queued", "{job:#}");
    assert!(
        job["events"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("was gone"),
        "{job:#}"
    );
    // Cancel works the same way on a stuck job.
    let mut serve = bin.serve(&["--no-inbox"], false);
    wait_until("the job to run again", || {
        bin.json(&["jobs", "--status", "running"])
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    serve.kill().unwrap();
    serve.wait().unwrap();
    wait_until("cancel to free it", || {
        bin.run(&["job", "cancel", &id]).status.success()
    });
    assert_eq!(bin.json(&["job", "show", &id])["status"], "cancelled");
}

// ---------------------------------------------------------------------
// 6. --json is a contract.

#[test]
fn json_errors_go_to_stderr_as_json() {
    let (_d, bin) = home("");
    let out = bin.run(&[
        "--json",
        "job",
        "show",
        "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a11",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(err["error"].as_str().unwrap().contains("no job"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_readme_documents_the_json_keys_of_every_command() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for cmd in [
        "submit", "validate", "jobs", "job show", "runs", "run show", "status", "search", "ingest",
        "prune", "tenants",
    ] {
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with("| `") && l.contains(&format!("`{cmd}`"))),
            "README's JSON table has no row for {cmd}"
        );
    }
}

// ---------------------------------------------------------------------
// 7. Search reads like search.

#[test]
fn search_takes_prefixes_or_not_and_phrases_and_says_how_many_hit() {
    let (_d, bin) = home("");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid");
    bin.ok(&["submit", fixtures.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    let total = |q: &str| bin.json(&["search", q])["total"].as_u64().unwrap();
    assert_eq!(total("glacier"), 1);
    assert_eq!(total("glac*"), 1);
    assert!(total("glacier OR zymurgy") >= 2);
    // Fewer shown than match: the total still counts them all; as many
    // shown as match (the limit not reached): the same total.
    let cut = bin.json(&["search", "glacier OR zymurgy", "--limit", "1"]);
    assert_eq!(cut["hits"].as_array().unwrap().len(), 1, "{cut}");
    assert_eq!(cut["total"].as_u64().unwrap(), total("glacier OR zymurgy"));
    let all = bin.json(&["search", "glacier OR zymurgy", "--limit", "100"]);
    assert_eq!(
        all["hits"].as_array().unwrap().len() as u64,
        all["total"].as_u64().unwrap()
    );
    assert_eq!(total("glacier NOT morteratsch"), 0);
    assert_eq!(total("\"terminus of the morteratsch\""), 1);
    assert_eq!(total("\"morteratsch the of terminus\""), 0);
    let found = bin.json(&["search", "glacier"]);
    let hit = &found["hits"][0];
    assert_eq!(hit["run_title"], "Glacier terminus survey");
    assert!(hit.get("rank").is_none(), "no internals: {hit}");
    let text = bin.ok(&["search", "glacier"]);
    assert!(text.starts_with("1 hit"), "{text}");
    assert!(text.contains("Glacier terminus survey"), "{text}");
    let out = bin.run(&["search", "NOT", "glacier"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("NOT needs a word before it"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------
// 8. Help and shell integration.

#[test]
fn every_subcommand_has_examples_and_completions_load_in_bash() {
    let (_d, bin) = home("");
    for cmd in [
        "init",
        "submit",
        "validate",
        "serve",
        "ingest",
        "tenants",
        "jobs",
        "runs",
        "status",
        "search",
        "prune",
        "verify",
        "export",
        "backup",
        "bench",
        "completions",
        "man",
    ] {
        let help = bin.ok(&[cmd, "--help"]);
        assert!(help.contains("Examples:"), "{cmd} --help has no examples");
    }
    for cmd in [["job", "show"], ["run", "show"]] {
        assert!(bin.ok(&[cmd[0], cmd[1], "--help"]).contains("Examples:"));
    }
    let script = bin.ok(&["completions", "bash"]);
    let file = bin.home.join("completion.bash");
    fs::write(&file, script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p bundleq", file.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("bundleq"));
    for shell in ["zsh", "fish"] {
        assert!(!bin.ok(&["completions", shell]).is_empty());
    }
    let man = bin.ok(&["man"]);
    assert!(
        man.contains(".TH") && man.contains("bundleq"),
        "{}",
        &man[..200.min(man.len())]
    );
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.contains("cargo install --path ."));
}

#[test]
fn quiet_prints_only_the_summary_and_verbose_more() {
    let (d, bin) = home("");
    let paths = write_bundles(&d.path().join("a"), "a", "process_bundle", 3);
    let mut args = vec!["-q".to_owned(), "submit".to_owned()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bin.ok(&refs);
    assert_eq!(out, "3 accepted, 0 duplicates, 0 invalid\n");
    let out = bin.run(&["-v", "serve", "--once", "--no-inbox"]);
    assert!(stderr(&out).contains("INFO"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------
// 9. Errors say the real cause.

#[test]
fn ingest_says_what_is_still_being_written_and_can_wait_for_it() {
    let (_d, bin) = home("[inbox]\nsettle = \"1s\"\n");
    fs::write(
        bin.home.join("inbox/fresh.json"),
        bundle_text("process_bundle", 1),
    )
    .unwrap();
    let out = bin.ok(&["ingest"]);
    assert!(
        out.contains("1 still being written (changed less than 1s ago; --wait"),
        "{out}"
    );
    let started = Instant::now();
    let out = bin.ok(&["ingest", "--wait"]);
    assert!(out.starts_with("1 accepted"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------------
// 10. serve's log reads well.

#[test]
fn serve_logs_a_start_line_one_line_per_bundle_and_no_module_paths() {
    let (d, bin) = home("[inbox]\nsettle = \"50ms\"\n[workers]\npoll_interval = \"50ms\"\n");
    let mut serve = Command::new(exe())
        .arg("--home")
        .arg(&bin.home)
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for p in write_bundles(&d.path().join("a"), "a", "process_bundle", 200) {
        fs::rename(&p, bin.home.join("inbox").join(p.file_name().unwrap())).unwrap();
    }
    wait_until("200 jobs to succeed", || {
        bin.jobs_with(bundleq::JobStatus::Succeeded) == 200
    });
    let (_, log) = Bin::terminate(serve_take(&mut serve));
    let start = log.lines().next().unwrap_or("");
    for words in [
        "home",
        "database",
        "inbox",
        "4 workers",
        "handlers process_bundle",
        "synchronous = full",
        "lock timeout 30m",
    ] {
        assert!(start.contains(words), "{words}: {start}");
    }
    assert!(!log.contains("bundleq::"), "module paths in the log: {log}");
    let lines = log.lines().count();
    assert!(lines < 200 + 20, "{lines} lines for 200 bundles:\n{log}");
}

fn serve_take(child: &mut std::process::Child) -> std::process::Child {
    std::mem::replace(child, Command::new("true").spawn().unwrap())
}

#[test]
fn two_serves_on_one_home_log_no_errors_for_files_the_other_took() {
    let (d, bin) = home("[inbox]\nsettle = \"50ms\"\n[workers]\npoll_interval = \"50ms\"\n");
    let a = bin.serve(&[], true);
    let b = bin.serve(&[], true);
    for p in write_bundles(&d.path().join("a"), "a", "process_bundle", 300) {
        fs::rename(&p, bin.home.join("inbox").join(p.file_name().unwrap())).unwrap();
    }
    wait_until("300 archived", || {
        common::archived(&bin.home.join("accepted")).len() == 300
    });
    let (_, la) = Bin::terminate(a);
    let (_, lb) = Bin::terminate(b);
    for log in [la, lb] {
        assert!(!log.contains("ERROR"), "{log}");
    }
}

// ---------------------------------------------------------------------
// 11. Handlers get what they need.

#[test]
fn handlers_get_the_home_and_stored_source_files_and_their_stdout_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("payload.json");
    let sums = dir.path().join("sums");
    // The command hashes every file it is given while it runs.
    let script = format!(
        "cat > {p}; grep -o '\"file\":\"[^\"]*\"' {p} | cut -d'\"' -f4 | while read f; do sha256sum \"$f\"; done > {s}; echo \"home=$BUNDLEQ_HOME\"; echo done",
        p = seen.display(),
        s = sums.display()
    );
    let (_d, bin) = home(&format!(
        "[handlers.reader]\ncommand = [\"sh\", \"-c\", {script:?}]\n"
    ));
    // Small files (kept in the database) and a big one (a file object).
    let copy = common::file_bundle(dir.path(), "r", 200 * 1024);
    let folder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid/glacier-survey.bundle");
    let original: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(folder.join("bundle.json")).unwrap()).unwrap();
    let mut b: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(copy.join("bundle.json")).unwrap()).unwrap();
    b["job_type"] = "reader".into();
    for s in original["sources"].as_array().unwrap() {
        b["sources"].as_array_mut().unwrap().push(s.clone());
    }
    fs::write(copy.join("bundle.json"), b.to_string()).unwrap();
    fs::copy(folder.join("report.txt"), copy.join("report.txt")).unwrap();
    fs::create_dir(copy.join("data")).unwrap();
    for e in fs::read_dir(folder.join("data")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy.join("data").join(e.file_name())).unwrap();
    }
    bin.ok(&["submit", copy.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    let payload: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(payload["home"], bin.home.display().to_string());
    let sources = payload["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3);
    let sums = fs::read_to_string(&sums).unwrap();
    for s in sources {
        let file = s["file"].as_str().unwrap();
        let sha = s["sha256"].as_str().unwrap();
        assert!(
            sums.contains(&format!("{sha}  {file}")),
            "{file} held the bytes of {sha} while the command ran: {sums}"
        );
        // The big object is the home's own file; copies of objects kept in
        // the database are gone with the command.
        let own = Path::new(file).starts_with(bin.home.join("objects")) && Path::new(file).exists();
        assert_eq!(own, s["uri"] == "file:big.txt", "{s}");
    }
    let id = bin.json(&["jobs"])[0]["id"].as_str().unwrap().to_owned();
    let output = bin.json(&["job", "show", &id])["attempt_history"][0]["output"].clone();
    assert!(
        output
            .as_str()
            .unwrap()
            .contains(&format!("home={}", bin.home.display())),
        "{output}"
    );
}

#[test]
fn a_bundle_for_a_job_type_without_a_handler_is_refused_unless_allowed() {
    let (d, bin) = home("[handlers.summarise]\ncommand = [\"true\"]\n");
    let p = write_bundles(&d.path().join("a"), "a", "publish", 1);
    let out = bin.run(&["submit", p[0].to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let err = stderr(&out);
    assert!(
        err.contains("job_type") && err.contains("process_bundle, summarise"),
        "{err}"
    );
    assert!(err.contains("--allow-unknown-type"), "{err}");
    bin.ok(&["submit", "--allow-unknown-type", p[0].to_str().unwrap()]);
}

#[test]
fn the_generated_configuration_takes_a_new_section_without_a_duplicate_key() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let cfg = bin.home.join("bundleq.toml");
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[workers]\ncount = 2\n\n[queue]\nmax_attempts = 5\n");
    fs::write(&cfg, text).unwrap();
    bin.ok(&["status"]);
}

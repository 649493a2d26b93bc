//! Hostile input and operator mistakes, on the real binary: each test
//! reproduces one attack or mistake that broke bundleq's promise (nothing
//! lost, nothing read outside a bundle, never two runs of a job at once)
//! and checks that it no longer does. Races are looped; signals are real.
//! `BUNDLEQ_TEST_BIN=/path/to/old/bundleq` runs them against another build
//! (they fail on the build before these fixes).

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Bin, archived, bundle_text, claimed, exe, exits_within, stderr_of, wait_until};
use sha2::Digest;

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A small deterministic generator (no rand crate).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `serve` with its stderr (the log, at `level`) captured.
fn serve_logged(bin: &Bin, args: &[&str], level: &str) -> Child {
    Command::new(exe())
        .arg("--home")
        .arg(&bin.home)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits up to `limit` for a child to exit; kills it and fails if it does not.
fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn pid_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Drops a bundle into the inbox the way a careful producer does.
fn drop_in(bin: &Bin, name: &str, text: &str) -> PathBuf {
    let inbox = bin.home.join("inbox");
    let tmp = inbox.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    let to = inbox.join(name);
    fs::rename(&tmp, &to).unwrap();
    to
}

// ---------------------------------------------------------------------
// 1. The inbox archives exactly the bytes it ingested.

#[test]
fn rename_over_drops_archive_exactly_what_was_ingested() {
    const DROPS: u64 = 300;
    let (_d, bin) = Bin::init_with(
        "[inbox]\nsettle = \"50ms\"\nrescan_interval = \"200ms\"\n[workers]\npoll_interval = \"50ms\"\n",
    );
    let mut serve = bin.serve(&["--workers", "1"], false);
    wait_until("serve to open its database", || {
        bin.home.join("bundleq.db-shm").exists()
    });
    let mut rng = XorShift(0x0dd5_eed5_1234_5678);
    for k in 0..DROPS {
        // A producer writing new versions under one final name.
        drop_in(&bin, "x.json", &bundle_text("process_bundle", k as usize));
        // 0-100 ms apart, half of them in a quick burst.
        let pause = if k % 2 == 0 {
            rng.below(101)
        } else {
            rng.below(4)
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
    let inbox_x = bin.home.join("inbox/x.json");
    wait_until("the last version to be taken", || {
        !inbox_x.exists() && claimed(&bin.home).is_empty()
    });
    let _ = serve.kill();
    let _ = serve.wait();
    let runs: HashSet<String> = bin
        .store()
        .runs(bin.tenant(), None)
        .unwrap()
        .into_iter()
        .map(|r| r.bundle_sha256)
        .collect();
    let files = archived(&bin.home.join("accepted"));
    let mut without_run = 0;
    let mut archived_sha = HashSet::new();
    for f in &files {
        let sha = sha256_hex(&fs::read(f).unwrap());
        if !runs.contains(&sha) {
            without_run += 1;
        }
        archived_sha.insert(sha);
    }
    let ingested_not_archived = runs.difference(&archived_sha).count();
    assert_eq!(without_run, 0, "files in accepted/ with no run");
    assert_eq!(
        ingested_not_archived, 0,
        "runs whose bytes were not archived"
    );
    assert_eq!(files.len(), runs.len());
    assert!(archived(&bin.home.join("rejected")).is_empty());
    println!(
        "rename-over: {DROPS} drops, {} ingested and archived, {} replaced by the producer before they were taken, archived without a run 0",
        runs.len(),
        DROPS as usize - runs.len()
    );
}

// ---------------------------------------------------------------------
// 2. A database that vanished or changed identity stops the engine.

#[test]
fn a_deleted_or_replaced_database_stops_serve_and_leaves_the_inbox_alone() {
    for replace in [false, true] {
        let (_d, bin) =
            Bin::init_with("[inbox]\nsettle = \"50ms\"\n[workers]\npoll_interval = \"100ms\"\n");
        let mut serve = serve_logged(&bin, &[], "info");
        for i in 0..3 {
            drop_in(
                &bin,
                &format!("before{i}.json"),
                &bundle_text("process_bundle", i),
            );
        }
        wait_until("3 accepted", || {
            archived(&bin.home.join("accepted")).len() == 3
        });
        let db = bin.home.join("bundleq.db");
        if replace {
            let copy = bin.home.join("copy.db");
            fs::copy(&db, &copy).unwrap();
            fs::rename(&copy, &db).unwrap();
        } else {
            for suffix in ["", "-wal", "-shm"] {
                let _ = fs::remove_file(format!("{}{suffix}", db.display()));
            }
        }
        let after: Vec<PathBuf> = (0..3)
            .map(|i| {
                drop_in(
                    &bin,
                    &format!("after{i}.json"),
                    &bundle_text("process_bundle", 10 + i),
                )
            })
            .collect();
        let code = exits_within(
            &mut serve,
            Duration::from_secs(20),
            "serve after its database went",
        );
        let log = stderr_of(serve);
        assert_ne!(code, Some(0), "{log}");
        let what = if replace {
            "was replaced"
        } else {
            "was deleted"
        };
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
        assert_eq!(errors.len(), 1, "one clear error: {log}");
        assert!(errors[0].contains("bundleq.db"), "{log}");
        assert!(!log.contains("Accepted after"), "{log}");
        for p in &after {
            assert!(p.exists(), "{} left the inbox: {log}", p.display());
        }
        assert_eq!(archived(&bin.home.join("accepted")).len(), 3);
    }
}

// ---------------------------------------------------------------------
// 3. The inbox can never be a folder the user did not mean.

#[test]
fn an_inbox_that_was_not_meant_is_refused_before_anything_moves() {
    let (d, bin) = Bin::init_with("");
    let project = d.path().join("project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(project.join("src/main.rs"), "fn main() {}").unwrap();
    fs::write(project.join("notes.txt"), "my notes").unwrap();
    let refused = |dir: &Path, words: &str| {
        let out = bin.run(&["ingest", "--inbox", dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", dir.display());
        assert!(err.contains(words), "{}: {err}", dir.display());
        assert_eq!(err.lines().count(), 1, "{err}");
    };
    refused(&project, "init --inbox");
    refused(&bin.home, "the home itself");
    refused(&bin.home.join("objects"), "inside the home");
    refused(&bin.home.join("accepted"), "inside the home");
    refused(d.path(), "contains the home");
    refused(&d.path().join("typo"), "does not exist");
    let out = bin.run(&["serve", "--once", "--inbox", bin.home.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(project.join("src/main.rs").exists() && project.join("notes.txt").exists());
    assert!(archived(&bin.home.join("rejected")).is_empty());
    assert!(bin.home.join("objects").is_dir());

    // Adopted on purpose, a non-empty folder is an inbox.
    let drops = d.path().join("drops");
    fs::create_dir(&drops).unwrap();
    fs::write(drops.join("a.json"), bundle_text("process_bundle", 1)).unwrap();
    bin.ok(&["init", "--inbox", drops.to_str().unwrap()]);
    common::age(&drops.join("a.json")); // written long enough ago to be complete
    let summary = bin.json(&["ingest", "--inbox", drops.to_str().unwrap()]);
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert!(drops.join(".bundleq-inbox").exists());
    // An empty folder is adopted on the spot.
    let fresh = d.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    bin.ok(&["ingest", "--inbox", fresh.to_str().unwrap()]);
    assert!(fresh.join(".bundleq-inbox").exists());

    // Another filesystem: moves by rename would fail after the commit.
    let shm = Path::new("/dev/shm");
    let other_fs = shm.is_dir() && {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(shm).unwrap().dev() != fs::metadata(&bin.home).unwrap().dev()
    };
    if other_fs {
        let elsewhere = tempfile::tempdir_in(shm).unwrap();
        refused(elsewhere.path(), "another filesystem");
    } else {
        println!(
            "skipped the other-filesystem case: /dev/shm is missing or on the home's filesystem"
        );
    }
}

#[test]
fn a_stored_object_that_cannot_be_read_is_retried_not_failed() {
    let (d, bin) = Bin::init_with("");
    // Bigger than what the database keeps: its object is a file.
    let folder = common::file_bundle(d.path(), "big", 200 * 1024);
    bin.ok(&["submit", folder.to_str().unwrap()]);
    // The object store loses its files (a disk problem, an operator).
    let objects = bin.home.join("objects");
    for shard in fs::read_dir(&objects).unwrap() {
        let shard = shard.unwrap().path();
        if shard.file_name().unwrap() == "tmp" {
            continue;
        }
        for f in fs::read_dir(&shard).unwrap() {
            fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
    let out = bin.run(&["serve", "--once", "--no-inbox"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = &bin.json(&["jobs"])[0];
    assert_eq!(
        job["status"], "queued",
        "retried, not failed for good: {job}"
    );
    assert!(job["retry_at"].is_string(), "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("stored object"),
        "{job}"
    );
}

// ---------------------------------------------------------------------
// 4. Nothing outside a bundle folder is ever read.

#[test]
fn symlink_swaps_never_let_a_file_outside_the_bundle_be_read() {
    const MIN_SWAPS: u64 = 1000;
    const MIN_READS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let secret = b"root-only secret: the bundle must never see this";
    fs::write(outside.join("data.txt"), secret).unwrap();
    let b = dir.path().join("b.bundle");
    fs::create_dir_all(b.join("sub")).unwrap();
    fs::write(b.join("sub/data.txt"), "decoy").unwrap();
    std::os::unix::fs::symlink(&outside, b.join("alt")).unwrap();
    // The bundle claims the outside file's digest: reading it would pass.
    fs::write(
        b.join("bundle.json"),
        serde_json::json!({
            "bundle_version": 1,
            "run_id": uuid::Uuid::now_v7(),
            "title": "swap",
            "created_at": "2026-11-28T10:00:00Z",
            "sources": [{"uri": "u", "sha256": sha256_hex(secret), "path": "sub/data.txt"}]
        })
        .to_string(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, b) = (Arc::clone(&stop), Arc::clone(&swaps), b.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    b.join("sub"),
                    rustix::fs::CWD,
                    b.join("alt"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let path = b.to_str().unwrap().to_owned();
    let (mut reads, mut leaked, mut digests_shown) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while reads < MIN_READS || swaps.load(Ordering::Relaxed) < MIN_SWAPS {
        assert!(Instant::now() < deadline, "too slow: {reads} reads");
        let mut args = vec!["validate"];
        args.extend(std::iter::repeat_n(path.as_str(), 100));
        let out = Command::new(exe()).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        leaked += text.lines().filter(|l| l.starts_with("valid ")).count();
        let err = String::from_utf8_lossy(&out.stderr);
        digests_shown += err.matches(&sha256_hex(b"decoy")).count();
        assert!(!err.contains("panicked"), "{err}");
        reads += 100;
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(leaked, 0, "bytes outside the bundle were read");
    assert_eq!(digests_shown, 0, "a file's actual digest was shown");
    println!(
        "symlink swaps: {} swaps, {reads} bundle reads, files read outside the bundle 0",
        swaps.load(Ordering::Relaxed)
    );
}

#[test]
fn a_hard_link_to_a_file_outside_is_refused_and_no_digest_is_ever_shown() {
    let (d, bin) = Bin::init_with("");
    let secret = d.path().join("shadow");
    fs::write(&secret, "root:$6$secret-hash:19000:0:99999:7:::").unwrap();
    let b = d.path().join("h.bundle");
    fs::create_dir(&b).unwrap();
    fs::hard_link(&secret, b.join("copy.txt")).unwrap();
    let text = serde_json::json!({
        "bundle_version": 1,
        "run_id": uuid::Uuid::now_v7(),
        "title": "hard link",
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{"uri": "u", "sha256": sha256_hex(&fs::read(&secret).unwrap()), "path": "copy.txt"}]
    });
    fs::write(b.join("bundle.json"), text.to_string()).unwrap();
    let out = bin.run(&["submit", b.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("hard links"), "{err}");
    assert_eq!(bin.runs_total(), 0);
    // A wrong digest for a file: refused without telling the right one.
    let m = d.path().join("m.bundle");
    fs::create_dir(&m).unwrap();
    fs::write(m.join("data.txt"), "private words").unwrap();
    let mut wrong = text.clone();
    wrong["run_id"] = uuid::Uuid::now_v7().to_string().into();
    wrong["sources"][0]["path"] = "data.txt".into();
    wrong["sources"][0]["sha256"] = "0".repeat(64).into();
    fs::write(m.join("bundle.json"), wrong.to_string()).unwrap();
    let out = bin.run(&["validate", m.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match sha256"), "{err}");
    assert!(!err.contains(&sha256_hex(b"private words")), "{err}");
    // Through the inbox too: rejected, and the report shows no digest.
    fs::rename(&m, bin.home.join("inbox/m.bundle")).unwrap();
    fs::rename(&b, bin.home.join("inbox/h.bundle")).unwrap();
    common::age(&bin.home.join("inbox/m.bundle"));
    common::age(&bin.home.join("inbox/h.bundle"));
    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["rejected"], 2, "{summary}");
    let mut reports = String::new();
    for day in fs::read_dir(bin.home.join("rejected")).unwrap() {
        for f in fs::read_dir(day.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if f.to_string_lossy().ends_with(".errors.json") {
                reports.push_str(&fs::read_to_string(f).unwrap());
            }
        }
    }
    assert!(reports.contains("hard links"), "{reports}");
    assert!(
        !reports.contains(&sha256_hex(b"private words")),
        "{reports}"
    );
    // The objects' lock files (objects/tmp/.gate, .lease) are not objects.
    let objects: Vec<_> = walk(&bin.home.join("objects"))
        .into_iter()
        .filter(|p| !p.starts_with(bin.home.join("objects/tmp")))
        .collect();
    assert!(objects.is_empty(), "nothing was stored: {objects:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------
// 5. A handler never outlives the serve that started it.

/// A home whose `slow` handler records each start, holds a kernel lock
/// per job while it runs (a second run of the same job at the same time
/// is written to the ledger as OVERLAP), and leaves a grandchild.
fn slow_handler_home(extra: &str) -> (tempfile::TempDir, Bin, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    fs::create_dir(&ledger).unwrap();
    let l = ledger.display();
    let script = format!(
        "echo \"start $BUNDLEQ_JOB_ID $BUNDLEQ_ATTEMPT\" >> {l}/starts; \
         flock -n -E 99 {l}/$BUNDLEQ_JOB_ID.lock sh -c 'echo running >> {l}/runs; sleep 1000 & echo $! >> {l}/children; wait' \
         || echo OVERLAP >> {l}/runs"
    );
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    fs::write(
        bin.home.join("bundleq.toml"),
        format!(
            "[handlers.slow]\ncommand = [\"sh\", \"-c\", {script:?}]\n[workers]\npoll_interval = \"50ms\"\n{extra}"
        ),
    )
    .unwrap();
    (dir, bin, ledger)
}

/// Submits one job of the `slow` type.
fn submit_slow_job(dir: &Path, bin: &Bin) {
    let path = common::write_bundles(&dir.join("b"), "b", "slow", 1).remove(0);
    bin.ok(&["submit", path.to_str().unwrap()]);
}

fn starts(ledger: &Path) -> Vec<String> {
    fs::read_to_string(ledger.join("starts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn children(ledger: &Path) -> Vec<u32> {
    fs::read_to_string(ledger.join("children"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn handlers_die_with_a_killed_serve_and_no_job_ever_runs_twice_at_once() {
    const CYCLES: usize = 8;
    // A short lock timeout: a serve that rescues by the lock alone starts
    // attempt 2 one second after a kill, while attempt 1 may still run.
    let (d, bin, ledger) = slow_handler_home("[queue]\nlock_timeout = \"1s\"\nmax_attempts = 20\n");
    submit_slow_job(d.path(), &bin);
    // Each run of the handler appends "running" once it holds the job's
    // kernel lock, or "OVERLAP" if another run of the job still holds it.
    let runs = || -> Vec<String> {
        fs::read_to_string(ledger.join("runs"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let mut rng = XorShift(0xfeed_5eed_0000_0001);
    let mut serve = bin.serve(&["--no-inbox", "--grace-period", "200ms"], false);
    wait_until("the first run", || !runs().is_empty());
    for cycle in 0..CYCLES {
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        // Alternately a hard kill and a hung-up terminal, then a new serve
        // at once, as a supervisor would start one.
        if cycle % 2 == 0 {
            serve.kill().unwrap();
        } else {
            signal(serve.id(), "HUP");
        }
        serve.wait().unwrap();
        let before = runs().len();
        serve = bin.serve(&["--no-inbox", "--grace-period", "200ms"], false);
        wait_until("the next run", || runs().len() > before);
        let now = runs();
        assert!(
            !now.iter().any(|l| l == "OVERLAP"),
            "cycle {cycle}: two runs of one job at once: {now:?}"
        );
        // Every process of the earlier runs is gone, grandchildren too.
        let dead_before = children(&ledger);
        let earlier = &dead_before[..dead_before.len().saturating_sub(1)];
        let deadline = Instant::now() + Duration::from_secs(10);
        while earlier.iter().any(|&pid| pid_alive(pid)) {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: a handler outlived its serve"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    wait_until("the last handler to die", || {
        children(&ledger).iter().all(|&pid| !pid_alive(pid))
    });
    println!(
        "kill/hang-up cycles: {CYCLES}, handler runs {}, overlapping runs 0",
        runs().len()
    );
}

#[test]
fn a_dead_serve_s_jobs_are_taken_over_at_once_not_after_the_lock_timeout() {
    // The default 30-minute lock timeout: only proof that the old serve and
    // its handler are gone lets the next serve take the job now.
    let (d, bin, ledger) = slow_handler_home("");
    submit_slow_job(d.path(), &bin);
    let mut serve = bin.serve(&["--no-inbox"], false);
    wait_until("attempt 1", || starts(&ledger).len() == 1);
    serve.kill().unwrap();
    serve.wait().unwrap();
    let started = Instant::now();
    let mut next = bin.serve(&["--no-inbox"], false);
    let deadline = started + Duration::from_secs(30);
    while starts(&ledger).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the job was not taken over: {:?}",
            starts(&ledger)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = &bin.json(&["jobs"])[0];
    assert_eq!(job["attempts"], 2, "{job}");
    let _ = next.kill();
    let _ = next.wait();
    let runs = fs::read_to_string(ledger.join("runs")).unwrap_or_default();
    assert!(!runs.contains("OVERLAP"), "{runs}");
}

#[test]
fn sighup_and_a_double_sigterm_shut_down_gracefully() {
    for (first, second) in [("HUP", None), ("TERM", Some("TERM"))] {
        let (d, bin, ledger) = slow_handler_home("");
        bin.ok(&[
            "submit",
            &common::write_bundles(&d.path().join("b"), "b", "slow", 1)[0]
                .display()
                .to_string(),
        ]);
        let mut serve = bin.serve(&["--no-inbox", "--grace-period", "300ms"], true);
        wait_until("the handler to start", || starts(&ledger).len() == 1);
        signal(serve.id(), first);
        if let Some(s) = second {
            // GNU timeout sends two; one request, not "exit at once".
            signal(serve.id(), s);
        }
        let code = exits_within(&mut serve, Duration::from_secs(20), "serve after a signal");
        let log = stderr_of(serve);
        assert_eq!(code, Some(0), "{first}: {log}");
        let job = &bin.json(&["jobs"])[0];
        assert_eq!(job["status"], "queued", "given back: {job}");
        assert_eq!(job["attempts"], 0, "{job}");
        wait_until("the handler to die", || {
            children(&ledger).iter().all(|&pid| !pid_alive(pid))
        });
    }
}

// ---------------------------------------------------------------------
// 6. One bad entry never blocks the inbox.

#[test]
fn a_name_too_long_for_an_archive_name_never_blocks_the_inbox() {
    let (_d, bin) = Bin::init_with("[inbox]\nsettle = \"50ms\"\n");
    let long = format!("{}.json", "n".repeat(250));
    let tmp = bin.home.join("inbox/.long.tmp");
    fs::write(&tmp, bundle_text("process_bundle", 1)).unwrap();
    fs::rename(&tmp, bin.home.join("inbox").join(&long)).unwrap();
    common::age(&bin.home.join("inbox").join(&long));
    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["accepted"], 1, "{summary}");
    for i in 0..3 {
        drop_in(
            &bin,
            &format!("later{i}.json"),
            &bundle_text("process_bundle", 10 + i),
        );
        common::age(&bin.home.join(format!("inbox/later{i}.json")));
    }
    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["accepted"], 3, "{summary}");
    let names: Vec<String> = archived(&bin.home.join("accepted"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let short = names.iter().find(|n| n.contains("nnnn")).unwrap();
    assert!(short.len() + ".errors.json".len() <= 255, "{short}");
    assert!(
        short.ends_with(".json") && short.as_bytes()[16] == b'.',
        "{short}"
    );
    assert_eq!(common::unfinished(&bin.home), 0);
}

#[test]
fn an_entry_that_cannot_be_archived_is_held_said_once_and_finished_later() {
    let (_d, bin) =
        Bin::init_with("[inbox]\nsettle = \"50ms\"\n[workers]\npoll_interval = \"50ms\"\n");
    // A file where today's archive folder goes: every move fails.
    let day = bundleq::Timestamp::now().to_db()[..10].to_owned();
    let blocker = bin.home.join("accepted").join(&day);
    fs::write(&blocker, "in the way").unwrap();
    let mut serve = serve_logged(&bin, &[], "info");
    for i in 0..3 {
        drop_in(
            &bin,
            &format!("held{i}.json"),
            &bundle_text("process_bundle", i),
        );
    }
    wait_until("3 runs", || bin.runs_total() == 3);
    // Several retries go by; the entries wait in serve's claims.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(claimed(&bin.home).len(), 3);
    // One more drop is still ingested: failures are per entry.
    drop_in(&bin, "later.json", &bundle_text("process_bundle", 9));
    wait_until("4 runs", || bin.runs_total() == 4);
    fs::remove_file(&blocker).unwrap();
    wait_until("all 4 archived", || {
        archived(&bin.home.join("accepted")).len() == 4
    });
    signal(serve.id(), "TERM");
    let _ = exits_within(&mut serve, Duration::from_secs(20), "serve");
    let log = stderr_of(serve);
    for i in 0..3 {
        let said = log
            .lines()
            .filter(|l| l.contains(&format!("held{i}.json")) && l.contains("cannot finish"))
            .count();
        assert_eq!(said, 1, "said once: {log}");
    }
    assert_eq!(bin.jobs_total(), 4);
    assert_eq!(common::unfinished(&bin.home), 0);
}

// ---------------------------------------------------------------------
// 8. Handler starts are bounded.

#[test]
fn restarting_serve_over_and_over_starts_a_handler_at_most_max_attempts_plus_two_times() {
    let (d, bin, ledger) = slow_handler_home("");
    submit_slow_job(d.path(), &bin);
    for _ in 0..8 {
        let before = starts(&ledger).len();
        let mut serve = bin.serve(&["--no-inbox", "--grace-period", "100ms"], false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while starts(&ledger).len() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(serve.id(), "TERM");
        serve.wait().unwrap();
    }
    let n = starts(&ledger).len();
    assert_eq!(
        n,
        3 + 2,
        "max_attempts + the release allowance: {:?}",
        starts(&ledger)
    );
    let job = &bin.json(&["jobs"])[0];
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["last_error"].as_str().unwrap().contains("interrupted"),
        "{job}"
    );
}

// ---------------------------------------------------------------------
// 9. Output never panics.

#[test]
fn output_to_a_closed_pipe_ends_quietly_and_a_full_disk_is_one_error() {
    let (d, bin) = Bin::init_with("");
    bin.submit_all(&common::write_bundles(
        &d.path().join("b"),
        "b",
        "process_bundle",
        50,
    ));
    for args in [
        vec!["jobs"],
        vec!["runs"],
        vec!["--json", "jobs"],
        vec!["status"],
        vec!["tenants"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // the reader is gone before the first write
        let out = Command::new(exe())
            .arg("--home")
            .arg(&bin.home)
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    if Path::new("/dev/full").exists() {
        let out = Command::new(exe())
            .arg("--home")
            .arg(&bin.home)
            .arg("jobs")
            .stdout(
                fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("No space left"), "{err}");
    } else {
        println!("skipped the /dev/full case: there is no /dev/full");
    }
}

// ---------------------------------------------------------------------
// 10. Hostile bundles cost bounded work.

#[test]
fn a_file_named_by_many_sources_is_read_once_and_all_files_together_are_capped() {
    let (d, bin) = Bin::init_with("[limits]\nmax_total_source_bytes = 20000000\n");
    let big = vec![b'x'; 8 * 1024 * 1024];
    let make = |name: &str, files: usize, refs: usize| {
        let b = d.path().join(name);
        fs::create_dir(&b).unwrap();
        for i in 0..files {
            let mut bytes = big.clone();
            bytes[0] = b'0' + i as u8;
            fs::write(b.join(format!("f{i}.txt")), &bytes).unwrap();
        }
        let digests: Vec<String> = (0..files)
            .map(|i| sha256_hex(&fs::read(b.join(format!("f{i}.txt"))).unwrap()))
            .collect();
        let sources: Vec<serde_json::Value> = (0..refs)
            .map(|i| {
                let f = i % files;
                serde_json::json!({"uri": format!("u{i}"), "sha256": digests[f], "path": format!("f{f}.txt")})
            })
            .collect();
        fs::write(
            b.join("bundle.json"),
            serde_json::json!({
                "bundle_version": 1, "run_id": uuid::Uuid::now_v7(), "title": name,
                "created_at": "2026-11-28T10:00:00Z", "sources": sources
            })
            .to_string(),
        )
        .unwrap();
        b
    };
    // 200 references to one 8 MiB file: 8 MiB read, within a 20 MB cap.
    let many = make("many.bundle", 1, 200);
    let out = bin.run(&["validate", many.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three distinct 8 MiB files: 24 MiB, over the cap.
    let three = make("three.bundle", 3, 3);
    let out = bin.run(&["validate", three.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("max_total_source_bytes"), "{err}");
}

// ---------------------------------------------------------------------
// 11. Attacker text never reaches the terminal raw.

#[test]
fn control_characters_from_bundles_handlers_and_names_are_shown_escaped() {
    let hostile = "T\u{1b}]0;pwned\u{7}\u{1b}[2J\rX\u{202e}";
    let script = "printf 'bad \\033[31mred\\007\\r' >&2; exit 65";
    let (d, bin) = Bin::init_with(&format!(
        "[handlers.evil]\ncommand = [\"sh\", \"-c\", {script:?}]\n[inbox]\nsettle = \"50ms\"\n"
    ));
    let mut b: serde_json::Value = serde_json::from_str(&bundle_text("evil", 1)).unwrap();
    b["title"] = hostile.into();
    let p = d.path().join("t.json");
    fs::write(&p, b.to_string()).unwrap();
    bin.ok(&["submit", p.to_str().unwrap()]);
    let _ = bin.run(&["serve", "--once", "--no-inbox"]);
    let run_id = b["run_id"].as_str().unwrap().to_owned();
    let job_id = bin.json(&["jobs"])[0]["id"].as_str().unwrap().to_owned();
    let raw = |bytes: &[u8]| bytes.iter().any(|&c| (c < 0x20 && c != b'\n') || c == 0x7f);
    for args in [
        vec!["runs"],
        vec!["jobs"],
        vec!["run", "show", &run_id],
        vec!["job", "show", &job_id],
    ] {
        let out = bin.run(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            !raw(&out.stdout),
            "{args:?}: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains('\u{202e}'),
            "{args:?}"
        );
    }
    let out = bin.run(&["runs"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("T\\e]0;pwned"));
    // A file name with an escape, in a refusal and in serve's log.
    let named = d.path().join("n\u{1b}[2J.json");
    fs::write(&named, "{").unwrap();
    let out = bin.run(&["validate", named.to_str().unwrap()]);
    assert!(
        !raw(&out.stderr),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop_in(&bin, "i\u{1b}[2J.json", "{");
    let mut serve = serve_logged(&bin, &[], "info");
    wait_until("the rejection", || {
        archived(&bin.home.join("rejected")).len() == 1
    });
    signal(serve.id(), "TERM");
    let _ = exits_within(&mut serve, Duration::from_secs(20), "serve");
    let log = stderr_of(serve);
    assert!(log.contains("Rejected"), "{log}");
    assert!(!raw(log.as_bytes()), "{log:?}");
}

// ---------------------------------------------------------------------
// 12. The small ones.

#[test]
fn an_oversize_inbox_file_is_reported_without_a_made_up_digest() {
    let (_d, bin) =
        Bin::init_with("[limits]\nmax_bundle_bytes = 100\n[inbox]\nsettle = \"50ms\"\n");
    common::age(&drop_in(
        &bin,
        "big.json",
        &bundle_text("process_bundle", 1),
    ));
    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["rejected"], 1, "{summary}");
    let rejected = archived(&bin.home.join("rejected"));
    let name = rejected[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("unhashed."), "{name}");
    let report: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(format!("{}.errors.json", rejected[0].display())).unwrap(),
    )
    .unwrap();
    assert!(report.get("sha256").is_none(), "{report}");
    assert!(
        !report.to_string().contains(&sha256_hex(b"")),
        "the empty input's digest is not a digest of this file: {report}"
    );
}

#[test]
fn bom_tiny_numbers_and_symlinked_paths_follow_clear_rules() {
    let (d, bin) = Bin::init_with("");
    let text = bundle_text("process_bundle", 1);
    let bom = d.path().join("bom.json");
    fs::write(&bom, [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat()).unwrap();
    let out = bin.run(&["validate", bom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("byte order mark"));
    for number in ["1e400", "1e-400", "-2.5e-320"] {
        let mut b: serde_json::Value = serde_json::from_str(&text).unwrap();
        b["metadata"] = serde_json::json!({ "x": 0 });
        let p = d.path().join("n.json");
        fs::write(
            &p,
            b.to_string().replace("\"x\":0", &format!("\"x\":{number}")),
        )
        .unwrap();
        let out = bin.run(&["validate", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{number}: {err}");
        assert!(err.contains("metadata.x"), "{number}: {err}");
    }
    // On the command line a symlink is followed, for files and folders
    // alike; the inbox follows none (tests/inbox.rs).
    let file = d.path().join("real.json");
    fs::write(&file, &text).unwrap();
    let folder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid/glacier-survey.bundle");
    std::os::unix::fs::symlink(&file, d.path().join("file-link.json")).unwrap();
    std::os::unix::fs::symlink(&folder, d.path().join("folder-link.bundle")).unwrap();
    for link in ["file-link.json", "folder-link.bundle"] {
        let out = bin.run(&["validate", d.path().join(link).to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{link}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs the binary as `nobody` when we are root (root ignores file modes);
/// as another user, as ourselves.
fn as_other_user(bin: &Bin, args: &[&str]) -> std::process::Output {
    other_user_command(bin, args).output().unwrap()
}

/// The command [`as_other_user`] runs, to start in the background.
fn other_user_command(bin: &Bin, args: &[&str]) -> Command {
    let root = rustix::process::geteuid().is_root();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(exe());
        c
    } else {
        Command::new(exe())
    };
    cmd.arg("--home").arg(&bin.home).args(args);
    cmd
}

#[test]
fn a_read_only_or_foreign_home_says_so_and_reading_still_works() {
    let root = rustix::process::geteuid().is_root();
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        println!("skipped: running as root without setpriv to drop privileges");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    bin.submit_all(&common::write_bundles(
        &dir.path().join("b"),
        "b",
        "process_bundle",
        3,
    ));
    // A processed run with a big text: its index is in a search shard,
    // which a reader that may not write must open too.
    let mut big = String::new();
    while big.len() < 200 * 1024 {
        big.push_str("ablation stakes read each spring ");
    }
    big.push_str("nunatak");
    let big = common::text_file_bundle(dir.path(), "big", &big);
    bin.ok(&["submit", big.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox", "--workers", "1"]);
    assert!(bin.home.join("bundleq.db.search0").exists());
    let p = common::write_bundles(&dir.path().join("c"), "c", "process_bundle", 1);
    fs::set_permissions(dir.path().join("c"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&p[0], fs::Permissions::from_mode(0o644)).unwrap();
    if root {
        // A home of another user: not even readable.
        let out = as_other_user(&bin, &["jobs"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("Permission denied"), "{err}");
        assert!(!err.contains("not a bundleq home"), "{err}");
    } else {
        println!("skipped the foreign-home case: it needs a second user (run as root)");
    }
    // A home this user may read but not write, whose objects' lock files
    // were never made (an earlier release): they cannot be made now.
    for lock in [".gate", ".lease"] {
        let _ = fs::remove_file(bin.home.join("objects/tmp").join(lock));
    }
    for p in walk(&bin.home).iter().chain([&bin.home]) {
        let mode = if p.is_dir() { 0o555 } else { 0o444 };
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }
    for sub in common_dirs(&bin.home) {
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o555)).unwrap();
    }
    for args in [
        vec!["jobs"],
        vec!["runs"],
        vec!["status"],
        vec!["db", "current"],
        vec!["tenants"],
        vec!["verify"],
        vec!["prune", "--dry-run"],
        vec!["prune", "--runs", "0s", "--dry-run"],
        vec!["search", "nunatak"],
        vec!["db", "check"],
    ] {
        let out = as_other_user(&bin, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(
            &as_other_user(&bin, &["--json", "jobs"]).stdout
        )
        .unwrap()
        .as_array()
        .unwrap()
        .len(),
        4
    );
    let found: serde_json::Value =
        serde_json::from_slice(&as_other_user(&bin, &["--json", "search", "nunatak"]).stdout)
            .unwrap();
    assert_eq!(found["total"], 1, "{found}");
    let out = as_other_user(&bin, &["submit", p[0].to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("read-only"), "{err}");
    // Its runs can be exported and the whole home backed up elsewhere.
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777)).unwrap();
    for args in [
        vec![
            "export",
            "--all",
            "--to",
            out_dir.join("export").to_str().unwrap(),
        ],
        vec!["backup", out_dir.join("backup").to_str().unwrap()],
    ] {
        let out = as_other_user(&bin, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(fs::read_dir(out_dir.join("export")).unwrap().count(), 4);
    // The backup's shard came along, read as the home's was.
    assert!(out_dir.join("backup/bundleq.db.search0").exists());
    // Its dashboard shows it and refuses every change, with a token that
    // lasts while it runs (none can be saved in the home).
    let mut web = other_user_command(&bin, &["--json", "web", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started: serde_json::Value =
        serde_json::from_str(&common::dash::first_line(&mut web)).unwrap();
    assert_eq!(started["read_only"], true, "{started}");
    let addr = started["listening"].as_str().unwrap().to_owned();
    let token = started["url"]
        .as_str()
        .unwrap()
        .rsplit('=')
        .next()
        .unwrap()
        .to_owned();
    let agent = common::dash::Dash::agent();
    let mut r = agent
        .get(format!("http://{addr}/api/v1/jobs"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let jobs: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 4);
    let mut r = agent
        .get(format!("http://{addr}/api/v1/search?q=nunatak"))
        .call()
        .unwrap();
    let found: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(found["total"], 1, "{found}");
    let r = agent
        .post(format!("http://{addr}/api/v1/bundles"))
        .header("Authorization", &format!("Bearer {token}"))
        .send(fs::read(&p[0]).unwrap())
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let _ = Bin::terminate(web);
    assert!(!bin.home.join("http-token").exists());
    // Give the temp dir back to us for its cleanup.
    for p in walk(&bin.home).iter().chain([&bin.home]) {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
    }
    for sub in common_dirs(&bin.home) {
        let _ = fs::set_permissions(&sub, fs::Permissions::from_mode(0o700));
    }
}

fn common_dirs(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![home.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn configuration_mistakes_are_one_line_errors_naming_the_key() {
    let (_d, bin) = Bin::init_with("");
    let cfg = bin.home.join("bundleq.toml");
    let cases: [(&str, &str); 9] = [
        (
            "[workers]\ncount = 2\ncount = 3\n",
            "duplicate key `count` in [workers]",
        ),
        (
            "[handlers.process_bundle]\ncommand = [\"true\"]\n",
            "built in",
        ),
        (
            "[handlers.\"Bad Name\"]\ncommand = [\"true\"]\n",
            "job type",
        ),
        ("[inbox]\nsettle = \"0s\"\n", "inbox.settle"),
        ("[queue]\nbackoff_base = \"0s\"\n", "queue.backoff_base"),
        (
            "[database]\nbusy_timeout = \"0s\"\n",
            "database.busy_timeout",
        ),
        ("[queue]\nlock_timeout = \"0s\"\n", "queue.lock_timeout"),
        (
            "[handlers.x]\ncommand = [\"true\"]\n[handlers.x]\ncommand = [\"true\"]\n",
            "duplicate table [handlers.x]",
        ),
        (
            "[limits]\nmax_total_source_bytes = 0\n",
            "max_total_source_bytes",
        ),
    ];
    for (text, words) in cases {
        fs::write(&cfg, text).unwrap();
        let out = bin.run(&["status"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(words), "{text}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A missing handler program is found when serve starts.
    fs::write(&cfg, "[handlers.x]\ncommand = [\"no-such-program-here\"]\n").unwrap();
    let out = bin.run(&["serve", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("handlers.x.command") && err.contains("not found"),
        "{err}"
    );
    let plain = bin.home.join("plain-file");
    fs::write(&plain, "echo hi").unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(
        &cfg,
        format!(
            "[handlers.x]\ncommand = [{:?}]\n",
            plain.display().to_string()
        ),
    )
    .unwrap();
    let out = bin.run(&["serve", "--once"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not executable"));
    // The file is read bounded: a FIFO does not hang, a huge file is refused.
    fs::remove_file(&cfg).unwrap();
    assert!(Command::new("mkfifo").arg(&cfg).status().unwrap().success());
    let out = bin.run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    fs::remove_file(&cfg).unwrap();
    fs::write(&cfg, "#".repeat(2 * 1024 * 1024)).unwrap();
    let out = bin.run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 1048576 bytes"));
    fs::remove_file(&cfg).unwrap();
    // Zero where it makes no sense, on the command line too.
    let out = bin.run(&["serve", "--once", "--lock-timeout", "0s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock_timeout"));
}

#[test]
fn init_makes_every_folder_private_and_objects_0600() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = Bin::new(&home);
    bin.ok(&["init"]);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("bundleq.toml")), 0o600);
    let inline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid/inline-content.json");
    let folder = common::file_bundle(dir.path(), "big", 200 * 1024);
    bin.ok(&["submit", inline.to_str().unwrap(), folder.to_str().unwrap()]);
    let objects = walk(&home.join("objects"));
    assert!(!objects.is_empty());
    for o in &objects {
        assert_eq!(mode(o), 0o600, "{}", o.display());
    }
    for d in common_dirs(&home) {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
}

// ---------------------------------------------------------------------
// 13. Tenants are explicit.

#[test]
fn unknown_and_nil_tenants_are_refused_and_tenants_can_be_listed_and_created() {
    let (d, bin) = Bin::init_with("");
    let list = bin.json(&["tenants"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "default");
    for bad in [
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::nil().to_string(),
        "lab-typo".to_owned(),
    ] {
        for args in [vec!["jobs"], vec!["runs"], vec!["status"]] {
            let mut all = vec!["--tenant", bad.as_str()];
            all.extend_from_slice(&args);
            let out = bin.run(&all);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{all:?}: {err}");
            assert!(
                err.contains("unknown tenant") && err.contains("tenants create"),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    let made = bin.json(&["tenants", "create", "lab-a"]);
    let id = made["id"].as_str().unwrap().to_owned();
    let p = common::write_bundles(&d.path().join("b"), "b", "process_bundle", 1);
    bin.ok(&["--tenant", "lab-a", "submit", p[0].to_str().unwrap()]);
    assert_eq!(
        bin.json(&["--tenant", &id, "runs"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(bin.json(&["runs"]).as_array().unwrap().len(), 0);
    for (args, words) in [
        (vec!["tenants", "create", "lab-a"], "already exists"),
        (vec!["tenants", "create", "Lab A"], "invalid tenant name"),
        (
            vec![
                "tenants",
                "create",
                "x",
                "--id",
                "00000000-0000-0000-0000-000000000000",
            ],
            "nil",
        ),
    ] {
        let out = bin.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
    let names: HashMap<String, String> = bin
        .json(&["tenants"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(names["lab-a"], id);
}

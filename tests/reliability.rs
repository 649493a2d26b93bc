//! Reliability proofs on the real binary: a crash loop with a history
//! checker, a poison job, four serve processes on one home, a full disk.
//! Part of the conformance suite: every test runs on every backend.
//! `BUNDLEQ_LONG_TESTS=1` runs the long forms (1,000 crash cycles).

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bundleq::store::JobFilter;
use common::{Backend, Bin, archived, wait_until, write_bundles};

fn long() -> bool {
    std::env::var("BUNDLEQ_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// A small deterministic generator for crash timings (no rand crate).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (id, status, attempts, max_attempts) of every job of the home's
/// default tenant, read through the library.
/// Every job: id, status, attempts, max_attempts, job type, run.
fn job_rows(bin: &Bin) -> Vec<(String, String, i64, i64, String, String)> {
    let tenant = bin.tenant();
    bin.store()
        .jobs(tenant, &JobFilter::default())
        .unwrap()
        .into_iter()
        .map(|j| {
            (
                j.id.to_string(),
                j.status.to_string(),
                i64::from(j.attempts),
                i64::from(j.max_attempts),
                j.job_type,
                j.run_id.to_string(),
            )
        })
        .collect()
}

/// Runs `serve --once` until nothing is queued or running (locks of killed
/// serves expire after the short lock timeout).
fn drain(bin: &Bin, extra: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut args = vec!["serve", "--once", "--lock-timeout", "1s", "--no-inbox"];
        args.extend_from_slice(extra);
        let out = bin.run(&args);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let open = bin
            .json(&["jobs", "--status", "running", "--limit", "1"])
            .as_array()
            .unwrap()
            .len()
            + bin
                .json(&["jobs", "--status", "queued", "--limit", "1"])
                .as_array()
                .unwrap()
                .len();
        if open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "jobs never drained");
        // Let the dead serves' locks expire.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

#[expect(clippy::print_stdout, reason = "the crash loop reports what it did")]
fn crash_loop_loses_nothing_and_never_runs_a_job_more_than_its_attempts(b: Backend) {
    let cycles = if long() { 1000 } else { 50 };
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    let script = format!(
        "echo \"$BUNDLEQ_JOB_ID $BUNDLEQ_ATTEMPT\" >> {l} && sync {l}",
        l = ledger.display()
    );
    let (_d, bin) = b.init_with(&format!(
        "[handlers.ledger]\ncommand = [\"sh\", \"-c\", {script:?}]\n[workers]\npoll_interval = \"50ms\"\n[inbox]\nsettle = \"100ms\"\n"
    ));
    let submitted = write_bundles(&dir.path().join("submit"), "s", "ledger", 2000);
    bin.submit_all(&submitted);
    let mut total = 2000 + 200;
    let drops = write_bundles(&dir.path().join("drops"), "d", "ledger", 200);
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    let mut next_drop = 0;
    for cycle in 0..cycles {
        // Feed the inbox while serves come and go.
        for _ in 0..10 {
            if next_drop < drops.len() {
                let p = &drops[next_drop];
                fs::rename(p, bin.home.join("inbox").join(p.file_name().unwrap())).unwrap();
                next_drop += 1;
            }
        }
        // Past the first 50 cycles (the long run), keep work coming so that
        // every cycle kills a busy serve.
        if cycle >= 50 {
            let more = write_bundles(&dir.path().join(format!("more{cycle}")), "m", "ledger", 20);
            bin.submit_all(&more);
            total += 20;
        }
        let mut serve = bin.serve(&["--lock-timeout", "1s"], false);
        // Anywhere from start-up (mid-claim, mid-ingest) to deep in a batch.
        let alive = if cycle % 10 == 9 {
            1000
        } else {
            20 + rng.below(300)
        };
        std::thread::sleep(Duration::from_millis(alive));
        serve.kill().unwrap(); // SIGKILL
        serve.wait().unwrap();
    }
    // Whatever is left in the inbox, then every job.
    let out = bin.run(&["ingest"]);
    assert!(out.status.success());
    drain(&bin, &[]);

    // History checker.
    let mut starts: HashMap<String, i64> = HashMap::new();
    for line in fs::read_to_string(&ledger).unwrap_or_default().lines() {
        let id = line.split_whitespace().next().unwrap().to_owned();
        *starts.entry(id).or_default() += 1;
    }
    let jobs = job_rows(&bin);
    // Every run's steps, each exactly once: process_bundle, then — if it
    // succeeded — the bundle's own `ledger` step. (A process_bundle job
    // killed with its serve at each of its attempts fails for good and
    // stops its run's pipeline: lost attempts count.)
    let first_steps = jobs.iter().filter(|j| j.4 == "process_bundle").count();
    let first_done = jobs
        .iter()
        .filter(|j| j.4 == "process_bundle" && j.1 == "succeeded")
        .count();
    assert_eq!(first_steps, total, "one process_bundle job per bundle");
    assert_eq!(
        jobs.len(),
        total + first_done,
        "a ledger step for each run whose process_bundle succeeded"
    );
    let mut steps: HashMap<(&str, &str), usize> = HashMap::new();
    for (_, _, _, _, job_type, run) in &jobs {
        *steps.entry((run.as_str(), job_type.as_str())).or_default() += 1;
    }
    assert_eq!(steps.len(), jobs.len(), "a step queued twice for one run");
    let mut lost = 0;
    let mut reruns = 0;
    for (id, status, attempts, max, job_type, _) in &jobs {
        let finished = status == "succeeded" || (status == "failed" && attempts == max);
        if !finished {
            lost += 1;
        }
        assert!(attempts <= max, "job {id}: {attempts} attempts of {max}");
        let n = starts.get(id).copied().unwrap_or(0);
        assert!(
            n <= *attempts,
            "job {id}: handler started {n} times in {attempts} attempts"
        );
        if status == "succeeded" && job_type == "ledger" {
            assert!(n >= 1, "job {id} succeeded without its handler running");
        }
        reruns += (n - 1).max(0);
    }
    assert_eq!(lost, 0);
    assert_eq!(
        common::unfinished(&bin.home),
        0,
        "inbox or claims left non-empty"
    );
    assert_eq!(archived(&bin.home.join("accepted")).len(), 200);
    assert_eq!(bin.integrity(), "ok");
    println!(
        "crash loop: {cycles} cycles, {} jobs, lost 0, handler re-runs after a crash {reruns}",
        jobs.len()
    );
}

fn a_poison_job_that_kills_its_serve_fails_after_max_attempts_and_the_rest_succeed(b: Backend) {
    let (d, bin) = b.init_with(concat!(
        // The handler's parent is its guard; the guard's parent is serve.
        "[handlers.poison]\ncommand = [\"sh\", \"-c\", \"read -r _ _ _ serve _ < /proc/$PPID/stat; kill -9 $serve\"]\n",
        "[handlers.fine]\ncommand = [\"true\"]\n",
        "[workers]\nprefetch = 0\n",
    ));
    let poison = write_bundles(&d.path().join("p"), "p", "poison", 1);
    bin.submit_all(&poison);
    let fine = write_bundles(&d.path().join("f"), "f", "fine", 10);
    bin.submit_all(&fine);
    let mut deaths = 0;
    for _ in 0..20 {
        let out = bin.run(&[
            "serve",
            "--once",
            "--lock-timeout",
            "1s",
            "--no-inbox",
            "--workers",
            "1",
        ]);
        match out.status.code() {
            None => deaths += 1, // killed by its poison job
            Some(0 | 3) => {}
            other => panic!("serve exited with {other:?}"),
        }
        let open = bin
            .json(&["jobs", "--status", "running"])
            .as_array()
            .unwrap()
            .len()
            + bin
                .json(&["jobs", "--status", "queued"])
                .as_array()
                .unwrap()
                .len();
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(deaths, 3, "one death per attempt, then no more");
    let p = &bin.json(&["jobs", "--type", "poison"])[0];
    assert_eq!(
        (p["status"].as_str(), p["attempts"].as_u64()),
        (Some("failed"), Some(3))
    );
    assert!(
        p["last_error"]
            .as_str()
            .unwrap()
            .contains("during attempt 3/3"),
        "{p}"
    );
    let fine = bin.json(&["jobs", "--type", "fine"]);
    assert!(
        fine.as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "succeeded"),
        "{fine:#}"
    );
}

fn four_serves_share_a_home_without_busy_errors_or_double_claims(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    let (_d, bin) = b.init_with(&common::ledger_config(&ledger));
    let serves: Vec<Child> = (0..4).map(|_| bin.serve(&["--no-inbox"], true)).collect();
    let paths = write_bundles(&dir.path().join("b"), "b", "ledger", 2000);
    for chunk in paths.chunks(500) {
        bin.submit_all(chunk);
    }
    // Each bundle's two steps: process_bundle, then its ledger step.
    wait_until("4000 jobs to succeed", || {
        bin.json(&["status"])["counts"]["succeeded"] == 4000
    });
    common::stop_quietly(serves);
    common::assert_each_ran_once(&ledger, 2000);
}

/// A size-limited tmpfs, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    /// Mounts an 8 MiB tmpfs, or says why it cannot.
    fn mount(at: &Path) -> Result<SmallFs, String> {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(SmallFs(at.to_owned()))
        } else {
            Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes until the filesystem is full; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join(".filler");
    let mut f = fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    filler
}

/// Mounting a filesystem needs root: without `CI=true` at build time the
/// test is reported as ignored, with this reason; under `CI=true` it runs
/// and a failure to mount fails it.
fn a_full_disk_gives_clear_errors_moves_nothing_and_serve_recovers(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    let _fs = SmallFs::mount(&mnt).unwrap_or_else(|why| {
        panic!("the full-disk test needs a small tmpfs (run as root): {why}")
    });
    let bin = b.init_in(
        &mnt,
        "[workers]\npoll_interval = \"50ms\"\n[inbox]\nsettle = \"100ms\"\nrescan_interval = \"500ms\"\n",
    );
    // Bundles wait on the same filesystem, under a name the inbox ignores.
    let staged = write_bundles(&bin.home.join("inbox/.staged"), "x", "process_bundle", 20);
    let mut serve = bin.serve(&[], true);
    let log = common::LogTail::of(&mut serve);
    // Wait until serve is up (a serve that cannot even start on a full
    // disk exits 1 with a clear error instead).
    wait_until("serve to start its pool", || {
        !bin.json(&["status"])["serves"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let filler = fill(&mnt);
    for p in &staged {
        fs::rename(p, bin.home.join("inbox").join(p.file_name().unwrap())).unwrap();
    }
    // Serve tries to ingest on the full disk, and says why it cannot.
    log.wait_for("full");
    // What it claimed it gives back: every entry is in the inbox again
    // (or still claimed), none archived, none lost.
    let in_inbox = || {
        fs::read_dir(bin.home.join("inbox"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count()
    };
    wait_until("the failed claims to be given back", || in_inbox() == 20);
    for outcome in ["accepted", "rejected"] {
        assert!(
            archived(&bin.home.join(outcome)).is_empty(),
            "nothing may be archived while the disk is full"
        );
    }
    if let Some(status) = serve.try_wait().unwrap() {
        panic!(
            "serve must keep running; it exited {status}: {}",
            log.text()
        );
    }
    fs::remove_file(&filler).unwrap();
    wait_until("serve to recover after space returned", || {
        bin.jobs_with(bundleq::JobStatus::Succeeded) == 20
    });
    Bin::terminate(serve);
    let stderr = log.text();
    assert!(stderr.lines().all(|l| !l.contains("panicked")), "{stderr}");
    assert_eq!(archived(&bin.home.join("accepted")).len(), 20);
    assert_eq!(bin.integrity(), "ok");
}

for_each_backend!(
    crash_loop_loses_nothing_and_never_runs_a_job_more_than_its_attempts,
    a_poison_job_that_kills_its_serve_fails_after_max_attempts_and_the_rest_succeed,
    four_serves_share_a_home_without_busy_errors_or_double_claims,
);

/// The home's disk is the database's only on SQLite: on PostgreSQL the
/// database lives on the server's disk, which a test cannot fill without
/// filling it for every other test.
#[test]
#[cfg_attr(
    not(bundleq_ci),
    ignore = "mounts a small tmpfs, which needs root: runs when built with CI=true"
)]
fn sqlite_a_full_disk_gives_clear_errors_moves_nothing_and_serve_recovers() {
    a_full_disk_gives_clear_errors_moves_nothing_and_serve_recovers(Backend::Sqlite);
}

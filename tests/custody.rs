//! Research data you can prove, on the real binary: `verify` finds damaged,
//! missing and orphaned objects; `export` gives back what was accepted;
//! `backup` copies a working home; `prune` never removes an object a run
//! needs, however it races with submits, and cleans up after a killed one.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bundleq::digest::Sha256Hex;
use common::{Backend, Bin, file_bundle, wait_until};

/// The object file of a digest in a home.
fn object_path(home: &Path, sha: &str) -> PathBuf {
    home.join("objects").join(&sha[..2]).join(&sha[2..])
}

/// The run id and source digest of a bundle folder written by `file_bundle`.
fn run_and_sha(folder: &Path) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(folder.join("bundle.json")).unwrap()).unwrap();
    (
        v["run_id"].as_str().unwrap().to_owned(),
        v["sources"][0]["sha256"].as_str().unwrap().to_owned(),
    )
}

fn valid_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid")
}

fn problems(report: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .cloned()
        .collect()
}

fn verify_json(bin: &Bin, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json", "verify"];
    all.extend_from_slice(args);
    let out = bin.run(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// A home on backend `b` holding one bundle folder whose file (`size`
/// bytes, more than the database keeps) is an object file, and, with
/// `fixtures`, the shipped valid bundles.
struct Seeded {
    /// Temp folder for bundles, exports and backups (kept alive).
    dir: tempfile::TempDir,
    _home: tempfile::TempDir,
    bin: Bin,
    /// The bundle folder submitted.
    big: PathBuf,
    /// Its run id and its file's digest.
    run: String,
    sha: String,
}

fn seeded(b: Backend, size: usize, fixtures: bool) -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let (home, bin) = b.init_with("");
    let big = file_bundle(dir.path(), "big", size);
    let (run, sha) = run_and_sha(&big);
    let mut paths = vec![big.clone()];
    if fixtures {
        paths.push(valid_fixtures());
    }
    bin.submit_all(&paths);
    Seeded {
        dir,
        _home: home,
        bin,
        big,
        run,
        sha,
    }
}

#[test]
fn a_flipped_byte_is_named_with_its_source_and_run_and_exits_1() {
    let Seeded {
        dir: _dir,
        _home,
        bin,
        big: _big,
        run,
        sha,
    } = seeded(Backend::Sqlite, 300_000, true);
    let (code, clean) = verify_json(&bin, &[]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["full"], true);
    assert!(clean["objects_checked"].as_u64().unwrap() >= 2, "{clean}");

    let path = object_path(&bin.home, &sha);
    let mut bytes = fs::read(&path).unwrap();
    bytes[1000] ^= 0x01;
    let mut perms = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, &bytes).unwrap();

    let out = bin.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("corrupt"))
        .unwrap_or_else(|| panic!("no corrupt line:\n{text}"));
    assert!(line.contains(&sha), "{line}");
    assert!(line.contains(&run[..8]), "{line}");
    assert!(line.contains("file:big.txt"), "{line}");
    assert!(text.contains("1 corrupt"), "{text}");

    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 1);
    let corrupt = problems(&report, "corrupt");
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["sha256"], sha.as_str());
    assert_eq!(corrupt[0]["place"], "file");
    assert_eq!(corrupt[0]["sources"][0]["run_id"], run.as_str());
    assert_eq!(corrupt[0]["sources"][0]["idx"], 0);
    // `--run` of another run does not see it; of this run it does.
    let (code, _) = verify_json(&bin, &["--run", "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a14"]);
    assert_eq!(code, 0);
    let (code, report) = verify_json(&bin, &["--run", &run]);
    assert_eq!((code, report["full"].as_bool()), (1, Some(false)));
    // run show says what the last check found.
    let shown = bin.json(&["run", "show", &run]);
    assert_eq!(shown["sources"][0]["stored"], "file");
    assert_eq!(shown["sources"][0]["check_ok"], false, "{shown}");
    // status shows the last full verification and what it found.
    let status = bin.json(&["status"]);
    assert_eq!(status["last_full_verify"]["problems"], 1, "{status}");
}

#[test]
fn a_deleted_object_is_missing_and_export_of_its_run_fails_leaving_nothing() {
    let Seeded {
        dir,
        _home,
        bin,
        big: _big,
        run,
        sha,
    } = seeded(Backend::Sqlite, 200_000, false);
    fs::remove_file(object_path(&bin.home, &sha)).unwrap();
    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 1);
    let missing = problems(&report, "missing");
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["sha256"], sha.as_str());
    assert_eq!(missing[0]["sources"][0]["run_id"], run.as_str());
    let text = String::from_utf8_lossy(&bin.run(&["verify"]).stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("missing") && l.contains(&sha)),
        "{text}"
    );

    let out = dir.path().join("out");
    let exported = bin.run(&["export", &run, "--to", out.to_str().unwrap()]);
    assert_eq!(exported.status.code(), Some(1));
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "a failed export leaves nothing behind"
    );
}

#[test]
fn an_unreferenced_object_is_orphaned_and_repair_removes_it() {
    let (_d, bin) = Bin::init_with("");
    bin.submit_all(&[valid_fixtures()]);
    let stray = b"bytes that no run names".repeat(10_000);
    let sha = Sha256Hex::of(&stray).to_string();
    let path = object_path(&bin.home, &sha);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &stray).unwrap();
    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 1);
    let orphaned = problems(&report, "orphaned");
    assert_eq!(orphaned.len(), 1, "{report}");
    assert_eq!(orphaned[0]["sha256"], sha.as_str());
    assert_eq!(orphaned[0]["repaired"], false);
    assert!(path.exists(), "verify alone removes nothing");
    let (code, report) = verify_json(&bin, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(problems(&report, "orphaned")[0]["repaired"], true);
    assert!(!path.exists());
    assert_eq!(verify_json(&bin, &[]).0, 0);
}

/// Export, then submit the export into a fresh home: same run ids, same
/// bundle sha256, the same source bytes; `bundle.json` byte for byte.
fn export_round_trip_is_byte_identical(b: Backend) {
    let Seeded {
        dir,
        _home,
        bin,
        big,
        run,
        sha,
    } = seeded(b, 300_000, true);
    let big_run = run;
    let big_sha = sha;
    // A bundle whose sources give `content` before `sha256` (as writers that
    // sort keys do): each text's digest is found after the place it was
    // cut from.
    let sorted_run = "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a99";
    let sources: Vec<String> = (0..3)
        .map(|i| {
            let text =
                format!("Sorted source {i}: ice cores from the saddle, é, \"quoted\". ").repeat(3);
            format!(
                r#"{{"content": {}, "sha256": "{}", "uri": "https://example.org/sorted/{i}"}}"#,
                serde_json::Value::from(text.as_str()),
                Sha256Hex::of(text.as_bytes())
            )
        })
        .collect();
    let sorted = format!(
        r#"{{"bundle_version": 1, "created_at": "2026-11-28T10:00:00Z", "run_id": "{sorted_run}", "sources": [{}], "title": "Sorted keys"}}"#,
        sources.join(", ")
    );
    let sorted_path = dir.path().join("sorted.json");
    fs::write(&sorted_path, &sorted).unwrap();
    bin.submit_all(&[sorted_path]);
    let out = dir.path().join("export");
    let lines = bin.json_lines(&["export", "--all", "--to", out.to_str().unwrap()]);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines.iter().all(|l| l["already"] == false), "{lines:?}");

    // bundle.json is the bytes accepted; every file is there, verbatim.
    let folder = |run: &str| out.join(format!("{run}.bundle"));
    assert_eq!(
        fs::read(folder(&big_run).join("bundle.json")).unwrap(),
        fs::read(big.join("bundle.json")).unwrap()
    );
    assert_eq!(
        fs::read(folder(&big_run).join("big.txt")).unwrap(),
        fs::read(big.join("big.txt")).unwrap()
    );
    let glacier = valid_fixtures().join("glacier-survey.bundle");
    let glacier_out = folder("0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a14");
    for f in ["bundle.json", "report.txt", "data/transect.csv"] {
        assert_eq!(
            fs::read(glacier_out.join(f)).unwrap(),
            fs::read(glacier.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        fs::read(folder(sorted_run).join("bundle.json")).unwrap(),
        sorted.as_bytes()
    );
    for plain in ["full", "inline-content", "minimal"] {
        let original = fs::read(valid_fixtures().join(format!("{plain}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&original).unwrap();
        let run = v["run_id"].as_str().unwrap();
        assert_eq!(
            fs::read(folder(run).join("bundle.json")).unwrap(),
            original,
            "{plain}"
        );
    }

    // Into a fresh home: the same runs, bundles and sources.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = b.init_in(fresh_dir.path(), "");
    fresh.submit_all(std::slice::from_ref(&out));
    let runs = |bin: &Bin| {
        let mut v: Vec<(String, String)> = bin
            .json(&["runs"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["bundle_sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(runs(&bin), runs(&fresh));
    let sources = |bin: &Bin, run: &str| bin.json(&["run", "show", run])["sources"].clone();
    assert_eq!(sources(&bin, &big_run), sources(&fresh, &big_run));
    assert_eq!(
        sources(&fresh, &big_run)[0]["sha256"],
        big_sha.as_str(),
        "the file's bytes came along"
    );
    assert_eq!(verify_json(&fresh, &[]).0, 0);

    // Again into the same folder: an earlier export is left as it is.
    let again = bin.json_lines(&["export", &big_run, "--to", out.to_str().unwrap()]);
    assert_eq!(again[0]["already"], true, "{again:?}");
    // A folder of that name that is not the run's export is refused.
    fs::write(folder(&big_run).join("bundle.json"), b"{}").unwrap();
    let refused = bin.run(&["export", &big_run, "--to", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        fs::read(folder(&big_run).join("bundle.json")).unwrap(),
        b"{}"
    );
}

/// `prune --runs` removes old runs whose jobs have all finished (with
/// their jobs, sources and index entries) and then their objects; a run
/// with a queued job stays, and `--dry-run` changes nothing.
fn prune_runs_takes_finished_runs_and_then_their_objects(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = b.init_with("");
    let big = file_bundle(dir.path(), "big", 300_000);
    bin.submit_all(&[big, valid_fixtures()]);
    bin.ok(&["serve", "--once"]);
    assert!(bin.json(&["search", "glacier"])["total"].as_u64().unwrap() > 0);
    // One more run whose job waits (scheduled later): it must stay.
    let late = tempfile::tempdir().unwrap();
    let waiting = common::write_bundles(late.path(), "late", "process_bundle", 1);
    bin.ok(&["submit", "--not-before", "1h", waiting[0].to_str().unwrap()]);
    let objects_before = verify_json(&bin, &[]).1["objects_stored"].as_u64().unwrap();
    assert!(objects_before >= 6);

    let dry = bin.json(&["prune", "--runs", "0s", "--dry-run"]);
    assert_eq!(dry["runs"].as_array().unwrap().len(), 5, "{dry}");
    assert_eq!(bin.runs_total(), 6, "a dry run deletes nothing");

    let pruned = bin.json(&["prune", "--runs", "0s"]);
    assert_eq!(pruned["runs"].as_array().unwrap().len(), 5, "{pruned}");
    assert_eq!(bin.runs_total(), 1);
    assert_eq!(bin.jobs_total(), 1, "the pruned runs' jobs went with them");
    let removed = pruned["objects"]["database"].as_array().unwrap().len()
        + pruned["objects"]["files"].as_array().unwrap().len();
    assert_eq!(removed as u64, objects_before, "{pruned}");
    assert_eq!(bin.json(&["search", "glacier"])["total"], 0);
    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["objects_stored"], 0);
    assert_eq!(bin.integrity(), "ok");
}

for_each_backend!(
    export_round_trip_is_byte_identical,
    prune_runs_takes_finished_runs_and_then_their_objects,
);

#[test]
fn a_backup_taken_while_serve_works_holds_every_run_committed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = Bin::init_with("[workers]\npoll_interval = \"20ms\"\n");
    let first = common::write_bundles(&dir.path().join("a"), "a", "process_bundle", 1000);
    let mut paths: Vec<PathBuf> = first.clone();
    for i in 0..5 {
        paths.push(file_bundle(dir.path(), &format!("big{i}"), 150_000 + i));
    }
    bin.submit_all(&paths);
    let serve = bin.serve(&["--workers", "4"], false);
    // Work is under way, and more keeps arriving while the backup runs.
    wait_until("serve to have finished some jobs", || {
        bin.jobs_with(bundleq::JobStatus::Succeeded) > 50
    });
    let more = common::write_bundles(&dir.path().join("b"), "b", "process_bundle", 300);
    let home = bin.home.clone();
    let submitter = std::thread::spawn(move || {
        let bin = Bin::new(&home);
        for chunk in more.chunks(30) {
            bin.submit_all(chunk);
        }
    });
    let before: Vec<String> = bin
        .json(&["runs", "--limit", "100000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let dest = dir.path().join("backup");
    let report = bin.json(&["backup", dest.to_str().unwrap()]);
    submitter.join().unwrap();
    assert_eq!(
        report["verify"]["problems"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert_eq!(report["objects_copied"], 5, "{report}");

    let copy = Bin::new(&dest);
    let (code, checked) = verify_json(&copy, &[]);
    assert_eq!(code, 0, "{checked}");
    copy.ok(&["status"]);
    let held: std::collections::HashSet<String> = copy
        .json(&["runs", "--limit", "100000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(before.len() >= 1005);
    for run in &before {
        assert!(
            held.contains(run),
            "run {run} committed before the backup is missing from it"
        );
    }
    assert_eq!(copy.integrity(), "ok");

    // Again into the same folder: only what is new is copied.
    let extra = file_bundle(dir.path(), "extra", 170_000);
    bin.submit_all(&[extra]);
    let second = bin.json(&["backup", dest.to_str().unwrap()]);
    assert_eq!(second["objects_copied"], 1, "{second}");
    assert_eq!(second["objects_kept"], 5, "{second}");
    common::stop_quietly(vec![serve]);

    // The backup is a home of its own, never pointing at the original.
    assert!(
        !fs::read_to_string(dest.join("bundleq.toml"))
            .unwrap()
            .contains("path =")
    );
    for private in ["bundleq.db", "bundleq.toml"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dest.join(private)).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o777,
            0o600,
            "{private} must be as private as the home's"
        );
    }
}

#[test]
fn a_backup_refuses_the_home_itself_and_a_folder_that_is_not_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = Bin::init_with("");
    let inside = bin.home.join("objects").join("copy");
    assert_eq!(
        bin.run(&["backup", inside.to_str().unwrap()]).status.code(),
        Some(1)
    );
    assert_eq!(
        bin.run(&["backup", bin.home.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    let busy = dir.path().join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("thesis.tex"), "precious").unwrap();
    let out = bin.run(&["backup", busy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1, "nothing written");
}

/// Bundle folders whose object files are already in the home as orphans
/// (a run that named them was pruned): a submit finds them there and does
/// not store them again, so a sweep between that moment and the submit's
/// commit would leave the new runs without their bytes.
fn orphan_ready_bundles(dir: &Path, bin: &Bin, round: usize, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let folder = file_bundle(dir, &format!("r{round}-{i}"), 140_000 + round * 100 + i);
            let (_, sha) = run_and_sha(&folder);
            let target = object_path(&bin.home, &sha);
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::copy(folder.join("big.txt"), &target).unwrap();
            folder
        })
        .collect()
}

#[test]
fn prune_racing_submits_never_removes_an_object_a_run_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = Bin::init_with("");
    let rounds = 25;
    for round in 0..rounds {
        let bundles = orphan_ready_bundles(dir.path(), &bin, round, 12);
        bin.while_pruning(|| bin.submit_all(&bundles));
        let missing = bin.missing_objects();
        assert!(
            missing.is_empty(),
            "round {round}: a prune removed objects that submitted runs need: {missing:?}"
        );
    }
    assert_eq!(bin.runs_total(), (rounds * 12) as u64);
    assert_eq!(verify_json(&bin, &[]).0, 0);
}

#[test]
fn a_submit_killed_after_storing_objects_leaves_nothing_behind_the_next_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = Bin::init_with("");
    let bundles: Vec<PathBuf> = (0..200)
        .map(|i| file_bundle(dir.path(), &format!("k{i}"), 140_000 + i))
        .collect();
    let mut child = Command::new(common::exe())
        .arg("--home")
        .arg(&bin.home)
        .arg("submit")
        .args(&bundles)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has stored objects (each bundle's file is one), and
    // before it committed their runs (256 bundles share a transaction).
    wait_until("the submit to store objects", || {
        bin.home.join("objects").read_dir().is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name().len() == 2
                    && e.path().read_dir().is_ok_and(|mut f| f.next().is_some())
            })
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(bin.runs_total(), 0, "killed before its commit");
    let stored = verify_json(&bin, &[]).1;
    assert!(!problems(&stored, "orphaned").is_empty(), "{stored}");

    let pruned = bin.json(&["prune"]);
    assert!(
        !pruned["objects"]["files"].as_array().unwrap().is_empty(),
        "{pruned}"
    );
    assert!(
        pruned["objects"]["staging_folders"].as_u64().unwrap() >= 1,
        "the killed submit's staging folders go too: {pruned}"
    );
    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["objects_stored"], 0);
    let staging: Vec<_> = fs::read_dir(bin.home.join("objects/tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stage-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");

    // Submitting the same bundles now stores everything again.
    bin.submit_all(&bundles[..10]);
    assert_eq!(verify_json(&bin, &[]).0, 0);
}

#[test]
fn a_symlink_or_a_folder_in_an_objects_place_is_reported_never_followed() {
    let Seeded {
        dir,
        _home,
        bin,
        big: _big,
        run,
        sha,
    } = seeded(Backend::Sqlite, 300_000, false);
    let path = object_path(&bin.home, &sha);
    let secret = dir.path().join("secret.txt");
    fs::write(&secret, "private words").unwrap();
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();

    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 1);
    let corrupt = problems(&report, "corrupt");
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["sources"][0]["run_id"], run.as_str());
    assert!(
        corrupt[0]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be read"),
        "{report}"
    );
    // A backup copies nothing through it, and says the copy lacks it.
    let dest = dir.path().join("backup");
    let out = bin.run(&["--json", "backup", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let backup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(problems(&backup["verify"], "missing").len(), 1, "{backup}");
    assert!(!object_path(&dest, &sha).exists());
    // prune keeps what a run names, and never touches the link's target.
    bin.ok(&["prune"]);
    assert!(fs::symlink_metadata(&path).is_ok());
    assert_eq!(fs::read_to_string(&secret).unwrap(), "private words");

    // A folder in its place is as damaged.
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let (code, report) = verify_json(&bin, &[]);
    assert_eq!(code, 1);
    assert_eq!(problems(&report, "corrupt").len(), 1, "{report}");
}

#[test]
fn a_linked_backup_shares_the_homes_object_files_and_verifies() {
    use std::os::unix::fs::MetadataExt;
    let Seeded {
        dir,
        _home,
        bin,
        big: _big,
        run,
        sha,
    } = seeded(Backend::Sqlite, 200_000, true);
    let _ = run;
    let dest = dir.path().join("linked");
    let report = bin.json(&["backup", "--link", dest.to_str().unwrap()]);
    assert_eq!(report["objects_linked"], 1, "{report}");
    assert_eq!(report["objects_copied"], 0, "{report}");
    let (home_file, copy_file) = (object_path(&bin.home, &sha), object_path(&dest, &sha));
    assert_eq!(
        fs::metadata(&home_file).unwrap().ino(),
        fs::metadata(&copy_file).unwrap().ino(),
        "one file, two names"
    );
    assert_eq!(verify_json(&Bin::new(&dest), &[]).0, 0);
    // Removing it from the home (a prune) leaves the backup whole.
    fs::remove_file(&home_file).unwrap();
    assert_eq!(verify_json(&Bin::new(&dest), &[]).0, 0);
}

#[test]
fn objects_that_cannot_be_locked_stop_a_submit_with_one_line_and_record_nothing() {
    let (_d, bin) = Bin::init_with("");
    let tmp = bin.home.join("objects/tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    fs::write(&tmp, "not a folder").unwrap();
    let out = bin.run(&["submit", valid_fixtures().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("objects/tmp"), "{err}");
    assert_eq!(bin.runs_total(), 0);
}

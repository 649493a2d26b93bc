//! Every fixture under fixtures/bundles gets its expected verdict and error
//! paths; the JSON Schema agrees with bundleq on the structural ones; and no
//! invalid bundle ever becomes a job. Adding a case adds files, not code:
//! `valid/NAME.json` or `valid/NAME.bundle/`, or `invalid/NAME.json` (or
//! `.bundle/`) with `invalid/NAME.expect.json` beside it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use bundleq::accept::{self, Verdict};
use bundleq::bundle::{Follow, Limits};
use bundleq::digest::Sha256Hex;
use bundleq::objects::Objects;
use common::Bin;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Error paths bundleq must report, exactly.
    errors: Vec<String>,
    /// True when the JSON Schema alone must also reject the bundle.
    schema: bool,
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/bundles")
        .join(kind);
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".expect.json")
                && (name.ends_with(".json") || name.ends_with(".bundle"))
        })
        .collect();
    out.sort();
    out
}

fn expect_for(bundle: &Path) -> Expect {
    let name = bundle.file_name().unwrap().to_string_lossy();
    let stem = name.trim_end_matches(".json").trim_end_matches(".bundle");
    let path = bundle.with_file_name(format!("{stem}.expect.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn json_of(bundle: &Path) -> PathBuf {
    if bundle.is_dir() {
        bundle.join("bundle.json")
    } else {
        bundle.to_owned()
    }
}

#[test]
fn valid_fixtures_pass() {
    let all = fixtures("valid");
    assert!(all.len() >= 4);
    assert!(
        all.iter().any(|p| p.is_dir()),
        "a directory bundle among the valid fixtures"
    );
    for path in all {
        let report = accept::check(&path, &Limits::default(), None, Follow::Link).unwrap();
        assert!(
            matches!(report.verdict, Verdict::Valid { .. }),
            "{}: {:?}",
            path.display(),
            report.verdict
        );
    }
}

#[test]
fn invalid_fixtures_fail_with_exactly_the_expected_error_paths() {
    let all = fixtures("invalid");
    assert!(all.len() >= 25, "at least 25 invalid fixtures");
    for path in all {
        let expect = expect_for(&path);
        let report = accept::check(&path, &Limits::default(), None, Follow::Link).unwrap();
        let Verdict::Invalid { errors } = &report.verdict else {
            panic!("{} was accepted", path.display());
        };
        let got: BTreeSet<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
        let want: BTreeSet<&str> = expect.errors.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{}: {errors}", path.display());
        assert!(
            errors
                .to_string()
                .starts_with(&format!("{} validation error", errors.errors().len()))
        );
    }
}

#[test]
fn seed_error_is_reported_in_the_seed_style() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/invalid/five-errors.json");
    let report = accept::check(&path, &Limits::default(), None, Follow::Link).unwrap();
    let Verdict::Invalid { errors } = report.verdict else {
        panic!()
    };
    let text = errors.to_string();
    assert!(
        text.starts_with("5 validation errors for RunBundleV1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\nsources.0.sha256: sha256 must be 64 hex characters (input: 'abc123def456')"
        ),
        "{text}"
    );
}

#[test]
fn json_schema_agrees_with_bundleq_on_every_structural_fixture() {
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/run_bundle_v1.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let load = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(json_of(p)).unwrap()).unwrap()
    };
    for path in fixtures("valid") {
        let errors: Vec<String> = validator
            .iter_errors(&load(&path))
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "schema rejects valid fixture {}: {errors:?}",
            path.display()
        );
    }
    let mut structural = 0;
    for path in fixtures("invalid") {
        if !expect_for(&path).schema {
            continue;
        }
        structural += 1;
        assert!(
            !validator.is_valid(&load(&path)),
            "schema accepts invalid fixture {}",
            path.display()
        );
    }
    assert!(structural >= 20, "only {structural} structural fixtures");
}

#[test]
fn submitting_every_fixture_makes_jobs_of_the_valid_ones_only() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let valid = fixtures("valid");
    let invalid = fixtures("invalid");
    let all: Vec<String> = valid
        .iter()
        .chain(&invalid)
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["--json", "submit"];
    args.extend(all.iter().map(String::as_str));
    let out = bin.run(&args);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), all.len());
    // Every line has the same keys, whatever its verdict.
    for r in &reports {
        let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["errors", "job_id", "path", "run_id", "sha256", "verdict"],
            "{r}"
        );
    }
    let accepted = reports
        .iter()
        .filter(|r| r["verdict"] == "accepted")
        .count();
    let refused = reports.iter().filter(|r| r["verdict"] == "invalid").count();
    assert_eq!((accepted, refused), (valid.len(), invalid.len()));
    for r in reports.iter().filter(|r| r["verdict"] == "invalid") {
        assert!(
            r["errors"][0]["path"].is_string() && r["errors"][0]["message"].is_string(),
            "{r}"
        );
    }

    assert_eq!(bin.jobs_total(), valid.len() as u64);
    assert_eq!(bin.runs_total(), valid.len() as u64);

    // The same bytes again: duplicates, nothing enqueued.
    let again = bin.json_lines(&["submit", &all[0]]);
    assert_eq!(again[0]["verdict"], "duplicate");
    assert_eq!(bin.jobs_total(), valid.len() as u64);

    // Payload names the run and the tenant; the directory bundle's files are stored.
    let jobs = bin.json(&["jobs"]);
    for j in jobs.as_array().unwrap() {
        assert_eq!(j["payload_json"]["run_id"], j["run_id"]);
        assert_eq!(j["payload_json"]["tenant_id"], j["tenant_id"]);
        assert_eq!(j["job_type"], "process_bundle");
    }
    // Every run's bundle reads back as the very bytes accepted, and the
    // bytes of every source that carried some (inline text, a folder's
    // files) are stored under their sha256, whether in the database or as
    // files.
    let objects = Objects::new(bin.home.join("objects"));
    let mut store = bin.store();
    let tenant = bin.tenant();
    let mut stored = 0;
    for r in reports.iter().filter(|r| r["verdict"] == "accepted") {
        let run_id: Uuid = r["run_id"].as_str().unwrap().parse().unwrap();
        let json = store.run_bundle_json(tenant, run_id).unwrap();
        assert_eq!(Sha256Hex::of(json.as_bytes()).as_str(), r["sha256"], "{r}");
        let bundle: serde_json::Value = serde_json::from_str(&json).unwrap();
        for s in bundle["sources"].as_array().unwrap() {
            if s.get("content").is_none() && s.get("path").is_none() {
                continue;
            }
            let sha = Sha256Hex::parse(s["sha256"].as_str().unwrap()).unwrap();
            let bytes = objects.read(&mut store, &sha, u64::MAX).unwrap();
            assert_eq!(Sha256Hex::of(&bytes), sha, "{s}");
            stored += 1;
        }
    }
    assert!(stored >= 4, "only {stored} sources with bytes");
}

#[test]
fn validate_writes_nothing_and_works_without_a_home() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("no-home"));
    let valid = fixtures("valid");
    let v: Vec<String> = valid.iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["validate"];
    args.extend(v.iter().map(String::as_str));
    bin.ok(&args);
    assert!(!dir.path().join("no-home").exists());
    let bad =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/invalid/five-errors.json");
    let out = bin.run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("5 validation errors for RunBundleV1"), "{err}");
    let v = bin.json_lines(&["validate", bad.to_str().unwrap()]);
    assert_eq!(v[0]["errors"].as_array().unwrap().len(), 5);
    assert_eq!(v[0]["errors"][3]["input"], "abc123def456");
}

#[test]
fn a_bundle_for_another_tenant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let other = uuid::Uuid::now_v7();
    let mut b: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid/minimal.json"),
        )
        .unwrap(),
    )
    .unwrap();
    b["tenant_id"] = other.to_string().into();
    let p = dir.path().join("t.json");
    fs::write(&p, b.to_string()).unwrap();
    let out = bin.run(&["submit", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenant_id: the bundle belongs to tenant")
    );
    // Submitted for its own tenant it is accepted once that tenant exists,
    // and only that tenant sees it.
    let out = bin.run(&[
        "--tenant",
        &other.to_string(),
        "submit",
        p.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tenant"));
    bin.ok(&["tenants", "create", "other", "--id", &other.to_string()]);
    let ok = bin.json_lines(&[
        "--tenant",
        &other.to_string(),
        "submit",
        p.to_str().unwrap(),
    ]);
    assert_eq!(ok[0]["verdict"], "accepted");
    assert_eq!(bin.json(&["runs"]), serde_json::json!([]));
    assert_eq!(
        bin.json(&["--tenant", &other.to_string(), "runs"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn submitting_1000_small_bundles_in_one_call_accepts_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let paths: Vec<String> =
        common::write_bundles(&dir.path().join("many"), "b", "process_bundle", 1000)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
    let mut args = vec!["submit"];
    args.extend(paths.iter().map(String::as_str));
    let reports = bin.json_lines(&args);
    assert_eq!(
        reports
            .iter()
            .filter(|r| r["verdict"] == "accepted")
            .count(),
        1000
    );
    assert_eq!(bin.json(&["status"])["counts"]["queued"], 1000);
}

#[test]
fn what_a_refused_folder_staged_is_gone_before_the_next_bundles_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (home, _) = bundleq::Home::init(&dir.path().join("home")).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    // A folder whose file is read (and staged) but does not match its
    // digest, then plenty of plain bundles behind it.
    let bad = common::file_bundle(dir.path(), "bad", 200 * 1024);
    fs::write(bad.join("big.txt"), vec![b'x'; 200 * 1024]).unwrap();
    let mut inputs = vec![accept::Input::path(&bad)];
    for p in common::write_bundles(&dir.path().join("plain"), "p", "process_bundle", 600) {
        inputs.push(accept::Input::path(&p));
    }
    let options = accept::AcceptOptions {
        tenant,
        origin: accept::Origin::Submit,
        follow: Follow::Link,
        now: bundleq::Timestamp::now(),
        known_types: None,
        not_before: None,
    };
    let staged_files = || {
        let tmp = home.objects().join("tmp");
        let mut n = 0;
        for stage in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            n += fs::read_dir(stage.path()).map_or(0, |d| d.count());
        }
        n
    };
    let mut batches = Vec::new();
    accept::accept_stream(&mut store, &home, &inputs, &options, &mut |batch| {
        // The preparing threads are still at work here.
        batches.push((batch.len(), staged_files()));
        true
    })
    .unwrap();
    assert!(batches.len() >= 3, "{batches:?}");
    assert!(
        batches.iter().all(|&(_, staged)| staged == 0),
        "a refused bundle's staged copy stayed behind: {batches:?}"
    );
}

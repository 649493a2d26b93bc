//! The real binary on temp homes: init, db, jobs, job, runs, run, status,
//! prune, exit codes and tenant isolation.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use bundleq::digest::Sha256Hex;
use bundleq::store::{NewRun, RunInsert, RunJob};
use bundleq::{Home, Store, Timestamp};
use common::Bin;
use uuid::Uuid;

const SEED_COLUMNS: [&str; 14] = [
    "id",
    "tenant_id",
    "run_id",
    "job_type",
    "status",
    "attempts",
    "max_attempts",
    "retry_at",
    "locked_at",
    "locked_by",
    "last_error",
    "payload_json",
    "created_at",
    "updated_at",
];

fn init() -> (tempfile::TempDir, Bin) {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    (dir, bin)
}

/// Records one run and its job for the home's default tenant.
fn seed_job(bin: &Bin) -> (Uuid, Uuid) {
    let home = Home::open(&bin.home).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let run_id = Uuid::now_v7();
    let now = Timestamp::now();
    let inserted = store
        .insert_runs(
            &[NewRun {
                tenant_id: tenant,
                id: run_id,
                title: "Effect of X on Y".into(),
                bundle_sha256: "a".repeat(64),
                bundle_json: "{}".into(),
                origin: "api",
                origin_name: None,
                inbox_claim: None,
                job: RunJob {
                    job_type: "process_bundle".into(),
                    payload: serde_json::json!({"run_id": run_id}),
                    max_attempts: None,
                    not_before: None,
                },
                objects: Vec::new(),
                stored: Vec::new(),
            }],
            now,
        )
        .unwrap();
    let [RunInsert::Inserted { job_id }] = inserted[..] else {
        panic!("{inserted:?}")
    };
    (run_id, job_id)
}

/// `V<n>__<name>` of the newest file in migrations/.
fn latest_migration() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".sql")
                .to_owned()
        })
        .max_by_key(|n| n[1..n.find("__").unwrap()].parse::<u32>().unwrap())
        .unwrap()
}

#[test]
fn init_then_db_current_prints_the_head_and_the_seed_columns_exist() {
    let (_dir, bin) = init();
    let head = latest_migration();
    assert_eq!(bin.ok(&["db", "current"]).trim(), format!("{head} (head)"));
    let v = bin.json(&["db", "current"]);
    assert_eq!(v["head"], true);
    let mut store = Home::open(&bin.home).unwrap().store().unwrap();
    // The reference design's columns, in its order, then the claim the
    // engine keeps on the row (it fences reports).
    let columns = store.table_columns("research_jobs").unwrap();
    assert_eq!(columns[..SEED_COLUMNS.len()], SEED_COLUMNS);
    assert_eq!(
        columns[SEED_COLUMNS.len()..],
        ["claim_id", "claimed_at", "claimed_by"]
    );
    // init again is harmless and keeps the tenant
    let t1 = bin.json(&["init"])["default_tenant"].clone();
    let t2 = bin.json(&["init"])["default_tenant"].clone();
    assert_eq!(t1, t2);
    assert_eq!(
        bin.ok(&["db", "migrate"]).trim(),
        format!("migrated to {head} (head)")
    );
}

#[test]
fn new_home_is_private_and_lists_no_jobs() {
    let (_dir, bin) = init();
    assert_eq!(bin.ok(&["jobs", "--json"]).trim(), "[]");
    assert_eq!(bin.json(&["runs"]), serde_json::json!([]));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&bin.home), 0o700);
    assert_eq!(mode(&bin.home.join("bundleq.db")), 0o600);
    for sub in ["inbox", "accepted", "rejected"] {
        assert!(bin.home.join(sub).is_dir());
    }
}

#[test]
fn bad_home_and_unknown_ids_give_one_line_errors_and_exit_1() {
    let (dir, bin) = init();
    let missing = Bin::new(&dir.path().join("nope"));
    for (b, args) in [
        (&missing, vec!["jobs"]),
        (
            &bin,
            vec!["job", "show", "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a11"],
        ),
        (
            &bin,
            vec!["job", "retry", "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a11"],
        ),
        (
            &bin,
            vec!["run", "show", "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a11"],
        ),
    ] {
        let out = b.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"));
    }
    assert!(
        !dir.path().join("nope").exists(),
        "a bad --home must not be created"
    );
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let (_dir, bin) = init();
    assert_eq!(bin.run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        bin.run(&["prune", "--finished-before", "30"]).status.code(),
        Some(2),
        "a duration without a unit"
    );
    assert_eq!(
        bin.run(&["jobs", "--status", "done"]).status.code(),
        Some(2)
    );
    let help = bin.ok(&["--help"]);
    for code in ["0 ", "1 ", "2 ", "65 "] {
        assert!(help.contains(&format!("  {code}")), "{help}");
    }
}

#[test]
fn jobs_job_runs_run_and_status_show_what_the_store_holds() {
    let (_dir, bin) = init();
    let (run_id, job_id) = seed_job(&bin);
    let jobs = bin.json(&["jobs"]);
    let row = &jobs[0];
    let keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = SEED_COLUMNS.to_vec();
    want.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, want, "--json keys are the column names");
    assert_eq!(row["id"], job_id.to_string());
    assert_eq!(row["status"], "queued");
    assert_eq!(
        bin.json(&["jobs", "--status", "queued", "--type", "process_bundle"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        bin.json(&["jobs", "--status", "failed"]),
        serde_json::json!([])
    );
    assert_eq!(
        bin.json(&["jobs", "--run", &run_id.to_string()])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let shown = bin.json(&["job", "show", &job_id.to_string()]);
    assert_eq!(shown["attempt_history"], serde_json::json!([]));
    assert!(
        bin.ok(&["job", "show", &job_id.to_string()])
            .contains("history:")
    );
    assert_eq!(bin.json(&["status"])["counts"]["queued"], 1);
    assert_eq!(bin.json(&["runs"])[0]["id"], run_id.to_string());
    assert_eq!(
        bin.json(&["run", "show", &run_id.to_string()])["jobs"][0]["id"],
        job_id.to_string()
    );

    assert_eq!(
        bin.json(&["job", "cancel", &job_id.to_string()])["status"],
        "cancelled"
    );
    let out = bin.run(&["job", "cancel", &job_id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it is cancelled"));
    assert_eq!(
        bin.json(&["job", "retry", &job_id.to_string()])["status"],
        "queued"
    );
    bin.ok(&["job", "cancel", &job_id.to_string()]);
    assert_eq!(
        bin.json(&["prune", "--finished-before", "1h"])["pruned"],
        serde_json::json!([])
    );
    assert_eq!(
        bin.json(&["prune", "--finished-before", "0s"])["pruned"][0]["id"],
        job_id.to_string()
    );
    assert_eq!(bin.json(&["jobs"]), serde_json::json!([]));
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn every_command_run_with_another_tenant_finds_nothing() {
    let (_dir, bin) = init();
    let (run_id, job_id) = seed_job(&bin);
    let other = "lab-b".to_owned();
    bin.ok(&["tenants", "create", &other]);
    let (job, run) = (job_id.to_string(), run_id.to_string());
    let t = |args: &[&str]| {
        let mut all = vec!["--tenant", other.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for args in [t(&["jobs"]), t(&["runs"])] {
        assert_eq!(bin.json(&as_refs(&args)), serde_json::json!([]), "{args:?}");
    }
    assert_eq!(bin.json(&as_refs(&t(&["status"])))["counts"]["queued"], 0);
    for args in [
        t(&["job", "show", &job]),
        t(&["job", "cancel", &job]),
        t(&["job", "retry", &job]),
        t(&["run", "show", &run]),
    ] {
        let out = bin.run(&as_refs(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no "),
            "{args:?}"
        );
    }
    bin.ok(&as_refs(&t(&["prune", "--finished-before", "0s"])));
    // The owner's job is untouched by all of the above.
    assert_eq!(bin.json(&["job", "show", &job])["status"], "queued");
}

/// A valid fixture bundle's path.
fn fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/bundles/valid")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_home_written_by_a_later_release_is_refused_naming_both_schemas() {
    let (_dir, bin) = init();
    bin.ok(&["submit", &fixture("minimal.json")]);
    let db = bin.home.join("bundleq.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'from_a_later_release', '', '0')",
            [],
        )
        .unwrap();
    let head = latest_migration();
    let head_version = &head[..head.find("__").unwrap()];
    // Reading and writing commands alike, and the store opened either way.
    for args in [
        &["status"][..],
        &["submit", &fixture("full.json")],
        &["jobs"],
    ] {
        let out = bin.run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for part in [
            "newer release of bundleq",
            "V99 from_a_later_release",
            &format!("knows up to {head_version}"),
        ] {
            assert!(err.contains(part), "{args:?}: {err}");
        }
    }
    let home = Home::open(&bin.home).unwrap();
    let options = home.config().store_options();
    for opened in [
        Store::open(&home.location(), options.clone()),
        Store::open_read_only(&home.location(), options),
    ] {
        let err = opened.unwrap_err().to_string();
        assert!(err.contains("V99"), "{err}");
    }
    // Nothing was written: the one run submitted before is all there is.
    let runs: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM research_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1);
}

/// Copies a directory tree (the fixture home) into `to`.
#[test]
fn a_home_made_by_an_earlier_release_opens_migrates_and_keeps_its_data() {
    // fixtures/homes/stop-8: made by the release before tenants, claims and
    // the migrations/sqlite/ folder (schema V2), after `submit` of the
    // fixtures and `serve --once`.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    common::copy_tree(&common::fixture_home("stop-8"), &home);
    let bin = Bin::new(&home);
    assert_eq!(
        bin.ok(&["db", "current"]).trim(),
        format!("{} (head)", latest_migration())
    );
    let jobs = bin.json(&["jobs"]);
    assert_eq!(jobs.as_array().unwrap().len(), 5);
    assert_eq!(bin.json(&["runs"]).as_array().unwrap().len(), 5);
    assert_eq!(bin.json(&["tenants"])[0]["name"], "default");
    assert_eq!(bin.json(&["search", "glacier"])["total"], 1);
    // Its objects are files, read from there; its bundles were stored
    // whole and read back as accepted.
    let objects = bundleq::objects::Objects::new(home.join("objects"));
    let mut store = bin.store();
    let mut files = 0;
    for shard in fs::read_dir(home.join("objects")).unwrap() {
        let shard = shard.unwrap().path();
        for f in fs::read_dir(&shard).unwrap() {
            let name = format!(
                "{}{}",
                shard.file_name().unwrap().to_str().unwrap(),
                f.unwrap().file_name().to_str().unwrap()
            );
            let Some(sha) = Sha256Hex::parse(&name) else {
                continue;
            };
            let bytes = objects.read(&mut store, &sha, u64::MAX).unwrap();
            assert_eq!(Sha256Hex::of(&bytes), sha);
            files += 1;
        }
    }
    assert_eq!(files, 5);
    let tenant = bin.tenant();
    for r in bin.json(&["runs"]).as_array().unwrap() {
        let id: Uuid = r["id"].as_str().unwrap().parse().unwrap();
        let json = store.run_bundle_json(tenant, id).unwrap();
        assert_eq!(Sha256Hex::of(json.as_bytes()).as_str(), r["bundle_sha256"]);
    }
    let failed: Vec<&serde_json::Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    bin.ok(&["job", "retry", failed[0]["id"].as_str().unwrap()]);
    assert!(bin.ok(&["db", "check"]).starts_with("ok"));
    // The retried job runs again (and fails: no handler for its type here).
    let out = bin.run(&["serve", "--once", "--no-inbox"]);
    assert_eq!(out.status.code(), Some(3));
}

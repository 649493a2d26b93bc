//! Tests of the SQLite backend itself: what the conformance suite cannot
//! say for every backend (its schema's CHECK constraints, its query plans,
//! its WAL and file modes, a damaged file, a lock held by another
//! process). Only these tests, and the backend, name rusqlite.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Bin, exe, exits_within, secs, stderr_of, temp_store, wait_until, write_bundles};
use uuid::Uuid;

#[test]
fn check_constraints_mirror_the_state_machine() {
    let (dir, _store) = temp_store(secs(60));
    let conn = rusqlite::Connection::open(dir.path().join("bundleq.db")).unwrap();
    let insert = |status: &str, attempts: i64, max: i64, locked: bool, retry: bool| {
        conn.execute(
            "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
                 max_attempts, retry_at, locked_at, locked_by, payload_json, created_at, updated_at)
             VALUES (?1, ?2, ?2, 't', ?3, ?4, ?5, ?6, ?7, ?8, '{}', 'x', 'x')",
            rusqlite::params![
                Uuid::now_v7().to_string(),
                Uuid::now_v7().to_string(),
                status,
                attempts,
                max,
                retry.then_some("2026-01-01T00:00:00.000000Z"),
                locked.then_some("2026-01-01T00:00:00.000000Z"),
                locked.then_some("w"),
            ],
        )
    };
    assert!(insert("queued", 0, 3, false, false).is_ok());
    assert!(insert("running", 1, 3, true, false).is_ok());
    assert!(
        insert("done", 0, 3, false, false).is_err(),
        "unknown status"
    );
    assert!(
        insert("queued", 4, 3, false, false).is_err(),
        "attempts above max"
    );
    assert!(
        insert("queued", -1, 3, false, false).is_err(),
        "negative attempts"
    );
    assert!(
        insert("running", 1, 3, false, false).is_err(),
        "running without lock"
    );
    assert!(
        insert("queued", 0, 3, true, false).is_err(),
        "lock while queued"
    );
    assert!(
        insert("failed", 3, 3, false, true).is_err(),
        "retry_at while failed"
    );
}

#[test]
fn the_claim_and_a_batch_of_successes_are_index_searches_not_scans() {
    let (_dir, mut store) = temp_store(secs(60));
    let plan = store.explain_claim().unwrap();
    // Each branch searches its own run of the open jobs' index: ready (the
    // three equalities), retry-due (a range of retry_at), lock-expired (a
    // range of locked_at), each in the order it needs, reading the index
    // alone (it takes rowids); the claimed rows are then found by rowid.
    for run in [
        "research_jobs_open (retry_at=? AND status=? AND locked_at=?)",
        "research_jobs_open (retry_at>? AND retry_at<?)",
        "research_jobs_open (retry_at=? AND status=? AND locked_at<?)",
    ] {
        assert!(
            plan.iter()
                .any(|l| *l == format!("SEARCH research_jobs USING COVERING INDEX {run}")),
            "{run} not in {plan:#?}"
        );
    }
    assert_eq!(
        plan[0], "SEARCH research_jobs USING INTEGER PRIMARY KEY (rowid=?)",
        "{plan:#?}"
    );
    // The one sort is the merge of the branches' few rows: a branch that
    // sorted would read its whole run first.
    let sorts = plan.iter().filter(|l| l.contains("TEMP B-TREE")).count();
    assert_eq!(sorts, 1, "{plan:#?}");
    // A batch of successes finds each job by its id. (An index leading
    // with `status` drew the planner to walk every running job for each
    // success instead: the pool drained at a seventh of its speed.)
    let batch = &plan[plan.len() - 2..];
    assert!(batch[0].starts_with("SCAN json_each"), "{plan:#?}");
    assert_eq!(
        batch[1], "SEARCH research_jobs USING INDEX sqlite_autoindex_research_jobs_1 (id=?)",
        "{plan:#?}"
    );
    for line in &plan {
        let full_scan = line.starts_with("SCAN research_jobs") && !line.contains("INDEX");
        assert!(
            !full_scan,
            "full table scan in claim plan: {line}\n{plan:#?}"
        );
    }
}

/// Under `synchronous = full` a claim's commit waits for the disk to take
/// every page it wrote, so the pages are its cost: the job's row and one
/// leaf of the open jobs' index, where the oldest ready entry leaves and
/// the newest running one arrives. (With an index for ready jobs and
/// another for running ones, it was a leaf of each: three pages.)
#[test]
fn a_claim_commits_two_pages_the_job_row_and_one_index_leaf() {
    let (dir, mut store) = temp_store(secs(60));
    let tenant = Uuid::now_v7();
    let jobs: Vec<_> = (0..2000).map(|_| common::job(tenant)).collect();
    let now = bundleq::Timestamp::now();
    store.enqueue_many(&jobs, now).unwrap();
    let wal = dir.path().join("bundleq.db-wal");
    let mut pages = Vec::new();
    for _ in 0..150 {
        // Emptied before each claim (nothing else reads or writes), the
        // WAL then holds the claim's commit alone: its 32-byte header and a
        // frame per page, the page (8 KiB) and a 24-byte header.
        assert!(store.checkpoint().unwrap());
        assert_eq!(fs::metadata(&wal).unwrap().len(), 0);
        let claims = store.claim(1, "w", now).unwrap();
        let written = fs::metadata(&wal).unwrap().len() - 32;
        assert_eq!(written % (8192 + 24), 0, "{written} bytes");
        pages.push(written / (8192 + 24));
        for c in claims {
            store
                .report(&c.token, &bundleq::Outcome::Succeeded, now)
                .unwrap();
        }
    }
    // Now and then the row, longer once claimed, no longer fits its leaf,
    // which splits: a few pages more.
    let two = pages.iter().filter(|p| **p == 2).count();
    assert!(two * 10 >= pages.len() * 8, "pages per claim: {pages:?}");
    assert!(pages.iter().all(|p| *p >= 2), "pages per claim: {pages:?}");
}

#[test]
fn four_serves_and_a_long_reader_share_a_home_and_the_wal_shrinks_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    let (_d, bin) = Bin::init_with(&common::ledger_config(&ledger));
    // A reader holding a snapshot open for the whole run: checkpoints
    // cannot finish while it lives, so the WAL grows.
    let reader = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let n: i64 = reader
        .query_row("SELECT count(*) FROM research_jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);

    let serves: Vec<Child> = (0..4).map(|_| bin.serve(&["--no-inbox"], true)).collect();
    let paths = write_bundles(&dir.path().join("b"), "b", "ledger", 3000);
    for chunk in paths.chunks(500) {
        bin.submit_all(chunk);
    }
    // Each bundle's two steps: process_bundle, then its ledger step.
    wait_until("6000 jobs to succeed", || {
        bin.json(&["status"])["counts"]["succeeded"] == 6000
    });
    let grown = fs::metadata(bin.home.join("bundleq.db-wal")).map_or(0, |m| m.len());
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    // More work after the reader is gone: the next idle pool truncates.
    let more = write_bundles(&dir.path().join("m"), "m", "ledger", 50);
    bin.submit_all(&more);
    wait_until("the WAL to shrink", || {
        let wal = fs::metadata(bin.home.join("bundleq.db-wal")).map_or(0, |m| m.len());
        wal < grown.min(8 * 1024 * 1024)
    });
    wait_until("the last 100 jobs to succeed", || {
        bin.json(&["status"])["counts"]["succeeded"] == 6100
    });
    common::stop_quietly(serves);
    common::assert_each_ran_once(&ledger, 3050);
    assert!(grown > 0);
}

#[test]
fn home_database_wal_and_shm_are_private_while_serve_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let mut serve = bin.serve(&[], false);
    let wal = bin.home.join("bundleq.db-wal");
    let shm = bin.home.join("bundleq.db-shm");
    wait_until("serve to open its database", || {
        wal.exists() && shm.exists()
    });
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&bin.home), 0o700);
    for p in [bin.home.join("bundleq.db"), wal, shm] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    let _ = serve.kill();
    let _ = serve.wait();
}

#[test]
fn a_damaged_database_fails_fast_and_never_claims_a_success() {
    let (d, bin) = Bin::init_with("");
    let paths = common::write_bundles(&d.path().join("b"), "b", "process_bundle", 3);
    bin.submit_all(&paths);
    let sound = bin.run(&["db", "check"]);
    // Damage the page that recording the first success writes to: the
    // root page of research_sources.
    let db = bin.home.join("bundleq.db");
    let root: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'research_sources'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start((root as u64 - 1) * 4096)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
    }
    let mut serve = Command::new(exe())
        .arg("--home")
        .arg(&bin.home)
        .args(["serve", "--once", "--no-inbox"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = exits_within(
        &mut serve,
        Duration::from_secs(30),
        "serve --once on a damaged database",
    );
    let log = stderr_of(serve);
    assert_ne!(code, Some(0), "{log}");
    assert!(!log.contains("succeeded"), "success claimed: {log}");
    assert!(
        log.contains("damaged") && log.contains("bundleq.db"),
        "{log}"
    );
    assert_eq!(sound.status.code(), Some(0), "a sound database passes");
    let check = bin.run(&["db", "check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("damaged"));
}

#[test]
fn a_locked_database_is_named_as_such_never_as_sqlite_says_it() {
    let (d, bin) = Bin::init_with("[database]\nbusy_timeout = \"1s\"\n");
    bin.ok(&["jobs"]);
    let conn = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; CREATE TABLE t (x);")
        .unwrap();
    let p = common::write_bundles(&d.path().join("b"), "b", "process_bundle", 1);
    for args in [
        vec!["jobs"],
        vec!["submit", p[0].to_str().unwrap()],
        vec!["status"],
    ] {
        let out = bin.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("database is locked"), "{args:?}: {err}");
        assert!(err.contains("locked by another process"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    conn.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_stored_value_that_does_not_parse_is_a_damaged_database() {
    let (dir, mut store) = temp_store(secs(60));
    let tenant = Uuid::now_v7();
    store.enqueue(&common::job(tenant), common::t0()).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("bundleq.db")).unwrap();
    conn.execute(
        "UPDATE research_jobs SET run_id = 'not-a-uuid-but-just-as-long-as-one!!'",
        [],
    )
    .unwrap();
    match store.jobs(tenant, &bundleq::store::JobFilter::default()) {
        Err(e @ bundleq::Error::Corrupt { .. }) => {
            assert!(e.to_string().contains("does not parse"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_running_in_a_database_of_an_earlier_release_keeps_its_claim_after_migrating() {
    // Before V5 a running attempt was an open attempt row; now the claim
    // lives on the job row and attempt rows are written when they end.
    let dir = tempfile::tempdir().unwrap();
    let home_dir = dir.path().join("home");
    common::copy_tree(&common::fixture_home("stop-8"), &home_dir);
    let attempt_id = Uuid::now_v7();
    let (job_id, tenant): (String, String) = {
        let conn = rusqlite::Connection::open(home_dir.join("bundleq.db")).unwrap();
        let (job_id, tenant): (String, String) = conn
            .query_row(
                "SELECT id, tenant_id FROM research_jobs WHERE status = 'succeeded' LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        conn.execute(
            "UPDATE research_jobs SET status = 'running', attempts = 2, max_attempts = 3,
                 locked_by = 'old-serve', locked_at = '2030-01-01T00:00:05.000000Z'
             WHERE id = ?1",
            [&job_id],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO job_attempts (job_id, id, tenant_id, attempt, worker, started_at)
             VALUES (?1, ?2, ?3, 2, 'old-serve', '2030-01-01T00:00:00.000000Z')",
            rusqlite::params![job_id, attempt_id.to_string(), tenant],
        )
        .unwrap();
        (job_id, tenant)
    };
    let home = bundleq::Home::open(&home_dir).unwrap();
    let mut store = home.store().unwrap();
    let (job_id, tenant) = (
        Uuid::parse_str(&job_id).unwrap(),
        Uuid::parse_str(&tenant).unwrap(),
    );
    // The open attempt became the job's claim: shown as running, from its
    // start, and the old worker's report is still the one that counts.
    let history = store.attempts(tenant, job_id).unwrap();
    let running = history.last().unwrap();
    assert_eq!(
        (running.id, running.worker.as_str(), running.finished_at),
        (attempt_id, "old-serve", None)
    );
    assert_eq!(running.started_at.to_db(), "2030-01-01T00:00:00.000000Z");
    let token = bundleq::store::ClaimToken {
        job_id,
        worker: "old-serve".into(),
        attempt: 2,
        max_attempts: 3,
        job_type: "process_bundle".into(),
        attempt_id,
    };
    let now = bundleq::Timestamp::now();
    assert_eq!(
        store
            .report(&token, &bundleq::Outcome::Succeeded, now)
            .unwrap(),
        bundleq::store::Report::Applied(bundleq::JobStatus::Succeeded)
    );
    let history = store.attempts(tenant, job_id).unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.id, last.outcome.as_deref(), last.finished_at),
        (attempt_id, Some("succeeded"), Some(now))
    );
    assert_eq!(store.integrity_check().unwrap(), ["ok"]);
}

#[test]
fn inline_texts_are_stored_once_and_a_new_database_packs_small_objects_in_8_kib_pages() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let text = "Ice thickness was measured at forty stations along the transect. ".repeat(30);
    let bundle = serde_json::json!({
        "bundle_version": 1,
        "run_id": Uuid::now_v7(),
        "title": "Stored once",
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{
            "uri": "https://example.org/a",
            "sha256": bundleq::digest::Sha256Hex::of(text.as_bytes()).as_str(),
            "content": text,
        }]
    })
    .to_string();
    let path = dir.path().join("b.json");
    fs::write(&path, &bundle).unwrap();
    let run_id = bin.json_lines(&["submit", path.to_str().unwrap()])[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let conn = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page, 8192);
    let (stored, holes): (String, Option<String>) = conn
        .query_row(
            "SELECT bundle_json, bundle_holes FROM research_runs WHERE id = ?1",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(holes.is_some());
    assert!(!stored.contains("forty stations"), "{stored}");
    assert!(stored.len() < 400, "{stored}");
    let object: Vec<u8> = conn
        .query_row("SELECT bytes FROM objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(object, text.as_bytes());
    // Read back: the very bytes submitted.
    let mut store = bin.store();
    let json = store
        .run_bundle_json(bin.tenant(), run_id.parse().unwrap())
        .unwrap();
    assert_eq!(json, bundle);

    // An object a stored bundle needs that has gone is a damaged database.
    conn.execute("DELETE FROM objects", []).unwrap();
    match store.run_bundle_json(bin.tenant(), run_id.parse().unwrap()) {
        Err(e @ bundleq::Error::Corrupt { .. }) => {
            assert!(e.to_string().contains("missing"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_search_index_keeps_no_copy_of_text_and_forgets_replaced_sources() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    // An inline source (its object in the database) and a big file (a file
    // object, whose text and index row are kept in a search shard).
    let inline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid/inline-content.json");
    let big = common::file_bundle(dir.path(), "big", 200 * 1024);
    bin.ok(&["submit", inline.to_str().unwrap(), big.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    let conn = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM research_source_texts"), 0);
    assert_eq!(
        count("SELECT count(*) FROM sqlite_master WHERE name = 'research_sources_fts_content'"),
        0,
        "the index has no content table of its own"
    );
    assert_eq!(
        count("SELECT count(*) FROM research_sources WHERE search_shard = 0"),
        1
    );
    let shard = rusqlite::Connection::open(bin.home.join("bundleq.db.search0")).unwrap();
    let (rows, bytes): (i64, i64) = shard
        .query_row(
            "SELECT count(*), sum(length(body)) FROM shard_texts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, bytes), (1, 200 * 1024));
    assert_eq!(
        shard
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'shard_fts_content'",
                [],
                |r| r.get::<_, i64>(0)
            )
            .unwrap(),
        0,
        "the shard's index reads the text it keeps"
    );
    for word in [
        "zymurgy",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz*",
    ] {
        let found = bin.json(&["search", word]);
        assert_eq!(found["total"], 1, "{word}: {found:#}");
        assert!(
            found["hits"][0]["snippet"].as_str().unwrap().contains('['),
            "{found:#}"
        );
    }

    // The run is processed again, twice in one transaction, with other
    // text each time: the old words are gone from the index, only the last
    // ones are found.
    let mut store = bin.store();
    let tenant = bin.tenant();
    let run_id: Uuid = "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a13".parse().unwrap();
    let source = |text: &str| bundleq::store::NewSource {
        idx: 0,
        uri: "https://example.org/q".into(),
        title: None,
        sha256: bundleq::digest::Sha256Hex::of(text.as_bytes()).to_string(),
        media_type: None,
        retrieved_at: None,
        size: Some(text.len() as u64),
        text: Some(text.to_owned()),
        indexed_apart: None,
    };
    let mut completions = Vec::new();
    for text in ["bladderwrack only once", "quillwort everywhere"] {
        let mut job = common::job(tenant);
        job.run_id = run_id;
        store.enqueue(&job, bundleq::Timestamp::now()).unwrap();
        let claim = store
            .claim(1, "w", bundleq::Timestamp::now())
            .unwrap()
            .pop()
            .unwrap();
        completions.push(bundleq::store::Completion {
            token: claim.token,
            outcome: bundleq::Outcome::Succeeded,
            sources: Some(bundleq::store::RunSources {
                tenant_id: tenant,
                run_id,
                sources: vec![source(text)],
            }),
            output: None,
            then: Vec::new(),
        });
    }
    store
        .complete(&completions, bundleq::Timestamp::now())
        .unwrap();
    assert_eq!(bin.json(&["search", "bladderwrack"])["total"], 0);
    assert_eq!(bin.json(&["search", "zymurgy"])["total"], 0);
    assert_eq!(bin.json(&["search", "quillwort"])["total"], 1);
    assert_eq!(count("SELECT count(*) FROM research_source_texts"), 1);
    assert!(bin.ok(&["db", "check"]).starts_with("ok"));
    conn.execute(
        "INSERT INTO research_sources_fts (research_sources_fts) VALUES ('integrity-check')",
        [],
    )
    .unwrap();
}

#[test]
fn the_index_reads_one_source_s_text_by_key_lookups_not_scans() {
    // What FTS5 runs for a snippet or to remove a row: one row of its
    // content view by rowid, its object found by the digest's bytes.
    let (dir, _store) = temp_store(secs(60));
    let conn = rusqlite::Connection::open(dir.path().join("bundleq.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "EXPLAIN QUERY PLAN
             SELECT title, uri, body FROM research_sources_indexed WHERE source_rowid = ?1",
        )
        .unwrap();
    let plan: Vec<String> = stmt
        .query_map([1], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(plan.len(), 3, "{plan:#?}");
    for line in &plan {
        assert!(line.starts_with("SEARCH "), "a scan: {line}\n{plan:#?}");
    }
}

/// An object kept in the database whose bytes changed (a bad sector, a
/// careless `UPDATE`) is named by `verify` with its run and source, and so
/// is a stored bundle whose inline text it was.
#[test]
fn verify_finds_an_object_changed_inside_the_database() {
    let (_d, bin) = Bin::init_with("");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid");
    bin.ok(&["submit", fixtures.to_str().unwrap()]);
    assert_eq!(bin.run(&["verify"]).status.code(), Some(0));
    // The glacier survey's report.txt (source 0), kept in the database.
    let glacier: serde_json::Value = serde_json::from_slice(
        &fs::read(fixtures.join("glacier-survey.bundle/bundle.json")).unwrap(),
    )
    .unwrap();
    let sha = glacier["sources"][0]["sha256"].as_str().unwrap().to_owned();
    let conn = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE objects SET bytes = CAST('not the report' AS BLOB) WHERE sha256 = unhex(?1)",
            [&sha],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let out = bin.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let corrupt: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "corrupt")
        .collect();
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["sha256"], sha.as_str());
    assert_eq!(corrupt[0]["place"], "database");
    assert_eq!(corrupt[0]["sources"][0]["run_id"], glacier["run_id"]);
    assert_eq!(corrupt[0]["sources"][0]["idx"], 0);
}

/// A text of about 200 KiB (a file object: indexed in a search shard) that
/// ends with `tail`.
fn big_text(tail: &str) -> String {
    let mut text = String::new();
    while text.len() < 200 * 1024 {
        text.push_str("firn layers under the icefall sampled twice ");
    }
    text.push_str(tail);
    text
}

/// The run id `submit --json` printed for one bundle.
fn run_of(lines: &[serde_json::Value]) -> String {
    lines[0]["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn big_texts_are_indexed_by_the_workers_in_search_shards_and_found_beside_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    // Three big texts (indexed by the workers in shards) and a small one
    // (in the database's own index), all with "moraine".
    let mut runs = Vec::new();
    for name in ["alder", "birch", "cedar"] {
        let text = big_text(&format!("moraine unique{name} retreat"));
        let folder = common::text_file_bundle(dir.path(), name, &text);
        runs.push(run_of(
            &bin.json_lines(&["submit", folder.to_str().unwrap()]),
        ));
    }
    let small = dir.path().join("small.json");
    let note = "moraine small field note";
    fs::write(
        &small,
        serde_json::json!({
            "bundle_version": 1,
            "run_id": Uuid::now_v7(),
            "title": "Small note",
            "created_at": "2026-11-28T10:00:00Z",
            "sources": [{
                "uri": "https://example.org/note",
                "sha256": bundleq::digest::Sha256Hex::of(note.as_bytes()).as_str(),
                "content": note,
            }]
        })
        .to_string(),
    )
    .unwrap();
    bin.ok(&["submit", small.to_str().unwrap()]);
    bin.ok(&["tenants", "create", "lab-b"]);
    let other = common::text_file_bundle(dir.path(), "dune", &big_text("moraine uniquedune"));
    bin.ok(&["--tenant", "lab-b", "submit", other.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox", "--workers", "2"]);

    let conn = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM research_sources WHERE search_shard IS NOT NULL"),
        4
    );
    assert_eq!(count("SELECT count(*) FROM research_source_texts"), 0);
    assert!(bin.home.join("bundleq.db.search0").exists());

    let found = bin.json(&["search", "moraine"]);
    assert_eq!(found["total"], 4, "{found:#}");
    let mut titles: Vec<&str> = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["run_title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        [
            "File bundle alder",
            "File bundle birch",
            "File bundle cedar",
            "Small note"
        ]
    );
    for hit in found["hits"].as_array().unwrap() {
        assert!(
            hit["snippet"].as_str().unwrap().contains("[moraine]"),
            "{hit:#}"
        );
    }
    let birch = bin.json(&["search", "uniquebirch"]);
    assert_eq!(birch["total"], 1);
    assert_eq!(birch["hits"][0]["run_id"], runs[1].as_str());
    assert_eq!(birch["hits"][0]["uri"], "file:big.txt");
    // Phrases, prefixes and NOT work in a shard as in the database's index.
    assert_eq!(bin.json(&["search", "\"moraine uniquecedar\""])["total"], 1);
    assert_eq!(bin.json(&["search", "\"uniquecedar moraine\""])["total"], 0);
    assert_eq!(bin.json(&["search", "unique*"])["total"], 3);
    assert_eq!(bin.json(&["search", "moraine NOT icefall"])["total"], 1);
    assert_eq!(
        bin.json(&["search", "moraine", "--run", &runs[2]])["total"],
        1
    );
    // Another tenant's big text is its own.
    assert_eq!(bin.json(&["search", "uniquedune"])["total"], 0);
    let theirs = bin.json(&["--tenant", "lab-b", "search", "moraine"]);
    assert_eq!(theirs["total"], 1);
    assert_eq!(theirs["hits"][0]["run_title"], "File bundle dune");
    assert!(bin.ok(&["db", "check"]).starts_with("ok"));

    // A backup holds the shards: the copy finds what the home finds.
    let dest = dir.path().join("backup");
    bin.ok(&["backup", dest.to_str().unwrap()]);
    let copy = Bin::new(&dest);
    assert_eq!(copy.json(&["search", "moraine"])["total"], 4);
    assert_eq!(copy.json(&["search", "uniquebirch"])["total"], 1);

    // A damaged shard is found by `db check`; a missing one is one line,
    // not a panic and not an empty answer.
    let shard_path = bin.home.join("bundleq.db.search0");
    // (Everything in the shard's file, not in its log, first.)
    rusqlite::Connection::open(&shard_path)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    let mut bytes = fs::read(&shard_path).unwrap();
    assert!(bytes.len() > 4 * 8192);
    bytes[2 * 8192..4 * 8192].fill(0x5a);
    fs::write(&shard_path, bytes).unwrap();
    let out = bin.run(&["db", "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("search shard 0"),
        "{out:?}"
    );
    fs::remove_file(&shard_path).unwrap();
    let out = bin.run(&["search", "moraine"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("search shard 0") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn a_busy_shard_is_passed_over_and_only_the_recorded_attempt_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let text = big_text("sphagnum hummock");
    let folder = common::text_file_bundle(dir.path(), "bog", &text);
    let run: Uuid = run_of(&bin.json_lines(&["submit", folder.to_str().unwrap()]))
        .parse()
        .unwrap();
    let tenant = bin.tenant();
    let source = || bundleq::store::NewSource {
        idx: 0,
        uri: "file:big.txt".into(),
        title: None,
        sha256: bundleq::digest::Sha256Hex::of(text.as_bytes()).to_string(),
        media_type: Some("text/plain".into()),
        retrieved_at: None,
        size: Some(text.len() as u64),
        text: Some(text.clone()),
        indexed_apart: None,
    };
    let mut store = bin.store();
    let found = |store: &mut bundleq::Store| store.search(tenant, "sphagnum", None, 20).unwrap().1;

    // An attempt that indexed its text and died before recording it: its
    // rows are in shard 0, and never found.
    let mut first = vec![source()];
    store.index_apart(tenant, run, &mut first, 1024).unwrap();
    assert_eq!(first[0].indexed_apart, Some(0));
    assert_eq!(first[0].text, None, "the writer is not handed the text");
    assert_eq!(found(&mut store), 0);

    // Another process is writing shard 0: the next attempt does not wait
    // for it (it would time out: the lock is held throughout), it makes
    // shard 1.
    let holder = rusqlite::Connection::open(bin.home.join("bundleq.db.search0")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut second = vec![source()];
    store.index_apart(tenant, run, &mut second, 1024).unwrap();
    assert_eq!(second[0].indexed_apart, Some(1));
    holder.execute_batch("ROLLBACK").unwrap();

    // The second attempt records its sources: found once, from shard 1,
    // though shard 0 still holds the first attempt's rows.
    // (The run's own process_bundle job, claimed here as a worker would.)
    let claim = store
        .claim(1, "w", bundleq::Timestamp::now())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(claim.job.run_id, run);
    store
        .complete(
            &[bundleq::store::Completion {
                token: claim.token,
                outcome: bundleq::Outcome::Succeeded,
                sources: Some(bundleq::store::RunSources {
                    tenant_id: tenant,
                    run_id: run,
                    sources: second,
                }),
                output: None,
                then: Vec::new(),
            }],
            bundleq::Timestamp::now(),
        )
        .unwrap();
    assert_eq!(found(&mut store), 1);
    let rows = |k: u32| -> i64 {
        rusqlite::Connection::open(bin.home.join(format!("bundleq.db.search{k}")))
            .unwrap()
            .query_row("SELECT count(*) FROM shard_texts", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!((rows(0), rows(1)), (1, 1));

    // Indexed again into the shard that holds it: replaced, not doubled.
    let holder = rusqlite::Connection::open(bin.home.join("bundleq.db.search0")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut third = vec![source()];
    store.index_apart(tenant, run, &mut third, 1024).unwrap();
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(third[0].indexed_apart, Some(1));
    assert_eq!((rows(0), rows(1)), (1, 1));
    assert_eq!(found(&mut store), 1);

    // Pruned, the run leaves every shard.
    bin.ok(&["prune", "--runs", "0s"]);
    assert_eq!((rows(0), rows(1)), (0, 0));
    assert_eq!(found(&mut store), 0);
}

#[test]
fn files_left_by_a_shard_maker_killed_before_registering_are_passed_over_then_swept() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    // What a maker killed at each point leaves: shard 0's file created
    // but empty (killed before its schema), shard 1's with its schema
    // but never registered.
    fs::write(bin.home.join("bundleq.db.search0"), b"").unwrap();
    let folder = common::text_file_bundle(dir.path(), "fen", &big_text("carr lagg"));
    let run = run_of(&bin.json_lines(&["submit", folder.to_str().unwrap()]));
    {
        let tenant = bin.tenant();
        let mut store = bin.store();
        let holder = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
        // Made as a maker would, then the registration undone.
        let mut probe = vec![bundleq::store::NewSource {
            idx: 0,
            uri: "file:probe.txt".into(),
            title: None,
            sha256: "0".repeat(64),
            media_type: Some("text/plain".into()),
            retrieved_at: None,
            size: Some(4096),
            text: Some("probe".into()),
            indexed_apart: None,
        }];
        store
            .index_apart(tenant, Uuid::now_v7(), &mut probe, 1024)
            .unwrap();
        assert_eq!(
            probe[0].indexed_apart,
            Some(1),
            "the empty file is passed over"
        );
        holder
            .execute("DELETE FROM research_search_shards", [])
            .unwrap();
    }
    bin.ok(&["serve", "--once", "--no-inbox"]);
    let found = bin.json(&["search", "lagg"]);
    assert_eq!(found["total"], 1, "{found:#}");
    assert_eq!(found["hits"][0]["run_id"], run.as_str());
    assert_eq!(bin.json(&["search", "probe"])["total"], 0);
    let conn = rusqlite::Connection::open(bin.home.join("bundleq.db")).unwrap();
    let registered: Vec<u32> = conn
        .prepare("SELECT shard FROM research_search_shards")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(registered, [2]);
    assert_eq!(bin.integrity(), "ok");
    let dest = dir.path().join("copy");
    bin.ok(&["backup", dest.to_str().unwrap()]);
    assert!(dest.join("bundleq.db.search2").exists());
    assert!(!dest.join("bundleq.db.search0").exists());
    assert_eq!(Bin::new(&dest).json(&["search", "lagg"])["total"], 1);

    // `prune` sweeps the leftovers once nothing has written them for an
    // hour (a maker registers its shard at once), never a registered shard
    // nor a file of another name.
    let shard = |k: u32| bin.home.join(format!("bundleq.db.search{k}"));
    let others = [
        "bundleq.db.search",
        "bundleq.db.search1.partial",
        "bundleq.db.search01x",
    ];
    for name in others {
        fs::write(bin.home.join(name), b"").unwrap();
    }
    let swept = |args: &[&str]| -> Vec<String> {
        bin.json(args)["objects"]["leftover_shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(swept(&["prune"]).is_empty(), "too recent to be taken");
    let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for path in [shard(0), shard(1), shard(2)]
        .into_iter()
        .chain(others.iter().map(|n| bin.home.join(n)))
    {
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
    }
    let listed = [shard(0), shard(1)].map(|p| p.to_str().unwrap().to_owned());
    assert_eq!(swept(&["prune", "--dry-run"]), listed);
    assert!(shard(0).exists() && shard(1).exists());
    assert_eq!(swept(&["prune"]), listed);
    assert!(!shard(0).exists() && !shard(1).exists());
    assert!(!bin.home.join("bundleq.db.search1-wal").exists());
    for name in others {
        assert!(bin.home.join(name).exists(), "{name}");
    }
    assert!(shard(2).exists());
    assert_eq!(bin.json(&["search", "lagg"])["total"], 1);
    assert_eq!(bin.integrity(), "ok");
    let out = bin.run(&["prune", "--dry-run"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("search shard"),
        "nothing left to say"
    );
}

#[test]
fn shard_numbers_all_taken_by_leftover_files_retry_the_job_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    let leftovers: Vec<_> = (0..8)
        .map(|k| bin.home.join(format!("bundleq.db.search{k}")))
        .collect();
    for path in &leftovers {
        fs::write(path, b"").unwrap();
    }
    let folder = common::text_file_bundle(dir.path(), "mire", &big_text("quaking bog"));
    let run = run_of(&bin.json_lines(&["submit", folder.to_str().unwrap()]));
    let out = bin.run(&["serve", "--once", "--no-inbox"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let jobs = bin.json(&["jobs"]);
    let job = &jobs[0];
    assert_eq!(job["run_id"], run.as_str(), "{jobs:#}");
    assert_eq!(job["status"], "queued", "retried, not failed: {job:#}");
    let error = job["last_error"].as_str().unwrap();
    assert!(
        error.contains("bundleq.db.search0") && error.contains("remove them"),
        "{error}"
    );
    // Removed, the job goes through.
    for path in &leftovers {
        fs::remove_file(path).unwrap();
    }
    let id = job["id"].as_str().unwrap();
    bin.ok(&["job", "cancel", id]);
    bin.ok(&["job", "retry", id]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    assert_eq!(bin.json(&["search", "quaking"])["total"], 1);
}

#[test]
fn sqlite_is_built_without_its_global_allocation_counter() {
    // `.cargo/config.toml` sets it: with the counter on, every allocation
    // of every thread takes one global mutex, and workers indexing big
    // texts in parallel queue on it.
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
    let options: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
}

#[test]
fn serves_killed_while_workers_index_big_texts_leave_each_run_found_once_or_not_at_all() {
    // SIGKILL lands anywhere: mid-tokenising, between a shard's commit and
    // the success that names it, mid-success. Afterwards every run whose
    // process_bundle succeeded is found exactly once by its own word, and
    // a run whose process_bundle failed for good (killed at every attempt)
    // is not found, whatever its attempts left in the shards.
    const RUNS: usize = 80;
    const CYCLES: usize = 25;
    let (dir, bin) = Bin::init_with("[workers]\npoll_interval = \"50ms\"\n");
    let word = |i: usize| -> String {
        let mut w = String::from("kettle");
        let mut n = i;
        for _ in 0..3 {
            w.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
        }
        w
    };
    let runs: Vec<String> = (0..RUNS)
        .map(|i| {
            let mut text = String::new();
            while text.len() < 400 * 1024 {
                text.push_str("meltwater channels cut the outwash plain ");
            }
            text.push_str(&word(i));
            let folder = common::text_file_bundle(dir.path(), &format!("k{i}"), &text);
            run_of(&bin.json_lines(&["submit", folder.to_str().unwrap()]))
        })
        .collect();
    let mut seed = 0x5eed_u64;
    for _ in 0..CYCLES {
        let mut serve = bin.serve(
            &["--lock-timeout", "1s", "--no-inbox", "--workers", "2"],
            false,
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 200));
        serve.kill().unwrap();
        serve.wait().unwrap();
    }
    // Everything left, once the killed serves' locks expire.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        bin.ok(&[
            "serve",
            "--once",
            "--lock-timeout",
            "1s",
            "--no-inbox",
            "--workers",
            "2",
        ]);
        let open: usize = ["queued", "running"]
            .iter()
            .map(|s| bin.json(&["jobs", "--status", s]).as_array().unwrap().len())
            .sum();
        if open == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "jobs never drained");
        std::thread::sleep(Duration::from_millis(1100));
    }
    let jobs = bin.json(&["jobs", "--limit", "1000"]);
    let mut found_once = 0;
    for (i, run) in runs.iter().enumerate() {
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["run_id"] == run.as_str())
            .unwrap();
        let hits = bin.json(&["search", &word(i)]);
        if job["status"] == "succeeded" {
            assert_eq!(hits["total"], 1, "{run}: {hits:#}");
            assert_eq!(hits["hits"][0]["run_id"], run.as_str());
            found_once += 1;
        } else {
            assert_eq!(job["status"], "failed", "{job:#}");
            assert_eq!(hits["total"], 0, "{run}: {hits:#}");
        }
    }
    assert!(found_once > 0);
    assert_eq!(bin.integrity(), "ok");
    // Rows beyond one per run are those of attempts killed after their
    // shard's commit: the case the test is about, so it must have happened.
    // Only registered shards are searched; a file a serve made and was
    // killed in before registering it (with or without its schema) is
    // passed over for good, so it is not counted.
    let registered: Vec<u32> = rusqlite::Connection::open(bin.home.join("bundleq.db"))
        .unwrap()
        .prepare("SELECT shard FROM research_search_shards ORDER BY shard")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !registered.is_empty() && registered.len() <= 8,
        "{registered:?}"
    );
    let mut rows = 0;
    for k in &registered {
        let path = bin.home.join(format!("bundleq.db.search{k}"));
        rows += rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM shard_texts", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
    }
    let attempts: i64 = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["attempts"].as_i64().unwrap())
        .sum();
    // (Rows beyond one per processed run are those of attempts killed after
    // their shard's commit; how many depends on where the kills land.)
    println!(
        "killed while indexing: {CYCLES} serves, {found_once} of {RUNS} runs processed, each \
         found once; {attempts} attempts, {rows} shard rows"
    );
    assert!(rows >= found_once);
}

#[test]
fn prune_racing_submits_never_removes_a_database_object_a_run_needs() {
    // Each round: 12 bundles whose inline texts already lie in the
    // database as objects no run names, submitted while another thread
    // prunes in a loop. A sweep that removed what it had found unreferenced
    // after a submit named it would leave runs without their bytes.
    let dir = tempfile::tempdir().unwrap();
    let (_d, bin) = Bin::init_with("");
    let db = bin.home.join("bundleq.db");
    let rounds = 25;
    for round in 0..rounds {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(60)).unwrap();
        let paths: Vec<std::path::PathBuf> = (0..12)
            .map(|i| {
                let text = format!("round {round} bundle {i}: glacier terminus survey notes");
                let sha = bundleq::digest::Sha256Hex::of(text.as_bytes()).to_string();
                conn.execute(
                    "INSERT OR IGNORE INTO objects (sha256, bytes) VALUES (unhex(?1), ?2)",
                    rusqlite::params![sha, text.as_bytes()],
                )
                .unwrap();
                let bundle = serde_json::json!({
                    "bundle_version": 1,
                    "run_id": Uuid::now_v7(),
                    "title": format!("Round {round} bundle {i}"),
                    "created_at": "2026-11-28T10:00:00Z",
                    "sources": [{"uri": format!("https://example.org/{round}/{i}"),
                                 "sha256": sha, "content": text}],
                });
                let path = dir.path().join(format!("r{round}-{i}.json"));
                fs::write(&path, bundle.to_string()).unwrap();
                path
            })
            .collect();
        drop(conn);
        bin.while_pruning(|| bin.submit_all(&paths));
        let missing = bin.missing_objects();
        assert!(
            missing.is_empty(),
            "round {round}: a prune removed objects that submitted runs need: {missing:?}"
        );
    }
    assert_eq!(bin.runs_total(), (rounds * 12) as u64);
    assert!(bin.run(&["verify"]).status.success());
}

//! The PostgreSQL backend's own promises: the same migrations as SQLite,
//! the seed's column types, claims decided by the server's clock, objects
//! every host can read, search that answers like FTS5, one-line connection
//! errors, and many hosts working one queue while serves are killed.
//!
//! Each test runs when `BUNDLEQ_TEST_PG` names a server (`.ci/run` starts
//! one); without it they print why they skipped, and under `CI=true` fail.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use bundleq::state::JobStatus;
use bundleq::store::{Location, StoreOptions};
use bundleq::{Home, Outcome, Store, Timestamp};
use common::{Backend, Bin, pg_schema, test_pg};
use uuid::Uuid;

/// (version, name) of every migration in a folder.
fn migrations(folder: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> =
        fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| {
                let stem = name.strip_suffix(".sql")?;
                let (v, n) = stem.strip_prefix('V')?.split_once("__")?;
                Some((v.parse().ok()?, n.to_owned()))
            })
            .collect();
    out.sort();
    out
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sqlite = migrations("migrations/sqlite");
    assert!(sqlite.len() >= 8);
    assert_eq!(sqlite, migrations("migrations/postgres"));
}

#[test]
fn research_jobs_has_the_seeds_column_types_and_db_current_works() {
    if test_pg().is_none() {
        return;
    }
    let (_dir, mut store) = Backend::Postgres.temp_store(common::secs(60));
    let columns: HashMap<String, (String, bool)> = store
        .column_types("research_jobs")
        .unwrap()
        .into_iter()
        .map(|(name, ty, nullable)| (name, (ty, nullable)))
        .collect();
    // The seed's table, as its proof lists it.
    for (name, ty, nullable) in [
        ("run_id", "uuid", false),
        ("job_type", "character varying", false),
        ("status", "character varying", false),
        ("attempts", "integer", false),
        ("max_attempts", "integer", false),
        ("locked_at", "timestamp with time zone", true),
        ("locked_by", "character varying", true),
        ("last_error", "text", true),
        ("payload_json", "jsonb", false),
        ("id", "uuid", false),
        ("tenant_id", "uuid", false),
        ("created_at", "timestamp with time zone", false),
        ("updated_at", "timestamp with time zone", false),
        ("retry_at", "timestamp with time zone", true),
    ] {
        assert_eq!(
            columns.get(name),
            Some(&(ty.to_owned(), nullable)),
            "research_jobs.{name}"
        );
    }
    let v = store.current_version().unwrap().unwrap();
    assert!(v.head);
    let head = migrations("migrations/postgres").pop().unwrap();
    assert_eq!(
        (v.version, v.name.as_str()),
        (i64::from(head.0), head.1.as_str()),
        "the head migration"
    );
    let (_d, bin) = Backend::Postgres.init_with("");
    let current = bin.json(&["db", "current"]);
    assert_eq!(current["version"], head.0, "{current}");
}

#[test]
fn a_database_written_by_a_later_release_is_refused_naming_both_schemas() {
    if test_pg().is_none() {
        return;
    }
    let url = pg_schema();
    let at = Location::server(&url).unwrap();
    drop(Store::create(&at, StoreOptions::default()).unwrap());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'from_a_later_release', '', '0')",
            &[],
        )
        .unwrap();
    let head = migrations("migrations/postgres").last().unwrap().0;
    for opened in [
        Store::open(&at, StoreOptions::default()),
        Store::open_read_only(&at, StoreOptions::default()),
    ] {
        let err = opened.unwrap_err().to_string();
        assert!(
            err.contains("newer release of bundleq")
                && err.contains("V99 from_a_later_release")
                && err.contains(&format!("knows up to V{head}")),
            "{err}"
        );
    }
}

#[test]
fn processes_opening_a_new_database_at_once_migrate_it_once() {
    let Some(_) = test_pg() else { return };
    for _ in 0..5 {
        let location = Location::server(&pg_schema()).unwrap();
        let opened: Vec<_> = (0..6)
            .map(|_| {
                let l = location.clone();
                std::thread::spawn(move || Store::open(&l, StoreOptions::default()).map(|_| ()))
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
        let mut store = Store::open(&location, StoreOptions::default()).unwrap();
        assert!(store.current_version().unwrap().unwrap().head);
    }
}

#[test]
fn claims_locks_and_retries_follow_the_servers_clock_not_the_hosts() {
    let Some(_) = test_pg() else { return };
    let location = Location::server(&pg_schema()).unwrap();
    let options = StoreOptions {
        policy: bundleq::store::QueuePolicy {
            lock_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        ..StoreOptions::default()
    };
    let mut a = Store::create(&location, options.clone()).unwrap();
    let mut b = Store::open(&location, options).unwrap();
    let tenant = Uuid::now_v7();
    let real = Timestamp::now();
    // Host A's clock is a day behind: the job is still due at once.
    let id = a
        .enqueue(
            &common::job(tenant),
            real.minus(Duration::from_secs(86_400)),
        )
        .unwrap();
    let claim = a
        .claim(1, "host-a", real.minus(Duration::from_secs(86_400)))
        .unwrap();
    assert_eq!(claim.len(), 1, "a slow clock still claims due work");
    // Host B's clock is two hours ahead: by its clock A's lock expired long
    // ago, but the server's says it is fresh.
    let stolen = b
        .claim(1, "host-b", real.plus(Duration::from_secs(7200)))
        .unwrap();
    assert!(stolen.is_empty(), "a fast clock stole a live job");
    // A retry is due 30 s after the server's now, whatever A's clock says.
    let r = a
        .report(
            &claim[0].token,
            &Outcome::Retry("transient".into()),
            real.minus(Duration::from_secs(86_400)),
        )
        .unwrap();
    assert_eq!(r, bundleq::store::Report::Applied(JobStatus::Queued));
    let job = a.job(tenant, id).unwrap();
    let retry_at = job.retry_at.unwrap();
    assert!(
        retry_at > real && retry_at < Timestamp::now().plus(Duration::from_secs(120)),
        "retry_at {retry_at} is not 30 s after the server's now ({real})"
    );
    // Nor does B's fast clock make the retry due early.
    assert!(
        b.claim(1, "host-b", real.plus(Duration::from_secs(7200)))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn connection_problems_are_one_line_errors() {
    let Some(base) = test_pg() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cases = [
        (
            format!("{base} dbname=no_such_database_here"),
            "no_such_database_here",
        ),
        (
            format!("host={} user=nobody", dir.path().display()),
            "connect",
        ),
        ("postgres://".to_owned() + "x:y@[bad", "connection string"),
    ];
    for (url, says) in cases {
        let out = std::process::Command::new(common::exe())
            .arg("--home")
            .arg(&home)
            .args(["init", "--database", &url])
            .env_remove("BUNDLEQ_DATABASE_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let _ = fs::remove_dir_all(&home);
    }
    // The environment variable names the database too, and a bad one says so.
    let (_d, bin) = Backend::Sqlite.init_with("");
    let out = std::process::Command::new(common::exe())
        .arg("--home")
        .arg(&bin.home)
        .arg("status")
        .env("BUNDLEQ_DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("BUNDLEQ_DATABASE_URL"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_file_object_accepted_on_one_host_is_processed_on_another() {
    let Some(_) = test_pg() else { return };
    let (dir_a, a) = Backend::Postgres.init_with("");
    let dir_b = tempfile::tempdir().unwrap();
    let b = Backend::Postgres.init_beside(dir_b.path(), &a, "");
    // Bigger than what a SQLite home keeps in its database: a file there.
    let size = usize::try_from(bundleq::objects::IN_DATABASE_MAX).unwrap() * 3 + 7;
    let folder = spaced_file_bundle(dir_a.path(), size);
    a.ok(&["submit", folder.to_str().unwrap()]);
    // Nothing of it went to A's disk.
    let files = walk(&a.home.join("objects"));
    assert!(files.is_empty(), "objects written as files on A: {files:?}");
    b.ok(&["serve", "--once", "--no-inbox"]);
    assert_eq!(b.jobs_with(JobStatus::Succeeded), 1);
    assert_eq!(b.jobs_with(JobStatus::Failed), 0);
    // Its text is searchable from both homes.
    for home in [&a, &b] {
        let hits = home.json(&["search", "moraine"]);
        assert_eq!(hits["total"], 1, "{hits}");
    }
    // A damaged chunk is found when read, not trusted.
    let url = common::database_url_of(&a.home);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let damaged = client
        .execute(
            "UPDATE object_chunks SET bytes = overlay(bytes placing '\\x00'::bytea from 5) WHERE seq = 0",
            &[],
        )
        .unwrap();
    assert_eq!(damaged, 1);
    let home = Home::open(&b.home).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let run = store.runs(tenant, None).unwrap()[0].id;
    let bundle = store.run(tenant, run).unwrap().bundle_json;
    let sha = bundleq::digest::Sha256Hex::parse(bundle["sources"][0]["sha256"].as_str().unwrap())
        .unwrap();
    let err = match store.object(&sha) {
        Ok(_) => panic!("a damaged object was read back"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("does not match its sha256"), "{err}");
    // verify names it, with its run, from any host.
    let out = b.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "corrupt");
    assert_eq!(problems[0]["place"], "database");
    assert_eq!(problems[0]["sha256"], sha.as_str());
    assert_eq!(problems[0]["sources"][0]["run_id"], run.to_string());
}

/// A run's object stored in a transaction of its own, then swept as
/// unreferenced before the run is recorded: the run is refused, nothing is
/// recorded, and storing the object again lets it through. A sweep waits
/// for a transaction recording runs that named objects.
#[test]
fn a_run_whose_object_a_sweep_took_meanwhile_is_refused_not_recorded_without_it() {
    let Some(_) = test_pg() else { return };
    let (_d, bin) = Backend::Postgres.init_with("");
    let home = Home::open(&bin.home).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let bytes = b"the bytes of a source, stored before its run".repeat(100);
    let sha = bundleq::digest::Sha256Hex::of(&bytes);
    let run = |id: Uuid| bundleq::store::NewRun {
        tenant_id: tenant,
        id,
        title: "swept".into(),
        bundle_sha256: "b".repeat(64),
        bundle_json: serde_json::json!({
            "sources": [{"uri": "file:a", "path": "a", "sha256": sha.as_str()}]
        })
        .to_string(),
        origin: "api",
        origin_name: None,
        inbox_claim: None,
        job: bundleq::store::RunJob {
            job_type: "process_bundle".into(),
            payload: serde_json::json!({}),
            max_attempts: None,
            not_before: None,
        },
        objects: Vec::new(),
        stored: vec![sha.clone()],
    };
    store.put_object(&sha, &mut &bytes[..]).unwrap();
    assert!(
        store.sweep_db_objects(false).unwrap().is_empty(),
        "an object stored within the grace period stays: a run may be about to name it"
    );
    age_objects(&bin);
    let swept = store.sweep_db_objects(false).unwrap();
    assert_eq!(swept.len(), 1, "an old object no run names is unreferenced");
    let id = Uuid::now_v7();
    match store.insert_runs(&[run(id)], Timestamp::now()) {
        Err(bundleq::Error::ObjectsGone { run_id, sha256 }) => {
            assert_eq!((run_id, sha256.as_str()), (id, sha.as_str()));
        }
        other => panic!("a run without its object was not refused: {other:?}"),
    }
    assert_eq!(store.count_runs(tenant).unwrap(), 0);
    store.put_object(&sha, &mut &bytes[..]).unwrap();
    store.insert_runs(&[run(id)], Timestamp::now()).unwrap();
    assert!(store.sweep_db_objects(false).unwrap().is_empty());
    assert_eq!(store.object(&sha).unwrap().as_deref(), Some(&bytes[..]));
}

/// `big.bundle/` with one text file of `size` bytes of words.
fn spaced_file_bundle(dir: &Path, size: usize) -> std::path::PathBuf {
    let text: String = "glacier moraine terminus "
        .chars()
        .cycle()
        .take(size)
        .collect();
    common::text_file_bundle(dir, "big", &text)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "tmp") {
                continue;
            }
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn search_answers_like_fts5_on_the_shipped_fixtures() {
    let Some(_) = test_pg() else { return };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/valid");
    let mut files: Vec<String> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let (_d1, sqlite) = Backend::Sqlite.init_with("");
    let (_d2, pg) = Backend::Postgres.init_with("");
    for bin in [&sqlite, &pg] {
        let mut args = vec!["submit"];
        args.extend(files.iter().map(String::as_str));
        bin.ok(&args);
        bin.ok(&["serve", "--once", "--no-inbox"]);
    }
    let queries = [
        "canopy",
        "canopies",
        "canop*",
        "\"field notes\"",
        "canopy NOT leaf",
        "fermentation OR photosynthesis",
        "(fermentation OR photosynthesis) barley",
        "example",
        "https",
        "org",
        "zymurgy",
        "ZYMURGY",
        "csv",
        "notes",
        "nothingmatchesthis",
    ];
    let mut some = 0;
    for q in queries {
        let hits = |bin: &Bin| -> (u64, BTreeSet<(String, u64)>) {
            let v = bin.json(&["search", q, "--limit", "100"]);
            let set = v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["run_id"].as_str().unwrap().to_owned(),
                        h["idx"].as_u64().unwrap(),
                    )
                })
                .collect();
            (v["total"].as_u64().unwrap(), set)
        };
        let (a, b) = (hits(&sqlite), hits(&pg));
        assert_eq!(a, b, "query {q:?}: SQLite found {a:?}, PostgreSQL {b:?}");
        some += usize::from(a.0 > 0);
    }
    assert!(some >= 10, "the queries must find something");
    // Snippets mark the match the same way.
    let v = pg.json(&["search", "zymurgy"]);
    assert!(
        v["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("[Zymurgy]"),
        "{v}"
    );
}

/// A ledger handler that proves no two runs of a job overlap: a run takes
/// `<dir>/<job>` (renamed into place with its pid inside) for its length;
/// finding it held by a live process is an overlap.
fn overlap_ledger_config(ledger: &Path) -> String {
    let script = format!(
        r#"L={l}; d=$L/held/$BUNDLEQ_JOB_ID; t=$L/tmp/$$
mkdir -p $t && echo $$ > $t/pid
if ! mv -T $t $d 2>/dev/null; then
  p=$(cat $d/pid 2>/dev/null)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo "$BUNDLEQ_JOB_ID" >> $L/overlaps; fi
  rm -rf $d; mv -T $t $d || exit 1
fi
echo "$BUNDLEQ_JOB_ID $BUNDLEQ_ATTEMPT" >> $L/starts
[ -n "$LEDGER_HOLD" ] && sleep "$LEDGER_HOLD"
rm -rf $d"#,
        l = ledger.display()
    );
    format!(
        "[handlers.ledger]\ncommand = [\"sh\", \"-c\", {script:?}]\n[workers]\npoll_interval = \"200ms\"\n[inbox]\nsettle = \"100ms\"\n"
    )
}

#[test]
fn the_overlap_ledger_sees_two_runs_of_a_job_at_once() {
    // The checker of the multi-host test, checked: a second run of a job
    // while the first still runs is recorded; one after it is not.
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    for sub in ["held", "tmp"] {
        fs::create_dir_all(ledger.join(sub)).unwrap();
    }
    let config: toml::Value = toml::from_str(&overlap_ledger_config(&ledger)).unwrap();
    let script = config["handlers"]["ledger"]["command"][2]
        .as_str()
        .unwrap()
        .to_owned();
    let run = |hold: &str| {
        std::process::Command::new("sh")
            .args(["-c", &script])
            .env("BUNDLEQ_JOB_ID", "job-1")
            .env("BUNDLEQ_ATTEMPT", "1")
            .env("LEDGER_HOLD", hold)
            .spawn()
            .unwrap()
    };
    let mut first = run("2");
    common::wait_until("the first run to start", || ledger.join("starts").exists());
    run("").wait().unwrap();
    first.wait().unwrap();
    assert_eq!(
        fs::read_to_string(ledger.join("overlaps")).unwrap(),
        "job-1\n"
    );
    fs::remove_file(ledger.join("overlaps")).unwrap();
    // One after the other, and after a run killed mid-way: no overlap.
    run("").wait().unwrap();
    let mut killed = run("30");
    common::wait_until("the run to be held", || {
        fs::read_dir(ledger.join("held")).unwrap().count() == 1
    });
    killed.kill().unwrap();
    killed.wait().unwrap();
    run("").wait().unwrap();
    assert!(!ledger.join("overlaps").exists());
}

/// Bundles whose one source carries a word of its own (`w<tag><i>`), so
/// each can be searched for.
fn tagged_bundles(dir: &Path, tag: &str, n: usize) -> Vec<std::path::PathBuf> {
    typed_bundles(dir, tag, n, "ledger")
}

/// [`tagged_bundles`] of another job type.
fn typed_bundles(dir: &Path, tag: &str, n: usize, job_type: &str) -> Vec<std::path::PathBuf> {
    fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let text = format!("Measurements w{tag}{i:05} from the field");
            let bundle = serde_json::json!({
                "bundle_version": 1,
                "run_id": Uuid::now_v7(),
                "job_type": job_type,
                "title": format!("Run {tag} {i}"),
                "created_at": "2026-11-28T10:00:00Z",
                "sources": [{
                    "uri": format!("urn:{tag}:{i}"),
                    "sha256": bundleq::digest::Sha256Hex::of(text.as_bytes()).as_str(),
                    "media_type": "text/plain",
                    "content": text
                }]
            });
            let p = dir.join(format!("{tag}{i:05}.json"));
            fs::write(&p, bundle.to_string()).unwrap();
            p
        })
        .collect()
}

#[test]
fn three_hosts_work_one_queue_while_serves_are_killed() {
    let Some(_) = test_pg() else { return };
    let work = tempfile::tempdir().unwrap();
    let ledger = work.path().join("ledger");
    for sub in ["held", "tmp"] {
        fs::create_dir_all(ledger.join(sub)).unwrap();
    }
    let config = overlap_ledger_config(&ledger);
    let first = Backend::Postgres.init_in(&work.path().join("a"), &config);
    let hosts = [
        first,
        Backend::Postgres.init_beside(&work.path().join("b"), &bin_ref(&work, "a"), &config),
        Backend::Postgres.init_beside(&work.path().join("c"), &bin_ref(&work, "a"), &config),
    ];
    let per_host = 1000;
    // Per host, 1,000 bundles submitted and 1,000 dropped into its inbox,
    // both fed while serves come and go.
    let mut drops = Vec::new();
    let mut submits = Vec::new();
    for h in 0..hosts.len() {
        let tag = ["sa", "sb", "sc"][h];
        submits.push(tagged_bundles(&work.path().join(tag), tag, per_host));
        let tag = ["da", "db", "dc"][h];
        drops.push(tagged_bundles(&work.path().join(tag), tag, per_host));
    }
    let total = 2 * per_host * hosts.len();
    let mut serves: Vec<Option<Child>> = hosts
        .iter()
        .map(|h| Some(h.serve(&["--lock-timeout", "2s"], false)))
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let cycles = 36;
    let mut fed = 0;
    for cycle in 0..cycles {
        // Feed each host a share of its drops and of its submits.
        let share = per_host.div_ceil(cycles * 2 / 3);
        for (h, bin) in hosts.iter().enumerate() {
            for p in drops[h].iter().skip(fed).take(share) {
                fs::rename(p, bin.home.join("inbox").join(p.file_name().unwrap())).unwrap();
            }
            let batch: Vec<_> = submits[h].iter().skip(fed).take(share).cloned().collect();
            if !batch.is_empty() {
                bin.submit_all(&batch);
            }
        }
        fed += share;
        std::thread::sleep(Duration::from_millis(150 + next(400)));
        // SIGKILL one serve at random and start it again.
        let victim = usize::try_from(next(3)).unwrap();
        if let Some(mut s) = serves[victim].take() {
            s.kill().unwrap();
            s.wait().unwrap();
        }
        if cycle % 6 == 5 {
            // Sometimes a host stays down for a while.
            std::thread::sleep(Duration::from_millis(300));
        }
        serves[victim] = Some(hosts[victim].serve(&["--lock-timeout", "2s"], false));
    }
    // Let them finish: every job done, every inbox empty.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = hosts[0].jobs_with(JobStatus::Succeeded) + hosts[0].jobs_with(JobStatus::Failed);
        let open = hosts[0].jobs_with(JobStatus::Queued) + hosts[0].jobs_with(JobStatus::Running);
        let inboxes: usize = hosts.iter().map(|h| common::unfinished(&h.home)).sum();
        if open == 0 && inboxes == 0 && done >= total as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "work never finished: {open} open, {inboxes} in inboxes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    common::stop_quietly(serves.into_iter().flatten().collect());

    // History checker.
    let overlaps = fs::read_to_string(ledger.join("overlaps")).unwrap_or_default();
    assert!(overlaps.is_empty(), "runs of a job overlapped: {overlaps}");
    let mut starts: HashMap<String, u32> = HashMap::new();
    for line in fs::read_to_string(ledger.join("starts")).unwrap().lines() {
        let id = line.split_whitespace().next().unwrap().to_owned();
        *starts.entry(id).or_default() += 1;
    }
    let home = Home::open(&hosts[0].home).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let jobs = store
        .jobs(tenant, &bundleq::store::JobFilter::default())
        .unwrap();
    assert_eq!(
        store.count_runs(tenant).unwrap(),
        total as u64,
        "a bundle was lost"
    );
    let first_steps = jobs
        .iter()
        .filter(|j| j.job_type == "process_bundle")
        .count();
    assert_eq!(first_steps, total, "one process_bundle job per bundle");
    let mut ledger_done = 0;
    for j in &jobs {
        assert!(
            j.attempts <= j.max_attempts,
            "job {}: {} attempts of {}",
            j.id,
            j.attempts,
            j.max_attempts
        );
        let finished = j.status == JobStatus::Succeeded
            || (j.status == JobStatus::Failed && j.attempts == j.max_attempts);
        assert!(
            finished,
            "job {} ended {} after {} attempts",
            j.id, j.status, j.attempts
        );
        if j.job_type == "ledger" {
            let n = starts.get(&j.id.to_string()).copied().unwrap_or(0);
            assert!(
                n <= j.attempts,
                "job {}: handler started {n} times in {} attempts",
                j.id,
                j.attempts
            );
            if j.status == JobStatus::Succeeded {
                assert!(n >= 1);
                ledger_done += 1;
            }
        }
    }
    assert!(
        ledger_done > total / 2,
        "only {ledger_done} ledger steps succeeded"
    );
    // Every source searchable from every home: all through the library,
    // a sample through each home's binary.
    assert_eq!(store.count_sources(tenant).unwrap(), total as u64);
    for (h, bin) in hosts.iter().enumerate() {
        for tag in ["sa", "db", "sc"] {
            let i = 37 * (h + 1);
            let hits = bin.json(&["search", &format!("w{tag}{i:05}")]);
            assert_eq!(hits["total"], 1, "w{tag}{i:05} from host {h}: {hits}");
        }
    }
    for tag in ["sa", "sb", "sc", "da", "db", "dc"] {
        for i in (0..per_host).step_by(97) {
            let (hits, n) = store
                .search(tenant, &format!("w{tag}{i:05}"), None, 5)
                .unwrap();
            assert_eq!((n, hits.len()), (1, 1), "w{tag}{i:05}");
        }
    }
    let accepted: usize = hosts
        .iter()
        .map(|h| common::archived(&h.home.join("accepted")).len())
        .sum();
    assert_eq!(
        accepted,
        per_host * hosts.len(),
        "every drop archived as accepted"
    );
}

fn bin_ref(work: &tempfile::TempDir, name: &str) -> Bin {
    Bin::new(&work.path().join(name).join("home"))
}

#[test]
fn an_idle_serve_wakes_on_another_hosts_submit_before_its_next_poll() {
    let Some(_) = test_pg() else { return };
    // Neither the poll (1 h) nor a heartbeat (every 60 s at most) comes
    // within the 40 s this test waits: only the notification can.
    let (_d, a) = Backend::Postgres.init_with("[workers]\npoll_interval = \"1h\"\n");
    let dir_b = tempfile::tempdir().unwrap();
    let b = Backend::Postgres.init_beside(dir_b.path(), &a, "");
    let serve = a.serve(&["--no-inbox", "--lock-timeout", "1h"], false);
    common::wait_until("serve to register", || {
        !a.json(&["status"])["serves"].as_array().unwrap().is_empty()
    });
    for round in 0..3 {
        // The pool went idle after its last claim found nothing.
        std::thread::sleep(Duration::from_millis(300));
        let bundles = typed_bundles(
            &dir_b.path().join(format!("r{round}")),
            "n",
            1,
            "process_bundle",
        );
        b.submit_all(&bundles);
        let deadline = Instant::now() + Duration::from_secs(40);
        while a.jobs_with(JobStatus::Succeeded) < round + 1 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the idle serve did not wake on the other host's submit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    common::stop_quietly(vec![serve]);
}

#[test]
fn a_source_too_big_for_one_tsvector_is_indexed_as_far_as_it_fits() {
    let Some(_) = test_pg() else { return };
    let (d, bin) = Backend::Postgres.init_with("");
    // 2 MiB of distinct words: its whole tsvector would pass 1 MiB.
    let text: String = (0..230_000).map(|i| format!("u{i:07} ")).collect();
    let folder = common::text_file_bundle(d.path(), "words", &text);
    bin.ok(&["submit", folder.to_str().unwrap()]);
    bin.ok(&["serve", "--once", "--no-inbox"]);
    assert_eq!(
        bin.jobs_with(JobStatus::Succeeded),
        1,
        "the job must not fail"
    );
    assert_eq!(bin.json(&["search", "u0000001"])["total"], 1);
    assert_eq!(bin.json(&["search", "u0030000"])["total"], 1);
    // Past what fits, the words are not in the index (documented).
    assert_eq!(bin.json(&["search", "u0229999"])["total"], 0);
}

/// A TCP proxy to the test server's unix socket that a test can cut: every
/// open connection is shut down and new ones are closed at once until it
/// is restored — the database server going away, as a client sees it.
struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(socket_dir: &str, port: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            cut: Default::default(),
            open: Default::default(),
        };
        let (cut, open) = (proxy.cut.clone(), proxy.open.clone());
        let socket = format!("{socket_dir}/.s.PGSQL.{port}");
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::os::unix::net::UnixStream::connect(&socket) else {
                    continue;
                };
                open.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        proxy
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_serve_rides_out_the_database_going_away_and_nothing_runs_twice() {
    let Some(base) = test_pg() else { return };
    // The test server is reached through a proxy that this test cuts.
    let value = |key: &str| {
        base.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    let socket_dir = value("host").expect("BUNDLEQ_TEST_PG names a socket folder as host=");
    let port: u16 = value("port").map_or(5432, |p| p.parse().unwrap());
    let proxy = Proxy::start(&socket_dir, port);
    let schema_url = pg_schema();
    let url: String = schema_url
        .split(" options=")
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .chain(
            ["host=127.0.0.1".to_owned(), format!("port={}", proxy.port)]
                .iter()
                .map(String::as_str),
        )
        .collect::<Vec<_>>()
        .join(" ")
        + " options="
        + schema_url.split(" options=").nth(1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let ledger = work.path().join("ledger");
    for sub in ["held", "tmp"] {
        fs::create_dir_all(ledger.join(sub)).unwrap();
    }
    let bin = Bin::new(&work.path().join("home"));
    bin.ok(&["init", "--database", &url]);
    let config = overlap_ledger_config(&ledger)
        + "[queue]\nmax_attempts = 10\nbackoff_base = \"1s\"\nbackoff_cap = \"2s\"\n";
    fs::write(
        bin.home.join("bundleq.toml"),
        common::with_database_url(&config, &url),
    )
    .unwrap();
    let n = 400;
    bin.submit_all(&tagged_bundles(&work.path().join("s"), "x", n));
    let mut serve = bin.serve(&["--no-inbox", "--lock-timeout", "3s"], true);
    let log = common::LogTail::of(&mut serve);
    common::wait_until("some work done", || {
        fs::read_to_string(ledger.join("starts")).is_ok_and(|t| t.lines().count() >= 40)
    });
    for _ in 0..2 {
        proxy.cut();
        log.wait_for("failed to");
        std::thread::sleep(Duration::from_millis(1500));
        proxy.restore();
        std::thread::sleep(Duration::from_millis(500));
    }
    common::wait_until("every job to finish", || {
        bin.jobs_with(JobStatus::Succeeded) == 2 * n as u64
    });
    assert!(
        serve.try_wait().unwrap().is_none(),
        "serve exited: {}",
        log.text()
    );
    let (code, _) = Bin::terminate(serve);
    assert_eq!(code, Some(0));
    let stderr = log.text();
    assert!(!stderr.contains("panicked"), "{stderr}");
    for line in stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
    {
        assert!(line.len() < 400, "a long error line: {line}");
    }
    let overlaps = fs::read_to_string(ledger.join("overlaps")).unwrap_or_default();
    assert!(overlaps.is_empty(), "runs of a job overlapped: {overlaps}");
    let mut starts: HashMap<String, u32> = HashMap::new();
    for line in fs::read_to_string(ledger.join("starts")).unwrap().lines() {
        *starts
            .entry(line.split_whitespace().next().unwrap().to_owned())
            .or_default() += 1;
    }
    let home = Home::open(&bin.home).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    for j in store
        .jobs(tenant, &bundleq::store::JobFilter::default())
        .unwrap()
    {
        assert_eq!(j.status, JobStatus::Succeeded);
        if j.job_type == "ledger" {
            let started = starts.get(&j.id.to_string()).copied().unwrap_or(0);
            assert!(
                (1..=j.attempts).contains(&started),
                "job {}: {started} starts, {} attempts",
                j.id,
                j.attempts
            );
        }
    }
}

#[test]
fn bench_on_a_database_reports_every_figure_and_leaves_no_schema_behind() {
    let Some(base) = test_pg() else { return };
    let schemas = || -> i64 {
        let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bundleq_bench_%'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = schemas();
    let out = std::process::Command::new(common::exe())
        .args([
            "--json",
            "bench",
            "--quick",
            "--jobs",
            "600",
            "--samples",
            "20",
            "--database",
        ])
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["report"];
    let claimers: Vec<u64> = r["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            for key in ["lifecycle_per_s", "baseline_lifecycle_per_s", "ratio"] {
                assert!(s[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {s}");
            }
            s["claimers"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(claimers, [1, 2, 4]);
    assert!(r["enqueue_batch_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["claim_latency"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(r["commit_p50_us"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(!r["database"].as_str().unwrap().contains("password"));
    assert_eq!(v["goals"].as_array().unwrap().len(), 4);
    assert_eq!(schemas(), before, "a scratch schema was left behind");
}

#[test]
fn a_failed_login_is_one_line_and_the_right_password_works() {
    // `.ci/run` makes a role that must log in with a password over TCP.
    let login = match std::env::var("BUNDLEQ_TEST_PG_LOGIN") {
        Ok(l) => l,
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but BUNDLEQ_TEST_PG_LOGIN is not set (.ci/run sets it)"
            );
            common::skipped(
                "BUNDLEQ_TEST_PG_LOGIN is not set (a role that logs in with a password)",
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |url: &str| {
        std::process::Command::new(common::exe())
            .arg("--home")
            .arg(&home)
            .args(["init", "--database", url])
            .env_remove("BUNDLEQ_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&format!("{login} password=wrong-password"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("wrong-password"),
        "the password was shown: {err}"
    );
    fs::remove_dir_all(&home).unwrap();
    // The right one gets as far as the schema: this role may not create
    // tables in `public`, which is said in one line too.
    let out = run(&format!("{login} password=right-password"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("right-password"),
        "the password was shown: {err}"
    );
    assert!(err.trim_end().lines().count() <= 1, "{err}");
}

/// Sets every object's storing time two hours back (past the sweeps'
/// grace period).
fn age_objects(bin: &Bin) {
    let url = common::database_url_of(&bin.home);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE objects SET stored_at = now() - interval '2 hours'",
            &[],
        )
        .unwrap();
}

/// Two hosts on one database: host A prunes in a loop while host B submits
/// bundles whose objects already lie in the database unreferenced (the
/// runs that named them were pruned). The homes share no folder, so no
/// file lock keeps them apart: only the database's lock and the check in
/// the run's transaction do. A run is never recorded without its object;
/// a submit that lost the race says so, and goes through when repeated.
#[test]
fn a_prune_on_one_host_never_takes_an_object_another_hosts_new_run_needs() {
    let Some(_) = test_pg() else { return };
    let (dir_a, a) = Backend::Postgres.init_with("");
    let dir_b = tempfile::tempdir().unwrap();
    let b = Backend::Postgres.init_beside(dir_b.path(), &a, "");
    let mut store = a.store();
    let (rounds, per_round) = (12, 10);
    let mut refused = 0;
    for round in 0..rounds {
        let bundles: Vec<std::path::PathBuf> = (0..per_round)
            .map(|i| {
                let folder = common::file_bundle(
                    dir_a.path(),
                    &format!("r{round}-{i}"),
                    140_000 + round * 100 + i,
                );
                let bytes = fs::read(folder.join("big.txt")).unwrap();
                let sha = bundleq::digest::Sha256Hex::of(&bytes);
                store.put_object(&sha, &mut &bytes[..]).unwrap();
                folder
            })
            .collect();
        // Stored long ago, by runs pruned since: fair game for a sweep
        // until a writer names them again.
        age_objects(&a);
        a.while_pruning(|| {
            let mut left: Vec<std::path::PathBuf> = bundles;
            for _ in 0..20 {
                let mut args = vec!["--json".to_owned(), "submit".to_owned()];
                args.extend(left.iter().map(|p| p.display().to_string()));
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = b.run(&refs);
                let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                let failed: Vec<std::path::PathBuf> = lines
                    .iter()
                    .filter(|l| l["verdict"] == "error")
                    .map(|l| std::path::PathBuf::from(l["path"].as_str().unwrap()))
                    .collect();
                if failed.is_empty() {
                    break;
                }
                refused += failed.len();
                left = failed;
            }
        });
        let missing = b.missing_objects();
        assert!(
            missing.is_empty(),
            "round {round}: a run was recorded without its object: {missing:?}"
        );
    }
    assert_eq!(b.runs_total(), (rounds * per_round) as u64);
    assert_eq!(b.run(&["verify"]).status.code(), Some(0));
    // Writers touch what they name, so losing the race is rare.
    assert!(
        refused < rounds * per_round / 4,
        "{refused} submits refused"
    );
}

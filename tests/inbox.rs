//! The drop folder on the real binary in temp homes: never half a file,
//! never lost, never twice. The binary tells us nothing but the files it
//! moves and the rows it writes, so tests wait (bounded) on those.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use common::{Bin, archived, bundle_text, wait_until};

struct Serve(Child);

impl Serve {
    fn start(bin: &Bin) -> Serve {
        Serve(bin.serve(&["--poll-interval", "100ms"], false))
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn home() -> (tempfile::TempDir, Bin) {
    let dir = tempfile::tempdir().unwrap();
    let bin = Bin::new(&dir.path().join("home"));
    bin.ok(&["init"]);
    (dir, bin)
}

/// Writes a file as if it had been copied in an hour ago (`cp -p`).
fn write_old(path: &std::path::Path, text: &str) {
    fs::write(path, text).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Entries in the inbox or claimed and not yet archived.
fn inbox_len(bin: &Bin) -> usize {
    common::unfinished(&bin.home)
}

#[test]
fn a_bundle_written_in_chunks_is_ingested_once_after_it_is_complete() {
    let (_d, bin) = home();
    let _serve = Serve::start(&bin);
    let path = bin.home.join("inbox/slow.json");
    let text = bundle_text("process_bundle", 1);
    let bytes = text.as_bytes();
    let mut f = File::create(&path).unwrap();
    let chunk = bytes.len().div_ceil(10);
    for part in bytes.chunks(chunk) {
        f.write_all(part).unwrap();
        f.flush().unwrap();
        // The producer is slow; the file must stay in the inbox meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        assert!(path.exists(), "taken before it was complete");
    }
    drop(f);
    wait_until("the bundle to be accepted", || {
        archived(&bin.home.join("accepted")).len() == 1
    });
    assert!(archived(&bin.home.join("rejected")).is_empty());
    assert_eq!(bin.runs_total(), 1);
    assert_eq!(bin.jobs_total(), 1);
}

#[test]
fn a_temp_name_is_never_touched_and_the_renamed_file_is_taken_at_once() {
    let (_d, bin) = home();
    let _serve = Serve::start(&bin);
    let tmp = bin.home.join("inbox/.x.json.tmp");
    let mut f = File::create(&tmp).unwrap();
    let text = bundle_text("process_bundle", 2);
    let (a, b) = text.split_at(text.len() / 2);
    f.write_all(a.as_bytes()).unwrap();
    f.flush().unwrap();
    // Longer than the settle interval: a visible name would be taken now.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(tmp.exists());
    f.write_all(b.as_bytes()).unwrap();
    drop(f);
    for ignored in ["draft.json.part", "notes.json.swp", "backup.json~"] {
        fs::write(bin.home.join("inbox").join(ignored), "{").unwrap();
    }
    fs::rename(&tmp, bin.home.join("inbox/x.json")).unwrap();
    wait_until("x.json to be accepted", || {
        archived(&bin.home.join("accepted")).len() == 1
    });
    assert!(
        archived(&bin.home.join("rejected")).is_empty(),
        "a temp name was read"
    );
    assert_eq!(
        fs::read_dir(bin.home.join("inbox")).unwrap().count(),
        3,
        "ignored names stay where they are"
    );
}

#[test]
fn bundles_copied_in_while_serve_was_stopped_are_all_ingested_once_at_start() {
    let (_d, bin) = home();
    for i in 0..500 {
        write_old(
            &bin.home.join(format!("inbox/old-{i:03}.json")),
            &bundle_text("process_bundle", i),
        );
    }
    let _serve = Serve::start(&bin);
    wait_until("500 runs", || bin.runs_total() == 500);
    wait_until("500 archived", || {
        archived(&bin.home.join("accepted")).len() == 500
    });
    assert_eq!(inbox_len(&bin), 0);
    assert_eq!(bin.jobs_total(), 500);
}

#[test]
fn five_thousand_bundles_dropped_at_once_are_each_ingested_exactly_once() {
    let (d, bin) = home();
    let staging = d.path().join("staging");
    fs::create_dir(&staging).unwrap();
    for i in 0..5000 {
        fs::write(
            staging.join(format!("b{i:04}.json")),
            bundle_text("process_bundle", i),
        )
        .unwrap();
    }
    let _serve = Serve::start(&bin);
    for i in 0..5000 {
        let name = format!("b{i:04}.json");
        fs::rename(staging.join(&name), bin.home.join("inbox").join(&name)).unwrap();
    }
    wait_until("5000 runs", || bin.runs_total() == 5000);
    wait_until("5000 archived", || {
        archived(&bin.home.join("accepted")).len() == 5000
    });
    assert_eq!(inbox_len(&bin), 0);
    assert_eq!(bin.jobs_total(), 5000);
    assert!(archived(&bin.home.join("rejected")).is_empty());
}

#[test]
fn the_same_bytes_under_three_names_make_one_run_and_three_accepted_files() {
    let (d, bin) = home();
    let _serve = Serve::start(&bin);
    let text = bundle_text("process_bundle", 7);
    for name in ["one.json", "two.json", "three.json"] {
        let staged = d.path().join(name);
        fs::write(&staged, &text).unwrap();
        fs::rename(&staged, bin.home.join("inbox").join(name)).unwrap();
    }
    wait_until("three archived files", || {
        archived(&bin.home.join("accepted")).len() == 3
    });
    assert_eq!(bin.runs_total(), 1);
    assert_eq!(bin.jobs_total(), 1);
    let status = bin.json(&["status"]);
    assert_eq!(status["folders"]["accepted"], 1);
    assert_eq!(status["folders"]["duplicates"], 2);
}

#[test]
fn symlinks_fifos_and_odd_folders_are_reported_never_read_and_serve_goes_on() {
    let (d, bin) = home();
    let mut serve = Serve::start(&bin);
    let outside = d.path().join("secret.json");
    fs::write(&outside, bundle_text("process_bundle", 9)).unwrap();
    let inbox = bin.home.join("inbox");
    symlink(&outside, inbox.join("link.json")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(inbox.join("x.json"))
            .status()
            .unwrap()
            .success()
    );
    fs::create_dir(inbox.join("y.json")).unwrap();
    fs::write(
        inbox.join("y.json/inner.json"),
        bundle_text("process_bundle", 10),
    )
    .unwrap();
    // An entry is archived first, then its report is written beside it:
    // wait for both.
    let report_of = |p: &PathBuf| PathBuf::from(format!("{}.errors.json", p.display()));
    wait_until("three reports", || {
        let entries = archived(&bin.home.join("rejected"));
        entries.len() == 3 && entries.iter().all(|p| report_of(p).exists())
    });
    for p in archived(&bin.home.join("rejected")) {
        let r: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(report_of(&p)).unwrap()).unwrap();
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("not ingested: "),
            "{r}"
        );
    }
    assert_eq!(bin.runs_total(), 0, "nothing was read");
    assert!(outside.exists(), "the symlink's target is untouched");
    let staged = d.path().join("ok.json");
    fs::write(&staged, bundle_text("process_bundle", 11)).unwrap();
    fs::rename(&staged, inbox.join("ok.json")).unwrap();
    wait_until("the valid bundle", || bin.runs_total() == 1);
    assert!(serve.alive());
}

#[test]
fn tenant_folders_ingest_for_their_tenant_and_refuse_other_tenants_bundles() {
    let (d, bin) = home();
    let tenant = uuid::Uuid::now_v7();
    bin.ok(&["tenants", "create", "lab-a", "--id", &tenant.to_string()]);
    let folder = bin.home.join("inbox").join(tenant.to_string());
    fs::create_dir(&folder).unwrap();
    // A folder named by a UUID the home does not know: its entries wait
    // there (a typo must not start an invisible tenant).
    let unknown = bin
        .home
        .join("inbox")
        .join(uuid::Uuid::now_v7().to_string());
    fs::create_dir(&unknown).unwrap();
    write_old(&unknown.join("u.json"), &bundle_text("process_bundle", 22));
    let _serve = Serve::start(&bin);
    let ok = d.path().join("t.json");
    fs::write(&ok, bundle_text("process_bundle", 20)).unwrap();
    fs::rename(&ok, folder.join("t.json")).unwrap();
    let mut foreign: serde_json::Value =
        serde_json::from_str(&bundle_text("process_bundle", 21)).unwrap();
    foreign["tenant_id"] = uuid::Uuid::now_v7().to_string().into();
    let bad = d.path().join("f.json");
    fs::write(&bad, foreign.to_string()).unwrap();
    fs::rename(&bad, folder.join("f.json")).unwrap();
    // A rejected entry is archived first, then its report is written
    // beside it: wait for the report too.
    wait_until("both handled", || {
        let rejected = archived(&bin.home.join("rejected"));
        archived(&bin.home.join("accepted")).len() == 1
            && rejected.len() == 1
            && PathBuf::from(format!("{}.errors.json", rejected[0].display())).exists()
    });
    assert_eq!(
        bin.json(&["--tenant", &tenant.to_string(), "runs"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(bin.json(&["runs"]), serde_json::json!([]));
    let report = fs::read_dir(archived(&bin.home.join("rejected"))[0].parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".errors.json"))
        .unwrap();
    assert!(fs::read_to_string(report).unwrap().contains("tenant_id"));
    assert!(
        unknown.join("u.json").exists(),
        "an unknown tenant's entry waits"
    );
    assert_eq!(bin.tenants_total(), 2);
    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["waiting"], 1, "{summary}");
}

#[test]
fn serve_killed_mid_ingest_loses_nothing_and_ingests_nothing_twice() {
    let (d, bin) = home();
    let staging = d.path().join("staging");
    fs::create_dir(&staging).unwrap();
    // 900 distinct valid bundles, 50 exact copies of some of them, 50 invalid.
    let mut texts: Vec<String> = (0..900).map(|i| bundle_text("process_bundle", i)).collect();
    let copies: Vec<String> = (0..50).map(|i| texts[i * 3].clone()).collect();
    texts.extend(copies);
    texts.extend((0..50).map(|i| format!("{{\"bundle_version\": 1, \"title\": \"broken {i}\"}}")));
    for (i, t) in texts.iter().enumerate() {
        fs::write(staging.join(format!("f{i:04}.json")), t).unwrap();
    }
    let mut serve = Serve::start(&bin);
    for i in 0..texts.len() {
        let name = format!("f{i:04}.json");
        fs::rename(staging.join(&name), bin.home.join("inbox").join(&name)).unwrap();
    }
    wait_until("some progress", || bin.runs_total() >= 100);
    serve.kill9();
    let _serve = Serve::start(&bin);
    wait_until("1000 archived", || {
        archived(&bin.home.join("accepted")).len() + archived(&bin.home.join("rejected")).len()
            >= 1000
    });
    assert_eq!(inbox_len(&bin), 0);
    let accepted = archived(&bin.home.join("accepted")).len();
    let rejected = archived(&bin.home.join("rejected")).len();
    assert_eq!(
        accepted + rejected,
        1000,
        "every file ends in accepted/ or rejected/"
    );
    assert_eq!(rejected, 50);
    assert_eq!(bin.runs_total(), 900);
    assert_eq!(bin.jobs_total(), 900);
    assert_eq!(bin.integrity(), "ok");
}

#[test]
fn ingest_takes_over_the_claims_of_a_dead_process_and_finishes_them_once() {
    let (_d, bin) = home();
    let inbox = bin.home.join("inbox");
    let home = bundleq::Home::open(&bin.home).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    // A process that died: its presence lock is free, and it had claimed
    // two entries; the first one's run was committed before it died.
    let dead = "deadhost:4242:0badf00d";
    fs::write(bin.home.join("run").join(format!("{dead}.lock")), "").unwrap();
    let batch = uuid::Uuid::now_v7().to_string();
    let claim_dir = bin
        .home
        .join("claims")
        .join(dead)
        .join(&batch)
        .join(tenant.to_string());
    fs::create_dir_all(&claim_dir).unwrap();
    let committed_text = bundle_text("process_bundle", 30);
    fs::write(claim_dir.join("c0.json"), &committed_text).unwrap();
    fs::write(claim_dir.join("c1.json"), bundle_text("process_bundle", 31)).unwrap();
    let results = bundleq::accept::accept_inputs(
        &mut store,
        &home,
        &[bundleq::accept::Input {
            path: claim_dir.join("c0.json"),
            shown: inbox.join("c0.json"),
            name: Some("c0.json".to_owned()),
            claim: Some(batch.clone()),
        }],
        &bundleq::accept::AcceptOptions {
            tenant,
            origin: bundleq::accept::Origin::Inbox,
            follow: bundleq::bundle::Follow::Never,
            now: bundleq::Timestamp::now(),
            known_types: None,
            not_before: None,
        },
    );
    assert!(matches!(
        results[0].as_ref().unwrap().verdict,
        bundleq::accept::Verdict::Accepted { .. }
    ));
    // The same bytes dropped again under another name are a duplicate, and
    // so is a second drop under the same name.
    write_old(&inbox.join("again.json"), &committed_text);
    let c2_text = bundle_text("process_bundle", 32);
    write_old(&inbox.join("c2.json"), &c2_text);
    // A fresh file is still being written and waits.
    fs::write(inbox.join("fresh.json"), bundle_text("process_bundle", 40)).unwrap();

    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["accepted"], 3, "c0 (recovered), c1, c2: {summary}");
    assert_eq!(summary["duplicates"], 1, "{summary}");
    assert_eq!(summary["settling"], 1);
    assert_eq!(bin.jobs_total(), 3);
    assert_eq!(inbox_len(&bin), 1, "only fresh.json is left");
    assert!(!bin.home.join("claims").join(dead).exists());
    assert!(!bin.home.join("run").join(format!("{dead}.lock")).exists());
    let names: Vec<String> = archived(&bin.home.join("accepted"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with(".c0.json") && !n.contains("duplicate")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".duplicate.again.json")),
        "{names:?}"
    );
    assert_eq!(bin.json(&["status"])["folders"]["inbox_backlog"], 1);

    // The same name and bytes once more: a duplicate, not "recovered".
    write_old(&inbox.join("c2.json"), &c2_text);
    let summary = bin.json(&["ingest"]);
    assert_eq!(summary["duplicates"], 1, "{summary}");
    assert_eq!(summary["accepted"], 0, "{summary}");
    let names: Vec<String> = archived(&bin.home.join("accepted"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".duplicate.c2.json")),
        "{names:?}"
    );
}

#[test]
fn without_notifications_the_rescans_alone_ingest_everything() {
    let (d, bin) =
        Bin::init_with("[inbox]\nwatch = false\nrescan_interval = \"200ms\"\nsettle = \"100ms\"\n");
    let _serve = Serve::start(&bin);
    let staged = common::write_bundles(&d.path().join("s"), "n", "process_bundle", 20);
    // Two waves: the second arrives after the first was ingested, so only a
    // later rescan (no notification, no start-up scan) can find it.
    for (wave, chunk) in staged.chunks(10).enumerate() {
        for p in chunk {
            fs::rename(p, bin.home.join("inbox").join(p.file_name().unwrap())).unwrap();
        }
        let want = 10 * (wave as u64 + 1);
        wait_until("the wave", || bin.runs_total() == want);
    }
    wait_until("20 archived", || {
        archived(&bin.home.join("accepted")).len() == 20
    });
    assert_eq!(inbox_len(&bin), 0);
}

#[test]
fn an_entry_is_taken_once_unchanged_for_the_settle_time_by_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (home, _) = bundleq::Home::init(&dir.path().join("home")).unwrap();
    let mut store = home.store().unwrap();
    let tenant = home.default_tenant(&mut store).unwrap();
    let presence = bundleq::presence::Presence::register(&home.run_dir()).unwrap();
    let config = bundleq::inbox::InboxConfig {
        settle: Duration::from_secs(60),
        ..Default::default()
    };
    let mut inbox = bundleq::inbox::Inbox::new(&home, home.inbox(), tenant, config, &presence);
    let path = home.inbox().join("a.json");
    fs::write(&path, bundle_text("process_bundle", 1)).unwrap();
    let written = bundleq::Timestamp::from_system(fs::metadata(&path).unwrap().modified().unwrap());
    let none = std::collections::HashSet::new();

    // 59 s after it was written, by the clock the scan is given: it waits,
    // and the scan says when to look again.
    let s = inbox
        .scan(&mut store, &none, written.plus(Duration::from_secs(59)))
        .unwrap();
    assert_eq!((s.settling, s.accepted), (1, 0), "{s:?}");
    assert_eq!(s.next_check, Some(Duration::from_secs(1)));
    assert!(path.exists());
    // At 60 s it is taken.
    let s = inbox
        .scan(&mut store, &none, written.plus(Duration::from_secs(60)))
        .unwrap();
    assert_eq!((s.settling, s.accepted), (0, 1), "{s:?}");
    assert!(!path.exists());
    // Renamed in (a notification said so), an entry is taken at once.
    let renamed = home.inbox().join("b.json");
    fs::write(&renamed, bundle_text("process_bundle", 2)).unwrap();
    let s = inbox
        .scan(&mut store, &[renamed.clone()].into(), written)
        .unwrap();
    assert_eq!(s.accepted, 1, "{s:?}");
    // The archive folder is the day of the clock, not of the wall.
    let day = &written.to_db()[..10];
    assert_eq!(fs::read_dir(home.accepted().join(day)).unwrap().count(), 2);
}

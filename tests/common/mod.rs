//! Shared test harness: temp homes, stores and jobs.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bundleq::state::JobStatus;
use bundleq::store::{Location, NewJob, QueuePolicy, StoreOptions};
use bundleq::{Home, Store, Timestamp};
use uuid::Uuid;

pub mod dash;

/// A database backend the conformance suite runs against. A new backend
/// is one variant here, its arms below, and one line in
/// [`for_each_backend!`](crate::for_each_backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use: `BUNDLEQ_TEST_PG`, a connection
/// string for a database the tests may create schemas in (`.ci/run` starts
/// a throwaway server and sets it). Without it the PostgreSQL tests skip
/// with a printed reason, except under `CI=true`, where they fail.
/// Says why a test did not run (on stderr, which `cargo test` shows).
#[expect(clippy::print_stderr, reason = "a skipped test says why")]
pub fn skipped(why: &str) {
    eprintln!("skipped: {why}");
}

pub fn test_pg() -> Option<String> {
    match std::env::var("BUNDLEQ_TEST_PG") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but BUNDLEQ_TEST_PG is not set: the PostgreSQL tests must run (.ci/run starts a server)"
            );
            skipped(
                "BUNDLEQ_TEST_PG is not set, so this PostgreSQL test did not run (.ci/run starts a server and sets it)",
            );
            None
        }
    }
}

/// A new, empty schema on the test server; the connection string that
/// works in it.
pub fn pg_schema() -> String {
    let base = test_pg().expect("BUNDLEQ_TEST_PG");
    let schema = format!("t_{}", Uuid::now_v7().simple());
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    format!("{base} options='-c search_path={schema}'")
}

impl Backend {
    /// The backends this machine can run: SQLite, and PostgreSQL when a
    /// test server is configured.
    pub fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => test_pg().is_some(),
        }
    }

    /// A location for a new, empty database whose lifetime is `dir`'s (on
    /// PostgreSQL: a new schema).
    pub fn fresh_location(self, dir: &Path) -> Location {
        match self {
            Backend::Sqlite => Location::Sqlite(dir.join("bundleq.db")),
            Backend::Postgres => Location::server(&pg_schema()).unwrap(),
        }
    }

    /// A new store with `options` (dropped with the returned dir). Stores
    /// made here take their time from the test (`caller_clock`).
    pub fn store_with(self, options: StoreOptions) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            caller_clock: true,
            ..options
        };
        let store = Store::create(&self.fresh_location(dir.path()), options).unwrap();
        (dir, store)
    }

    /// A new store with the given lock timeout.
    pub fn temp_store(self, lock_timeout: Duration) -> (tempfile::TempDir, Store) {
        self.store_with(StoreOptions {
            policy: QueuePolicy {
                lock_timeout,
                ..QueuePolicy::default()
            },
            ..StoreOptions::default()
        })
    }

    /// A new home whose database is on this backend, with `config` as its
    /// bundleq.toml.
    pub fn init_with(self, config: &str) -> (tempfile::TempDir, Bin) {
        let dir = tempfile::tempdir().unwrap();
        let bin = self.init_in(dir.path(), config);
        (dir, bin)
    }

    /// A new home at `<dir>/home` whose database is on this backend.
    pub fn init_in(self, dir: &Path, config: &str) -> Bin {
        let bin = Bin::new(&dir.join("home"));
        match self {
            // SQLite is the default: the database is a file in the home.
            Backend::Sqlite => {
                bin.ok(&["init"]);
                fs::write(bin.home.join("bundleq.toml"), config).unwrap();
            }
            Backend::Postgres => {
                let url = pg_schema();
                bin.ok(&["init", "--database", &url]);
                fs::write(
                    bin.home.join("bundleq.toml"),
                    with_database_url(config, &url),
                )
                .unwrap();
            }
        };
        bin
    }

    /// A second home on the same database as `first` (another host
    /// working the same queue; on SQLite, the same file).
    pub fn init_beside(self, dir: &Path, first: &Bin, config: &str) -> Bin {
        let bin = Bin::new(&dir.join("home"));
        let location = Home::open(&first.home).unwrap().location();
        match location {
            Location::Sqlite(p) => {
                bin.ok(&["init"]);
                let line = format!("path = {:?}", p.display().to_string());
                fs::write(
                    bin.home.join("bundleq.toml"),
                    with_database_line(config, &line),
                )
                .unwrap();
            }
            Location::Postgres(_) => {
                let url = database_url_of(&first.home);
                bin.ok(&["init", "--database", &url]);
                fs::write(
                    bin.home.join("bundleq.toml"),
                    with_database_url(config, &url),
                )
                .unwrap();
            }
        }
        bin
    }
}

/// The `[database] url` of a home's configuration.
pub fn database_url_of(home: &Path) -> String {
    let text = fs::read_to_string(home.join("bundleq.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["database"]["url"].as_str().unwrap().to_owned()
}

/// `config` with `url` as its `[database] url`.
pub fn with_database_url(config: &str, url: &str) -> String {
    with_database_line(
        config,
        &format!("url = {}", toml::Value::String(url.to_owned())),
    )
}

/// `config` with `line` in its `[database]` table.
fn with_database_line(config: &str, line: &str) -> String {
    match config.find("[database]\n") {
        Some(at) => {
            let end = at + "[database]\n".len();
            format!("{}{line}\n{}", &config[..end], &config[end..])
        }
        None => format!("{config}\n[database]\n{line}\n"),
    }
}

/// Runs each test `fn name(b: Backend)` once per backend, as
/// `<backend>::name`. A function left out of the list is dead code, which
/// the lint gate refuses: no test is silently skipped.
#[macro_export]
macro_rules! for_each_backend {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] $(#[$attr])* fn $name() { super::$name($crate::common::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] $(#[$attr])* fn $name() {
                if $crate::common::Backend::Postgres.available() {
                    super::$name($crate::common::Backend::Postgres)
                }
            })*
        }
    };
}

/// A home configuration whose `ledger` handler appends each job's id to
/// `ledger` (one line per handler run).
pub fn ledger_config(ledger: &Path) -> String {
    let script = format!("echo \"$BUNDLEQ_JOB_ID\" >> {}", ledger.display());
    format!(
        "[handlers.ledger]\ncommand = [\"sh\", \"-c\", {script:?}]\n[workers]\npoll_interval = \"50ms\"\n"
    )
}

/// Asserts the ledger names `n` jobs, each run exactly once.
pub fn assert_each_ran_once(ledger: &Path, n: usize) {
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for line in fs::read_to_string(ledger).unwrap().lines() {
        *seen.entry(line.to_owned()).or_default() += 1;
    }
    assert_eq!(seen.len(), n);
    assert!(seen.values().all(|&n| n == 1), "a job ran twice");
}

/// Stops serves started with a captured stderr: each must exit 0, and none
/// may have said "busy" or "locked".
pub fn stop_quietly(serves: Vec<Child>) {
    let mut stderr = String::new();
    for s in serves {
        let (code, err) = Bin::terminate(s);
        assert_eq!(code, Some(0), "{err}");
        stderr.push_str(&err);
    }
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("busy") && !lower.contains("locked"),
        "{stderr}"
    );
}

/// A child's stderr, read as it comes, so a test can wait for a line.
pub struct LogTail {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    lines: crossbeam_channel::Receiver<()>,
}

impl LogTail {
    /// Takes the child's piped stderr.
    pub fn of(child: &mut Child) -> LogTail {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr is piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, lines) = crossbeam_channel::unbounded();
        let t = std::sync::Arc::clone(&text);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut all = t.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(());
            }
        });
        LogTail { text, lines }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits (bounded) until a line containing `needle` was written.
    pub fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.text().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                self.lines.recv_timeout(left).is_ok(),
                "timed out waiting for {needle:?} in: {}",
                self.text()
            );
        }
    }
}

/// A fixed start time for tests that drive the clock by hand.
pub fn t0() -> Timestamp {
    Timestamp::parse("2026-11-28T10:00:00Z").unwrap()
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A SQLite store in a temp dir with the given lock timeout (for tests
/// that are not part of the conformance suite).
pub fn temp_store(lock_timeout: Duration) -> (tempfile::TempDir, Store) {
    Backend::Sqlite.temp_store(lock_timeout)
}

pub fn job(tenant: Uuid) -> NewJob {
    NewJob {
        tenant_id: tenant,
        run_id: Uuid::now_v7(),
        job_type: "process_bundle".to_owned(),
        payload: serde_json::json!({ "hello": "world" }),
        max_attempts: None,
        not_before: None,
    }
}

/// Waits (bounded) until `check` holds. The processes under test tell us
/// nothing but the files and rows they write, so tests poll those.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `NAME.bundle/` under `dir` with one text file of `size` bytes
/// (bigger than `bundleq::objects::IN_DATABASE_MAX` makes it a file
/// object) and returns the folder.
pub fn file_bundle(dir: &Path, name: &str, size: usize) -> PathBuf {
    let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    text_file_bundle(dir, name, &text)
}

/// Writes `NAME.bundle/` under `dir` with `text` as its one file,
/// `big.txt`, and returns the folder.
pub fn text_file_bundle(dir: &Path, name: &str, text: &str) -> PathBuf {
    let folder = dir.join(format!("{name}.bundle"));
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("big.txt"), text).unwrap();
    let bundle = serde_json::json!({
        "bundle_version": 1,
        "run_id": Uuid::now_v7(),
        "title": format!("File bundle {name}"),
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{
            "uri": "file:big.txt",
            "path": "big.txt",
            "sha256": bundleq::digest::Sha256Hex::of(text.as_bytes()).as_str(),
            "media_type": "text/plain"
        }]
    });
    fs::write(folder.join("bundle.json"), bundle.to_string()).unwrap();
    folder
}

/// A small valid bundle of this job type, distinct for each call.
pub fn bundle_text(job_type: &str, i: usize) -> String {
    serde_json::json!({
        "bundle_version": 1,
        "run_id": Uuid::now_v7(),
        "job_type": job_type,
        "title": format!("Run {i}"),
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{"uri": format!("https://example.org/{i}"), "sha256": "d".repeat(64)}]
    })
    .to_string()
}

/// Writes `n` bundles into `dir` as `<prefix><i>.json`; returns their paths.
pub fn write_bundles(dir: &Path, prefix: &str, job_type: &str, n: usize) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{prefix}{i:05}.json"));
            fs::write(&p, bundle_text(job_type, i)).unwrap();
            p
        })
        .collect()
}

/// Archived entries (not their reports, nor a report being written) under
/// accepted/ or rejected/.
pub fn archived(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(days) = fs::read_dir(root) else {
        return out;
    };
    for day in days {
        for e in fs::read_dir(day.unwrap().path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".errors.json") && !name.starts_with('.') {
                out.push(e.path());
            }
        }
    }
    out
}

/// Entries not yet finished by the inbox: those still in `inbox/` (not
/// hidden) plus those claimed by some process under `claims/`.
pub fn unfinished(home: &Path) -> usize {
    let inbox = fs::read_dir(home.join("inbox"))
        .map(|d| {
            d.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
        })
        .unwrap_or(0);
    inbox + claimed(home).len()
}

/// Entries under `claims/<worker>/<batch>/<tenant>/`.
pub fn claimed(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let level = |p: &Path| -> Vec<PathBuf> {
        fs::read_dir(p)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    for worker in level(&home.join("claims")) {
        for batch in level(&worker) {
            for tenant in level(&batch) {
                out.extend(level(&tenant));
            }
        }
    }
    out
}

/// The binary under test: this build's, or `BUNDLEQ_TEST_BIN` (to show that
/// a regression test fails on an older build: `BUNDLEQ_TEST_BIN=/old/bundleq
/// cargo test --test hardening`).
pub fn exe() -> PathBuf {
    std::env::var_os("BUNDLEQ_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_bundleq")),
        PathBuf::from,
    )
}

/// The `bundleq` binary under test, run with a home.
pub struct Bin {
    pub home: PathBuf,
}

impl Bin {
    pub fn new(home: &Path) -> Bin {
        Bin {
            home: home.to_owned(),
        }
    }

    /// A new home in a temp dir, with `config` as its bundleq.toml.
    pub fn init_with(config: &str) -> (tempfile::TempDir, Bin) {
        let dir = tempfile::tempdir().unwrap();
        let bin = Bin::new(&dir.path().join("home"));
        bin.ok(&["init"]);
        fs::write(bin.home.join("bundleq.toml"), config).unwrap();
        (dir, bin)
    }

    /// Starts `serve` in the background. Its stderr is piped when
    /// `capture` (read it with `wait_with_output`), else discarded.
    pub fn serve(&self, args: &[&str], capture: bool) -> Child {
        Command::new(exe())
            .arg("--home")
            .arg(&self.home)
            .arg("serve")
            .args(args)
            .env_remove("BUNDLEQ_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env("SECRET_TOKEN", "must-not-leak")
            .stdout(Stdio::null())
            .stderr(if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap()
    }

    /// Runs `work` while another thread runs `prune` on this home in a
    /// loop (at least once, until `work` is done), and returns its value.
    pub fn while_pruning<T>(&self, work: impl FnOnce() -> T) -> T {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let (home, flag) = (self.home.clone(), stop.clone());
        let pruner = std::thread::spawn(move || {
            let bin = Bin::new(&home);
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) || n == 0 {
                bin.ok(&["prune"]);
                n += 1;
            }
        });
        let value = work();
        stop.store(true, Ordering::Relaxed);
        pruner.join().unwrap();
        value
    }

    /// The `missing` problems `verify --json` reports: sources whose
    /// object is stored nowhere.
    pub fn missing_objects(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["--json", "verify"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "verify printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "missing")
            .cloned()
            .collect()
    }

    /// Submits every path in one call.
    pub fn submit_all(&self, paths: &[PathBuf]) {
        let mut args = vec!["submit".to_owned()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&refs);
    }

    /// The home's database, through the library (whatever its backend).
    pub fn store(&self) -> Store {
        Home::open(&self.home).unwrap().store().unwrap()
    }

    /// The home's default tenant.
    pub fn tenant(&self) -> Uuid {
        let home = Home::open(&self.home).unwrap();
        home.default_tenant(&mut home.store().unwrap()).unwrap()
    }

    /// Jobs in the home, of every tenant.
    pub fn jobs_total(&self) -> u64 {
        self.store().counts_all().unwrap().values().sum()
    }

    /// Jobs in the home with this status, of every tenant.
    pub fn jobs_with(&self, status: JobStatus) -> u64 {
        self.store()
            .counts_all()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Runs in the home, of every tenant.
    pub fn runs_total(&self) -> u64 {
        let mut store = self.store();
        let tenants = store.tenants().unwrap();
        tenants
            .iter()
            .map(|t| store.count_runs(t.id).unwrap())
            .sum()
    }

    /// Tenants the home knows.
    pub fn tenants_total(&self) -> usize {
        self.store().tenants().unwrap().len()
    }

    /// The database's own integrity check: `"ok"` when sound.
    pub fn integrity(&self) -> String {
        let home = Home::open(&self.home).unwrap();
        Store::open_unchecked(&home.location(), home.config().store_options())
            .unwrap()
            .integrity_check()
            .unwrap()
            .join("\n")
    }

    /// Sends SIGTERM and waits; returns the exit code and stderr.
    pub fn terminate(child: Child) -> (Option<i32>, String) {
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(exe())
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env_remove("BUNDLEQ_HOME")
            .env_remove("BUNDLEQ_DATABASE_URL")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// Runs and requires exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bundleq {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with --json and parses stdout as JSON Lines (streams such as
    /// `submit` and `validate`).
    pub fn json_lines(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Runs with --json and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

/// Waits (bounded) for a child to exit; its exit code.
pub fn exits_within(child: &mut Child, limit: Duration, what: &str) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child and returns its stderr.
pub fn stderr_of(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
}

/// Sets the modification time of `path` (and of everything in it, for a
/// folder) an hour back: the entry looks settled to the inbox at once,
/// without a test sleeping through the settle period.
pub fn age(path: &Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            age(&e.unwrap().path());
        }
    }
    fs::File::open(path).unwrap().set_modified(old).unwrap();
}

/// A home committed under `fixtures/homes/`, made by an earlier release.
pub fn fixture_home(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/homes")
        .join(name)
}

/// Copies a folder tree (to use a fixture without changing it).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

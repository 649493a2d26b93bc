//! Shared test harness: temp homes, stores and jobs.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bundleq::store::{NewJob, QueuePolicy, StoreOptions};
use bundleq::{Store, Timestamp};
use uuid::Uuid;

/// A fixed start time for tests that drive the clock by hand.
pub fn t0() -> Timestamp {
    Timestamp::parse("2026-11-28T10:00:00Z").unwrap()
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A store in a temp dir with the given lock timeout.
pub fn temp_store(lock_timeout: Duration) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        policy: QueuePolicy {
            lock_timeout,
            ..QueuePolicy::default()
        },
        ..StoreOptions::default()
    };
    let store = Store::create(&dir.path().join("bundleq.db"), options).unwrap();
    (dir, store)
}

pub fn job(tenant: Uuid) -> NewJob {
    NewJob {
        tenant_id: tenant,
        run_id: Uuid::now_v7(),
        job_type: "process_bundle".to_owned(),
        payload: serde_json::json!({ "hello": "world" }),
        max_attempts: None,
    }
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

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bundleq"))
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env_remove("BUNDLEQ_HOME")
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

    /// Runs with --json and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

//! `bundleq bench` runs end to end and reports every figure (tiny sizes:
//! tests check what is reported, never how fast).

use std::process::Command;

#[test]
fn bench_reports_every_figure_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bundleq"))
        .args([
            "--json",
            "bench",
            "--jobs",
            "500",
            "--big-queue",
            "2000",
            "--drop-files",
            "50",
        ])
        .args(["--samples", "20", "--idle-seconds", "1", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "enqueue_single_per_s",
        "enqueue_batch_per_s",
        "drain_per_s",
        "lifecycle_per_s",
        "lifecycle_ratio",
        "drain_ratio",
        "claim_cost_small_us",
        "claim_cost_big_us",
        "claim_cost_ratio",
        "ingest_files_per_s",
        "serve_rss_big_queue_mib",
    ] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r:#}");
    }
    for key in ["enqueue_per_s", "claim_complete_per_s", "lifecycle_per_s"] {
        assert!(
            r["baseline"][key].as_f64().is_some_and(|v| v > 0.0),
            "baseline.{key}"
        );
    }
    assert!(
        r["idle_serve_cpu_percent"]
            .as_f64()
            .is_some_and(|v| v >= 0.0)
    );
    assert_eq!(r["claim_latency"]["samples"], 20);
    assert_eq!(r["drop_latency"]["samples"], 20);
    assert_eq!(r["jobs"], 500);
    assert_eq!(r["synchronous"], "full");
    // Every goal says whether this run met it; the baseline says what it is.
    let goals = r["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 7, "{r:#}");
    for g in goals {
        assert!(g["met"].is_boolean() && g["goal"].is_string() && g["measure"].is_string());
    }
    assert!(r["baseline_is"].as_str().unwrap().contains("plain SQLite"));
    // The temp homes are gone afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

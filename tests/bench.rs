//! `bundleq bench --quick` runs end to end and reports every figure (tests
//! check what is reported, never how fast).

use std::process::Command;

#[test]
fn bench_quick_reports_every_figure_and_goal_as_json() {
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist yet is made.
    let inside = dir.path().join("not/yet");
    let out = Command::new(env!("CARGO_BIN_EXE_bundleq"))
        .args(["--json", "bench", "--quick", "--dir"])
        .arg(&inside)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let positive = |v: &serde_json::Value| v.as_f64().is_some_and(|v| v > 0.0);
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
        "claim_cost_normal_small_us",
        "claim_cost_normal_big_us",
        "claim_cost_normal_ratio",
        "ingest_files_per_s",
        "serve_rss_big_queue_mib",
        "submit_read_hash_per_s",
        "submit_per_s",
        "footprint_source_bytes",
        "footprint_disk_bytes",
        "footprint_ratio",
        "process_per_s",
        "sha256_one_core_mib_s",
        "process_one_worker_mib_s",
        "process_two_workers_mib_s",
        "process_scaling",
        "verify_mib_s",
        "verify_read_hash_mib_s",
        "verify_ratio",
        "verify_small_objects_per_s",
    ] {
        assert!(positive(&r[key]), "{key}: {r:#}");
    }
    // Past the floor, a claim may measure a little faster than a minimal
    // commit on a noisy disk: a number, not necessarily positive.
    assert!(r["claim_overhead_us"].is_f64(), "{r:#}");
    for key in [
        "enqueue_per_s",
        "claim_complete_per_s",
        "lifecycle_per_s",
        "commit_p50_us",
    ] {
        assert!(positive(&r["baseline"][key]), "baseline.{key}: {r:#}");
    }
    assert!(
        r["idle_serve_cpu_percent"]
            .as_f64()
            .is_some_and(|v| v >= 0.0)
    );
    // --quick's sizes, each figure from as many samples as asked.
    assert_eq!(r["claim_latency"]["samples"], 100);
    assert_eq!(r["claim_latency_normal"]["samples"], 100);
    assert_eq!(r["claim_floor"]["samples"], 100);
    assert!(positive(&r["claim_floor"]["p50_us"]), "{r:#}");
    assert_eq!(r["drop_latency"]["samples"], 100);
    assert_eq!(r["jobs"], 5000);
    assert_eq!(r["submit_bundles"], 500);
    assert_eq!(r["footprint_bundles"], 200);
    assert_eq!(r["footprint_source_bytes"], 200 * 10 * 1100);
    assert_eq!(r["idle_seconds"], 1);
    assert_eq!(r["scaling_bundles"], 4);
    assert_eq!(r["search_sources"], 10_000);
    // Three searches, each timed as its own process, each finding something
    // in the search home (two words together may find nothing).
    let search = r["search"].as_array().unwrap();
    assert_eq!(search.len(), 3, "{r:#}");
    for (i, s) in search.iter().enumerate() {
        assert!(s["query"].is_string(), "{s}");
        assert_eq!(s["latency"]["samples"], 20, "{s}");
        assert!(positive(&s["latency"]["p50_us"]), "{s}");
        if i != 1 {
            assert!(positive(&s["total"]), "{s}");
        }
    }
    // The dashboard's overview on the large queue's home (2 x 20,000 jobs).
    let o = &r["overview"];
    assert_eq!(o["samples"], 20, "{o}");
    assert!(o["jobs"].as_u64().is_some_and(|n| n >= 40_000), "{o}");
    for key in ["first_ms", "p50_ms", "p95_ms"] {
        assert!(positive(&o[key]), "overview.{key}: {o}");
    }
    assert_eq!(r["synchronous"], "full");
    // Every goal says whether this run met it; the baseline says what it is.
    let goals = r["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 15, "{r:#}");
    for g in goals {
        assert!(
            g["met"].is_boolean() && g["goal"].is_string() && g["measure"].is_string(),
            "{g}"
        );
        assert!(g["value"].is_number(), "{g}");
    }
    assert!(r["baseline_is"].as_str().unwrap().contains("plain SQLite"));
    // The temp homes are gone afterwards; the folder made for them stays.
    assert_eq!(std::fs::read_dir(&inside).unwrap().count(), 0);
}

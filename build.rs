//! Rebuild when a migration is added or changed: refinery embeds them at
//! compile time, and Cargo cannot see that on its own. Each backend keeps
//! its migrations in a sibling folder (refinery walks a folder
//! recursively, so backends are never nested).
//!
//! `CI=true` at build time sets the `bundleq_ci` cfg: tests that need a
//! part of the machine (root to mount a filesystem) then run and must pass,
//! where elsewhere they are reported as ignored with their reason.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(bundleq_ci)");
    println!("cargo:rerun-if-env-changed=CI");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        println!("cargo:rustc-cfg=bundleq_ci");
    }
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations/sqlite");
}

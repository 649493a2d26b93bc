//! Rebuild when a migration is added or changed: refinery embeds them at
//! compile time, and Cargo cannot see that on its own. Each backend keeps
//! its migrations in a sibling folder (refinery walks a folder
//! recursively, so backends are never nested).
//!
//! The SQLite migrations' head version is also handed to the code
//! (`BUNDLEQ_SQLITE_HEAD`), so that opening a database already at head does
//! not build refinery's runner (which parses every migration's name with a
//! regex: a fifth of a short command's time).
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
    let head = std::fs::read_dir("migrations/sqlite")
        .expect("migrations/sqlite is readable")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (version, _) = name.strip_prefix('V')?.split_once("__")?;
            version.parse::<u32>().ok()
        })
        .max()
        .expect("migrations/sqlite holds V<n>__<name>.sql files");
    println!("cargo:rustc-env=BUNDLEQ_SQLITE_HEAD={head}");
}

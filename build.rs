//! Rebuild when a migration is added or changed: refinery embeds them at
//! compile time, and Cargo cannot see that on its own. Each backend keeps
//! its migrations in a sibling folder (refinery walks a folder
//! recursively, so backends are never nested).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations/sqlite");
}

//! Rebuild when a migration is added or changed: refinery embeds them at
//! compile time, and Cargo cannot see that on its own.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

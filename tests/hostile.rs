//! Hostile input: each case is refused with a one-line error plus the error
//! list (exit 65), never a panic, and within bounded memory — the binary
//! runs under a 192 MiB address-space limit (`ulimit -v`), so reading a
//! 200 MiB file or materialising ten million array elements would abort it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

const MEMORY_LIMIT_KIB: u32 = 192 * 1024;

/// `bundleq` to be run under the memory limit.
fn limited_bundleq() -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_bundleq"))
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `bundleq --home HOME validate PATH` under the memory limit and
/// returns stderr, requiring exit 65.
fn refused(home: &Path, path: &Path) -> String {
    let out = limited_bundleq()
        .arg("--home")
        .arg(home)
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(65), "{}: {stderr}", path.display());
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut lines = stderr.lines();
    let first = lines.next().unwrap();
    assert!(first.contains("validation error"), "{stderr}");
    for line in lines {
        assert!(
            line.contains(": "),
            "every further line is `path: message`: {line}"
        );
    }
    stderr
}

fn bundle_with(sources: &str, extra: &str) -> String {
    format!(
        r#"{{"bundle_version": 1, "run_id": "0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a11", "title": "t",
            "created_at": "2026-11-28T10:00:00Z", "sources": {sources}{extra}}}"#
    )
}

const SHA: &str = "382635c9325bf3273d195ff1b8a44e5b11afd7d97addeb8863ea35feb98c1a07";

#[test]
fn a_200_mib_file_is_refused_after_reading_at_most_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.json");
    let f = fs::File::create(&p).unwrap();
    f.set_len(200 * 1024 * 1024).unwrap();
    let err = refused(dir.path(), &p);
    assert!(
        err.contains("larger than the limit of 16777216 bytes"),
        "{err}"
    );
}

#[test]
fn deeply_nested_brackets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("deep.json");
    fs::write(&p, "[".repeat(100_000)).unwrap();
    let err = refused(dir.path(), &p);
    assert!(
        err.contains("nesting is deeper than the limit of 64 levels"),
        "{err}"
    );
}

#[test]
fn ten_million_sources_inside_the_size_limit_are_refused_at_the_count_limit() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let init = Command::new(env!("CARGO_BIN_EXE_bundleq"))
        .arg("--home")
        .arg(&home)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success());
    fs::write(
        home.join("bundleq.toml"),
        "[limits]\nmax_bundle_bytes = 67108864\n",
    )
    .unwrap();
    let mut sources = String::with_capacity(20_000_010);
    sources.push('[');
    for i in 0..10_000_000 {
        if i > 0 {
            sources.push(',');
        }
        sources.push('0');
    }
    sources.push(']');
    let p = dir.path().join("many.json");
    fs::write(&p, bundle_with(&sources, "")).unwrap();
    assert!(fs::metadata(&p).unwrap().len() < 64 * 1024 * 1024);
    let err = refused(&home, &p);
    assert!(
        err.contains("sources: too many sources: the limit is 10000"),
        "{err}"
    );
}

#[test]
fn duplicate_keys_huge_numbers_and_escaping_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(r#"[{{"uri": "u", "sha256": "{SHA}"}}]"#);
    let cases = [
        (
            "dup.json",
            r#"{"title": "a", "title": "b"}"#.to_owned(),
            "title: duplicate key",
        ),
        (
            "inf.json",
            bundle_with(&src, r#", "metadata": {"x": 1e400}"#),
            "metadata.x: invalid JSON: number out of range",
        ),
        (
            "big.json",
            bundle_with(&src, r#", "metadata": {"n": 18446744073709551616}"#),
            "metadata.n: number is too large to store exactly",
        ),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        let err = refused(dir.path(), &p);
        assert!(err.contains(want), "{name}: {err}");
    }

    // A directory bundle naming ../../etc/passwd.
    let b = dir.path().join("escape.bundle");
    fs::create_dir(&b).unwrap();
    let bad_src = format!(r#"[{{"uri": "u", "sha256": "{SHA}", "path": "../../etc/passwd"}}]"#);
    fs::write(b.join("bundle.json"), bundle_with(&bad_src, "")).unwrap();
    let err = refused(dir.path(), &b);
    assert!(
        err.contains("sources.0.path: path must not contain '..'"),
        "{err}"
    );
}

#[test]
fn a_symlink_inside_a_directory_bundle_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    fs::write(&outside, "paper").unwrap(); // hashes to SHA: following it would pass
    for (name, rel) in [("file-link", "paper.txt"), ("dir-link", "sub/paper.txt")] {
        let b = dir.path().join(format!("{name}.bundle"));
        fs::create_dir(&b).unwrap();
        if rel.contains('/') {
            symlink(dir.path(), b.join("sub")).unwrap();
            fs::rename(&outside, dir.path().join("paper.txt")).unwrap();
        } else {
            symlink(&outside, b.join(rel)).unwrap();
        }
        let src = format!(r#"[{{"uri": "u", "sha256": "{SHA}", "path": "{rel}"}}]"#);
        fs::write(b.join("bundle.json"), bundle_with(&src, "")).unwrap();
        let err = refused(dir.path(), &b);
        assert!(
            err.contains("sources.0.path: path must not")
                && err.contains("symlink (symlinks are not followed)"),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_fifo_given_as_a_bundle_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.json");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = Command::new(env!("CARGO_BIN_EXE_bundleq"))
        .args([
            "--home",
            dir.path().to_str().unwrap(),
            "validate",
            fifo.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("is not a regular file") && err.lines().count() == 1,
        "{err}"
    );
}

/// Writes `NAME.bundle/` with `files` text files of 120 KiB (small
/// objects, each distinct) and returns it.
fn small_files_bundle(dir: &Path, name: &str, files: usize, seed: usize) -> std::path::PathBuf {
    let folder = dir.join(format!("{name}.bundle"));
    fs::create_dir(&folder).unwrap();
    let mut sources = Vec::new();
    for i in 0..files {
        let mut bytes = vec![b'a' + (i % 26) as u8; 120 * 1024];
        bytes[..16].copy_from_slice(format!("{seed:08}{i:08}").as_bytes());
        let file = format!("f{i:04}.txt");
        fs::write(folder.join(&file), &bytes).unwrap();
        sources.push(format!(
            r#"{{"uri": "file:{file}", "path": "{file}", "sha256": "{}"}}"#,
            bundleq::digest::Sha256Hex::of(&bytes).as_str()
        ));
    }
    let json = format!(
        r#"{{"bundle_version": 1, "run_id": "{}", "title": "{name}",
            "created_at": "2026-11-28T10:00:00Z", "sources": [{}]}}"#,
        uuid::Uuid::now_v7(),
        sources.join(", ")
    );
    fs::write(folder.join("bundle.json"), json).unwrap();
    folder
}

/// `bundleq submit PATHS` on a new home under the memory limit; requires
/// every bundle accepted. (The cap on bytes read ahead of the writer is
/// tested on its rule, in `accept`: a writer slower than the readers cannot
/// be arranged here.)
fn submit_limited(dir: &Path, paths: &[std::path::PathBuf]) {
    let home = dir.join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_bundleq"))
        .arg("--home")
        .arg(&home)
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = limited_bundleq()
        .arg("--home")
        .arg(&home)
        .arg("submit")
        .args(paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("accepted")).count(),
        paths.len(),
        "{stdout}"
    );
}

#[test]
fn a_folder_of_160_mib_of_small_files_is_accepted_within_the_memory_limit() {
    // Small objects are stored by their run's transaction, so they are held
    // in memory until it commits: only up to a cap per bundle; past it they
    // are stored as files first.
    let dir = tempfile::tempdir().unwrap();
    let folder = small_files_bundle(dir.path(), "many", 1400, 0);
    submit_limited(dir.path(), &[folder]);
}

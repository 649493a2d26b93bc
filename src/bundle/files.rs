//! Reading bundles from disk: a `*.json` file or a `NAME.bundle/` folder
//! with `bundle.json` and the source files it names.
//!
//! Source paths are checked component by component and opened with
//! `O_NOFOLLOW`: nothing is read through a symlink, nothing outside the
//! bundle, nothing but regular files. Reads are bounded by the limits, and a
//! file is hashed from the same handle whose bytes are staged for storage.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{
    BundleDir, Files, Limits, ReadBundle, Sha256Hex, ValidationError, ValidationErrors, parse,
    rules, too_large,
};
use crate::error::{Error, IoContext, Result};
use crate::objects::Objects;

/// The file a directory bundle holds its JSON in.
pub const BUNDLE_JSON: &str = "bundle.json";

/// A source file of a directory bundle, hashed while it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The `path` the bundle gave.
    pub rel_path: String,
    /// Bytes read.
    pub size: u64,
    /// Digest of exactly those bytes.
    pub sha256: Sha256Hex,
    /// A private copy of those bytes, when staging was asked for.
    pub staged: Option<PathBuf>,
}

impl SourceFile {
    /// Removes the staged copy (a temp file of ours), if any.
    pub fn discard(&self) {
        if let Some(p) = &self.staged {
            let _ = fs::remove_file(p);
        }
    }
}

/// Opens without following a final symlink and without blocking on a FIFO.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Reads at most `limit + 1` bytes of a regular file.
fn read_bounded(path: &Path, limit: u64) -> Result<std::result::Result<Vec<u8>, u64>> {
    let file = open_nofollow(path).io("open", path)?;
    let meta = file.metadata().io("inspect", path)?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument {
            what: "bundle",
            message: format!("{} is not a regular file", path.display()),
        });
    }
    let mut buf = Vec::with_capacity(meta.len().min(limit + 1) as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .io("read", path)?;
    if buf.len() as u64 > limit {
        return Ok(Err(meta.len().max(buf.len() as u64)));
    }
    Ok(Ok(buf))
}

/// Reads and validates the bundle at `path` (a JSON file or a bundle
/// folder). With `stage`, each source file's bytes are also copied there as
/// they are hashed, for the caller to store.
///
/// An unreadable path is an `Err`; an invalid bundle is an `Ok` whose
/// verdict holds the errors.
pub fn read_bundle(path: &Path, limits: &Limits, stage: Option<&Path>) -> Result<ReadBundle> {
    let meta = fs::metadata(path).io("inspect", path)?;
    let (json_path, dir) = if meta.is_dir() {
        (path.join(BUNDLE_JSON), Some(path))
    } else {
        (path.to_owned(), None)
    };
    if dir.is_some() && !json_path.exists() {
        return Ok(ReadBundle {
            path: path.to_owned(),
            sha256: Sha256Hex::of(b""),
            json: None,
            verdict: Err(ValidationErrors::one(ValidationError::new(
                "",
                format!("a bundle folder must hold {BUNDLE_JSON}"),
                None,
            ))),
        });
    }
    let bytes = match read_bounded(&json_path, limits.max_bundle_bytes)? {
        Ok(b) => b,
        Err(size) => {
            return Ok(ReadBundle {
                path: path.to_owned(),
                sha256: Sha256Hex::of(b""),
                json: None,
                verdict: Err(ValidationErrors::one(too_large(size, limits))),
            });
        }
    };
    let sha256 = Sha256Hex::of(&bytes);
    let json = String::from_utf8(bytes).ok();
    let verdict = match &json {
        None => Err(ValidationErrors::one(ValidationError::new(
            "",
            "bundle is not valid UTF-8",
            None,
        ))),
        Some(text) => parse::parse(text.as_bytes(), limits)
            .map_err(ValidationErrors::one)
            .and_then(|value| {
                let files = match dir {
                    Some(root) => Files::Dir(BundleDir {
                        root,
                        limits,
                        stage,
                    }),
                    None => Files::None,
                };
                rules::validate(value, limits, &files)
            }),
    };
    Ok(ReadBundle {
        path: path.to_owned(),
        sha256,
        json,
        verdict,
    })
}

/// Checks a relative source path and opens, hashes (and maybe stages) the
/// file it names. The error is a message for the `path` field.
pub(crate) fn open_source(
    dir: &BundleDir<'_>,
    rel: &str,
) -> std::result::Result<SourceFile, String> {
    let parts = check_rel_path(rel)?;
    let mut at = dir.root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = fs::symlink_metadata(&at).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "file not found in the bundle folder".to_owned(),
            _ => format!("cannot inspect the file: {e}"),
        })?;
        if meta.file_type().is_symlink() {
            return Err(
                "path must not go through a symlink (symlinks are not followed)".to_owned(),
            );
        }
        let last = i + 1 == parts.len();
        if !last && !meta.is_dir() {
            return Err(format!("'{}' is not a folder", parts[..=i].join("/")));
        }
        if last && !meta.is_file() {
            return Err("path must name a regular file".to_owned());
        }
    }
    let file = open_nofollow(&at).map_err(|e| format!("cannot open the file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect the file: {e}"))?;
    if !meta.is_file() {
        return Err("path must name a regular file".to_owned());
    }
    hash_file(file, rel, dir.limits, dir.stage)
}

/// Re-reads a stored bundle's file source from the object store: the path
/// is checked as at upload, the bytes are those stored under `sha`.
pub(crate) fn open_stored(
    objects: &Objects,
    rel: &str,
    sha: &Sha256Hex,
    limits: &Limits,
) -> std::result::Result<SourceFile, String> {
    check_rel_path(rel)?;
    let path = objects.path_of(sha);
    let file = open_nofollow(&path).map_err(|e| {
        format!(
            "the stored bytes of this file cannot be read ({}): {e}",
            path.display()
        )
    })?;
    hash_file(file, rel, limits, None)
}

/// The components of a bundle-relative path, or why it is not one.
fn check_rel_path(rel: &str) -> std::result::Result<Vec<&str>, String> {
    if rel.contains('\0') {
        return Err("path must not contain NUL".to_owned());
    }
    if rel.contains('\\') {
        return Err("path must use '/' separators, not backslashes".to_owned());
    }
    if rel.starts_with('/') {
        return Err("path must be relative to the bundle folder, not absolute".to_owned());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.contains(&"..") {
        return Err("path must not contain '..'".to_owned());
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err("path must not contain empty or '.' components".to_owned());
    }
    if parts == [BUNDLE_JSON] {
        return Err(format!("path must not name {BUNDLE_JSON} itself"));
    }
    Ok(parts)
}

fn hash_file(
    file: File,
    rel: &str,
    limits: &Limits,
    stage: Option<&Path>,
) -> std::result::Result<SourceFile, String> {
    let mut staged = match stage {
        Some(dir) => Some(
            tempfile::Builder::new()
                .prefix(".stage-")
                .tempfile_in(dir)
                .map_err(|e| format!("cannot stage the file in {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let mut reader = file.take(limits.max_source_file_bytes + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the file: {e}")),
        };
        size += n as u64;
        if size > limits.max_source_file_bytes {
            return Err(format!(
                "file is larger than the limit of {} bytes",
                limits.max_source_file_bytes
            ));
        }
        hasher.update(&buf[..n]);
        if let Some(t) = staged.as_mut() {
            t.write_all(&buf[..n])
                .map_err(|e| format!("cannot stage the file: {e}"))?;
        }
    }
    let staged = match staged {
        Some(t) => {
            let (_, path) = t
                .keep()
                .map_err(|e| format!("cannot stage the file: {e}"))?;
            Some(path)
        }
        None => None,
    };
    Ok(SourceFile {
        rel_path: rel.to_owned(),
        size,
        sha256: Sha256Hex::from_digest(&hasher.finalize()),
        staged,
    })
}

//! Content-addressed storage of source bytes under `<home>/objects/`:
//! `objects/ab/cdef…` holds the bytes whose sha256 is `abcdef…`.
//!
//! Invariants: an object file is complete and fsynced before it gets its
//! final name (write to a temp file, fsync, rename, fsync the folder), so a
//! name always means its bytes; objects are never modified, and writing one
//! that exists is a no-op. Every folder is 0700 and every object 0600.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Sha256Hex;
use crate::error::{IoContext, Result};

/// The `objects/` folder of a home.
#[derive(Clone, Debug)]
pub struct Objects {
    root: PathBuf,
}

impl Objects {
    /// Objects kept under `root` (created on first write).
    pub fn new(root: PathBuf) -> Objects {
        Objects { root }
    }

    /// Where the object with this digest lives.
    pub fn path_of(&self, sha: &Sha256Hex) -> PathBuf {
        let s = sha.as_str();
        self.root.join(&s[..2]).join(&s[2..])
    }

    /// A fresh private folder for staging files of one bundle; removed when
    /// dropped, with whatever was not moved out of it.
    pub fn staging(&self) -> Result<tempfile::TempDir> {
        let tmp = self.root.join("tmp");
        private_dir(&tmp)?;
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&tmp)
            .io("create a staging folder in", &tmp)
    }

    /// Moves a staged file (whose bytes hash to `sha`) to its final name.
    pub fn commit_staged(&self, staged: &Path, sha: &Sha256Hex) -> Result<PathBuf> {
        let target = self.path_of(sha);
        if target.is_file() {
            fs::remove_file(staged).io("remove staged file", staged)?;
            return Ok(target);
        }
        File::open(staged)
            .and_then(|f| f.sync_all())
            .io("fsync", staged)?;
        let dir = target.parent().unwrap_or(&self.root);
        private_dir(dir)?;
        fs::rename(staged, &target).io("store object", &target)?;
        sync_dir(dir)?;
        Ok(target)
    }

    /// Stores `bytes` (whose digest is `sha`).
    pub fn put(&self, bytes: &[u8], sha: &Sha256Hex) -> Result<PathBuf> {
        let target = self.path_of(sha);
        if target.is_file() {
            return Ok(target);
        }
        let staging = self.staging()?;
        let tmp = staging.path().join("object");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .io("create", &tmp)?;
        f.write_all(bytes).io("write", &tmp)?;
        drop(f);
        self.commit_staged(&tmp, sha)
    }

    /// Reads an object, at most `limit` bytes.
    pub fn read(&self, sha: &Sha256Hex, limit: u64) -> Result<Vec<u8>> {
        let path = self.path_of(sha);
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .io("read object", &path)?;
        Ok(buf)
    }
}

/// Creates a folder (and its parents) with mode 0700.
fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .io("create folder", dir)
}

/// fsyncs a folder so that a rename into it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .io("fsync folder", dir)
}

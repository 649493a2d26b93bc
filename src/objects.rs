//! Content-addressed storage of source bytes. Objects of at most
//! [`IN_DATABASE_MAX`] bytes are kept in the database (stored by the store
//! call that records their run, so one commit makes a whole batch durable);
//! bigger ones are files under `<home>/objects/`: `objects/ab/cdef…` holds
//! the bytes whose sha256 is `abcdef…`. Reads look in the database first,
//! then for a file (objects of earlier releases are all files).
//!
//! On a database server shared by several hosts (PostgreSQL) every object
//! lives in the database, whatever its size, so that a job accepted on one
//! host can be processed on another: [`Objects::in_database_only`] makes
//! `put` and `commit_staged` store into it (streamed, hashed as they go).
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
use crate::error::{Error, IoContext, Result};
use crate::store::{Readers, Store};

/// Objects of at most this many bytes are kept in the database: SQLite
/// reads and writes blobs this small faster than the filesystem, a batch of
/// them is made durable by one commit, and they waste no partly filled
/// disk blocks.
pub const IN_DATABASE_MAX: u64 = 128 * 1024;

/// Whether an object of `size` bytes is kept in the database.
pub fn in_database(size: u64) -> bool {
    size <= IN_DATABASE_MAX
}

/// A stored object, opened.
#[derive(Debug)]
pub enum Body {
    /// Kept in the database: its bytes.
    Memory(Vec<u8>),
    /// A file under `objects/`, opened (never through a symlink).
    File(File),
}

/// The `objects/` folder of a home.
#[derive(Clone, Debug)]
pub struct Objects {
    root: PathBuf,
    /// Connections to a database that keeps every object (no files).
    db: Option<Readers>,
}

impl Objects {
    /// Objects kept under `root` (created on first write).
    pub fn new(root: PathBuf) -> Objects {
        Objects { root, db: None }
    }

    /// Objects that all live in the database `db` reaches (`root` still
    /// holds staging folders, and is read for objects of earlier homes).
    pub fn in_database_only(root: PathBuf, db: Readers) -> Objects {
        Objects { root, db: Some(db) }
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

    /// Moves a staged file (whose bytes hash to `sha`) to its final name
    /// (or into the database, which then checks the hash as it reads).
    pub fn commit_staged(&self, staged: &Path, sha: &Sha256Hex) -> Result<PathBuf> {
        if let Some(db) = &self.db {
            let mut file = File::open(staged).io("read staged file", staged)?;
            db.with(|store| store.put_object(sha, &mut file))?;
            fs::remove_file(staged).io("remove staged file", staged)?;
            return Ok(self.path_of(sha));
        }
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
        if let Some(db) = &self.db {
            db.with(|store| store.put_object(sha, &mut &bytes[..]))?;
            return Ok(self.path_of(sha));
        }
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

    /// Opens the object with this digest, from the database of `store` or
    /// as a file; `None` when it is in neither.
    pub fn open(&self, store: &mut Store, sha: &Sha256Hex) -> Result<Option<Body>> {
        if let Some(bytes) = store.object(sha)? {
            return Ok(Some(Body::Memory(bytes)));
        }
        let path = self.path_of(sha);
        match rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Body::File(File::from(fd)))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::Io {
                action: "open object",
                path,
                source: std::io::Error::from_raw_os_error(e.raw_os_error()),
            }),
        }
    }

    /// Reads an object, at most `limit` bytes; an object that is stored
    /// nowhere is an I/O error (`NotFound`).
    pub fn read(&self, store: &mut Store, sha: &Sha256Hex, limit: u64) -> Result<Vec<u8>> {
        let path = self.path_of(sha);
        match self.open(store, sha)? {
            Some(Body::Memory(mut bytes)) => {
                bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok(bytes)
            }
            Some(Body::File(f)) => {
                let mut buf = Vec::new();
                f.take(limit)
                    .read_to_end(&mut buf)
                    .io("read object", &path)?;
                Ok(buf)
            }
            None => Err(Error::Io {
                action: "read object",
                path,
                source: std::io::ErrorKind::NotFound.into(),
            }),
        }
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

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
//!
//! **The gate.** Between storing an object and committing the run that
//! names it, nothing refers to the object yet. Whoever stores objects
//! (accepting bundles, taking a backup) holds a [`Lease`] for that whole
//! time: a shared `flock` on `objects/tmp/.lease`. Removing unreferenced
//! objects ([`Objects::sweeper`]) takes it exclusively, so it only ever
//! sees objects whose runs are committed or whose writer is gone. Taking a
//! lease first passes `objects/tmp/.gate` (held exclusively for a moment), which
//! a sweeper holds while it waits: a steady stream of leases cannot starve
//! it. The kernel drops both locks when their process dies, however it
//! dies. Each staging folder is locked by its own process the same way, so
//! a sweeper removes only the staging folders of processes that are gone.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

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
    /// dropped, with whatever was not moved out of it. It is locked for as
    /// long as it lives, so that a sweeper can tell it from the folder of a
    /// process that died.
    pub fn staging(&self) -> Result<Staging> {
        let tmp = self.root.join("tmp");
        private_dir(&tmp)?;
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&tmp)
            .io("create a staging folder in", &tmp)?;
        let lock = File::open(dir.path()).io("open staging folder", dir.path())?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive).io("lock", dir.path())?;
        Ok(Staging { dir, _lock: lock })
    }

    /// A shared lease on the objects: objects stored while it is held are
    /// not swept until it is dropped (see the module's docs). Hold it from
    /// before the first object is stored until the runs naming them are
    /// committed.
    pub fn lease(&self) -> Result<Lease> {
        let Some((gate, lease)) = self.lock_files()? else {
            return Ok(Lease { _lease: None });
        };
        wait_for(&gate, FlockOperation::LockExclusive).io("lock", self.root.join(GATE))?;
        let taken = wait_for(&lease, FlockOperation::LockShared);
        drop(gate);
        taken.io("lock", self.root.join(LEASE))?;
        Ok(Lease {
            _lease: Some(lease),
        })
    }

    /// The exclusive right to remove objects, once every lease is dropped;
    /// `None` when leases were still held after `wait` (new ones wait
    /// meanwhile). Leases taken later wait until the sweeper is dropped.
    pub fn sweeper(&self, wait: std::time::Duration) -> Result<Option<Sweeper>> {
        let Some((gate, lease)) = self.lock_files()? else {
            return Err(Error::InvalidArgument {
                what: "objects",
                message: format!(
                    "cannot lock {}: objects can only be removed by a user who may write the home",
                    self.root.display()
                ),
            });
        };
        let deadline = std::time::Instant::now() + wait;
        wait_for(&gate, FlockOperation::LockExclusive).io("lock", self.root.join(GATE))?;
        loop {
            match flock(&lease, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    return Ok(Some(Sweeper {
                        root: self.root.clone(),
                        _gate: gate,
                        _lease: lease,
                    }));
                }
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(e).io("lock", self.root.join(LEASE)),
            }
        }
    }

    /// The gate and lease files, created if missing; `None` when this user
    /// can neither create nor open them (a home this user may only read:
    /// nobody who can write objects can be stopped by us anyway).
    fn lock_files(&self) -> Result<Option<(File, File)>> {
        let open = |name: &str| -> Result<Option<File>> {
            let path = self.root.join(name);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => Ok(Some(f)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::PermissionDenied
                            | std::io::ErrorKind::ReadOnlyFilesystem
                    ) =>
                {
                    Ok(File::open(&path).ok())
                }
                Err(e) => Err(e).io("open lock file", &path),
            }
        };
        match private_dir(&self.root.join("tmp")) {
            Ok(()) => {}
            Err(Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        Ok(open(GATE)?.zip(open(LEASE)?))
    }

    /// Every object file under `objects/` (names that are not a digest's
    /// path are left out: lock files, staging folders, anything foreign).
    pub fn files(&self) -> Result<Vec<Sha256Hex>> {
        let mut out = Vec::new();
        let top = match fs::read_dir(&self.root) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).io("list", &self.root),
        };
        for entry in top {
            let entry = entry.io("list", &self.root)?;
            let name = entry.file_name();
            let Some(prefix) = name.to_str().filter(|n| is_hex(n, 2)) else {
                continue;
            };
            if !entry.file_type().io("inspect", entry.path())?.is_dir() {
                continue;
            }
            let dir = entry.path();
            for inner in fs::read_dir(&dir).io("list", &dir)? {
                let inner = inner.io("list", &dir)?;
                let name = inner.file_name();
                let Some(rest) = name.to_str().filter(|n| is_hex(n, 62)) else {
                    continue;
                };
                if let Some(sha) = Sha256Hex::parse(&format!("{prefix}{rest}")) {
                    out.push(sha);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Opens an object file (never through a symlink); `None` when there
    /// is none.
    pub fn open_file(&self, sha: &Sha256Hex) -> Result<Option<File>> {
        let path = self.path_of(sha);
        match rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::Io {
                action: "open object",
                path,
                source: std::io::Error::from_raw_os_error(e.raw_os_error()),
            }),
        }
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
        Ok(self.open_file(sha)?.map(Body::File))
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

/// The lock file every lease passes (see the module's docs).
const GATE: &str = "tmp/.gate";
/// The lock file leases share and a sweeper holds alone.
const LEASE: &str = "tmp/.lease";
/// How staging folders under `objects/tmp/` begin.
const STAGING_PREFIX: &str = "stage-";

/// A private staging folder, locked by this process while it lives.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
    /// Holds the folder's `flock`: a sweeper that can take it knows the
    /// process that made the folder is gone.
    _lock: File,
}

impl Staging {
    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A shared lease on a home's objects (see [`Objects::lease`]).
#[derive(Debug)]
pub struct Lease {
    /// Holds the shared `flock` on `objects/.lease` (none on a home this
    /// user may only read).
    _lease: Option<File>,
}

/// The exclusive right to remove objects (see [`Objects::sweeper`]).
#[derive(Debug)]
pub struct Sweeper {
    root: PathBuf,
    /// Held so that no new lease starts while this sweeper lives.
    _gate: File,
    /// Held exclusively: no lease is held anywhere.
    _lease: File,
}

impl Sweeper {
    /// Removes object files (nothing for one that is not there) and returns
    /// which were there; each folder they were in is fsynced once, after
    /// its removals, so they are durable (one fsync per removed file made
    /// a sweep of many slow).
    pub fn remove_all<'a>(
        &self,
        shas: impl IntoIterator<Item = &'a Sha256Hex>,
    ) -> Result<Vec<&'a Sha256Hex>> {
        let mut removed = Vec::new();
        let mut touched: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
        let mut result = Ok(());
        for sha in shas {
            let s = sha.as_str();
            let dir = self.root.join(&s[..2]);
            let path = dir.join(&s[2..]);
            match fs::remove_file(&path) {
                Ok(()) => {
                    touched.insert(dir);
                    removed.push(sha);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(e).io("remove object", &path);
                    break;
                }
            }
        }
        // What was removed before an error is made durable all the same.
        for dir in &touched {
            sync_dir(dir)?;
        }
        result.map(|()| removed)
    }

    /// Removes the staging folders of processes that are gone (what a
    /// killed submit or ingest had staged); returns how many.
    pub fn clear_stale_staging(&self) -> Result<usize> {
        let tmp = self.root.join("tmp");
        let entries = match fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).io("list", &tmp),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.io("list", &tmp)?;
            let path = entry.path();
            let ours = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(STAGING_PREFIX));
            if !ours || !entry.file_type().io("inspect", &path)?.is_dir() {
                continue;
            }
            let Ok(dir) = File::open(&path) else { continue };
            if flock(&dir, FlockOperation::NonBlockingLockExclusive).is_ok() {
                fs::remove_dir_all(&path).io("remove staging folder", &path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Takes a `flock`, waiting as long as it takes; a signal arriving
/// meanwhile does not make it fail.
fn wait_for(file: &File, operation: FlockOperation) -> rustix::io::Result<()> {
    loop {
        match flock(file, operation) {
            Err(rustix::io::Errno::INTR) => {}
            done => return done,
        }
    }
}

/// True when `s` is `len` lowercase hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

#[cfg(test)]
mod tests {
    use super::Objects;
    use crate::digest::Sha256Hex;

    #[test]
    fn a_sweeper_removes_the_files_named_and_says_which_were_there() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::new(dir.path().join("objects"));
        let shas: Vec<Sha256Hex> = (0..40)
            .map(|i| {
                let bytes = format!("object {i}").into_bytes();
                let sha = Sha256Hex::of(&bytes);
                objects.put(&bytes, &sha).unwrap();
                sha
            })
            .collect();
        let gone = Sha256Hex::of(b"never stored");
        let sweeper = objects
            .sweeper(std::time::Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let asked: Vec<&Sha256Hex> = shas[..30].iter().chain([&gone]).collect();
        let removed = sweeper.remove_all(asked.iter().copied()).unwrap();
        assert_eq!(removed, shas[..30].iter().collect::<Vec<_>>());
        for (i, sha) in shas.iter().enumerate() {
            assert_eq!(objects.path_of(sha).exists(), i >= 30, "object {i}");
        }
        // A folder in an object's place is an error naming it; what went
        // before it is removed.
        std::fs::remove_file(objects.path_of(&shas[31])).unwrap();
        std::fs::create_dir(objects.path_of(&shas[31])).unwrap();
        let err = sweeper
            .remove_all([&shas[30], &shas[31], &shas[32]])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&shas[31].as_str()[2..]), "{err}");
        assert!(!objects.path_of(&shas[30]).exists());
        assert!(objects.path_of(&shas[32]).exists());
    }
}

//! Which bundleq processes of a home are alive: a lock file per process
//! under `<home>/run/`, so that work held by a process that died (jobs it
//! was running, inbox entries it had claimed) is taken over at once instead
//! of after the 30-minute lock timeout, and never while any part of it
//! still runs.
//!
//! A process that holds work creates `run/<worker-id>.lock` and takes an
//! exclusive `flock` on it for its whole life. The descriptor is inherited
//! by the processes it starts (the handler guards and, through them, the
//! handlers), and a `flock` belongs to the open file description: the lock
//! stays held until the last process sharing it has exited. Another process
//! that can take the lock has therefore proved that the owner *and every
//! handler it started* are gone, however the owner died (`SIGKILL`, a
//! crash, a reboot) and whatever pid was reused since. A lock file that is
//! missing proves nothing (an older version, another host): such work
//! waits for the lock timeout as before.
//!
//! Invariants: the lock is taken before the first claim and held until the
//! process exits; a gone worker's lock is held by whoever takes over its
//! work until that is done.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};

/// This process's registration in a home.
pub struct Presence {
    id: String,
    path: PathBuf,
    run_dir: PathBuf,
    /// Holds the exclusive `flock`; not close-on-exec, so children share it.
    _lock: File,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").field("id", &self.id).finish()
    }
}

impl PartialEq for Presence {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// A worker proved gone: its lock is held here until the takeover is done.
#[derive(Debug)]
pub struct Gone {
    id: String,
    path: PathBuf,
    _lock: File,
}

impl Gone {
    /// The gone worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes its lock file: everything it held has been taken over.
    pub fn forget(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Proves `worker` gone by taking its lock in `run_dir` (see
/// [`Presence::gone`]); for processes that hold no work of their own, such
/// as `bundleq job release`.
pub fn prove_gone(run_dir: &Path, worker: &str) -> Option<Gone> {
    let path = lock_path(run_dir, worker)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .ok()?;
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
    // The file may have been removed by another taker between our open
    // and our lock: then it proves nothing any more.
    let still_there = fs::symlink_metadata(&path).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        file.metadata()
            .is_ok_and(|f| f.ino() == m.ino() && f.dev() == m.dev())
    });
    still_there.then(|| Gone {
        id: worker.to_owned(),
        path,
        _lock: file,
    })
}

/// Whether `worker` has a lock file in `run_dir` (it is, or was, a process
/// of this home that could be proved gone).
pub fn known_here(run_dir: &Path, worker: &str) -> bool {
    lock_path(run_dir, worker).is_some_and(|p| p.exists())
}

/// This host's name as it appears in worker ids: characters other than
/// `A-Za-z0-9._-` become `_`.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// This process's name in `locked_by` and under `run/` and `claims/`:
/// host, pid and a random suffix, so that two processes never share one.
pub fn worker_id() -> String {
    let tag = Uuid::now_v7().simple().to_string();
    format!(
        "{}:{}:{}",
        host_name(),
        std::process::id(),
        &tag[tag.len() - 8..]
    )
}

fn lock_path(run_dir: &Path, id: &str) -> Option<PathBuf> {
    // Ids come from the database: never let one name a path elsewhere.
    let safe = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        && !id.starts_with('.');
    safe.then(|| run_dir.join(format!("{id}.lock")))
}

impl Presence {
    /// Registers this process in `run_dir` (created 0700 if missing).
    pub fn register(run_dir: &Path) -> Result<Presence> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(run_dir)
            .io("create folder", run_dir)?;
        let id = worker_id();
        let path = lock_path(run_dir, &id).ok_or_else(|| Error::InvalidArgument {
            what: "worker id",
            message: format!("{id:?} cannot name a lock file"),
        })?;
        // Locked under a name nobody looks at, then renamed: the lock file
        // is never seen unlocked (a sweep would take it for a gone one's).
        let tmp = run_dir.join(format!(".{id}.new"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .io("create lock file", &tmp)?;
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
            .io("lock", &tmp)?;
        fs::rename(&tmp, &path).io("create lock file", &path)?;
        // Children (handler guards) inherit the descriptor and with it the
        // lock, so it outlives this process until they are gone too.
        rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty())
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
            .io("share lock file", &path)?;
        Ok(Presence {
            id,
            path,
            run_dir: run_dir.to_owned(),
            _lock: file,
        })
    }

    /// This process's worker id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host part of the worker id.
    pub fn host(&self) -> &str {
        self.id.split(':').next().unwrap_or("")
    }

    /// The home's `claims/` folder (a sibling of `run/`).
    pub fn claims_root(&self) -> PathBuf {
        self.run_dir
            .parent()
            .map_or_else(|| PathBuf::from("claims"), |h| h.join("claims"))
    }

    /// Proves `worker` gone by taking its lock: `Some` holds the lock until
    /// dropped or [`Gone::forget`]. `None` when it is alive, is this
    /// process, or has no lock file here (nothing can be proved).
    pub fn gone(&self, worker: &str) -> Option<Gone> {
        if worker == self.id {
            return None;
        }
        prove_gone(&self.run_dir, worker)
    }

    /// Lock files of gone processes that hold nothing (no claims folder
    /// under `claims`, no running job among `running`): removed.
    pub fn sweep(&self, claims: &Path, running: &[String]) {
        let Ok(entries) = fs::read_dir(&self.run_dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".lock") else {
                continue;
            };
            if running.iter().any(|r| r == id) || claims.join(id).exists() {
                continue;
            }
            if let Some(gone) = self.gone(id) {
                gone.forget();
            }
        }
    }

    /// Unregisters at a clean exit, when nothing is left under this id
    /// (otherwise the file stays, so that the next process can prove this
    /// one gone and take over at once).
    pub fn leave(self) {
        let _ = fs::remove_file(&self.path);
    }
}

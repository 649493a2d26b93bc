//! The library's error type. Messages are lowercase, say what failed, and
//! carry the context (path, job id) a user needs; causes are chained with
//! `#[source]`. A job's own failure is not an error: see [`crate::Outcome`].

use std::path::PathBuf;

/// An error of a storage backend, whatever database it is.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in bundleq's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database operation failed.
    #[error("failed to {action}: {source}")]
    Db {
        /// What was being done, e.g. "claim jobs".
        action: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The database stayed locked by another process past the deadline.
    #[error("failed to {action}: the database stayed locked by another process for {waited_secs}s")]
    Busy {
        /// What was being done.
        action: &'static str,
        /// How long we waited.
        waited_secs: u64,
    },
    /// The database file was deleted or replaced while it was open: what
    /// is written now would be recorded nowhere. Fatal.
    #[error(
        "the database {} {what} while bundleq was using it; stopping so that nothing more is recorded into a file that no longer exists",
        path.display()
    )]
    DatabaseGone {
        /// The database file.
        path: PathBuf,
        /// "was deleted" or "was replaced by another file".
        what: &'static str,
    },
    /// SQLite found the database damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
    /// Fatal: nothing is recorded into a damaged file.
    #[error(
        "the database {} is damaged ({detail}); stopping. Run `bundleq db check` and restore it from a backup",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is damaged (in the words of bundleq, not of the database).
        detail: String,
    },
    /// The database (or the folder holding it) cannot be written.
    #[error(
        "failed to {action}: {} is read-only (the home, its database or its folder cannot be written by this user)",
        path.display()
    )]
    ReadOnly {
        /// What was being done.
        action: &'static str,
        /// The database file.
        path: PathBuf,
    },
    /// A tenant that the home does not know (or the nil UUID).
    #[error(
        "unknown tenant {tenant}: `bundleq tenants` lists this home's tenants, `bundleq tenants create NAME` adds one"
    )]
    UnknownTenant {
        /// The id or name given.
        tenant: String,
    },
    /// Applying schema migrations failed.
    #[error("failed to migrate the database schema: {0}")]
    Migrate(#[source] BackendError),
    /// A file or directory operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A batch transaction recording this bundle failed (the message is the
    /// batch's error, shared by every bundle of the batch).
    #[error("failed to record {}: {message}", path.display())]
    Record {
        /// The bundle.
        path: PathBuf,
        /// Why the batch failed.
        message: String,
    },
    /// The folder is not a bundleq home.
    #[error("{} is not a bundleq home (no bundleq.db); create one with `bundleq --home {} init`", path.display(), path.display())]
    NotAHome {
        /// The folder that was given.
        path: PathBuf,
    },
    /// The home's configuration file is invalid.
    #[error("invalid configuration in {}: {message}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// No job with this id exists for the tenant.
    #[error("no job {id} in tenant {tenant}")]
    JobNotFound {
        /// The job id that was asked for.
        id: String,
        /// The tenant the lookup was scoped to.
        tenant: String,
    },
    /// No run with this id exists for the tenant.
    #[error("no run {id} in tenant {tenant}")]
    RunNotFound {
        /// The run id that was asked for.
        id: String,
        /// The tenant the lookup was scoped to.
        tenant: String,
    },
    /// A user asked for a transition the state machine does not allow.
    #[error("cannot {action} job {id}: it is {status}")]
    InvalidTransition {
        /// "cancel" or "retry".
        action: &'static str,
        /// The job.
        id: String,
        /// Its current status.
        status: crate::JobStatus,
    },
    /// A run's objects stored before its transaction were removed by a
    /// concurrent sweep (`prune`, `verify --repair`) before the run was
    /// recorded: nothing of the batch was recorded; accepting it again
    /// stores them again.
    #[error(
        "failed to record run {run_id}: its source object {sha256} was removed by a concurrent prune before the run was recorded; nothing was recorded, submit it again"
    )]
    ObjectsGone {
        /// The run.
        run_id: uuid::Uuid,
        /// The first object missing.
        sha256: String,
    },
    /// A value given to the library is malformed (not bundle data).
    #[error("invalid {what}: {message}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// True for errors after which nothing more may be written: the
    /// database vanished or is damaged. A pool stops on them instead of
    /// retrying.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::DatabaseGone { .. } | Error::Corrupt { .. })
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches an action and a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
            .io(action, path)
    }
}

//! Research data you can prove: `verify` re-reads every stored object and
//! checks it against its digest and the runs that name it; `sweep` removes
//! objects no run names (what `prune` and `verify --repair` do);
//! `export` writes a run back as the `NAME.bundle/` folder it came as;
//! `backup` takes a consistent copy of a home while it works.
//!
//! Invariants:
//! - objects are removed only by a [`crate::objects::Sweeper`], which no
//!   accept holds a lease against, and only once a listing of the stored
//!   runs made under it names them nowhere (objects in the database are
//!   removed by the store in one transaction that also reads the runs);
//! - what is written out (an export, a backup's objects) is hashed as it is
//!   read and must match its digest, is fsynced, and gets its final name by
//!   a rename: a name never stands for partial or damaged bytes.

mod backup;
mod export;
mod verify;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use backup::{BackupOptions, BackupReport, backup};
pub use export::{Exported, export_run};
pub use verify::{
    LastVerify, Place, Problem, ProblemKind, Progress, VerifyOptions, VerifyReport,
    last_full_verify, verify,
};

use crate::digest::Sha256Hex;
use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::objects::{Body, Objects, Sweeper};
use crate::store::{Store, StoredObject};

/// How long a sweep waits for submits and ingests that are storing objects
/// (new ones wait meanwhile) before it gives up for this time.
pub const SWEEP_WAIT: Duration = Duration::from_secs(60);

/// What a sweep removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Objects kept in the database that no run names.
    pub database: Vec<StoredObject>,
    /// Object files that no run names.
    pub files: Vec<StoredObject>,
    /// Staging folders left by processes that died (a killed submit).
    pub staging_folders: usize,
    /// Search shard files left unregistered by processes stopped while
    /// making them.
    pub leftover_shards: Vec<PathBuf>,
    /// False when submits or ingests kept storing objects for the whole
    /// wait: nothing was removed this time.
    pub done: bool,
}

impl SweepReport {
    /// Bytes removed (or that would be).
    pub fn bytes(&self) -> u64 {
        self.database
            .iter()
            .chain(&self.files)
            .map(|o| o.size)
            .sum()
    }
}

/// Removes (or, with `dry_run`, lists) every object no stored run names,
/// and the staging folders of processes that are gone, waiting up to
/// `wait` for the submits and ingests storing objects to finish.
pub fn sweep(home: &Home, store: &mut Store, dry_run: bool, wait: Duration) -> Result<SweepReport> {
    let objects = home.object_store();
    match objects.sweeper(wait) {
        Ok(Some(sweeper)) => sweep_with(&objects, Some(&sweeper), store, dry_run),
        Ok(None) => Ok(SweepReport::default()),
        // A home this user may only read: a dry run still lists.
        Err(Error::InvalidArgument { .. }) if dry_run => sweep_with(&objects, None, store, true),
        Err(e) => Err(e),
    }
}

/// A sweep by a sweeper already held (none: a dry run that could not take
/// one, which lists and removes nothing).
fn sweep_with(
    objects: &Objects,
    sweeper: Option<&Sweeper>,
    store: &mut Store,
    dry_run: bool,
) -> Result<SweepReport> {
    let (sweeper, dry_run) = match sweeper {
        Some(s) if !dry_run => (Some(s), false),
        _ => (None, true),
    };
    let database = store.sweep_db_objects(dry_run)?;
    let listed = objects.files()?;
    let referenced = referenced_if_any(store, &listed)?;
    let mut files = Vec::new();
    for sha in listed {
        if referenced.contains(&sha) {
            continue;
        }
        let size = std::fs::symlink_metadata(objects.path_of(&sha)).map_or(0, |m| m.len());
        files.push(StoredObject { sha256: sha, size });
    }
    if let Some(sweeper) = sweeper {
        sweeper.remove_all(files.iter().map(|f| &f.sha256))?;
    }
    let staging_folders = match sweeper {
        Some(sweeper) => sweeper.clear_stale_staging()?,
        None => 0,
    };
    let leftover_shards = store.sweep_leftover_shards(dry_run)?;
    Ok(SweepReport {
        database,
        files,
        staging_folders,
        leftover_shards,
        done: true,
    })
}

/// Where one source of a run stands: what it is, where its bytes are, when
/// they were last checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceProvenance {
    /// Its position in the bundle's `sources`.
    pub idx: u32,
    /// Where it came from.
    pub uri: String,
    /// Its title, if given.
    pub title: Option<String>,
    /// The digest of its bytes.
    pub sha256: String,
    /// Its size, when the bundle carried its bytes and they are stored.
    pub size: Option<u64>,
    /// `database`, `file`, `reference` (the bundle carried no bytes) or
    /// `missing`.
    pub stored: &'static str,
    /// When `verify` last read and hashed the bytes.
    pub checked_at: Option<crate::timestamp::Timestamp>,
    /// What that check found (`true`: they matched).
    pub check_ok: Option<bool>,
}

/// The provenance of every source of a run (`bundle` is its bundle JSON).
pub fn provenance(
    home: &Home,
    store: &mut Store,
    tenant: uuid::Uuid,
    run: uuid::Uuid,
    bundle: &serde_json::Value,
) -> Result<Vec<SourceProvenance>> {
    let carrying: std::collections::HashMap<u32, Sha256Hex> = store
        .object_refs(Some((tenant, run)))?
        .into_iter()
        .map(|r| (r.idx, r.sha256))
        .collect();
    let shas: Vec<Sha256Hex> = carrying.values().cloned().collect();
    let in_db = store.object_sizes(&shas)?;
    let checks = store.object_checks(&shas)?;
    let objects = home.object_store();
    let sources = bundle["sources"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        let text = |k: &str| s[k].as_str().map(str::to_owned);
        let (size, stored) = match carrying.get(&idx) {
            None => (None, "reference"),
            Some(sha) => match in_db.get(sha) {
                Some(size) => (Some(*size), "database"),
                None => match std::fs::metadata(objects.path_of(sha)) {
                    Ok(m) if m.is_file() => (Some(m.len()), "file"),
                    _ => (None, "missing"),
                },
            },
        };
        let check = carrying.get(&idx).and_then(|sha| checks.get(sha));
        out.push(SourceProvenance {
            idx,
            uri: text("uri").unwrap_or_default(),
            title: text("title"),
            sha256: text("sha256").unwrap_or_default(),
            size,
            stored,
            checked_at: check.map(|c| c.checked_at),
            check_ok: check.map(|c| c.ok),
        });
    }
    Ok(out)
}

/// The digests the stored runs name, read only when there is something to
/// look them up for (`candidates`): every run's bundle is read to know.
fn referenced_if_any<T>(store: &mut Store, candidates: &[T]) -> Result<HashSet<Sha256Hex>> {
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(store
        .object_refs(None)?
        .into_iter()
        .map(|r| r.sha256)
        .collect())
}

/// Reads an object whole from wherever it is (the database first), hashing
/// as it goes, and hands its bytes to `sink` chunk by chunk. Returns the
/// bytes' digest and size, or `None` when it is stored nowhere.
fn read_object(
    objects: &Objects,
    store: &mut Store,
    sha: &Sha256Hex,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Option<(Sha256Hex, u64)>> {
    match objects.open(store, sha)? {
        None => Ok(None),
        Some(Body::Memory(bytes)) => {
            sink(&bytes)?;
            Ok(Some((Sha256Hex::of(&bytes), bytes.len() as u64)))
        }
        Some(Body::File(file)) => hash_file(file, &objects.path_of(sha), sink).map(Some),
    }
}

/// Hashes a file as it is read, handing each chunk to `sink`.
fn hash_file(
    mut file: File,
    path: &Path,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<(Sha256Hex, u64)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).io("read object", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        size += n as u64;
    }
    Ok((Sha256Hex::from_digest(&hasher.finalize()), size))
}

/// Creates a new file (never replacing one) readable by its owner only.
fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .io("create", path)
}

/// Writes an object to `path` (a new file), checking its digest as it is
/// read, and fsyncs it. A damaged or missing object is an error naming it,
/// and nothing is left at `path`.
fn write_object(objects: &Objects, store: &mut Store, sha: &Sha256Hex, path: &Path) -> Result<u64> {
    let mut out = create_private(path)?;
    let written = read_object(objects, store, sha, &mut |chunk| {
        out.write_all(chunk).io("write", path)
    });
    let fail = |e: Error| {
        let _ = std::fs::remove_file(path);
        Err(e)
    };
    match written {
        Err(e) => fail(e),
        Ok(None) => fail(Error::InvalidArgument {
            what: "object",
            message: format!("object {sha} is missing from the home (run `bundleq verify`)"),
        }),
        Ok(Some((got, _))) if got != *sha => fail(Error::InvalidArgument {
            what: "object",
            message: format!(
                "object {sha} is damaged: its bytes no longer hash to it (run `bundleq verify`)"
            ),
        }),
        Ok(Some((_, size))) => match out.sync_all().io("fsync", path) {
            Ok(()) => Ok(size),
            Err(e) => fail(e),
        },
    }
}

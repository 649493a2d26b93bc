//! `bundleq backup DEST`: a consistent copy of a home taken while it works
//! — the database as of one moment (SQLite's online backup, one read
//! transaction),
//! then the object files that copy names, copied (or hard-linked) only when
//! DEST lacks them, so repeated backups into one folder are incremental —
//! and the copy verified as a home of its own.

use std::collections::HashSet;
use std::fs::{self, DirBuilder};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::verify::{Progress, VerifyOptions, VerifyReport, verify};
use super::{create_private, hash_file};
use crate::digest::Sha256Hex;
use crate::error::{Error, IoContext, Result};
use crate::home::{CONFIG_FILE, DB_FILE, Home};
use crate::objects::{Objects, sync_dir};
use crate::store::Store;
use crate::timestamp::Timestamp;

/// The file that marks a folder as a bundleq backup (a later backup may
/// replace what is in it).
const MARKER: &str = ".bundleq-backup";

/// How a backup is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// Hard-link object files instead of copying them (DEST must be on the
    /// home's filesystem; the copy then shares the home's disk blocks).
    pub link: bool,
}

/// What a backup did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackupReport {
    /// The backup folder: a home of its own.
    pub dest: PathBuf,
    /// Size of the database copy.
    pub database_bytes: u64,
    /// Object files copied now.
    pub objects_copied: u64,
    /// Object files hard-linked now.
    pub objects_linked: u64,
    /// Object files DEST already had (from an earlier backup).
    pub objects_kept: u64,
    /// Object files DEST had that the copy no longer names, removed.
    pub objects_removed: u64,
    /// Bytes copied or linked now.
    pub bytes: u64,
    /// The verification of the copy, as a home.
    pub verify: VerifyReport,
    /// Seconds it took.
    pub seconds: f64,
}

/// Backs `home` up into `dest` (created if missing; an existing folder must
/// be empty or an earlier backup).
pub fn backup(
    home: &Home,
    store: &mut Store,
    dest: &Path,
    options: BackupOptions,
    now: Timestamp,
    progress: &mut dyn FnMut(Progress),
) -> Result<BackupReport> {
    let started = Instant::now();
    check_dest(home, dest)?;
    let source_objects = home.object_store();
    // Objects the copy names stay until it is done: no sweep removes them.
    let lease = source_objects.lease()?;
    let db = dest.join(DB_FILE);
    let partial = dest.join(format!(".{DB_FILE}.partial-{}", uuid::Uuid::now_v7()));
    let copied = store.copy_database_to(&partial).and_then(|()| {
        // Private like the home's own database.
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::File::open(&partial))
            .and_then(|f| f.sync_all())
            .io("fsync", &partial)
    });
    // The search shards (big texts' index, beside the database) are copied
    // after it, so they hold every row its sources name, and before it
    // takes its place.
    let copied = copied.and_then(|()| store.copy_search_shards_next_to(&db));
    let shard_bytes = match copied {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    // The log and index of an earlier copy would be applied to this one.
    for suffix in ["-wal", "-shm"] {
        let stale = dest.join(format!("{DB_FILE}{suffix}"));
        match fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).io("remove", &stale);
            }
            _ => {}
        }
    }
    fs::rename(&partial, &db).io("move into place", &db)?;
    sync_dir(dest)?;
    let database_bytes = fs::metadata(&db).map_or(0, |m| m.len()) + shard_bytes;
    copy_config(home, dest)?;

    let backup_home = Home::open(dest)?;
    let mut backup_store = backup_home.store()?;
    let in_db: HashSet<Sha256Hex> = {
        let mut set = HashSet::new();
        let mut after: Option<Sha256Hex> = None;
        loop {
            let page = backup_store.db_objects(after.as_ref(), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.sha256.clone());
            set.extend(page.into_iter().map(|o| o.sha256));
        }
        set
    };
    let needed: Vec<Sha256Hex> = {
        let mut v: Vec<Sha256Hex> = backup_store
            .object_refs(None)?
            .into_iter()
            .map(|r| r.sha256)
            .filter(|s| !in_db.contains(s))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let dest_objects = Objects::new(dest.join("objects"));
    let mut report = BackupReport {
        dest: dest.to_owned(),
        database_bytes,
        objects_copied: 0,
        objects_linked: 0,
        objects_kept: 0,
        objects_removed: 0,
        bytes: 0,
        verify: VerifyReport::default(),
        seconds: 0.0,
    };
    let total = needed.len() as u64;
    for (i, sha) in needed.iter().enumerate() {
        progress(Progress {
            bytes: i as u64,
            total,
        });
        if dest_objects.path_of(sha).is_file() {
            report.objects_kept += 1;
            continue;
        }
        // A source object missing or damaged in the home is not copied:
        // the verification of the copy reports it.
        // (A symlink or a folder in an object's place cannot be opened as
        // one: not copied either.)
        let Ok(Some(file)) = source_objects.open_file(sha) else {
            continue;
        };
        let source = source_objects.path_of(sha);
        let staging = dest_objects.staging()?;
        let staged = staging.path().join("object");
        if options.link {
            let Ok((got, size)) = hash_file(file, &source, &mut |_| Ok(())) else {
                continue;
            };
            if got != *sha {
                continue;
            }
            fs::hard_link(&source, &staged).io("hard-link", &source)?;
            dest_objects.commit_staged(&staged, sha)?;
            report.objects_linked += 1;
            report.bytes += size;
        } else {
            let mut out = create_private(&staged)?;
            let copied = hash_file(file, &source, &mut |chunk| {
                out.write_all(chunk).io("write", &staged)
            });
            drop(out);
            let size = match copied {
                Ok((got, size)) if got == *sha => size,
                // Damaged or unreadable in the home: the verification of
                // the copy reports it missing there.
                Ok(_) => continue,
                Err(Error::Io { path, .. }) if path == source => continue,
                Err(e) => return Err(e),
            };
            dest_objects.commit_staged(&staged, sha)?;
            report.objects_copied += 1;
            report.bytes += size;
        }
    }
    progress(Progress {
        bytes: total,
        total,
    });
    drop(lease);
    // What an earlier backup kept and this copy no longer names.
    let keep: HashSet<&Sha256Hex> = needed.iter().collect();
    if let Some(sweeper) = dest_objects.sweeper(super::SWEEP_WAIT)? {
        let dropped: Vec<Sha256Hex> = dest_objects
            .files()?
            .into_iter()
            .filter(|sha| !keep.contains(sha))
            .collect();
        report.objects_removed += sweeper.remove_all(&dropped)?.len() as u64;
        sweeper.clear_stale_staging()?;
    }
    report.verify = verify(
        &backup_home,
        &mut backup_store,
        &VerifyOptions::default(),
        now,
        &mut |_| {},
    )?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses a destination that is (in) the home or holds it, or a folder
/// with other things in it; creates it (0700) and marks it as a backup.
fn check_dest(home: &Home, dest: &Path) -> Result<()> {
    let refuse = |message: String| Error::InvalidArgument {
        what: "backup destination",
        message,
    };
    if home.location().is_server() {
        return Err(refuse(
            "the database is on a PostgreSQL server, and every object with it: back it up with pg_dump (see the README)".to_owned(),
        ));
    }
    match fs::symlink_metadata(dest) {
        Ok(m) if !m.is_dir() => {
            return Err(refuse(format!(
                "{} exists and is not a folder",
                dest.display()
            )));
        }
        Ok(_) => {
            let mut entries = fs::read_dir(dest).io("list", dest)?;
            let empty = entries.next().is_none();
            if !empty && !dest.join(MARKER).is_file() {
                return Err(refuse(format!(
                    "{} is not empty and not an earlier bundleq backup; give a new or empty folder",
                    dest.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dest)
                .io("create folder", dest)?;
        }
        Err(e) => return Err(e).io("inspect", dest),
    }
    let home_real = fs::canonicalize(home.root()).io("resolve", home.root())?;
    let dest_real = fs::canonicalize(dest).io("resolve", dest)?;
    if dest_real.starts_with(&home_real) || home_real.starts_with(&dest_real) {
        return Err(refuse(format!(
            "{} is the home, inside it or holds it; back up to a folder elsewhere (ideally another disk)",
            dest.display()
        )));
    }
    let marker = dest.join(MARKER);
    if !marker.is_file() {
        let mut f = create_private(&marker)?;
        writeln!(f, "a bundleq backup of {}", home_real.display()).io("write", &marker)?;
    }
    let objects = dest.join("objects");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&objects)
        .io("create folder", &objects)?;
    Ok(())
}

/// Writes the home's configuration into the backup, less what would point
/// the copy at the home's own database or drop folder.
fn copy_config(home: &Home, dest: &Path) -> Result<()> {
    let source = home.root().join(CONFIG_FILE);
    let text = match fs::read_to_string(&source) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).io("read", &source),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| Error::Config {
        path: source.clone(),
        message: e.message().to_owned(),
    })?;
    for (section, key) in [("database", "path"), ("database", "url"), ("inbox", "path")] {
        if let Some(toml::Value::Table(t)) = table.get_mut(section) {
            t.remove(key);
        }
    }
    let out = format!(
        "# The configuration of the home this backup was taken from, less the\n# location of its database and drop folder.\n{}",
        toml::to_string(&table).unwrap_or_default()
    );
    let target = dest.join(CONFIG_FILE);
    let partial = dest.join(format!(".{CONFIG_FILE}.partial"));
    let _ = fs::remove_file(&partial);
    let mut f = create_private(&partial)?;
    f.write_all(out.as_bytes())
        .and_then(|()| f.sync_all())
        .io("write", &partial)?;
    fs::rename(&partial, &target).io("move into place", &target)?;
    Ok(())
}

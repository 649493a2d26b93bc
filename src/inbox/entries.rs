//! Listing the inbox and telling when an entry is complete: what is a
//! bundle, what is moved aside unread, which folders are tenant folders,
//! and how long an entry has been left unchanged.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use crate::timestamp::Timestamp;

/// At most this many entries of a bundle folder are looked at to decide
/// whether it is still being written.
const MAX_WALK: usize = 100_000;

pub(super) enum Kind {
    /// A regular file or a `NAME.bundle/` folder: read it.
    Bundle,
    /// Anything else: moved aside unread, with this reason.
    Unread(&'static str),
}

/// An entry found in the inbox.
pub(super) struct Listed {
    pub(super) path: PathBuf,
    pub(super) tenant: Uuid,
    pub(super) kind: Kind,
}

/// Editors' and downloaders' temporary names, and hidden files.
fn ignored(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b".")
        || name.ends_with(b".tmp")
        || name.ends_with(b".part")
        || name.ends_with(b".swp")
        || name.ends_with(b"~")
}

pub(super) fn tenant_folder(name: &OsStr) -> Option<Uuid> {
    let name = name.to_str()?;
    (name.len() == 36)
        .then(|| Uuid::try_parse(name).ok())
        .flatten()
        .filter(|u| !u.is_nil())
}

pub(super) fn kind_of(ft: &fs::FileType, name: &OsStr) -> Kind {
    if ft.is_file() {
        Kind::Bundle
    } else if ft.is_dir() {
        if name.as_bytes().ends_with(b".bundle") {
            Kind::Bundle
        } else {
            Kind::Unread(
                "a folder that is neither NAME.bundle/ nor a tenant folder named by its UUID",
            )
        }
    } else if ft.is_symlink() {
        Kind::Unread("a symlink (symlinks are never followed)")
    } else if ft.is_fifo() {
        Kind::Unread("a FIFO (only regular files and NAME.bundle/ folders are ingested)")
    } else if ft.is_socket() {
        Kind::Unread("a socket (only regular files and NAME.bundle/ folders are ingested)")
    } else if ft.is_block_device() || ft.is_char_device() {
        Kind::Unread("a device (only regular files and NAME.bundle/ folders are ingested)")
    } else {
        Kind::Unread("not a regular file")
    }
}

/// The newest modification time of an entry (for a folder, of anything in
/// it), without following symlinks.
fn newest_mtime(path: &Path) -> std::io::Result<SystemTime> {
    let meta = fs::symlink_metadata(path)?;
    let mut newest = meta.modified()?;
    if meta.is_dir() {
        let mut stack = vec![path.to_owned()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                seen += 1;
                if seen > MAX_WALK {
                    return Ok(newest);
                }
                let m = e.metadata()?;
                newest = newest.max(m.modified()?);
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    Ok(newest)
}

/// How long before `now` the entry last changed (zero if it changed after
/// `now`, as by a clock set back).
pub(super) fn unchanged_for(path: &Path, now: Timestamp) -> std::io::Result<Duration> {
    let changed = Timestamp::from_system(newest_mtime(path)?);
    Ok(now.since(changed))
}

/// Entries of the inbox and of its tenant folders (folders named by a
/// UUID; whether the home knows that tenant is checked by the caller).
pub(super) fn list(dir: &Path, default_tenant: Uuid) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut folders = vec![(dir.to_owned(), default_tenant, true)];
    while let Some((dir, tenant, top)) = folders.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if !top && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    action: "list",
                    path: dir,
                    source,
                });
            }
        };
        for e in entries {
            let e = e.io("list", &dir)?;
            let name = e.file_name();
            if ignored(&name) {
                continue;
            }
            let Ok(ft) = e.file_type() else {
                continue; // vanished
            };
            if top
                && ft.is_dir()
                && let Some(t) = tenant_folder(&name)
            {
                folders.push((e.path(), t, false));
                continue;
            }
            out.push(Listed {
                kind: kind_of(&ft, &name),
                path: e.path(),
                tenant,
            });
        }
    }
    Ok(out)
}

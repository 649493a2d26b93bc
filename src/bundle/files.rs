//! Reading bundles from disk: a `*.json` file or a `NAME.bundle/` folder
//! with `bundle.json` and the source files it names.
//!
//! Everything inside a bundle folder is opened relative to the folder's
//! directory handle, one component at a time with `O_NOFOLLOW` (and
//! `O_DIRECTORY` for folders): swapping a subfolder for a symlink between
//! a check and an open cannot lead outside, because no path is ever
//! resolved from the top again. A file is identified by the handle it was
//! opened with (its device and inode must be those the check saw), must be
//! a regular file with exactly one hard link (a hard link can name any file
//! of the filesystem), and is hashed from that same handle, whose bytes are
//! the ones staged for storage. A file named by several sources is read
//! once, and all files of one bundle together are capped
//! (`limits.max_total_source_bytes`).
//!
//! The bundle path itself follows one rule per caller ([`Follow`]): a path
//! a user typed may be a symlink (followed once, like `cat` does, for files
//! and folders alike); an inbox entry is never followed, and a file there
//! with other hard links is refused.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::{
    Files, Limits, ReadBundle, Sha256Hex, ValidationError, ValidationErrors, parse, rules,
    too_large,
};
use crate::error::{Error, IoContext, Result};
use crate::objects::{Body, Objects};
use crate::store::Store;

/// The file a directory bundle holds its JSON in.
pub const BUNDLE_JSON: &str = "bundle.json";

/// How the top-level path of a bundle is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// A path a user gave on the command line: if it is a symlink it is
    /// followed (once), whether it leads to a file or a folder.
    Link,
    /// An inbox entry: never followed, and a regular file must have exactly
    /// one hard link.
    Never,
}

/// A source file of a directory bundle, hashed while it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The `path` the bundle gave.
    pub rel_path: String,
    /// Bytes read.
    pub size: u64,
    /// Digest of exactly those bytes.
    pub sha256: Sha256Hex,
    /// A private copy of those bytes, when staging was asked for (shared by
    /// every source that names the same file).
    pub staged: Option<PathBuf>,
}

/// Where a bundle's relative `path`s are resolved: the `NAME.bundle/`
/// folder's handle, and what was read from it so far.
pub(crate) struct BundleDir<'a> {
    dir: &'a File,
    limits: &'a Limits,
    /// Where to keep a copy of each source file's bytes (the ones hashed),
    /// when the caller will store them; `None` to hash only.
    stage: Option<&'a Path>,
    /// Each distinct path is read once; later sources naming it get this.
    seen: RefCell<HashMap<String, std::result::Result<SourceFile, String>>>,
    /// Bytes of source files read so far, against the bundle's total cap.
    total: Cell<u64>,
}

/// Stored bundles: file sources are read back from the object store.
pub(crate) struct StoredFiles<'a> {
    objects: &'a Objects,
    store: RefCell<&'a mut Store>,
    limits: &'a Limits,
    /// Each object is hashed once.
    seen: RefCell<HashMap<Sha256Hex, std::result::Result<SourceFile, String>>>,
    total: Cell<u64>,
    /// An object that could not be read: an I/O failure of this machine,
    /// not a fault of the bundle (the caller retries instead of failing).
    io_error: RefCell<Option<Error>>,
}

impl<'a> StoredFiles<'a> {
    pub(crate) fn new(objects: &'a Objects, store: &'a mut Store, limits: &'a Limits) -> Self {
        StoredFiles {
            objects,
            store: RefCell::new(store),
            limits,
            seen: RefCell::new(HashMap::new()),
            total: Cell::new(0),
            io_error: RefCell::new(None),
        }
    }

    /// The first I/O error met while reading objects, if any.
    pub(crate) fn take_io_error(&self) -> Option<Error> {
        self.io_error.borrow_mut().take()
    }
}

fn errno_io(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Opens a bundle's top-level path by the caller's rule and says what it is.
enum Opened {
    File(File),
    Dir(File),
}

fn open_top(path: &Path, follow: Follow) -> Result<std::result::Result<Opened, String>> {
    let meta = match follow {
        Follow::Link => fs::metadata(path),
        Follow::Never => fs::symlink_metadata(path),
    }
    .io("inspect", path)?;
    let kind = meta.file_type();
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if follow == Follow::Never {
        flags |= OFlags::NOFOLLOW;
    }
    if kind.is_dir() {
        flags |= OFlags::DIRECTORY;
    } else if !kind.is_file() {
        // FIFOs, sockets, devices (and, for the inbox, symlinks) are never
        // opened.
        return Ok(Err(
            "not a regular file or a NAME.bundle/ folder (it was not opened)".to_owned(),
        ));
    }
    if kind.is_dir()
        && follow == Follow::Never
        && !path.as_os_str().as_encoded_bytes().ends_with(b".bundle")
    {
        return Ok(Err("a folder not named NAME.bundle".to_owned()));
    }
    let fd = rustix::fs::open(path, flags, Mode::empty())
        .map_err(errno_io)
        .io("open", path)?;
    let st = rustix::fs::fstat(&fd)
        .map_err(errno_io)
        .io("inspect", path)?;
    if (st.st_dev, st.st_ino) != (meta.dev(), meta.ino()) {
        return Ok(Err(
            "an entry that changed while it was being opened".to_owned()
        ));
    }
    let file = File::from(fd);
    if kind.is_dir() {
        return Ok(Ok(Opened::Dir(file)));
    }
    if follow == Follow::Never && st.st_nlink > 1 {
        return Ok(Err(hard_link_message(st.st_nlink)));
    }
    Ok(Ok(Opened::File(file)))
}

fn hard_link_message(links: impl std::fmt::Display) -> String {
    format!(
        "the file has {links} hard links; only files with exactly one are read (a hard link can name any file of the filesystem)"
    )
}

/// Reads at most `limit + 1` bytes of an open regular file: the bytes, or
/// the size it has at least.
fn read_bounded(file: File, limit: u64, path: &Path) -> Result<std::result::Result<Vec<u8>, u64>> {
    let len = file.metadata().io("inspect", path)?.len();
    let mut buf = Vec::with_capacity(len.min(limit + 1) as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .io("read", path)?;
    if buf.len() as u64 > limit {
        return Ok(Err(len.max(buf.len() as u64)));
    }
    Ok(Ok(buf))
}

fn refused(path: &Path, message: String) -> ReadBundle {
    ReadBundle {
        path: path.to_owned(),
        sha256: None,
        json: None,
        verdict: Err(ValidationErrors::one(ValidationError::new(
            "", message, None,
        ))),
    }
}

/// Reads and validates the bundle at `path` (a JSON file or a bundle
/// folder). With `stage`, each source file's bytes are also copied there as
/// they are hashed, for the caller to store.
///
/// An unreadable path is an `Err`; an invalid bundle is an `Ok` whose
/// verdict holds the errors (its `sha256` is `None` when the bytes were not
/// all read, e.g. too large).
pub fn read_bundle(
    path: &Path,
    limits: &Limits,
    stage: Option<&Path>,
    follow: Follow,
) -> Result<ReadBundle> {
    let opened = match open_top(path, follow)? {
        Ok(o) => o,
        Err(message) if follow == Follow::Never => return Ok(refused(path, message)),
        Err(message) => {
            return Err(Error::InvalidArgument {
                what: "bundle",
                message: format!("{} is {message}", path.display()),
            });
        }
    };
    let (file, dir) = match opened {
        Opened::File(f) => (f, None),
        Opened::Dir(d) => {
            let json = match open_beneath(&d, &[BUNDLE_JSON]) {
                Ok(f) => f,
                Err(message) => {
                    return Ok(refused(
                        path,
                        format!("{BUNDLE_JSON} of the bundle folder: {message}"),
                    ));
                }
            };
            (json, Some(d))
        }
    };
    let bytes = match read_bounded(file, limits.max_bundle_bytes, path)? {
        Ok(b) => b,
        Err(size) => {
            return Ok(ReadBundle {
                path: path.to_owned(),
                sha256: None,
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
                let files = match &dir {
                    Some(d) => Files::Dir(BundleDir {
                        dir: d,
                        limits,
                        stage,
                        seen: RefCell::new(HashMap::new()),
                        total: Cell::new(0),
                    }),
                    None => Files::None,
                };
                rules::validate(value, limits, &files)
            }),
    };
    Ok(ReadBundle {
        path: path.to_owned(),
        sha256: Some(sha256),
        json,
        verdict,
    })
}

/// Opens `parts` (a checked relative path) beneath `root`, one component at
/// a time, never following a symlink. The last component must be a regular
/// file with one link, and the file opened must be the one inspected. The
/// error is a message for the `path` field.
fn open_beneath(root: &File, parts: &[&str]) -> std::result::Result<File, String> {
    let mut held: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let at: BorrowedFd<'_> = held.as_ref().map_or_else(|| root.as_fd(), |fd| fd.as_fd());
        let last = i + 1 == parts.len();
        if !last {
            let fd = rustix::fs::openat(
                at,
                *part,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                // With O_DIRECTORY, a symlink gives ENOTDIR: say which.
                let symlink = || {
                    rustix::fs::statat(at, *part, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
                };
                match e {
                    rustix::io::Errno::NOENT => "file not found in the bundle folder".to_owned(),
                    rustix::io::Errno::LOOP => {
                        "path must not go through a symlink (symlinks are not followed)".to_owned()
                    }
                    rustix::io::Errno::NOTDIR if symlink() => {
                        "path must not go through a symlink (symlinks are not followed)".to_owned()
                    }
                    rustix::io::Errno::NOTDIR => {
                        format!("'{}' is not a folder", parts[..=i].join("/"))
                    }
                    e => format!("cannot open '{}': {}", parts[..=i].join("/"), errno_io(e)),
                }
            })?;
            held = Some(fd);
            continue;
        }
        let st = rustix::fs::statat(at, *part, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| match e {
            rustix::io::Errno::NOENT => "file not found in the bundle folder".to_owned(),
            e => format!("cannot inspect the file: {}", errno_io(e)),
        })?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => {
                return Err("path must not name a symlink (symlinks are not followed)".to_owned());
            }
            _ => return Err("path must name a regular file".to_owned()),
        }
        let fd = rustix::fs::openat(
            at,
            *part,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP => {
                "path must not name a symlink (symlinks are not followed)".to_owned()
            }
            e => format!("cannot open the file: {}", errno_io(e)),
        })?;
        let now = rustix::fs::fstat(&fd)
            .map_err(|e| format!("cannot inspect the file: {}", errno_io(e)))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
            || FileType::from_raw_mode(now.st_mode) != FileType::RegularFile
        {
            return Err("the file changed while it was being opened".to_owned());
        }
        if now.st_nlink > 1 {
            return Err(hard_link_message(now.st_nlink));
        }
        return Ok(File::from(fd));
    }
    Err("path must not be empty".to_owned())
}

/// Checks a relative source path and opens, hashes (and maybe stages) the
/// file it names; a path seen before in this bundle is not read again. The
/// error is a message for the `path` field.
pub(crate) fn open_source(
    dir: &BundleDir<'_>,
    rel: &str,
) -> std::result::Result<SourceFile, String> {
    if let Some(seen) = dir.seen.borrow().get(rel) {
        return seen.clone();
    }
    let result = check_rel_path(rel)
        .and_then(|parts| open_beneath(dir.dir, &parts))
        .and_then(|file| {
            let declared = file
                .metadata()
                .map_err(|e| format!("cannot inspect the file: {e}"))?
                .len();
            hash_bytes(file, declared, rel, dir.limits, &dir.total, dir.stage)
        });
    dir.seen.borrow_mut().insert(rel.to_owned(), result.clone());
    result
}

/// Re-reads a stored bundle's file source from the object store: the path
/// is checked as at upload, the bytes are those stored under `sha` (each
/// object hashed once). An object that cannot be read is recorded as an
/// I/O error (see [`StoredFiles::take_io_error`]).
pub(crate) fn open_stored(
    stored: &StoredFiles<'_>,
    rel: &str,
    sha: &Sha256Hex,
) -> std::result::Result<SourceFile, String> {
    check_rel_path(rel)?;
    if let Some(seen) = stored.seen.borrow().get(sha) {
        return seen.clone().map(|mut f| {
            f.rel_path = rel.to_owned();
            f
        });
    }
    let path = stored.objects.path_of(sha);
    let cannot_read = |source: io::Error| {
        let message = format!("the stored bytes of this file cannot be read: {source}");
        stored.io_error.borrow_mut().get_or_insert(Error::Io {
            action: "read stored object",
            path: path.clone(),
            source,
        });
        Err(message)
    };
    let opened = stored.objects.open(&mut stored.store.borrow_mut(), sha);
    let result = match opened {
        Ok(Some(Body::File(file))) => match file.metadata() {
            Ok(meta) => hash_bytes(file, meta.len(), rel, stored.limits, &stored.total, None),
            Err(e) => return cannot_read(e),
        },
        Ok(Some(Body::Memory(bytes))) => {
            let len = bytes.len() as u64;
            hash_bytes(&bytes[..], len, rel, stored.limits, &stored.total, None)
        }
        Ok(None) => return cannot_read(io::ErrorKind::NotFound.into()),
        Err(e) => return cannot_read(io::Error::other(e.to_string())),
    };
    if let Err(message) = &result
        && message.starts_with("cannot read")
    {
        stored.io_error.borrow_mut().get_or_insert(Error::Io {
            action: "read stored object",
            path,
            source: io::Error::other(message.clone()),
        });
    }
    stored.seen.borrow_mut().insert(sha.clone(), result.clone());
    result
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

/// Hashes (and stages, when asked) the bytes of `reader`, which says it
/// holds `declared` bytes, within the bundle's limits.
fn hash_bytes(
    reader: impl Read,
    declared: u64,
    rel: &str,
    limits: &Limits,
    total: &Cell<u64>,
    stage: Option<&Path>,
) -> std::result::Result<SourceFile, String> {
    let over_total = || {
        format!(
            "the bundle's files add up to more than the limit of {} bytes (limits.max_total_source_bytes)",
            limits.max_total_source_bytes
        )
    };
    if declared > limits.max_source_file_bytes {
        return Err(format!(
            "file is larger than the limit of {} bytes",
            limits.max_source_file_bytes
        ));
    }
    if total.get().saturating_add(declared) > limits.max_total_source_bytes {
        return Err(over_total());
    }
    let mut staged = match stage {
        Some(dir) => Some(
            tempfile::Builder::new()
                .prefix(".stage-")
                .tempfile_in(dir)
                .map_err(|e| format!("cannot stage the file in {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let mut reader = reader.take(limits.max_source_file_bytes + 1);
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
        total.set(total.get().saturating_add(n as u64));
        if size > limits.max_source_file_bytes {
            return Err(format!(
                "file is larger than the limit of {} bytes",
                limits.max_source_file_bytes
            ));
        }
        if total.get() > limits.max_total_source_bytes {
            return Err(over_total());
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

//! Archiving: where a decided entry goes, under what name, and the report
//! beside a rejected one. Archive names are written ([`archive_name`]) and
//! read back ([`read_name`], for `status`) here and nowhere else:
//!
//! - accepted: `<sha256[..16]>.<name>`
//! - duplicate: `<sha256[..16]>.duplicate.<name>`
//! - rejected: `<sha256[..16]>.<name>` (or `unhashed.`, `unread.`), with
//!   `<that name>.errors.json` beside it
//!
//! with `<k>.` after the prefix when the name is taken (or when the name
//! itself begins with `duplicate.`, so it never reads as one), and the
//! middle of a long name cut so the report's name still fits.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::bundle::{Sha256Hex, ValidationError};
use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::timestamp::Timestamp;

/// What follows a rejected entry's archive name in its report's name.
const REPORT_SUFFIX: &str = ".errors.json";
/// What follows the prefix in a duplicate's archive name.
const DUPLICATE: &str = "duplicate";
/// Longest archive name: a file name's 255 bytes less the report suffix.
const MAX_ARCHIVE_NAME: usize = 255 - REPORT_SUFFIX.len();

/// Where an entry is archived, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Archived {
    /// In accepted/, a new run.
    Accepted,
    /// In accepted/, bytes accepted before.
    Duplicate,
    /// In rejected/.
    Rejected,
}

/// `<prefix>.[duplicate.][<k>.]<name>`, shortened to [`MAX_ARCHIVE_NAME`]
/// bytes by cutting the middle of the name (its extension and the prefix
/// kept).
pub(super) fn archive_name(prefix: &str, kind: Archived, k: u32, name: &OsStr) -> OsString {
    let mut head = prefix.as_bytes().to_vec();
    head.push(b'.');
    let name = name.as_bytes();
    if kind == Archived::Duplicate {
        head.extend_from_slice(DUPLICATE.as_bytes());
        head.push(b'.');
    }
    // A name that itself begins with `duplicate.` gets its number even when
    // it is the first, so it never reads back as a duplicate.
    let looks_duplicate =
        kind != Archived::Duplicate && name.starts_with(format!("{DUPLICATE}.").as_bytes());
    if k > 1 || looks_duplicate {
        head.extend_from_slice(format!("{k}.").as_bytes());
    }
    if head.len() + name.len() <= MAX_ARCHIVE_NAME {
        head.extend_from_slice(name);
        return OsString::from_vec(head);
    }
    let ext_start = name
        .iter()
        .rposition(|&b| b == b'.')
        .filter(|&i| i > 0 && name.len() - i <= 16)
        .unwrap_or(name.len());
    let ext = &name[ext_start..];
    let room = MAX_ARCHIVE_NAME.saturating_sub(head.len() + ext.len() + 1);
    let mut cut = room.min(ext_start);
    // Do not split a UTF-8 character.
    while cut > 0 && (name[cut] & 0b1100_0000) == 0b1000_0000 {
        cut -= 1;
    }
    head.extend_from_slice(&name[..cut]);
    head.push(b'~');
    head.extend_from_slice(ext);
    OsString::from_vec(head)
}

/// What a name found in accepted/ or rejected/ is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadName {
    /// An archived entry; `duplicate` when [`archive_name`] wrote it for
    /// one (prefixes are 16 hex digits, or a word, and hold no dot).
    Entry {
        /// Written for a duplicate.
        duplicate: bool,
    },
    /// A rejected entry's report.
    Report,
    /// A hidden file (a report being written).
    Hidden,
}

/// Reads back a name [`archive_name`] or [`write_report`] wrote.
pub(super) fn read_name(name: &str) -> ReadName {
    if name.starts_with('.') {
        return ReadName::Hidden;
    }
    if name.ends_with(REPORT_SUFFIX) {
        return ReadName::Report;
    }
    let after_prefix = name.split_once('.').map_or("", |(_, rest)| rest);
    let duplicate = after_prefix
        .strip_prefix(DUPLICATE)
        .is_some_and(|rest| rest.starts_with('.'));
    ReadName::Entry { duplicate }
}

/// The archive folder of the day `now` falls on (UTC).
pub(super) fn date_dir(root: &Path, now: Timestamp) -> PathBuf {
    let day = now.to_db();
    root.join(&day[..10])
}

/// Renames `src` to `to` without ever replacing anything.
pub(super) fn rename_noreplace(src: &Path, to: &Path) -> std::io::Result<()> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        src,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: check, then rename (only
        // bundleq writes the folders this is used for).
        Err(rustix::io::Errno::INVAL) => {
            if fs::symlink_metadata(to).is_ok() {
                Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
            } else {
                fs::rename(src, to)
            }
        }
        Err(e) => Err(std::io::Error::from_raw_os_error(e.raw_os_error())),
    }
}

/// Moves `src` into `dir` under an archive name, never replacing anything.
/// The caller fsyncs `dir` (once for many moves).
pub(super) fn archive(
    src: &Path,
    dir: &Path,
    prefix: &str,
    kind: Archived,
    name: &OsStr,
) -> Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .io("create folder", dir)?;
    for k in 1..10_000u32 {
        let candidate = dir.join(archive_name(prefix, kind, k, name));
        match rename_noreplace(src, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(Error::Io {
                    action: "move",
                    path: src.to_owned(),
                    source,
                });
            }
        }
    }
    Err(Error::InvalidArgument {
        what: "archive name",
        message: format!("no free name for {} in {}", src.display(), dir.display()),
    })
}

/// The report written beside a rejected entry.
#[derive(Serialize)]
pub(super) struct RejectReport<'a> {
    pub(super) file: String,
    pub(super) original_path: String,
    pub(super) tenant_id: Uuid,
    pub(super) rejected_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sha256: Option<&'a Sha256Hex>,
    pub(super) errors: &'a [ValidationError],
}

/// Writes the report of the entry archived at `moved_to` (complete and
/// fsynced before it gets its name).
pub(super) fn write_report(moved_to: &Path, report: &RejectReport<'_>) -> Result<()> {
    let dir = moved_to.parent().unwrap_or(Path::new("."));
    let mut name = moved_to.file_name().unwrap_or_default().to_owned();
    name.push(REPORT_SUFFIX);
    let target = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(".report-")
        .tempfile_in(dir)
        .io("create a report in", dir)?;
    serde_json::to_writer_pretty(&mut tmp, report)
        .map_err(std::io::Error::other)
        .io("write", &target)?;
    tmp.as_file().sync_all().io("fsync", &target)?;
    tmp.persist(&target)
        .map_err(|e| e.error)
        .io("write", &target)?;
    Ok(())
}

/// Counts for `bundleq status` (home-wide: the folders are shared).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FolderCounts {
    /// Entries waiting in the inbox.
    pub inbox_backlog: u64,
    /// Bundles in accepted/ (duplicates excluded).
    pub accepted: u64,
    /// Duplicates in accepted/.
    pub duplicates: u64,
    /// Entries in rejected/.
    pub rejected: u64,
}

/// Counts of the home's folders for `status`.
pub fn folder_counts(home: &Home, inbox_dir: &Path, default_tenant: Uuid) -> Result<FolderCounts> {
    let mut counts = FolderCounts {
        inbox_backlog: match super::entries::list(inbox_dir, default_tenant) {
            Ok(l) => l.len() as u64,
            Err(_) => 0,
        },
        ..FolderCounts::default()
    };
    for (root, accepted) in [(home.accepted(), true), (home.rejected(), false)] {
        let Ok(days) = fs::read_dir(&root) else {
            continue;
        };
        for day in days.flatten() {
            let Ok(entries) = fs::read_dir(day.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                match read_name(&name) {
                    ReadName::Hidden | ReadName::Report => {}
                    ReadName::Entry { .. } if !accepted => counts.rejected += 1,
                    ReadName::Entry { duplicate: true } => counts.duplicates += 1,
                    ReadName::Entry { duplicate: false } => counts.accepted += 1,
                }
            }
        }
    }
    Ok(counts)
}

/// One decided inbox entry, as found in accepted/ or rejected/.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchivedEntry {
    /// `accepted`, `duplicate` or `rejected`.
    pub kind: &'static str,
    /// Its name in the archive (`<sha256 prefix>.<name it was dropped as>`).
    pub name: String,
    /// When it was moved there (the file's modification time).
    pub at: Timestamp,
    /// A rejected entry's errors, from its report.
    pub errors: Vec<ValidationError>,
}

/// The `n` most recently decided entries of the newest `days` day folders
/// of accepted/ and rejected/, newest first. Reports of more than 1 MiB are
/// not read (their entry is listed without errors).
pub fn recent_entries(home: &Home, days: usize, n: usize) -> Vec<ArchivedEntry> {
    let mut found: Vec<(std::time::SystemTime, PathBuf, bool)> = Vec::new();
    for (root, accepted) in [(home.accepted(), true), (home.rejected(), false)] {
        let mut day_dirs: Vec<PathBuf> = fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        day_dirs.sort();
        for day in day_dirs.iter().rev().take(days) {
            for e in fs::read_dir(day).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !matches!(read_name(&name), ReadName::Entry { .. }) {
                    continue;
                }
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    found.push((m, e.path(), accepted));
                }
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
        .into_iter()
        .take(n)
        .map(|(modified, path, accepted)| {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let kind = match (accepted, read_name(&name)) {
                (false, _) => "rejected",
                (true, ReadName::Entry { duplicate: true }) => "duplicate",
                (true, _) => "accepted",
            };
            let errors = if accepted {
                Vec::new()
            } else {
                let mut report = path.clone().into_os_string();
                report.push(REPORT_SUFFIX);
                read_report_errors(Path::new(&report))
            };
            ArchivedEntry {
                kind,
                name,
                at: Timestamp::from_system(modified),
                errors,
            }
        })
        .collect()
}

/// The errors a rejection report lists (none when it cannot be read).
fn read_report_errors(report: &Path) -> Vec<ValidationError> {
    #[derive(serde::Deserialize)]
    struct Report {
        errors: Vec<ReportError>,
    }
    #[derive(serde::Deserialize)]
    struct ReportError {
        path: String,
        message: String,
        input: Option<String>,
    }
    let Ok(m) = fs::metadata(report) else {
        return Vec::new();
    };
    if m.len() > 1024 * 1024 {
        return Vec::new();
    }
    fs::read(report)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Report>(&bytes).ok())
        .map(|r| {
            r.errors
                .into_iter()
                .map(|e| ValidationError::new(&e.path, e.message, e.input))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_fit_with_room_for_the_report_and_keep_prefix_and_extension() {
        let long = OsString::from(format!("{}.json", "n".repeat(250)));
        let name = archive_name("0123456789abcdef", Archived::Duplicate, 12, &long);
        let bytes = name.as_bytes();
        assert!(bytes.len() <= MAX_ARCHIVE_NAME, "{}", bytes.len());
        assert!(bytes.starts_with(b"0123456789abcdef.duplicate.12.nnn"));
        assert!(bytes.ends_with(b"~.json"));
        // Multi-byte characters are not split.
        let wide = OsString::from(format!("{}.json", "é".repeat(125)));
        let name = archive_name("0123456789abcdef", Archived::Accepted, 1, &wide);
        assert!(name.to_str().is_some());
        assert!(name.as_bytes().len() <= MAX_ARCHIVE_NAME);
        // Short names are kept whole.
        assert_eq!(
            archive_name("abc", Archived::Accepted, 1, OsStr::new("x.json")),
            OsString::from("abc.x.json")
        );
    }

    #[test]
    fn every_archive_name_reads_back_as_what_it_was_written_for() {
        for name in ["x.json", "duplicate.json", "a.b.c", "é.bundle", "duplicate"] {
            for k in [1, 2, 12] {
                for (kind, duplicate) in [
                    (Archived::Accepted, false),
                    (Archived::Duplicate, true),
                    (Archived::Rejected, false),
                ] {
                    for prefix in ["0123456789abcdef", "unhashed", "unread"] {
                        let written = archive_name(prefix, kind, k, OsStr::new(name));
                        let text = written.to_str().unwrap();
                        assert_eq!(read_name(text), ReadName::Entry { duplicate }, "{text}");
                        let report = format!("{text}{REPORT_SUFFIX}");
                        assert_eq!(read_name(&report), ReadName::Report);
                    }
                }
            }
        }
        assert_eq!(read_name(".report-x"), ReadName::Hidden);
    }
}

//! The drop folder: `<home>/inbox` (or `--inbox DIR`), watched by `serve`
//! and scanned by `bundleq ingest`.
//!
//! A scan lists the inbox (and its `<tenant-uuid>/` folders), takes every
//! entry that is complete, runs it through the same accept path as
//! `submit`, and only after the database commit moves it out: to
//! `accepted/<date>/` (accepted or duplicate) or to `rejected/<date>/` with
//! `<name>.errors.json` beside it. Moves are renames inside the home that
//! never overwrite, and both folders are fsynced, so a crash at any point
//! loses nothing: the next scan finds the file again, recognises it by its
//! hash, and finishes the move without a second job.
//!
//! Invariants: only this module touches the inbox; nothing is deleted;
//! symlinks, FIFOs, sockets and devices are never opened or followed, only
//! renamed aside; a database error leaves the entry where it is.
//! OS notifications are hints that a scan is due; the scan is the truth.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, select, unbounded};
use serde::Serialize;
use uuid::Uuid;

use crate::accept::{self, AcceptReport, Origin, Verdict};
use crate::bundle::{Sha256Hex, ValidationError};
use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::objects::sync_dir;
use crate::store::Store;
use crate::timestamp::Timestamp;

/// At most this many entries of a bundle folder are looked at to decide
/// whether it is still being written.
const MAX_WALK: usize = 100_000;

/// `[inbox]` in `bundleq.toml`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// A file not renamed in is taken once unchanged for this long.
    #[serde(deserialize_with = "crate::config::duration")]
    pub settle: Duration,
    /// Full rescan period, a safety net for lost or missing notifications.
    #[serde(deserialize_with = "crate::config::duration")]
    pub rescan_interval: Duration,
    /// Use OS notifications; `false` for filesystems that send none (NFS,
    /// some FUSE mounts): then only the rescans find new entries.
    pub watch: bool,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            settle: Duration::from_secs(1),
            rescan_interval: Duration::from_secs(30),
            watch: true,
        }
    }
}

/// What one scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    /// Bundles accepted as new runs.
    pub accepted: u64,
    /// Bundles whose bytes were already accepted.
    pub duplicates: u64,
    /// Entries moved to rejected/.
    pub rejected: u64,
    /// Entries still being written (or that could not be read this time).
    pub waiting: u64,
    /// When the earliest waiting entry will have settled.
    #[serde(skip)]
    pub next_check: Option<Duration>,
    /// Why entries could not be ingested this time (database or disk
    /// errors; they stay in the inbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
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

/// The scanner of one inbox folder.
#[derive(Debug)]
pub struct Inbox<'h> {
    home: &'h Home,
    dir: PathBuf,
    default_tenant: Uuid,
    config: InboxConfig,
}

enum Entry {
    /// A file or bundle folder to ingest for this tenant.
    Candidate { path: PathBuf, tenant: Uuid },
    /// Never opened: moved aside with this reason.
    Unsupported {
        path: PathBuf,
        tenant: Uuid,
        reason: String,
    },
}

/// Editors' and downloaders' temporary names, and hidden files.
fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".swp")
        || name.ends_with('~')
}

fn tenant_folder(name: &str) -> Option<Uuid> {
    (name.len() == 36)
        .then(|| Uuid::try_parse(name).ok())
        .flatten()
        .filter(|u| !u.is_nil())
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symlink (symlinks are never followed)"
    } else if ft.is_fifo() {
        "a FIFO (only regular files and NAME.bundle/ folders are ingested)"
    } else if ft.is_socket() {
        "a socket (only regular files and NAME.bundle/ folders are ingested)"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device (only regular files and NAME.bundle/ folders are ingested)"
    } else {
        "not a regular file"
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

fn date_dir(root: &Path) -> PathBuf {
    let day = Timestamp::now().to_db();
    root.join(&day[..10])
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || "unnamed".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Renames `src` into `dir` as `<prefix>.<name>` (or `<prefix>.<k>.<name>`
/// if taken), never replacing anything, then fsyncs both folders.
fn archive(src: &Path, dir: &Path, prefix: &str) -> Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .io("create folder", dir)?;
    let name = file_name(src);
    for k in 1..10_000u32 {
        let candidate = if k == 1 {
            dir.join(format!("{prefix}.{name}"))
        } else {
            dir.join(format!("{prefix}.{k}.{name}"))
        };
        let renamed = match rustix::fs::renameat_with(
            rustix::fs::CWD,
            src,
            rustix::fs::CWD,
            &candidate,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            // A filesystem without RENAME_NOREPLACE: check, then rename
            // (only bundleq writes these folders).
            Err(rustix::io::Errno::INVAL) if candidate.exists() => Err(rustix::io::Errno::EXIST),
            Err(rustix::io::Errno::INVAL) => fs::rename(src, &candidate)
                .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)),
            other => other,
        };
        match renamed {
            Ok(()) => {
                sync_dir(dir)?;
                if let Some(parent) = src.parent() {
                    sync_dir(parent)?;
                }
                return Ok(candidate);
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => {
                let source = std::io::Error::from(e);
                let hint = if source.raw_os_error() == Some(libc::EXDEV) {
                    " (the inbox must be on the same filesystem as the home)"
                } else {
                    ""
                };
                return Err(Error::Io {
                    action: if hint.is_empty() {
                        "move"
                    } else {
                        "move across filesystems"
                    },
                    path: src.to_owned(),
                    source,
                });
            }
        }
    }
    Err(Error::InvalidArgument {
        what: "archive name",
        message: format!("no free name for {} in {}", name, dir.display()),
    })
}

#[derive(Serialize)]
struct RejectReport<'a> {
    file: &'a str,
    original_path: String,
    tenant_id: Uuid,
    rejected_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a Sha256Hex>,
    errors: &'a [ValidationError],
}

fn write_report(moved_to: &Path, report: &RejectReport<'_>) -> Result<()> {
    let dir = moved_to.parent().unwrap_or(Path::new("."));
    let target = dir.join(format!("{}.errors.json", file_name(moved_to)));
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
    sync_dir(dir)
}

impl<'h> Inbox<'h> {
    /// The inbox at `dir` (usually `home.inbox()`).
    pub fn new(home: &'h Home, dir: PathBuf, default_tenant: Uuid, config: InboxConfig) -> Self {
        Inbox {
            home,
            dir,
            default_tenant,
            config,
        }
    }

    /// The folder scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut folders = vec![(self.dir.clone(), self.default_tenant, true)];
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
                let name = e.file_name().to_string_lossy().into_owned();
                if ignored(&name) {
                    continue;
                }
                let path = e.path();
                let ft = match e.file_type() {
                    Ok(ft) => ft,
                    Err(_) => continue, // vanished
                };
                if ft.is_dir() {
                    if name.ends_with(".bundle") {
                        out.push(Entry::Candidate { path, tenant });
                    } else if let (true, Some(t)) = (top, tenant_folder(&name)) {
                        folders.push((path, t, false));
                    } else {
                        out.push(Entry::Unsupported {
                            path,
                            tenant,
                            reason: "a folder that is neither NAME.bundle/ nor a tenant folder named by its UUID".to_owned(),
                        });
                    }
                } else if ft.is_file() {
                    out.push(Entry::Candidate { path, tenant });
                } else {
                    out.push(Entry::Unsupported {
                        path,
                        tenant,
                        reason: kind_name(&ft).to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Entries in the inbox now (for `status`).
    pub fn backlog(&self) -> Result<u64> {
        Ok(self.list()?.len() as u64)
    }

    /// One pass: ingest every complete entry. `renamed_in` holds paths the
    /// OS reported as renamed into the inbox: they are complete at once.
    pub fn scan(&self, store: &mut Store, renamed_in: &HashSet<PathBuf>) -> Result<ScanSummary> {
        let mut summary = ScanSummary::default();
        let now = SystemTime::now();
        let mut ready: BTreeMap<Uuid, Vec<PathBuf>> = BTreeMap::new();
        for entry in self.list()? {
            match entry {
                Entry::Unsupported {
                    path,
                    tenant,
                    reason,
                } => {
                    self.reject_unread(&path, tenant, &reason)?;
                    summary.rejected += 1;
                }
                Entry::Candidate { path, tenant } => {
                    if renamed_in.contains(&path) {
                        ready.entry(tenant).or_default().push(path);
                        continue;
                    }
                    match newest_mtime(&path) {
                        Ok(m) => {
                            let age = now.duration_since(m).unwrap_or(Duration::ZERO);
                            if age >= self.config.settle {
                                ready.entry(tenant).or_default().push(path);
                            } else {
                                summary.waiting += 1;
                                let left = self.config.settle - age;
                                summary.next_check =
                                    Some(summary.next_check.map_or(left, |n| n.min(left)));
                            }
                        }
                        Err(_) => summary.waiting += 1, // vanished or unreadable: next scan
                    }
                }
            }
        }
        let mut failed: Vec<(PathBuf, Error)> = Vec::new();
        for (tenant, paths) in ready {
            let results = accept::accept_many(
                store,
                self.home,
                &paths,
                tenant,
                Origin::Inbox,
                Timestamp::now(),
            );
            for (path, result) in paths.iter().zip(results) {
                match result {
                    Ok(report) => self.finish(store, path, tenant, &report, &mut summary)?,
                    // The database or the disk failed: leave the entry where
                    // it is and try again next scan.
                    Err(e) => failed.push((path.clone(), e)),
                }
            }
        }
        if let Some((_, e)) = failed.first() {
            summary.failure = Some(format!(
                "could not ingest {} inbox entries ({e}); they stay in the inbox and will be retried",
                failed.len()
            ));
            summary.waiting += failed.len() as u64;
        }
        Ok(summary)
    }

    /// Moves an entry whose verdict is committed.
    fn finish(
        &self,
        store: &mut Store,
        path: &Path,
        tenant: Uuid,
        report: &AcceptReport,
        summary: &mut ScanSummary,
    ) -> Result<()> {
        let prefix = &report.sha256.as_str()[..16];
        let name = file_name(path);
        match &report.verdict {
            Verdict::Accepted { run_id, .. } => {
                let to = archive(path, &date_dir(&self.home.accepted()), prefix)?;
                summary.accepted += 1;
                log::info!("Accepted {name} as run {run_id} -> {}", to.display());
            }
            Verdict::Duplicate { run_id } => {
                // Committed earlier but not moved (a crash in between):
                // finish the move as an acceptance, not a duplicate.
                let recovered = store
                    .run(tenant, *run_id)
                    .map(|r| {
                        r.summary.origin == "inbox"
                            && r.summary.origin_name.as_deref() == Some(&name)
                    })
                    .unwrap_or(false);
                if recovered {
                    let to = archive(path, &date_dir(&self.home.accepted()), prefix)?;
                    summary.accepted += 1;
                    log::info!(
                        "Accepted {name} as run {run_id} (recovered after a restart) -> {}",
                        to.display()
                    );
                } else {
                    let to = archive(
                        path,
                        &date_dir(&self.home.accepted()),
                        &format!("{prefix}.duplicate"),
                    )?;
                    summary.duplicates += 1;
                    log::info!(
                        "Duplicate {name}: already accepted as run {run_id} -> {}",
                        to.display()
                    );
                }
            }
            Verdict::Invalid { errors } => {
                let to =
                    self.reject(path, tenant, prefix, Some(&report.sha256), errors.errors())?;
                summary.rejected += 1;
                log::warn!("Rejected {name}: {} -> {}", errors.summary(), to.display());
            }
            Verdict::Valid { .. } => {}
        }
        Ok(())
    }

    fn reject_unread(&self, path: &Path, tenant: Uuid, reason: &str) -> Result<()> {
        let error = ValidationError::new("", format!("not ingested: {reason}"), None);
        let to = self.reject(path, tenant, "unread", None, std::slice::from_ref(&error))?;
        log::warn!("Rejected {}: {reason} -> {}", file_name(path), to.display());
        Ok(())
    }

    /// Moves an entry to rejected/ and writes its report beside it.
    fn reject(
        &self,
        path: &Path,
        tenant: Uuid,
        prefix: &str,
        sha256: Option<&Sha256Hex>,
        errors: &[ValidationError],
    ) -> Result<PathBuf> {
        let to = archive(path, &date_dir(&self.home.rejected()), prefix)?;
        write_report(
            &to,
            &RejectReport {
                file: &file_name(path),
                original_path: path.display().to_string(),
                tenant_id: tenant,
                rejected_at: Timestamp::now(),
                sha256,
                errors,
            },
        )?;
        Ok(to)
    }

    /// Watches the inbox until `quit` disconnects: a scan at start, after
    /// each batch of OS notifications, when a waiting entry should have
    /// settled, and every rescan interval. `on_ingest` is called after a
    /// scan accepted anything (the pool's wake-up).
    pub fn watch(
        &self,
        store: &mut Store,
        quit: &Receiver<()>,
        on_ingest: &dyn Fn(),
    ) -> Result<()> {
        let (tx, events) = unbounded::<notify::Result<notify::Event>>();
        let every = crate::timestamp::human_duration(self.config.rescan_interval);
        let _watcher = if self.config.watch {
            let watcher = notify::recommended_watcher(tx).and_then(|mut w| {
                notify::Watcher::watch(&mut w, &self.dir, notify::RecursiveMode::Recursive)
                    .map(|()| w)
            });
            match watcher {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!(
                        "Cannot watch {} for changes ({e}); scanning it every {every} instead",
                        self.dir.display(),
                    );
                    None
                }
            }
        } else {
            log::info!(
                "Inbox notifications are off; scanning {} every {every}",
                self.dir.display()
            );
            None
        };
        let mut renamed_in: HashSet<PathBuf> = HashSet::new();
        let mut next_scan = Instant::now();
        let mut errors_logged: Option<String> = None;
        loop {
            let wait = next_scan.saturating_duration_since(Instant::now());
            let mut hinted = false;
            select! {
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        hinted |= note_event(ev, &mut renamed_in);
                    }
                }
                recv(quit) -> _ => return Ok(()),
                default(wait) => {}
            }
            for ev in events.try_iter() {
                hinted |= note_event(ev, &mut renamed_in);
            }
            if !hinted && Instant::now() < next_scan {
                continue;
            }
            let mut rescan_at = Instant::now() + self.config.rescan_interval;
            match self.scan(store, &renamed_in) {
                Ok(summary) => {
                    match &summary.failure {
                        // Said once per distinct failure, not every scan.
                        Some(text) if errors_logged.as_deref() != Some(text) => {
                            log::error!("Inbox: {text}");
                            errors_logged = Some(text.clone());
                        }
                        Some(_) => {}
                        None => errors_logged = None,
                    }
                    if summary.accepted > 0 {
                        on_ingest();
                    }
                    if let Some(d) = summary.next_check {
                        rescan_at = rescan_at.min(Instant::now() + d);
                    }
                    if summary.waiting > 0 && summary.next_check.is_none() {
                        // Something could not be ingested: try again soon.
                        rescan_at = rescan_at
                            .min(Instant::now() + self.config.settle.max(Duration::from_secs(1)));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if errors_logged.as_deref() != Some(&text) {
                        log::error!("Inbox scan failed: {text}; retrying");
                        errors_logged = Some(text);
                    }
                    rescan_at = rescan_at.min(Instant::now() + Duration::from_secs(1));
                }
            }
            renamed_in.retain(|p| p.exists());
            next_scan = rescan_at;
        }
    }
}

/// Folds one notification into the scanner's hints; true when it calls
/// for a scan. Reads (including the scan's own listing) do not.
fn note_event(ev: notify::Result<notify::Event>, renamed_in: &mut HashSet<PathBuf>) -> bool {
    use notify::event::{EventKind, ModifyKind, RenameMode};
    match ev {
        Ok(ev) => {
            if ev.need_rescan() {
                log::warn!("The OS dropped inbox notifications; rescanning");
                return true;
            }
            match ev.kind {
                EventKind::Access(_) => false,
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    renamed_in.extend(ev.paths.iter().cloned());
                    true
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                    renamed_in.extend(ev.paths.get(1).cloned());
                    true
                }
                _ => true,
            }
        }
        Err(e) => {
            log::warn!("Inbox watcher error: {e}; rescanning");
            true
        }
    }
}

/// Counts of the home's folders for `status`.
pub fn folder_counts(home: &Home, inbox: &Inbox<'_>) -> Result<FolderCounts> {
    let mut counts = FolderCounts {
        inbox_backlog: inbox.backlog()?,
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
                if name.starts_with('.') || name.ends_with(".errors.json") {
                    continue;
                }
                if !accepted {
                    counts.rejected += 1;
                } else if name
                    .get(16..)
                    .is_some_and(|rest| rest.starts_with(".duplicate."))
                {
                    counts.duplicates += 1;
                } else {
                    counts.accepted += 1;
                }
            }
        }
    }
    Ok(counts)
}

//! The drop folder: `<home>/inbox` (or an adopted folder, `--inbox DIR`),
//! watched by `serve` and scanned by `bundleq ingest`.
//!
//! A scan lists the inbox (and its `<tenant-uuid>/` folders) and *claims*
//! every entry that is complete by renaming it into this process's private
//! folder, `claims/<worker-id>/<batch>/<tenant>/<name>`. Only then is it
//! opened (never following a symlink), read and run through the same accept
//! path as `submit`; after the database commit the very entry that was read
//! is moved to `accepted/<date>/` (accepted or duplicate) or to
//! `rejected/<date>/` with `<name>.errors.json` beside it. A producer that
//! renames a new version over the same name meanwhile only replaces the
//! inbox's entry, which the next scan takes: nothing is archived that was
//! not ingested, nothing ingested that was not archived.
//!
//! If an entry cannot be ingested (a database or disk error) it is moved
//! back to where it was dropped and tried again later with a growing pause;
//! one entry that fails never stops the others. A process that dies leaves
//! its claims behind: the next scan of any process that can prove it gone
//! (see [`crate::presence`]) takes them over and finishes them; a run that
//! was already committed is recognised by the claim recorded with it and
//! archived as accepted, not as a duplicate.
//!
//! An inbox is checked before use ([`check_inbox`]): never the home or a
//! folder around or inside it (other than `<home>/inbox`), always on the
//! home's filesystem, and a folder outside the home only if bundleq made it
//! an inbox (the `.bundleq-inbox` marker, see [`adopt_inbox`]) or it is
//! empty.
//!
//! Invariants: only this module touches the inbox and `claims/`; nothing
//! is deleted; symlinks, FIFOs, sockets and devices are never opened or
//! followed, only moved aside; an entry leaves the inbox for good only
//! after its verdict is committed. OS notifications are hints that a scan
//! is due; the scan is the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, select, unbounded};
use serde::Serialize;
use uuid::Uuid;

use crate::accept::{self, AcceptOptions, Input, Origin, Verdict};
use crate::bundle::{Follow, Sha256Hex, ValidationError};
pub use crate::config::InboxConfig;
use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::objects::sync_dir;
use crate::presence::Presence;
use crate::store::Store;
use crate::timestamp::Timestamp;

/// At most this many entries of a bundle folder are looked at to decide
/// whether it is still being written.
const MAX_WALK: usize = 100_000;
/// The file that makes a folder outside the home an inbox of that home.
pub const MARKER: &str = ".bundleq-inbox";
/// Longest archive name: a file name's 255 bytes less `.errors.json`.
const MAX_ARCHIVE_NAME: usize = 255 - ".errors.json".len();
/// Longest pause before an entry that failed is tried again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(300);

/// What one scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    /// Bundles accepted as new runs (or whose acceptance a crash had left
    /// unfinished).
    pub accepted: u64,
    /// Bundles whose bytes were already accepted.
    pub duplicates: u64,
    /// Entries moved to rejected/.
    pub rejected: u64,
    /// Entries written less than `settle` ago: still being written, taken
    /// by a later scan.
    pub settling: u64,
    /// Entries waiting for another reason: a failure to try again after a
    /// pause, or a tenant folder naming no tenant.
    pub waiting: u64,
    /// When the earliest waiting entry will have settled or be due again.
    #[serde(skip)]
    pub next_check: Option<Duration>,
    /// Why entries could not be ingested this time (database or disk
    /// errors; they stay in the inbox and are tried again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl ScanSummary {
    fn wait_at_most(&mut self, d: Duration) {
        self.next_check = Some(self.next_check.map_or(d, |n| n.min(d)));
    }
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

// ---------------------------------------------------------------------
// Which folder may be an inbox.

fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).io("resolve", path)
}

/// The inbox folder of `home`: `explicit` (a command-line flag), else
/// `[inbox] path`, else `<home>/inbox`.
pub fn inbox_dir(home: &Home, explicit: Option<&Path>) -> PathBuf {
    match explicit.or(home.config().inbox.path.as_deref()) {
        Some(p) if p.is_absolute() => p.to_owned(),
        Some(p) => home.root().join(p),
        None => home.inbox(),
    }
}

/// Checks that `dir` may be `home`'s inbox: not the home, not around it,
/// not inside it other than `<home>/inbox`, on the home's filesystem, and
/// (outside the home) adopted by this home or empty — an empty folder is
/// adopted on the spot. Every refusal says what to do instead.
pub fn check_inbox(home: &Home, dir: &Path) -> Result<()> {
    let refuse = |message: String| {
        Err(Error::InvalidArgument {
            what: "inbox",
            message,
        })
    };
    let root = canonical(home.root())?;
    let default = root.join("inbox");
    if !dir.exists() && fs::symlink_metadata(dir).is_err() {
        if dir == home.inbox() {
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .io("create folder", dir)?;
        } else {
            return refuse(format!(
                "{} does not exist; create it as an inbox with `bundleq --home {} init --inbox {}`",
                dir.display(),
                home.root().display(),
                dir.display()
            ));
        }
    }
    let canon = canonical(dir)?;
    if canon == root {
        return refuse(format!(
            "the inbox cannot be the home itself ({}): bundleq moves everything in an inbox to accepted/ or rejected/",
            dir.display()
        ));
    }
    if root.starts_with(&canon) {
        return refuse(format!(
            "the inbox {} contains the home {}: bundleq moves everything in an inbox to accepted/ or rejected/",
            dir.display(),
            home.root().display()
        ));
    }
    if canon.starts_with(&root) && canon != default {
        return refuse(format!(
            "the inbox {} is inside the home {}, whose folders are bundleq's own; use {} or a folder outside the home",
            dir.display(),
            home.root().display(),
            home.inbox().display()
        ));
    }
    let meta = fs::metadata(&canon).io("inspect", &canon)?;
    if !meta.is_dir() {
        return refuse(format!("the inbox {} is not a folder", dir.display()));
    }
    let home_dev = fs::metadata(&root).io("inspect", &root)?.dev();
    if meta.dev() != home_dev {
        return refuse(format!(
            "the inbox {} is on another filesystem than the home {}; entries are moved by rename, which cannot cross filesystems: use a folder on the home's filesystem",
            dir.display(),
            home.root().display()
        ));
    }
    if canon == default {
        return Ok(());
    }
    let adopt_hint = format!(
        "`bundleq --home {} init --inbox {}`",
        home.root().display(),
        dir.display()
    );
    match fs::read_to_string(canon.join(MARKER)) {
        Ok(text) => {
            let owner = text
                .lines()
                .find_map(|l| l.strip_prefix("home = "))
                .map(|v| v.trim().trim_matches('"').to_owned());
            match owner {
                Some(o) if Path::new(&o) == root => Ok(()),
                Some(o) => refuse(format!(
                    "{} is the inbox of another home ({o}); two homes must not share an inbox. To move it to this home: {adopt_hint}",
                    dir.display()
                )),
                None => refuse(format!(
                    "{} has an unreadable {MARKER} marker; adopt it again with {adopt_hint}",
                    dir.display()
                )),
            }
        }
        Err(_) => {
            let empty = fs::read_dir(&canon).io("list", &canon)?.next().is_none();
            if empty {
                write_marker(&root, &canon)
            } else {
                refuse(format!(
                    "{} is not empty and bundleq did not make it an inbox: bundleq would move everything in it to accepted/ or rejected/. If it is meant to be the inbox, adopt it with {adopt_hint}",
                    dir.display()
                ))
            }
        }
    }
}

fn write_marker(root: &Path, dir: &Path) -> Result<()> {
    let path = dir.join(MARKER);
    let text = format!(
        "# This folder is a bundleq inbox: every entry put here is moved to the\n# home's accepted/ or rejected/ folder.\nhome = {:?}\n",
        root.display().to_string()
    );
    fs::write(&path, text).io("write", &path)
}

/// Makes `dir` an inbox of `home` on purpose: creates it (0700) if missing
/// and writes the `.bundleq-inbox` marker, also into a folder that is not
/// empty (everything in it will be ingested). The folder must pass every
/// other check of [`check_inbox`].
pub fn adopt_inbox(home: &Home, dir: &Path) -> Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .io("create folder", dir)?;
    let root = canonical(home.root())?;
    let canon = canonical(dir)?;
    if canon != root.join("inbox") && !canon.starts_with(&root) && !root.starts_with(&canon) {
        write_marker(&root, &canon)?;
    }
    check_inbox(home, dir)?;
    Ok(canon)
}

// ---------------------------------------------------------------------
// Listing and readiness.

enum Kind {
    /// A regular file or a `NAME.bundle/` folder: read it.
    Bundle,
    /// Anything else: moved aside unread, with this reason.
    Unread(&'static str),
}

/// An entry found in the inbox.
struct Listed {
    path: PathBuf,
    tenant: Uuid,
    kind: Kind,
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

fn tenant_folder(name: &OsStr) -> Option<Uuid> {
    let name = name.to_str()?;
    (name.len() == 36)
        .then(|| Uuid::try_parse(name).ok())
        .flatten()
        .filter(|u| !u.is_nil())
}

fn kind_of(ft: &fs::FileType, name: &OsStr) -> Kind {
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

// ---------------------------------------------------------------------
// Archive names: written here, parsed back by `folder_counts`.

/// `<prefix>.[<k>.]<name>`, shortened to [`MAX_ARCHIVE_NAME`] bytes by
/// cutting the middle of the name (its extension and the prefix kept).
fn archive_name(prefix: &str, k: u32, name: &OsStr) -> OsString {
    let mut head = prefix.as_bytes().to_vec();
    head.push(b'.');
    if k > 1 {
        head.extend_from_slice(format!("{k}.").as_bytes());
    }
    let name = name.as_bytes();
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

/// True for an archive name written for a duplicate.
fn is_duplicate_name(name: &str) -> bool {
    name.get(16..)
        .is_some_and(|rest| rest.starts_with(".duplicate."))
}

fn date_dir(root: &Path) -> PathBuf {
    let day = Timestamp::now().to_db();
    root.join(&day[..10])
}

/// Renames `src` to `to` without ever replacing anything.
fn rename_noreplace(src: &Path, to: &Path) -> std::io::Result<()> {
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
fn archive(src: &Path, dir: &Path, prefix: &str, name: &OsStr) -> Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .io("create folder", dir)?;
    for k in 1..10_000u32 {
        let candidate = dir.join(archive_name(prefix, k, name));
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

#[derive(Serialize)]
struct RejectReport<'a> {
    file: String,
    original_path: String,
    tenant_id: Uuid,
    rejected_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a Sha256Hex>,
    errors: &'a [ValidationError],
}

fn write_report(moved_to: &Path, report: &RejectReport<'_>) -> Result<()> {
    let dir = moved_to.parent().unwrap_or(Path::new("."));
    let mut name = moved_to.file_name().unwrap_or_default().to_owned();
    name.push(".errors.json");
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

// ---------------------------------------------------------------------
// Claims.

/// An entry this process took out of the inbox.
#[derive(Clone, Debug)]
struct Claimed {
    /// Where it is now: `claims/<worker>/<batch>/<tenant>/<name>`.
    path: PathBuf,
    /// Where it was dropped; `None` for one taken over from a gone process.
    origin: Option<PathBuf>,
    name: OsString,
    tenant: Uuid,
    /// The batch folder's name, recorded with the run.
    batch: String,
}

impl Claimed {
    fn shown(&self) -> &Path {
        self.origin.as_deref().unwrap_or(&self.path)
    }
}

/// What to do with a claimed entry whose verdict is known.
#[derive(Clone, Debug)]
enum Decision {
    Accept {
        run_id: Uuid,
        prefix: String,
        duplicate: bool,
        recovered: bool,
    },
    Reject {
        prefix: String,
        sha256: Option<Sha256Hex>,
        errors: Vec<ValidationError>,
    },
}

/// A pause that grows with each failure, and whether it was said.
#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    next: Instant,
}

impl Retry {
    fn after(previous: Option<Retry>) -> Retry {
        let failures = previous.map_or(1, |r| r.failures + 1);
        let pause = Duration::from_secs(1)
            .saturating_mul(1 << failures.min(9).saturating_sub(1))
            .min(MAX_RETRY_PAUSE);
        Retry {
            failures,
            next: Instant::now() + pause,
        }
    }
}

/// A claimed entry that could not be finished yet.
#[derive(Debug)]
struct Held {
    claimed: Claimed,
    decision: Option<Decision>,
    retry: Retry,
}

/// The scanner of one inbox folder, with what it must try again.
#[derive(Debug)]
pub struct Inbox<'h> {
    home: &'h Home,
    dir: PathBuf,
    default_tenant: Uuid,
    config: InboxConfig,
    presence: &'h Presence,
    /// Inbox entries that failed, by path: skipped until due.
    retry: HashMap<PathBuf, Retry>,
    /// Claimed entries that could not be finished (moved back nowhere).
    held: Vec<Held>,
    /// Tenant folders naming no tenant of the home, said once each.
    unknown_tenants: HashSet<Uuid>,
}

impl<'h> Inbox<'h> {
    /// The inbox at `dir` (checked with [`check_inbox`] by the caller).
    /// `presence` names this process's claims.
    pub fn new(
        home: &'h Home,
        dir: PathBuf,
        default_tenant: Uuid,
        config: InboxConfig,
        presence: &'h Presence,
    ) -> Self {
        Inbox {
            home,
            dir,
            default_tenant,
            config,
            presence,
            retry: HashMap::new(),
            held: Vec::new(),
            unknown_tenants: HashSet::new(),
        }
    }

    /// The folder scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn my_claims(&self) -> PathBuf {
        self.home.claims().join(self.presence.id())
    }

    /// Entries of the inbox and of its tenant folders (folders named by a
    /// UUID; whether the home knows that tenant is checked by the caller).
    fn list(dir: &Path, default_tenant: Uuid) -> Result<Vec<Listed>> {
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

    /// Entries in the inbox now (for `status`).
    pub fn backlog(&self) -> Result<u64> {
        Ok(Inbox::list(&self.dir, self.default_tenant)?.len() as u64)
    }

    /// One pass: finish what is held, take over the claims of gone
    /// processes, and ingest every complete entry. `renamed_in` holds paths
    /// the OS reported as renamed into the inbox: they are complete at once.
    ///
    /// An `Err` is fatal (the database is gone or damaged: nothing may be
    /// recorded); every other failure is per entry, in the summary.
    pub fn scan(
        &mut self,
        store: &mut Store,
        renamed_in: &HashSet<PathBuf>,
    ) -> Result<ScanSummary> {
        store.check_identity()?;
        let mut summary = ScanSummary::default();
        let now = Instant::now();
        let mut work: Vec<(Claimed, Option<Decision>)> = Vec::new();
        let mut still_held = Vec::new();
        for h in std::mem::take(&mut self.held) {
            if h.retry.next <= now {
                work.push((h.claimed, h.decision));
            } else {
                summary.waiting += 1;
                summary.wait_at_most(h.retry.next - now);
                still_held.push(h);
            }
        }
        self.held = still_held;
        let found = self.take_over_gone().and_then(|taken| {
            let claimed = self.claim_ready(store, renamed_in, &mut summary)?;
            Ok(taken.into_iter().chain(claimed))
        });
        match found {
            Ok(found) => work.extend(found.map(|c| (c, None))),
            Err(e) => {
                // Keep what was held for the next scan.
                for (claimed, decision) in work {
                    self.hold(claimed, decision, &e.to_string(), &mut summary);
                }
                return Err(e);
            }
        }
        let result = self.process(store, work, &mut summary);
        self.tidy_claims();
        self.retry.retain(|p, _| fs::symlink_metadata(p).is_ok());
        result.map(|()| summary)
    }

    /// Claims of processes that are provably gone, moved into ours.
    fn take_over_gone(&mut self) -> Result<Vec<Claimed>> {
        let claims_root = self.home.claims();
        let Ok(owners) = fs::read_dir(&claims_root) else {
            return Ok(Vec::new());
        };
        let mine = self.my_claims();
        let mut out = Vec::new();
        for owner in owners.flatten() {
            let id = owner.file_name().to_string_lossy().into_owned();
            let Some(gone) = self.presence.gone(&id) else {
                continue;
            };
            let mut moved = 0;
            for batch in fs::read_dir(owner.path()).into_iter().flatten().flatten() {
                let batch_name = batch.file_name();
                let to = mine.join(&batch_name);
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&mine)
                    .io("create folder", &mine)?;
                if rename_noreplace(&batch.path(), &to).is_err() {
                    continue;
                }
                for tenant_dir in fs::read_dir(&to).into_iter().flatten().flatten() {
                    let Some(tenant) = tenant_folder(&tenant_dir.file_name()) else {
                        continue;
                    };
                    for e in fs::read_dir(tenant_dir.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        moved += 1;
                        out.push(Claimed {
                            path: e.path(),
                            origin: None,
                            name: e.file_name(),
                            tenant,
                            batch: batch_name.to_string_lossy().into_owned(),
                        });
                    }
                }
            }
            if fs::remove_dir(owner.path()).is_ok() {
                if moved > 0 {
                    log::warn!(
                        "Inbox: finishing {moved} entries that {} had claimed before it died",
                        gone.id()
                    );
                }
                gone.forget();
            }
        }
        Ok(out)
    }

    /// Lists the inbox and claims every entry that is complete.
    fn claim_ready(
        &mut self,
        store: &mut Store,
        renamed_in: &HashSet<PathBuf>,
        summary: &mut ScanSummary,
    ) -> Result<Vec<Claimed>> {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut known: HashMap<Uuid, bool> = HashMap::new();
        let mut ready: Vec<Listed> = Vec::new();
        for entry in Inbox::list(&self.dir, self.default_tenant)? {
            if let Some(r) = self.retry.get(&entry.path)
                && r.next > now
            {
                summary.waiting += 1;
                summary.wait_at_most(r.next - now);
                continue;
            }
            if entry.tenant != self.default_tenant {
                let ok = match known.get(&entry.tenant) {
                    Some(ok) => *ok,
                    None => {
                        let ok = match store.tenant(&entry.tenant.to_string()) {
                            Ok(_) => true,
                            Err(Error::UnknownTenant { .. }) => false,
                            Err(e) => return Err(e),
                        };
                        known.insert(entry.tenant, ok);
                        ok
                    }
                };
                if !ok {
                    summary.waiting += 1;
                    if self.unknown_tenants.insert(entry.tenant) {
                        log::error!(
                            "Inbox: {} names no tenant of this home; its entries wait there. Create the tenant with `bundleq tenants create NAME --id {}`",
                            entry.path.parent().unwrap_or(&self.dir).display(),
                            entry.tenant
                        );
                    }
                    continue;
                }
            }
            let complete = match entry.kind {
                Kind::Unread(_) => true,
                Kind::Bundle if renamed_in.contains(&entry.path) => true,
                Kind::Bundle => match newest_mtime(&entry.path) {
                    Ok(m) => {
                        let age = wall.duration_since(m).unwrap_or(Duration::ZERO);
                        if age < self.config.settle {
                            summary.wait_at_most(self.config.settle - age);
                        }
                        age >= self.config.settle
                    }
                    Err(_) => false, // vanished or unreadable: next scan
                },
            };
            if complete {
                ready.push(entry);
            } else {
                summary.settling += 1;
            }
        }
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Uuid::now_v7().to_string();
        let batch_dir = self.my_claims().join(&batch);
        let mut made: BTreeSet<PathBuf> = BTreeSet::new();
        let mut sources: BTreeSet<PathBuf> = BTreeSet::new();
        let mut out = Vec::new();
        for entry in ready {
            let tenant_dir = batch_dir.join(entry.tenant.to_string());
            if !made.contains(&tenant_dir) {
                if let Err(e) = DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&tenant_dir)
                {
                    self.failed_to_claim(&entry.path, &e, summary);
                    continue;
                }
                made.insert(tenant_dir.clone());
            }
            let name = entry.path.file_name().unwrap_or_default().to_owned();
            let to = tenant_dir.join(&name);
            match rename_noreplace(&entry.path, &to) {
                Ok(()) => {
                    if let Some(p) = entry.path.parent() {
                        sources.insert(p.to_owned());
                    }
                    out.push(Claimed {
                        path: to,
                        origin: Some(entry.path),
                        name,
                        tenant: entry.tenant,
                        batch: batch.clone(),
                    });
                }
                // Another process took it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self.failed_to_claim(&entry.path, &e, summary),
            }
        }
        // The claims must survive a power loss before anything is recorded
        // under them.
        for d in made.iter().chain(&sources) {
            sync_dir(d)?;
        }
        Ok(out)
    }

    fn failed_to_claim(&mut self, path: &Path, e: &std::io::Error, summary: &mut ScanSummary) {
        let message = format!(
            "cannot take {}: {e}; it stays in the inbox and is tried again",
            path.display()
        );
        self.note_failure(path, &message, summary);
    }

    /// Records a failure of the entry known by `key`: its pause before the
    /// next try grows, the first failure is logged, the scan's summary says
    /// so. Returns the pause.
    fn note_failure(&mut self, key: &Path, message: &str, summary: &mut ScanSummary) -> Retry {
        let previous = self.retry.get(key).copied();
        if previous.is_none() {
            log::error!("Inbox: {message}");
        }
        let retry = Retry::after(previous);
        self.retry.insert(key.to_owned(), retry);
        summary.waiting += 1;
        summary.wait_at_most(retry.next.saturating_duration_since(Instant::now()));
        summary.failure.get_or_insert_with(|| message.to_owned());
        retry
    }

    /// Reads, records and archives claimed entries.
    fn process(
        &mut self,
        store: &mut Store,
        work: Vec<(Claimed, Option<Decision>)>,
        summary: &mut ScanSummary,
    ) -> Result<()> {
        let mut decided: Vec<(Claimed, Decision)> = Vec::new();
        let mut by_tenant: BTreeMap<Uuid, Vec<Claimed>> = BTreeMap::new();
        for (c, d) in work {
            match d {
                Some(d) => decided.push((c, d)),
                None => match fs::symlink_metadata(&c.path) {
                    Ok(m) => match kind_of(&m.file_type(), &c.name) {
                        Kind::Bundle => by_tenant.entry(c.tenant).or_default().push(c),
                        Kind::Unread(why) => decided.push((
                            c,
                            Decision::Reject {
                                prefix: "unread".to_owned(),
                                sha256: None,
                                errors: vec![ValidationError::new(
                                    "",
                                    format!("not ingested: {why}"),
                                    None,
                                )],
                            },
                        )),
                    },
                    Err(e) => self.hold(c, None, &e.to_string(), summary),
                },
            }
        }
        let mut groups = by_tenant.into_iter();
        while let Some((tenant, claimed)) = groups.next() {
            let inputs: Vec<Input> = claimed
                .iter()
                .map(|c| Input {
                    path: c.path.clone(),
                    shown: c.shown().to_owned(),
                    name: Some(c.name.to_string_lossy().into_owned()),
                    claim: Some(c.batch.clone()),
                })
                .collect();
            let options = AcceptOptions {
                tenant,
                origin: Origin::Inbox,
                follow: Follow::Never,
                now: Timestamp::now(),
                known_types: None,
            };
            let results = accept::accept_inputs(store, self.home, &inputs, &options);
            let mut fatal = None;
            for (c, result) in claimed.into_iter().zip(results) {
                if fatal.is_some() {
                    self.give_back(c, "the database became unusable", summary);
                    continue;
                }
                match result {
                    Ok(report) => {
                        let prefix = report
                            .sha256
                            .as_ref()
                            .map_or_else(|| "unhashed".to_owned(), |s| s.as_str()[..16].to_owned());
                        let d = match report.verdict {
                            Verdict::Accepted { run_id, .. } => Decision::Accept {
                                run_id,
                                prefix,
                                duplicate: false,
                                recovered: false,
                            },
                            Verdict::Recovered { run_id } => Decision::Accept {
                                run_id,
                                prefix,
                                duplicate: false,
                                recovered: true,
                            },
                            Verdict::Duplicate { run_id } => Decision::Accept {
                                run_id,
                                prefix,
                                duplicate: true,
                                recovered: false,
                            },
                            Verdict::Invalid { errors } => Decision::Reject {
                                prefix,
                                sha256: report.sha256,
                                errors: errors.errors().to_vec(),
                            },
                            Verdict::Valid { .. } => {
                                self.give_back(c, "no verdict", summary);
                                continue;
                            }
                        };
                        decided.push((c, d));
                    }
                    Err(e) if e.is_fatal() => {
                        self.give_back(c, &e.to_string(), summary);
                        fatal = Some(e);
                    }
                    Err(e) => self.give_back(c, &e.to_string(), summary),
                }
            }
            if let Some(e) = fatal {
                // Nothing more may be recorded: what was not yet read goes
                // back to the inbox; decided entries are committed (or
                // rejected) and are archived before stopping.
                for (_, rest) in groups {
                    for c in rest {
                        self.give_back(c, "the database became unusable", summary);
                    }
                }
                self.finish(decided, summary);
                return Err(e);
            }
        }
        self.finish(decided, summary);
        Ok(())
    }

    /// Archives decided entries; a move that fails is held and tried again.
    fn finish(&mut self, decided: Vec<(Claimed, Decision)>, summary: &mut ScanSummary) {
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        for (c, d) in decided {
            let name = c.name.clone();
            let shown = c.shown().display().to_string();
            let moved = match &d {
                Decision::Accept {
                    prefix, duplicate, ..
                } => {
                    let dir = date_dir(&self.home.accepted());
                    let prefix = if *duplicate {
                        format!("{prefix}.duplicate")
                    } else {
                        prefix.clone()
                    };
                    archive(&c.path, &dir, &prefix, &name).map(|to| (dir, to))
                }
                Decision::Reject {
                    prefix,
                    sha256,
                    errors,
                } => {
                    let dir = date_dir(&self.home.rejected());
                    archive(&c.path, &dir, prefix, &name)
                        .inspect(|to| {
                            let report = RejectReport {
                                file: name.to_string_lossy().into_owned(),
                                original_path: c.origin.as_ref().map_or_else(
                                    || {
                                        format!(
                                            "(taken over after a crash from {})",
                                            c.path.display()
                                        )
                                    },
                                    |o| o.display().to_string(),
                                ),
                                tenant_id: c.tenant,
                                rejected_at: Timestamp::now(),
                                sha256: sha256.as_ref(),
                                errors,
                            };
                            // The entry is safe in rejected/ either way.
                            if let Err(e) = write_report(to, &report) {
                                log::error!(
                                    "Inbox: the report of {shown} could not be written: {e}"
                                );
                            }
                        })
                        .map(|to| (dir, to))
                }
            };
            match moved {
                Ok((dir, to)) => {
                    touched.insert(dir);
                    self.retry.remove(&c.path);
                    if let Some(o) = &c.origin {
                        self.retry.remove(o);
                    }
                    match d {
                        Decision::Accept {
                            run_id,
                            duplicate: true,
                            ..
                        } => {
                            summary.duplicates += 1;
                            log::info!(
                                "Duplicate {shown}: already accepted as run {run_id} -> {}",
                                to.display()
                            );
                        }
                        Decision::Accept {
                            run_id, recovered, ..
                        } => {
                            summary.accepted += 1;
                            let note = if recovered {
                                " (recorded before a restart; archived now)"
                            } else {
                                ""
                            };
                            log::info!(
                                "Accepted {shown} as run {run_id}{note} -> {}",
                                to.display()
                            );
                        }
                        Decision::Reject { errors, .. } => {
                            summary.rejected += 1;
                            let first = errors.first().map(ToString::to_string).unwrap_or_default();
                            log::warn!(
                                "Rejected {shown}: {} error{}, first: {first} -> {}",
                                errors.len(),
                                if errors.len() == 1 { "" } else { "s" },
                                to.display()
                            );
                        }
                    }
                }
                Err(e) => self.hold(c, Some(d), &e.to_string(), summary),
            }
        }
        for dir in touched {
            if let Err(e) = sync_dir(&dir) {
                log::error!("Inbox: {e}");
            }
        }
    }

    /// Keeps a claimed entry to try again later, saying so the first time.
    fn hold(
        &mut self,
        claimed: Claimed,
        decision: Option<Decision>,
        why: &str,
        summary: &mut ScanSummary,
    ) {
        let message = format!(
            "cannot finish {}: {why}; it is kept in {} and tried again",
            claimed.shown().display(),
            claimed.path.display()
        );
        let retry = self.note_failure(&claimed.path, &message, summary);
        self.held.push(Held {
            claimed,
            decision,
            retry,
        });
    }

    /// Moves an entry that could not be recorded back to where it was
    /// dropped (never over a newer one) to be tried again after a pause;
    /// held here if that is not possible.
    fn give_back(&mut self, claimed: Claimed, why: &str, summary: &mut ScanSummary) {
        if let Some(origin) = claimed.origin.clone()
            && rename_noreplace(&claimed.path, &origin).is_ok()
        {
            let message = format!(
                "could not ingest {}: {why}; it stays in the inbox and is tried again",
                origin.display()
            );
            self.note_failure(&origin, &message, summary);
            return;
        }
        self.hold(claimed, None, why, summary);
    }

    /// Removes this process's empty claim folders.
    fn tidy_claims(&self) {
        let mine = self.my_claims();
        for batch in fs::read_dir(&mine).into_iter().flatten().flatten() {
            for tenant in fs::read_dir(batch.path()).into_iter().flatten().flatten() {
                let _ = fs::remove_dir(tenant.path());
            }
            let _ = fs::remove_dir(batch.path());
        }
        let _ = fs::remove_dir(&mine);
    }

    /// True when this process holds no claimed entry (for a clean exit).
    pub fn holds_nothing(&self) -> bool {
        self.held.is_empty() && !self.my_claims().exists()
    }

    /// Watches the inbox until `quit` disconnects: a scan at start, after
    /// each batch of OS notifications, when a waiting entry should have
    /// settled or is due again, and every rescan interval. `on_ingest` is
    /// called after a scan accepted anything (the pool's wake-up). Returns
    /// an error only when it is fatal (the database is gone or damaged).
    pub fn watch(
        &mut self,
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
                    errors_logged = None;
                    if summary.accepted > 0 {
                        on_ingest();
                    }
                    if let Some(d) = summary.next_check {
                        rescan_at = rescan_at.min(Instant::now() + d);
                    }
                }
                Err(e) if e.is_fatal() => return Err(e),
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
pub fn folder_counts(home: &Home, inbox_dir: &Path, default_tenant: Uuid) -> Result<FolderCounts> {
    let mut counts = FolderCounts {
        inbox_backlog: match Inbox::list(inbox_dir, default_tenant) {
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
                if name.starts_with('.') || name.ends_with(".errors.json") {
                    continue;
                }
                if !accepted {
                    counts.rejected += 1;
                } else if is_duplicate_name(&name) {
                    counts.duplicates += 1;
                } else {
                    counts.accepted += 1;
                }
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_fit_with_room_for_the_report_and_keep_prefix_and_extension() {
        let long = OsString::from(format!("{}.json", "n".repeat(250)));
        let name = archive_name("0123456789abcdef.duplicate", 12, &long);
        let bytes = name.as_bytes();
        assert!(bytes.len() <= MAX_ARCHIVE_NAME, "{}", bytes.len());
        assert!(bytes.starts_with(b"0123456789abcdef.duplicate.12.nnn"));
        assert!(bytes.ends_with(b"~.json"));
        // Multi-byte characters are not split.
        let wide = OsString::from(format!("{}.json", "é".repeat(125)));
        let name = archive_name("0123456789abcdef", 1, &wide);
        assert!(name.to_str().is_some());
        assert!(name.as_bytes().len() <= MAX_ARCHIVE_NAME);
        // Short names are kept whole.
        assert_eq!(
            archive_name("abc", 1, OsStr::new("x.json")),
            OsString::from("abc.x.json")
        );
        assert!(is_duplicate_name("0123456789abcdef.duplicate.x.json"));
    }
}

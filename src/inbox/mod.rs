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
//!
//! Time is injected: a scan takes `now` (the settle rule and the pauses
//! after failures are measured against it), `watch` reads it from a
//! [`Clock`](crate::timestamp::Clock).
//!
//! Files: `place` (which folder may be an inbox), `entries` (listing and
//! readiness), `archive` (archive names, moves and reports: the names are
//! written and read back there only), `watch` (notifications and the scan
//! schedule); this file holds the scan itself and the claims.

mod archive;
mod entries;
mod place;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

pub use archive::{ArchivedEntry, FolderCounts, folder_counts, recent_entries};
pub use place::{MARKER, adopt_inbox, check_inbox, inbox_dir};

use crate::accept::{self, AcceptOptions, Input, Origin, Verdict};
use crate::bundle::{Follow, Sha256Hex, ValidationError};
pub use crate::config::InboxConfig;
use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::objects::sync_dir;
use crate::presence::Presence;
use crate::store::Store;
use crate::timestamp::Timestamp;
use archive::{Archived, archive, date_dir, rename_noreplace};
use entries::{Kind, Listed, kind_of, tenant_folder};

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
    next: Timestamp,
}

impl Retry {
    fn after(previous: Option<Retry>, now: Timestamp) -> Retry {
        let failures = previous.map_or(1, |r| r.failures + 1);
        let pause = Duration::from_secs(1)
            .saturating_mul(1 << failures.min(9).saturating_sub(1))
            .min(MAX_RETRY_PAUSE);
        Retry {
            failures,
            next: now.plus(pause),
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
    /// The time of the scan in progress.
    now: Timestamp,
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
            now: Timestamp::from_unix_seconds(0).unwrap_or_else(Timestamp::now),
        }
    }

    /// The folder scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn my_claims(&self) -> PathBuf {
        self.home.claims().join(self.presence.id())
    }

    /// Entries in the inbox now (for `status`).
    pub fn backlog(&self) -> Result<u64> {
        Ok(entries::list(&self.dir, self.default_tenant)?.len() as u64)
    }

    /// One pass at `now`: finish what is held, take over the claims of gone
    /// processes, and ingest every complete entry. `renamed_in` holds paths
    /// the OS reported as renamed into the inbox: they are complete at once;
    /// other entries once unchanged for `settle` before `now`.
    ///
    /// An `Err` is fatal (the database is gone or damaged: nothing may be
    /// recorded); every other failure is per entry, in the summary.
    pub fn scan(
        &mut self,
        store: &mut Store,
        renamed_in: &HashSet<PathBuf>,
        now: Timestamp,
    ) -> Result<ScanSummary> {
        store.check_identity()?;
        self.now = now;
        let mut summary = ScanSummary::default();
        let mut work: Vec<(Claimed, Option<Decision>)> = Vec::new();
        let mut still_held = Vec::new();
        for h in std::mem::take(&mut self.held) {
            if h.retry.next <= now {
                work.push((h.claimed, h.decision));
            } else {
                summary.waiting += 1;
                summary.wait_at_most(h.retry.next.since(now));
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
        let now = self.now;
        let mut known: HashMap<Uuid, bool> = HashMap::new();
        let mut ready: Vec<Listed> = Vec::new();
        for entry in entries::list(&self.dir, self.default_tenant)? {
            if let Some(r) = self.retry.get(&entry.path)
                && r.next > now
            {
                summary.waiting += 1;
                summary.wait_at_most(r.next.since(now));
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
                Kind::Bundle => match entries::unchanged_for(&entry.path, now) {
                    Ok(age) => {
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
        let retry = Retry::after(previous, self.now);
        self.retry.insert(key.to_owned(), retry);
        summary.waiting += 1;
        summary.wait_at_most(retry.next.since(self.now));
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
                now: self.now,
                known_types: None,
                not_before: None,
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
                    let dir = date_dir(&self.home.accepted(), self.now);
                    let kind = if *duplicate {
                        Archived::Duplicate
                    } else {
                        Archived::Accepted
                    };
                    archive(&c.path, &dir, prefix, kind, &name).map(|to| (dir, to))
                }
                Decision::Reject {
                    prefix,
                    sha256,
                    errors,
                } => {
                    let dir = date_dir(&self.home.rejected(), self.now);
                    archive(&c.path, &dir, prefix, Archived::Rejected, &name)
                        .inspect(|to| {
                            let report = archive::RejectReport {
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
                                rejected_at: self.now,
                                sha256: sha256.as_ref(),
                                errors,
                            };
                            // The entry is safe in rejected/ either way.
                            if let Err(e) = archive::write_report(to, &report) {
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
}

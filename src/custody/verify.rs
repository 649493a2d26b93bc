//! `bundleq verify`: every stored object re-read and hashed, every source
//! that carries bytes found, every object named by some run, every stored
//! bundle rebuilt to the bytes accepted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use super::{read_object, sweep_with};
use crate::digest::Sha256Hex;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::objects::Objects;
use crate::store::{ObjectRef, Store};
use crate::timestamp::Timestamp;

/// The metadata key holding when the last full verification ended.
const LAST_FULL_KEY: &str = "last_full_verify";
/// The metadata key holding how many problems it found.
const LAST_FULL_PROBLEMS_KEY: &str = "last_full_verify_problems";
/// Checks recorded per transaction.
const RECORD_BATCH: usize = 1000;

/// What to verify.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyOptions {
    /// Only this run's objects (tenant, run); no orphan check.
    pub run: Option<(Uuid, Uuid)>,
    /// Hash only about this percentage of the objects, picked at random
    /// (presence and references are still checked for all).
    pub sample_percent: Option<f64>,
    /// Remove the objects no run names (as `prune` does).
    pub repair: bool,
}

/// What is wrong with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// Its bytes no longer hash to its digest.
    Corrupt,
    /// A run names it and it is stored nowhere.
    Missing,
    /// No run names it.
    Orphaned,
    /// A run's stored bundle does not rebuild to the bytes accepted.
    Bundle,
    /// The database's own integrity check found damage.
    Database,
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Missing => "missing",
            ProblemKind::Orphaned => "orphaned",
            ProblemKind::Bundle => "bundle",
            ProblemKind::Database => "database",
        })
    }
}

/// Where an object is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// In the database.
    Database,
    /// A file under `objects/`.
    File,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The object's digest (the bundle's, for a damaged bundle).
    pub sha256: String,
    /// Where the object is kept (none when it is missing).
    pub place: Option<Place>,
    /// The sources that name it (run, position, uri).
    pub sources: Vec<ObjectRef>,
    /// More, in words.
    pub detail: String,
    /// Removed by `--repair`.
    pub repaired: bool,
}

/// What a verification did and found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Objects read and hashed.
    pub objects_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Objects stored in all (database and files).
    pub objects_stored: u64,
    /// Sources that carry bytes, in the runs looked at.
    pub sources: u64,
    /// Runs whose stored bundle was rebuilt and checked.
    pub runs_checked: u64,
    /// Every object was hashed and every run looked at.
    pub full: bool,
    /// What is wrong, one entry per object (or bundle).
    pub problems: Vec<Problem>,
    /// Seconds it took.
    pub seconds: f64,
    /// Seconds of those spent reading and hashing objects.
    pub hash_seconds: f64,
}

/// Progress of the hashing, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes hashed so far.
    pub bytes: u64,
    /// Bytes to hash in all.
    pub total: u64,
}

/// The last full verification of a home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LastVerify {
    /// When it was taken.
    pub at: Timestamp,
    /// How many problems it found and left (repaired ones aside).
    pub problems: u64,
}

/// The last full verification of the home, if one was recorded.
pub fn last_full_verify(store: &mut Store) -> Result<Option<LastVerify>> {
    let Some(at) = store
        .meta(LAST_FULL_KEY)?
        .and_then(|text| Timestamp::parse(&text))
    else {
        return Ok(None);
    };
    let problems = store
        .meta(LAST_FULL_PROBLEMS_KEY)?
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Ok(Some(LastVerify { at, problems }))
}

/// Verifies the home's objects (see the module's docs). Checks are
/// recorded in the database (when it can be written) with `now`.
pub fn verify(
    home: &Home,
    store: &mut Store,
    options: &VerifyOptions,
    now: Timestamp,
    progress: &mut dyn FnMut(Progress),
) -> Result<VerifyReport> {
    let started = Instant::now();
    let objects = home.object_store();
    // What is stored: listed before the runs are read, so that an object
    // stored for a run committed meanwhile is not missed as missing (its
    // run commits after it is durable) — a candidate is looked for again.
    let mut stored: BTreeMap<Sha256Hex, (Place, u64)> = BTreeMap::new();
    for sha in objects.files()? {
        let size = std::fs::symlink_metadata(objects.path_of(&sha)).map_or(0, |m| m.len());
        stored.insert(sha, (Place::File, size));
    }
    let mut after: Option<Sha256Hex> = None;
    loop {
        let page = store.db_objects(after.as_ref(), 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sha256.clone());
        for o in page {
            // An object in both places is read from the database.
            stored.insert(o.sha256, (Place::Database, o.size));
        }
    }
    let refs = store.object_refs(options.run)?;
    let mut named: HashMap<&Sha256Hex, Vec<&ObjectRef>> = HashMap::new();
    for r in &refs {
        named.entry(&r.sha256).or_default().push(r);
    }
    let mut report = VerifyReport {
        objects_stored: stored.len() as u64,
        sources: refs.len() as u64,
        full: options.run.is_none() && options.sample_percent.is_none_or(|p| p >= 100.0),
        ..VerifyReport::default()
    };

    // Which objects to hash.
    let picker = std::collections::hash_map::RandomState::new();
    let percent = options.sample_percent.unwrap_or(100.0);
    let chosen: Vec<(&Sha256Hex, Place, u64)> = stored
        .iter()
        .filter(|(sha, _)| options.run.is_none() || named.contains_key(sha))
        .filter(|(sha, _)| {
            percent >= 100.0 || (picker.hash_one(sha) % 10_000) as f64 <= percent * 100.0
        })
        .map(|(sha, (place, size))| (sha, *place, *size))
        .collect();
    let total: u64 = chosen.iter().map(|c| c.2).sum();
    let mut checks: Vec<(Sha256Hex, bool)> = Vec::new();
    let mut done = 0u64;
    let hashing = Instant::now();
    for (sha, place, size) in chosen {
        // Read from where it was listed: a file is not looked for in the
        // database first.
        let read = match place {
            Place::File => match objects.open_file(sha) {
                Ok(Some(file)) => {
                    super::hash_file(file, &objects.path_of(sha), &mut |_| Ok(())).map(Some)
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            Place::Database => read_object(&objects, store, sha, &mut |_| Ok(())),
        };
        let unreadable =
            |e: &Error| format!("{} cannot be read: {e}", objects.path_of(sha).display());
        let (ok, detail) = match read {
            Ok(Some((got, _))) if got == *sha => (true, String::new()),
            Ok(Some(_)) => (
                false,
                match place {
                    Place::File => format!(
                        "{} no longer hashes to its name",
                        objects.path_of(sha).display()
                    ),
                    Place::Database => {
                        "its bytes in the database no longer hash to its digest".to_owned()
                    }
                },
            ),
            // Gone since it was listed: a sweep removed it, or it is
            // looked for below if a run names it.
            Ok(None) => continue,
            // A database server refuses an object that does not match.
            Err(Error::Corrupt { detail, .. }) => (false, detail),
            // A file that cannot be read as an object (a symlink or a
            // folder put in its place, a bad block): damaged, reported
            // with the others rather than ending the verification.
            Err(e @ Error::Io { .. }) if place == Place::File => (false, unreadable(&e)),
            Err(e) => return Err(e),
        };
        if !ok {
            report.problems.push(Problem {
                kind: ProblemKind::Corrupt,
                sha256: sha.to_string(),
                place: Some(place),
                sources: named
                    .get(sha)
                    .map_or_else(Vec::new, |v| v.iter().map(|r| (*r).clone()).collect()),
                detail,
                repaired: false,
            });
        }
        checks.push((sha.clone(), ok));
        report.objects_checked += 1;
        report.bytes_checked += size;
        done += size;
        progress(Progress { bytes: done, total });
        if checks.len() >= RECORD_BATCH {
            record(store, &mut checks, now);
        }
    }
    report.hash_seconds = hashing.elapsed().as_secs_f64();
    record(store, &mut checks, now);

    // Sources whose bytes are stored nowhere.
    for (sha, sources) in &named {
        if stored.contains_key(*sha) || stored_now(&objects, store, sha)? {
            continue;
        }
        report.problems.push(Problem {
            kind: ProblemKind::Missing,
            sha256: sha.to_string(),
            place: None,
            sources: sources.iter().map(|r| (*r).clone()).collect(),
            detail: "stored neither in the database nor under objects/".to_owned(),
            repaired: false,
        });
    }

    // Stored bundles rebuilt to the bytes accepted.
    let runs: Vec<(Uuid, Uuid)> = match options.run {
        Some(run) => vec![run],
        None => store.run_keys()?,
    };
    for (tenant, run) in runs {
        report.runs_checked += 1;
        let checked = store
            .run_with_bundle(tenant, run)
            .map(|(summary, json)| (summary.bundle_sha256, json));
        let damage = match checked {
            Ok((sha, json)) if Sha256Hex::of(json.as_bytes()).as_str() == sha => continue,
            Ok((sha, _)) => (
                sha,
                "the stored bundle no longer hashes to the run's bundle_sha256".to_owned(),
            ),
            Err(Error::Corrupt { detail, .. }) => (String::new(), detail),
            Err(e) => return Err(e),
        };
        report.problems.push(Problem {
            kind: ProblemKind::Bundle,
            sha256: damage.0,
            place: Some(Place::Database),
            sources: Vec::new(),
            detail: format!("run {run}: {}", damage.1),
            repaired: false,
        });
    }

    // The database's own check of its pages and indexes.
    if report.full {
        let found = match store.integrity_check() {
            Ok(lines) => lines,
            Err(Error::Corrupt { detail, .. }) => vec![detail],
            Err(e) => return Err(e),
        };
        if found != ["ok"] {
            report.problems.push(Problem {
                kind: ProblemKind::Database,
                sha256: String::new(),
                place: Some(Place::Database),
                sources: Vec::new(),
                detail: found.join("; "),
                repaired: false,
            });
        }
    }

    // Objects no run names: candidates, confirmed under a sweeper (no
    // submit is then between storing objects and recording their runs).
    if options.run.is_none() {
        orphans(
            &objects,
            store,
            &stored,
            &named,
            options.repair,
            &mut report,
        )?;
    }
    report
        .problems
        .sort_by(|a, b| (a.kind, &a.sha256).cmp(&(b.kind, &b.sha256)));
    let left = report.problems.iter().filter(|p| !p.repaired).count();
    if report.full
        && (store.set_meta(LAST_FULL_PROBLEMS_KEY, &left.to_string()))
            .and_then(|()| store.set_meta(LAST_FULL_KEY, &now.to_string()))
            .is_err()
    {
        // A home this user may only read: the verification stands, it is
        // just not recorded.
        log::debug!("the time of this verification could not be recorded");
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Records checks, best effort (a home this user may only read).
fn record(store: &mut Store, checks: &mut Vec<(Sha256Hex, bool)>, now: Timestamp) {
    if checks.is_empty() {
        return;
    }
    if let Err(e) = store.record_checks(checks, now) {
        log::debug!("object checks not recorded: {e}");
    }
    checks.clear();
}

/// True when the object is stored now (it may have been stored after the
/// listing, for a run committed since).
fn stored_now(objects: &Objects, store: &mut Store, sha: &Sha256Hex) -> Result<bool> {
    Ok(!store.object_sizes(std::slice::from_ref(sha))?.is_empty()
        || std::fs::symlink_metadata(objects.path_of(sha)).is_ok())
}

/// Finds the stored objects no run names; with `repair`, removes them.
fn orphans(
    objects: &Objects,
    store: &mut Store,
    stored: &BTreeMap<Sha256Hex, (Place, u64)>,
    named: &HashMap<&Sha256Hex, Vec<&ObjectRef>>,
    repair: bool,
    report: &mut VerifyReport,
) -> Result<()> {
    let candidates: Vec<(&Sha256Hex, Place)> = stored
        .iter()
        .filter(|(sha, _)| !named.contains_key(sha))
        .map(|(sha, (place, _))| (sha, *place))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let sweeper = match objects.sweeper(super::SWEEP_WAIT) {
        Ok(s) => s,
        // A home this user may only read: no one can be kept from storing
        // objects, so the candidates are reported as they are.
        Err(Error::InvalidArgument { .. }) if !repair => None,
        Err(e) => return Err(e),
    };
    let Some(sweeper) = sweeper else {
        for (sha, place) in candidates {
            report.problems.push(orphan(sha, place, "no run names it (a submit or ingest was storing objects meanwhile: run verify again to confirm)"));
        }
        return Ok(());
    };
    // Files: named by no run now. Objects in the database: as the store's
    // own sweep sees them, in one transaction with the runs (on a server
    // shared by hosts it keeps fresh ones a while: another host may be
    // about to name them). Each list is read only when it is needed.
    let files: Vec<&Sha256Hex> = candidates
        .iter()
        .filter(|(_, place)| *place == Place::File)
        .map(|(sha, _)| *sha)
        .collect();
    let confirmed = super::referenced_if_any(store, &files)?;
    let sweepable: HashSet<Sha256Hex> = if files.len() < candidates.len() {
        store
            .sweep_db_objects(true)?
            .into_iter()
            .map(|o| o.sha256)
            .collect()
    } else {
        HashSet::new()
    };
    let orphaned: Vec<(&Sha256Hex, Place)> = candidates
        .into_iter()
        .filter(|(sha, place)| match place {
            Place::File => !confirmed.contains(*sha),
            Place::Database => sweepable.contains(*sha),
        })
        .collect();
    let removed: HashSet<Sha256Hex> = if repair && !orphaned.is_empty() {
        let swept = sweep_with(objects, Some(&sweeper), store, false)?;
        swept
            .database
            .into_iter()
            .chain(swept.files)
            .map(|o| o.sha256)
            .collect()
    } else {
        HashSet::new()
    };
    for (sha, place) in orphaned {
        let mut p = orphan(sha, place, "no run names it");
        p.repaired = removed.contains(sha);
        report.problems.push(p);
    }
    Ok(())
}

fn orphan(sha: &Sha256Hex, place: Place, detail: &str) -> Problem {
    Problem {
        kind: ProblemKind::Orphaned,
        sha256: sha.to_string(),
        place: Some(place),
        sources: Vec::new(),
        detail: detail.to_owned(),
        repaired: false,
    }
}

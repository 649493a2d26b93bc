//! The accept path shared by `bundleq submit` and the inbox: read, hash,
//! validate, store source bytes, then record the run and enqueue its job in
//! one transaction. An invalid bundle never becomes a job.
//!
//! Invariants: the database is written only for a valid bundle, and only
//! after its source objects are durable; the same bytes for the same tenant
//! are recognised (by sha256) and enqueue nothing.

use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::bundle::{
    Bundle, Limits, ReadBundle, Sha256Hex, SourceBody, ValidationError, ValidationErrors,
    read_bundle,
};
use crate::error::Result;
use crate::home::Home;
use crate::objects::Objects;
use crate::store::{NewJob, NewRun, RunInsert, Store};
use crate::timestamp::Timestamp;

/// How many bundles share one transaction in [`accept_many`].
const BATCH: usize = 256;

/// What happened to one bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Recorded as a new run, with its job enqueued.
    Accepted {
        /// The run.
        run_id: Uuid,
        /// Its job.
        job_id: Uuid,
    },
    /// These bytes were already accepted for the tenant; nothing enqueued.
    Duplicate {
        /// The run they were accepted as.
        run_id: Uuid,
    },
    /// Valid (only from [`check`], which writes nothing).
    Valid {
        /// The bundle's run id.
        run_id: Uuid,
    },
    /// Refused; every error listed.
    Invalid {
        /// What is wrong.
        errors: ValidationErrors,
    },
}

/// The verdict on one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptReport {
    /// The file or folder given.
    pub path: PathBuf,
    /// sha256 of the bundle JSON bytes.
    pub sha256: Sha256Hex,
    /// What happened.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Where bundles come from, recorded with the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `bundleq submit`.
    Submit,
    /// The drop folder.
    Inbox,
    /// A library call.
    Api,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Submit => "submit",
            Origin::Inbox => "inbox",
            Origin::Api => "api",
        }
    }
}

/// Checks bundles without writing anything.
pub fn check(path: &Path, limits: &Limits, tenant: Option<Uuid>) -> Result<AcceptReport> {
    let read = read_bundle(path, limits, None)?;
    let verdict = match tenant_checked(read.verdict, tenant) {
        Ok(b) => Verdict::Valid { run_id: b.run_id() },
        Err(errors) => Verdict::Invalid { errors },
    };
    Ok(AcceptReport {
        path: read.path,
        sha256: read.sha256,
        verdict,
    })
}

fn tenant_checked(
    verdict: std::result::Result<Bundle, ValidationErrors>,
    tenant: Option<Uuid>,
) -> std::result::Result<Bundle, ValidationErrors> {
    let bundle = verdict?;
    match (bundle.tenant_id(), tenant) {
        (Some(own), Some(t)) if own != t => Err(ValidationErrors::one(ValidationError::new(
            "tenant_id",
            format!("the bundle belongs to tenant {own}, but is being submitted for tenant {t}"),
            Some(own.to_string()),
        ))),
        _ => Ok(bundle),
    }
}

/// A bundle read, validated and with its objects stored, waiting for its
/// transaction.
struct Ready {
    report_path: PathBuf,
    sha256: Sha256Hex,
    json: String,
    bundle: Bundle,
}

/// Accepts one bundle for `tenant`.
pub fn accept(
    store: &mut Store,
    home: &Home,
    path: &Path,
    tenant: Uuid,
    origin: Origin,
    now: Timestamp,
) -> Result<AcceptReport> {
    let mut out = accept_many(store, home, &[path.to_owned()], tenant, origin, now);
    out.pop().unwrap_or_else(|| {
        Err(crate::Error::InvalidArgument {
            what: "path",
            message: "nothing to accept".to_owned(),
        })
    })
}

/// Accepts many bundles for `tenant`, in batches that share a transaction.
/// Each path gets its own result: an unreadable file does not stop the
/// others.
pub fn accept_many(
    store: &mut Store,
    home: &Home,
    paths: &[PathBuf],
    tenant: Uuid,
    origin: Origin,
    now: Timestamp,
) -> Vec<Result<AcceptReport>> {
    let objects = Objects::new(home.objects());
    let limits = home.config().limits.clone();
    let mut results: Vec<Option<Result<AcceptReport>>> = Vec::with_capacity(paths.len());
    for chunk_start in (0..paths.len()).step_by(BATCH) {
        let chunk = &paths[chunk_start..(chunk_start + BATCH).min(paths.len())];
        let mut ready: Vec<(usize, Ready)> = Vec::new();
        for path in chunk {
            let index = results.len();
            match prepare(path, &limits, &objects, tenant) {
                Ok(Ok(r)) => {
                    results.push(None);
                    ready.push((index, r));
                }
                Ok(Err(report)) => results.push(Some(Ok(report))),
                Err(e) => results.push(Some(Err(e))),
            }
        }
        match record(store, &ready, tenant, origin, now) {
            Ok(verdicts) => {
                for ((index, r), verdict) in ready.into_iter().zip(verdicts) {
                    results[index] = Some(Ok(AcceptReport {
                        path: r.report_path,
                        sha256: r.sha256,
                        verdict,
                    }));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for (index, r) in ready {
                    results[index] = Some(Err(crate::Error::Record {
                        path: r.report_path,
                        message: text.clone(),
                    }));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(crate::Error::InvalidArgument {
                    what: "bundle",
                    message: "no verdict".to_owned(),
                })
            })
        })
        .collect()
}

/// Reads, validates and stores the objects of one bundle.
fn prepare(
    path: &Path,
    limits: &Limits,
    objects: &Objects,
    tenant: Uuid,
) -> Result<std::result::Result<Ready, AcceptReport>> {
    let staging = objects.staging()?;
    let ReadBundle {
        path: report_path,
        sha256,
        json,
        verdict,
    } = read_bundle(path, limits, Some(staging.path()))?;
    let bundle = match tenant_checked(verdict, Some(tenant)) {
        Ok(b) => b,
        Err(errors) => {
            return Ok(Err(AcceptReport {
                path: report_path,
                sha256,
                verdict: Verdict::Invalid { errors },
            }));
        }
    };
    for source in bundle.sources() {
        match source.body() {
            SourceBody::File(f) => {
                if let Some(staged) = &f.staged {
                    objects.commit_staged(staged, source.sha256())?;
                }
            }
            SourceBody::Inline(text) => {
                objects.put(text.as_bytes(), source.sha256())?;
            }
            SourceBody::Reference => {}
        }
    }
    // A valid bundle was read as UTF-8.
    let json = json.unwrap_or_default();
    Ok(Ok(Ready {
        report_path,
        sha256,
        json,
        bundle,
    }))
}

/// One transaction for a batch: each run recorded and its job enqueued,
/// unless its bytes were seen before.
fn record(
    store: &mut Store,
    ready: &[(usize, Ready)],
    tenant: Uuid,
    origin: Origin,
    now: Timestamp,
) -> Result<Vec<Verdict>> {
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    store.transaction(|tx| {
        let mut verdicts = Vec::with_capacity(ready.len());
        for (_, r) in ready {
            let b = &r.bundle;
            let run = NewRun {
                tenant_id: tenant,
                id: b.run_id(),
                title: b.title().to_owned(),
                bundle_sha256: r.sha256.to_string(),
                bundle_json: r.json.clone(),
                origin: origin.as_str(),
                origin_name: r.report_path.file_name().map(|n| n.to_string_lossy().into_owned()),
            };
            let verdict = match tx.insert_run(&run, now)? {
                RunInsert::Inserted => {
                    let job_id = tx.enqueue(
                        &NewJob {
                            tenant_id: tenant,
                            run_id: b.run_id(),
                            job_type: b.job_type().to_owned(),
                            payload: serde_json::json!({
                                "run_id": b.run_id(),
                                "tenant_id": tenant,
                                "bundle_sha256": r.sha256,
                            }),
                            max_attempts: None,
                        },
                        now,
                    )?;
                    Verdict::Accepted {
                        run_id: b.run_id(),
                        job_id,
                    }
                }
                RunInsert::Duplicate(run_id) => Verdict::Duplicate { run_id },
                RunInsert::Conflict { existing_sha256 } => Verdict::Invalid {
                    errors: ValidationErrors::one(ValidationError::new(
                        "run_id",
                        format!(
                            "run {} already exists in this tenant with a different bundle (sha256 {existing_sha256})",
                            b.run_id()
                        ),
                        Some(b.run_id().to_string()),
                    )),
                },
            };
            verdicts.push(verdict);
        }
        Ok(verdicts)
    })
}

//! The read-only commands: `jobs`, `job show`, `runs`, `run show`,
//! `status`, `search`, `tenants`. Each prints a table fitted to the
//! terminal (or JSON with the column names as keys).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use bundleq::inbox;
use bundleq::store::{Attempt, IdKind, Job, JobEvent, JobFilter, ServeRow};
use bundleq::{Home, JobStatus, Result, Store};

use super::output::{self, cut, opt};
use super::render::{Ids, View, more_line, took};
use super::{EXIT_OK, JobsArgs};

/// The note shown for a job in a table: what an operator wants to know
/// about it now.
fn job_note(j: &Job, view: &View) -> String {
    match j.status {
        // A succeeded job's last_error is an earlier attempt's: history.
        JobStatus::Succeeded => "-".to_owned(),
        JobStatus::Running => format!(
            "on {} since {}",
            j.locked_by.as_deref().unwrap_or("?"),
            view.opt_time(j.locked_at)
        ),
        JobStatus::Queued => match (j.retry_at, &j.last_error) {
            (Some(at), _) if at > view.now && j.attempts == 0 => {
                format!("scheduled {}", view.time(at))
            }
            (Some(at), Some(e)) if at > view.now => format!("retry {}: {e}", view.time(at)),
            (Some(at), None) if at > view.now => format!("due {}", view.time(at)),
            (_, Some(e)) => e.clone(),
            _ => "-".to_owned(),
        },
        _ => j.last_error.clone().unwrap_or_else(|| "-".to_owned()),
    }
}

/// `bundleq jobs`.
pub fn jobs(
    json: bool,
    view: &View,
    store: &mut Store,
    tenant: Uuid,
    args: &JobsArgs,
    run: Option<Uuid>,
) -> Result<u8> {
    let filter = JobFilter {
        status: args.status,
        job_type: args.job_type.clone(),
        run_id: run,
        limit: Some(args.limit),
        ..JobFilter::default()
    };
    let jobs = store.jobs(tenant, &filter)?;
    if json {
        output::json(&jobs);
        return Ok(EXIT_OK);
    }
    let ids = Ids::of(store, view, IdKind::Job, tenant, jobs.iter().map(|j| j.id))?;
    let rows: Vec<Vec<String>> = if view.wide {
        let runs = Ids::of(
            store,
            view,
            IdKind::Run,
            tenant,
            jobs.iter().map(|j| j.run_id),
        )?;
        jobs.iter()
            .map(|j| {
                vec![
                    ids.show(j.id),
                    j.status.to_string(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.job_type.clone(),
                    runs.show(j.run_id),
                    view.time(j.created_at),
                    view.time(j.updated_at),
                    view.opt_time(j.retry_at),
                    opt(&j.locked_by),
                    opt(&j.last_error),
                ]
            })
            .collect()
    } else {
        jobs.iter()
            .map(|j| {
                vec![
                    ids.show(j.id),
                    j.status.to_string(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    cut(&j.job_type, 16),
                    view.time(j.created_at),
                    job_note(j, view),
                ]
            })
            .collect()
    };
    if view.wide {
        output::table(
            &[
                "ID",
                "STATUS",
                "ATTEMPTS",
                "TYPE",
                "RUN",
                "CREATED",
                "UPDATED",
                "RETRY AT",
                "LOCKED BY",
                "LAST ERROR",
            ],
            &rows,
            None,
        );
    } else {
        output::table(
            &["ID", "STATUS", "ATTEMPTS", "TYPE", "CREATED", "NOTE"],
            &rows,
            view.fit(),
        );
    }
    if jobs.len() as u64 == u64::from(args.limit) {
        more_line(jobs.len(), store.count_jobs(tenant, &filter)?);
    }
    Ok(EXIT_OK)
}

/// A job with its history: `job show --json` and the API's job.
#[derive(Debug, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub attempt_history: Vec<Attempt>,
    pub events: Vec<JobEvent>,
}

/// A job and its history, read for `job show` and the dashboard.
pub fn job_view(store: &mut Store, tenant: Uuid, id: Uuid) -> Result<JobView> {
    Ok(JobView {
        job: store.job(tenant, id)?,
        attempt_history: store.attempts(tenant, id)?,
        events: store.events(tenant, id)?,
    })
}

/// `bundleq job show`.
pub fn job_show(json: bool, view: &View, store: &mut Store, tenant: Uuid, id: Uuid) -> Result<u8> {
    let data = job_view(store, tenant, id)?;
    if json {
        output::json(&data);
        return Ok(EXIT_OK);
    }
    let JobView {
        job,
        attempt_history: history,
        events,
    } = data;
    let runs = Ids::of(store, view, IdKind::Run, tenant, [job.run_id])?;
    let mut pairs = vec![
        ("id", job.id.to_string()),
        (
            "run_id",
            format!("{}  ({})", job.run_id, runs.show(job.run_id)),
        ),
        ("job_type", job.job_type.clone()),
        ("status", job.status.to_string()),
        ("attempts", format!("{}/{}", job.attempts, job.max_attempts)),
    ];
    if let Some(at) = job.retry_at {
        pairs.push(("retry_at", view.time(at)));
    }
    if let Some(by) = &job.locked_by {
        pairs.push(("locked_by", by.clone()));
        pairs.push(("locked_at", view.opt_time(job.locked_at)));
    }
    if job.status != JobStatus::Succeeded
        && let Some(e) = &job.last_error
    {
        pairs.push(("last_error", e.clone()));
    }
    pairs.push(("created_at", view.time(job.created_at)));
    pairs.push(("updated_at", view.time(job.updated_at)));
    if view.verbose {
        pairs.push(("tenant_id", job.tenant_id.to_string()));
        pairs.push(("payload_json", job.payload_json.to_string()));
    }
    output::fields(&pairs, view.fit());
    output::line("");
    output::line("history:");
    // Attempts and manual actions, in the order they happened.
    let mut rows: Vec<(bundleq::Timestamp, Vec<String>)> = history
        .iter()
        .map(|a| {
            let ran = a
                .finished_at
                .map(|f| took(f.since(a.started_at)))
                .unwrap_or_else(|| format!("{} so far", took(view.now.since(a.started_at))));
            let outcome = a.outcome.clone().unwrap_or_else(|| "running".to_owned());
            let mut detail = format!("on {}", a.worker);
            if let Some(e) = &a.error {
                detail = format!("{e}  ({detail})");
            } else if let Some(o) = &a.output {
                detail = format!("output: {o}  ({detail})");
            }
            (
                a.started_at,
                vec![
                    view.time(a.started_at),
                    format!("attempt {} {outcome}", a.attempt),
                    ran,
                    detail,
                ],
            )
        })
        .collect();
    rows.extend(events.iter().map(|e| {
        (
            e.at,
            vec![
                view.time(e.at),
                format!("{} by a user", e.action),
                "-".to_owned(),
                e.detail.clone().unwrap_or_default(),
            ],
        )
    }));
    rows.sort_by_key(|(t, _)| *t);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
    output::table(&["WHEN", "WHAT", "RAN", "DETAIL"], &rows, view.fit());
    Ok(EXIT_OK)
}

/// `bundleq runs`.
pub fn runs(json: bool, view: &View, store: &mut Store, tenant: Uuid, limit: u32) -> Result<u8> {
    let runs = store.runs(tenant, Some(limit))?;
    if json {
        output::json(&runs);
        return Ok(EXIT_OK);
    }
    let ids = Ids::of(store, view, IdKind::Run, tenant, runs.iter().map(|r| r.id))?;
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let mut row = vec![
                ids.show(r.id),
                view.time(r.created_at),
                r.origin.clone(),
                r.bundle_sha256[..if view.wide { 64 } else { 12 }].to_owned(),
            ];
            if view.wide {
                row.push(opt(&r.origin_name));
            }
            row.push(r.title.clone());
            row
        })
        .collect();
    if view.wide {
        output::table(
            &["RUN", "ACCEPTED", "ORIGIN", "SHA256", "FILE", "TITLE"],
            &rows,
            None,
        );
    } else {
        output::table(
            &["RUN", "ACCEPTED", "ORIGIN", "SHA256", "TITLE"],
            &rows,
            view.fit(),
        );
    }
    if runs.len() as u64 == u64::from(limit) {
        more_line(runs.len(), store.count_runs(tenant)?);
    }
    Ok(EXIT_OK)
}

/// One step of a run's pipeline, for `run show`.
#[derive(Debug, Serialize)]
pub struct Step {
    pub step: String,
    pub after: Option<String>,
    /// The step's job (the newest, should there be several).
    pub job_id: Option<Uuid>,
    /// Its job's status; without a job, `waiting` (the step before has not
    /// succeeded yet) or `stopped` (it failed or was cancelled).
    pub status: String,
}

/// The steps of a run as the configuration sets them up, each with its job
/// if it was reached.
fn pipeline(
    config: &bundleq::Config,
    bundle_job_type: &str,
    jobs: &[bundleq::store::Job],
) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (step, after) in config.pipeline(bundle_job_type) {
        let job = jobs
            .iter()
            .filter(|j| j.job_type == step)
            .max_by_key(|j| j.created_at);
        let status = match job {
            Some(j) => j.status.to_string(),
            None => {
                let before = after
                    .as_deref()
                    .and_then(|a| steps.iter().find(|s| s.step == a))
                    .map(|s| s.status.as_str());
                match before {
                    Some("failed" | "cancelled" | "stopped") => "stopped".to_owned(),
                    _ => "waiting".to_owned(),
                }
            }
        };
        steps.push(Step {
            job_id: job.map(|j| j.id),
            step,
            after,
            status,
        });
    }
    steps
}

/// A run with everything known about it: `run show --json` and the API's
/// run.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub run: bundleq::store::Run,
    pub pipeline: Vec<Step>,
    pub jobs: Vec<Job>,
    pub sources: Vec<bundleq::custody::SourceProvenance>,
    pub findings: Vec<serde_json::Value>,
    pub last_full_verify: Option<bundleq::custody::LastVerify>,
}

/// A run and what hangs off it, read for `run show` and the dashboard.
pub fn run_view(home: &Home, store: &mut Store, tenant: Uuid, id: Uuid) -> Result<RunView> {
    let run = store.run(tenant, id)?;
    let jobs = store.jobs(
        tenant,
        &JobFilter {
            run_id: Some(id),
            ..JobFilter::default()
        },
    )?;
    let bundle_job_type = run.bundle_json["job_type"]
        .as_str()
        .unwrap_or(bundleq::bundle::DEFAULT_JOB_TYPE);
    let pipeline = pipeline(home.config(), bundle_job_type, &jobs);
    let sources = bundleq::custody::provenance(home, store, tenant, id, &run.bundle_json)?;
    let findings = run.bundle_json["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last_full_verify = bundleq::custody::last_full_verify(store)?;
    Ok(RunView {
        run,
        pipeline,
        jobs,
        sources,
        findings,
        last_full_verify,
    })
}

/// `bundleq run show`.
pub fn run_show(
    json: bool,
    view: &View,
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    id: Uuid,
) -> Result<u8> {
    let data = run_view(home, store, tenant, id)?;
    if json {
        output::json(&data);
        return Ok(EXIT_OK);
    }
    let RunView {
        run,
        pipeline: steps,
        jobs,
        sources,
        findings,
        last_full_verify: verified,
    } = data;
    let s = &run.summary;
    output::fields(
        &[
            ("id", s.id.to_string()),
            ("title", s.title.clone()),
            ("bundle_sha256", s.bundle_sha256.clone()),
            (
                "origin",
                format!("{} {}", s.origin, s.origin_name.as_deref().unwrap_or("")),
            ),
            ("created_at", view.time(s.created_at)),
            ("sources", sources.len().to_string()),
            (
                "verified",
                verified.map_or_else(
                    || "never (bundleq verify)".to_owned(),
                    |v| {
                        format!(
                            "{} ({} problem{} then)",
                            view.time(v.at),
                            v.problems,
                            if v.problems == 1 { "" } else { "s" }
                        )
                    },
                ),
            ),
        ],
        view.fit(),
    );
    output::line("");
    let rows: Vec<Vec<String>> = sources
        .iter()
        .map(|p| {
            let checked = match (p.checked_at, p.check_ok) {
                (Some(at), Some(true)) => format!("ok {}", view.time(at)),
                (Some(at), _) => format!("CORRUPT {}", view.time(at)),
                _ if p.stored == "reference" => "-".to_owned(),
                _ => "never".to_owned(),
            };
            vec![
                p.idx.to_string(),
                if view.wide {
                    p.sha256.clone()
                } else {
                    cut(&p.sha256, 12)
                },
                p.size.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                p.stored.to_owned(),
                checked,
                p.uri.clone(),
            ]
        })
        .collect();
    output::table(
        &["SOURCE", "SHA256", "BYTES", "STORED", "CHECKED", "URI"],
        &rows,
        view.fit(),
    );
    if !findings.is_empty() {
        output::line("");
        let rows: Vec<Vec<String>> = findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let refs: Vec<String> = f["source_refs"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .map(|r| r.to_string())
                    .collect();
                vec![
                    (i + 1).to_string(),
                    if refs.is_empty() {
                        "-".to_owned()
                    } else {
                        refs.join(", ")
                    },
                    f["text"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        output::table(&["FINDING", "SOURCES", "TEXT"], &rows, view.fit());
    }
    output::line("");
    let ids = Ids::of(store, view, IdKind::Job, tenant, jobs.iter().map(|j| j.id))?;
    let rows: Vec<Vec<String>> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string(),
                s.step.clone(),
                s.after.clone().unwrap_or_else(|| "-".to_owned()),
                s.status.clone(),
                s.job_id.map_or_else(|| "-".to_owned(), |j| ids.show(j)),
            ]
        })
        .collect();
    output::table(
        &["STEP", "TYPE", "AFTER", "STATUS", "JOB"],
        &rows,
        view.fit(),
    );
    output::line("");
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                ids.show(j.id),
                j.job_type.clone(),
                j.status.to_string(),
                format!("{}/{}", j.attempts, j.max_attempts),
                job_note(j, view),
            ]
        })
        .collect();
    output::table(
        &["JOB", "TYPE", "STATUS", "ATTEMPTS", "NOTE"],
        &rows,
        view.fit(),
    );
    Ok(EXIT_OK)
}

/// A recent rejection, for `status`.
#[derive(Debug, Serialize)]
pub struct Rejection {
    pub file: String,
    pub rejected_at: String,
    pub first_error: String,
}

/// The newest rejection reports in `rejected/`.
fn recent_rejections(home: &Home, n: usize) -> Vec<Rejection> {
    let mut reports: Vec<(std::time::SystemTime, std::path::PathBuf)> = Vec::new();
    let mut days: Vec<std::path::PathBuf> = std::fs::read_dir(home.rejected())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    days.sort();
    for day in days.iter().rev().take(3) {
        for e in std::fs::read_dir(day).into_iter().flatten().flatten() {
            let p = e.path();
            if p.to_string_lossy().ends_with(".errors.json")
                && let Ok(m) = e.metadata().and_then(|m| m.modified())
            {
                reports.push((m, p));
            }
        }
    }
    reports.sort_by_key(|r| std::cmp::Reverse(r.0));
    reports
        .into_iter()
        .take(n)
        .filter_map(|(_, p)| {
            let text = std::fs::read(&p).ok()?;
            if text.len() > 1024 * 1024 {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
            let first = &v["errors"][0];
            let path = first["path"].as_str().unwrap_or("");
            Some(Rejection {
                file: v["file"].as_str().unwrap_or("?").to_owned(),
                rejected_at: v["rejected_at"].as_str().unwrap_or("").to_owned(),
                first_error: format!(
                    "{}{}",
                    if path.is_empty() {
                        String::new()
                    } else {
                        format!("{path}: ")
                    },
                    first["message"].as_str().unwrap_or("")
                ),
            })
        })
        .collect()
}

/// A serve is taken for alive when it reported within this long.
const SERVE_SILENT: Duration = Duration::from_secs(180);

/// What `status` shows: `status --json`, the API's status and the
/// dashboard's overview.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub counts: BTreeMap<JobStatus, u64>,
    pub ready: u64,
    pub scheduled: u64,
    pub retrying: u64,
    pub paused: Vec<bundleq::store::Paused>,
    /// Running on a worker now (claimed ahead aside).
    pub running: u64,
    pub claimed_ahead: u64,
    pub by_type: BTreeMap<String, BTreeMap<String, u64>>,
    pub oldest_queued: Option<bundleq::Timestamp>,
    pub next_retry: Option<bundleq::Timestamp>,
    pub serves: Vec<ServeRow>,
    pub folders: inbox::FolderCounts,
    pub recent_rejections: Vec<Rejection>,
    pub last_full_verify: Option<bundleq::custody::LastVerify>,
}

impl StatusView {
    /// Jobs in `status`.
    pub fn count(&self, status: JobStatus) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// The serves heard from lately, as of `now`.
    pub fn live_serves(&self, now: bundleq::Timestamp) -> impl Iterator<Item = &ServeRow> {
        self.serves
            .iter()
            .filter(move |s| now.since(s.heartbeat_at) <= SERVE_SILENT)
    }
}

/// Everything `status` shows, read as of `now`.
pub fn status_view(
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    now: bundleq::Timestamp,
) -> Result<StatusView> {
    let stats = store.stats(tenant, now)?;
    let paused = store.paused()?;
    let folders = inbox::folder_counts(home, &inbox::inbox_dir(home, None), tenant)?;
    let serves: Vec<ServeRow> = store.serves()?;
    let recent_rejections = recent_rejections(home, 5);
    let claimed_ahead: u64 = serves
        .iter()
        .filter(|s| now.since(s.heartbeat_at) <= SERVE_SILENT)
        .map(|s| u64::from(s.claimed_ahead))
        .sum();
    let running = stats.counts.get(&JobStatus::Running).copied().unwrap_or(0);
    let last_full_verify = bundleq::custody::last_full_verify(store)?;
    Ok(StatusView {
        counts: stats.counts,
        ready: stats.ready,
        scheduled: stats.scheduled,
        retrying: stats.retrying,
        paused,
        running: running.saturating_sub(claimed_ahead),
        claimed_ahead: claimed_ahead.min(running),
        by_type: stats.by_type,
        oldest_queued: stats.oldest_queued,
        next_retry: stats.next_retry,
        serves,
        folders,
        recent_rejections,
        last_full_verify,
    })
}

/// `bundleq status`.
pub fn status(json: bool, view: &View, home: &Home, store: &mut Store, tenant: Uuid) -> Result<u8> {
    let data = status_view(home, store, tenant, view.now)?;
    if json {
        output::json(&data);
        return Ok(EXIT_OK);
    }
    let heard = |s: &ServeRow| view.now.since(s.heartbeat_at) <= SERVE_SILENT;
    let count = |s: JobStatus| data.count(s);
    let StatusView {
        ready,
        scheduled,
        retrying,
        running,
        claimed_ahead,
        oldest_queued,
        next_retry,
        ..
    } = data;
    let (paused, serves, folders, rejections, verified) = (
        &data.paused,
        &data.serves,
        &data.folders,
        &data.recent_rejections,
        data.last_full_verify,
    );
    let stats = &data;
    let fit = view.fit();
    let mut line = format!(
        "jobs: {} ready, {} scheduled, {} waiting to retry, {} running",
        ready, scheduled, retrying, running
    );
    if claimed_ahead > 0 {
        line.push_str(&format!(" (+{claimed_ahead} claimed ahead)"));
    }
    output::line(line);
    output::line(format!(
        "      {} succeeded, {} failed, {} cancelled",
        count(JobStatus::Succeeded),
        count(JobStatus::Failed),
        count(JobStatus::Cancelled)
    ));
    output::fields(
        &[
            ("oldest queued", view.opt_time(oldest_queued)),
            ("next due", view.opt_time(next_retry)),
        ],
        fit,
    );
    for p in paused {
        output::line(format!(
            "paused: {} since {} (bundleq resume {})",
            p.job_type.as_deref().unwrap_or("every job type"),
            view.time(p.since),
            p.job_type.as_deref().unwrap_or("--all")
        ));
    }
    if !stats.by_type.is_empty() {
        output::line("");
        let n = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0).to_string();
        let rows: Vec<Vec<String>> = stats
            .by_type
            .iter()
            .map(|(t, m)| {
                vec![
                    t.clone(),
                    n(m, "ready"),
                    n(m, "scheduled"),
                    n(m, "retrying"),
                    n(m, "running"),
                    n(m, "succeeded"),
                    n(m, "failed"),
                    n(m, "cancelled"),
                ]
            })
            .collect();
        output::table(
            &[
                "TYPE",
                "READY",
                "SCHEDULED",
                "RETRY",
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
                "CANCELLED",
            ],
            &rows,
            fit,
        );
    }
    output::line("");
    let live: Vec<&ServeRow> = serves.iter().filter(|s| heard(s)).collect();
    if live.is_empty() {
        output::line("serves: none working this home's queue");
    } else {
        output::line(format!("serves: {} working the queue", live.len()));
        let rows: Vec<Vec<String>> = live
            .iter()
            .map(|s| {
                vec![
                    s.host.clone(),
                    s.pid.to_string(),
                    s.workers.to_string(),
                    format!("{}", s.running),
                    view.time(s.started_at),
                    view.time(s.heartbeat_at),
                ]
            })
            .collect();
        output::table(
            &["HOST", "PID", "WORKERS", "RUNNING", "STARTED", "LAST HEARD"],
            &rows,
            fit,
        );
    }
    let silent = serves.len() - live.len();
    if silent > 0 {
        output::line(format!(
            "       {silent} more not heard from for over {}m (stopped without a word?)",
            SERVE_SILENT.as_secs() / 60
        ));
    }
    output::line("");
    output::line(format!(
        "inbox: {} waiting; files: {} accepted, {} duplicates, {} rejected",
        folders.inbox_backlog, folders.accepted, folders.duplicates, folders.rejected
    ));
    if !rejections.is_empty() {
        let rows: Vec<Vec<String>> = rejections
            .iter()
            .map(|r| {
                vec![
                    bundleq::Timestamp::parse(&r.rejected_at)
                        .map_or_else(|| r.rejected_at.clone(), |t| view.time(t)),
                    cut(&r.file, 24),
                    r.first_error.clone(),
                ]
            })
            .collect();
        output::line("recent rejections:");
        output::table(&["WHEN", "FILE", "FIRST ERROR"], &rows, fit);
    }
    output::line(match verified {
        None => "objects: never verified (bundleq verify)".to_owned(),
        Some(v) => format!(
            "objects: last verified {}: {} problem{}",
            view.time(v.at),
            v.problems,
            if v.problems == 1 { "" } else { "s" }
        ),
    });
    Ok(EXIT_OK)
}

/// `bundleq search`.
pub fn search(
    json: bool,
    view: &View,
    store: &mut Store,
    tenant: Uuid,
    query: &str,
    run: Option<Uuid>,
    limit: u32,
) -> Result<u8> {
    let (hits, total) = store.search(tenant, query, run, limit)?;
    if json {
        output::json(&serde_json::json!({ "total": total, "hits": hits }));
        return Ok(EXIT_OK);
    }
    let ids = Ids::of(
        store,
        view,
        IdKind::Run,
        tenant,
        hits.iter().map(|h| h.run_id),
    )?;
    output::line(format!(
        "{total} hit{}{}",
        if total == 1 { "" } else { "s" },
        if total > hits.len() as u64 {
            format!(", best {} shown (raise --limit for more)", hits.len())
        } else {
            String::new()
        }
    ));
    for h in &hits {
        let head = format!(
            "{}  {}  source {}: {}",
            ids.show(h.run_id),
            h.run_title,
            h.idx,
            h.title.as_deref().unwrap_or(&h.uri)
        );
        output::line(match view.fit() {
            Some(w) => cut(&head, w),
            None => head,
        });
        let snippet = format!("    {}", h.snippet);
        output::line(match view.fit() {
            Some(w) => cut(&snippet, w),
            None => snippet,
        });
    }
    Ok(EXIT_OK)
}

/// `bundleq tenants`.
pub fn tenants(json: bool, view: &View, store: &mut Store) -> Result<u8> {
    let all = store.tenants()?;
    if json {
        output::json(&all);
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|t| vec![t.name.clone(), t.id.to_string(), view.time(t.created_at)])
        .collect();
    output::table(&["NAME", "ID", "CREATED"], &rows, view.fit());
    Ok(EXIT_OK)
}

/// `bundleq db current`.
pub fn db_current(json: bool, store: &mut Store) -> Result<u8> {
    let v = store.current_version()?;
    if json {
        output::json(&v);
    } else {
        match v {
            Some(v) => output::line(format!(
                "V{}__{}{}",
                v.version,
                v.name,
                if v.head {
                    " (head)"
                } else {
                    " (behind head: run `bundleq db migrate`)"
                }
            )),
            None => output::line("no migration applied"),
        }
    }
    Ok(EXIT_OK)
}

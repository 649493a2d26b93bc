//! `/api/v1/…`: the CLI's `--json` answers over HTTP, with the same keys
//! (each is built by the same function as its command's), and
//! `POST /api/v1/bundles`, the accept path of `submit`.
//!
//! Status codes: 200, 201 (a new run), 400 (a malformed parameter), 401 and
//! 403 (the gate), 404 (no such job or run), 405, 409 (a job in a state
//! the action does not apply to), 413, 415, 422 (an invalid bundle, every
//! error listed), 500. Errors are `{"error": "…"}`.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use bundleq::accept::Verdict;
use bundleq::store::{IdKind, JobFilter};
use bundleq::{Error, JobStatus, Store, Timestamp};

use super::http::{Request, Response};
use super::{App, overview, upload};
use crate::cli::commands::{JobAction, act_on_job};
use crate::cli::show;

/// Most jobs, runs or hits one request returns.
pub const MAX_LIMIT: u32 = 1_000;

/// A JSON response.
pub fn json(status: u16, value: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            Response::new(status, "application/json", body)
        }
        Err(e) => error_json(500, &format!("the answer could not be written: {e}")),
    }
}

/// `{"error": message}` with `status`.
pub fn error_json(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message.trim_end() }))
}

/// The HTTP status a library error is answered with.
pub fn status_of(e: &Error) -> u16 {
    match e {
        Error::JobNotFound { .. } | Error::RunNotFound { .. } | Error::UnknownTenant { .. } => 404,
        Error::InvalidTransition { .. } => 409,
        Error::InvalidArgument { .. } => 400,
        Error::ReadOnly { .. } => 403,
        Error::Busy { .. } => 503,
        _ => 500,
    }
}

/// A number parameter, or 400.
pub fn number(req: &Request, key: &str, default: u32, max: u32) -> Result<u32, Response> {
    match req.query(key) {
        None => Ok(default),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Response::text(
                400,
                &format!("{key} must be a number from 1 to {max}, not {text:?}"),
            )),
        },
    }
}

/// The job filter a request's query names: `status`, `type`, `run` (an id
/// or its short form), `q` (text in payload or last error), `before` (the
/// last job of the previous page), `limit`.
pub fn job_filter(
    app: &App,
    store: &mut Store,
    req: &Request,
    default_limit: u32,
) -> Result<JobFilter, Response> {
    let status = match req.query("status") {
        None | Some("all") => None,
        Some(s) => Some(
            s.parse::<JobStatus>()
                .map_err(|e| Response::text(400, &e))?,
        ),
    };
    let run_id = match req.query("run") {
        None => None,
        Some(r) => Some(
            store
                .resolve(IdKind::Run, app.tenant, r)
                .map_err(|e| Response::text(status_of(&e), &e.to_string()))?,
        ),
    };
    let before = match req.query("before") {
        None => None,
        Some(j) => {
            let id = store
                .resolve(IdKind::Job, app.tenant, j)
                .map_err(|e| Response::text(status_of(&e), &e.to_string()))?;
            let job = store
                .job(app.tenant, id)
                .map_err(|e| Response::text(status_of(&e), &e.to_string()))?;
            Some((job.created_at, job.id))
        }
    };
    Ok(JobFilter {
        status,
        job_type: req.query("type").map(str::to_owned),
        run_id,
        text: req.query("q").map(str::to_owned),
        before,
        limit: Some(number(req, "limit", default_limit, MAX_LIMIT)?),
    })
}

fn as_json(r: Response) -> Response {
    if r.headers
        .iter()
        .any(|(k, v)| k == "Content-Type" && v == "application/json")
    {
        r
    } else {
        error_json(r.status, &String::from_utf8_lossy(&r.body))
    }
}

fn lib_error(e: &Error) -> Response {
    error_json(status_of(e), &e.to_string())
}

/// Answers `/api/v1/…`.
pub fn route(app: &Arc<App>, req: &mut Request) -> Response {
    let path = req.path.trim_end_matches('/').to_owned();
    let parts: Vec<&str> = path.split('/').skip(3).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    let answer = match (parts.as_slice(), get, post) {
        (["status"], true, _) => app
            .with_store(|s| show::status_view(&app.home, s, app.tenant, Timestamp::now()))
            .map(|v| json(200, &v)),
        (["jobs"], true, _) => {
            return as_json(
                app.with_store(|s| Ok(jobs(app, s, req)))
                    .unwrap_or_else(|e| lib_error(&e)),
            );
        }
        (["jobs", id], true, _) => app
            .with_store(|s| {
                let id = s.resolve(IdKind::Job, app.tenant, id)?;
                show::job_view(s, app.tenant, id)
            })
            .map(|v| json(200, &v)),
        (["jobs", id, action @ ("retry" | "cancel")], _, true) => {
            let action = if *action == "retry" {
                JobAction::Retry { at: None }
            } else {
                JobAction::Cancel
            };
            let done = app.with_store(|s| {
                let id = s.resolve(IdKind::Job, app.tenant, id)?;
                act_on_job(&app.home, s, app.tenant, id, action)
            });
            overview::invalidate(app);
            done.map(|job| json(200, &job))
        }
        (["runs"], true, _) => {
            return as_json(
                app.with_store(|s| Ok(runs(app, s, req)))
                    .unwrap_or_else(|e| lib_error(&e)),
            );
        }
        (["runs", id], true, _) => app
            .with_store(|s| {
                let id = s.resolve(IdKind::Run, app.tenant, id)?;
                show::run_view(&app.home, s, app.tenant, id)
            })
            .map(|v| json(200, &v)),
        (["search"], true, _) => {
            return as_json(
                app.with_store(|s| Ok(search(app, s, req)))
                    .unwrap_or_else(|e| lib_error(&e)),
            );
        }
        (["bundles"], _, true) => return as_json(bundles(app, req)),
        (["status" | "jobs" | "runs" | "search" | "bundles"], _, _)
        | (["jobs" | "runs", _], _, _)
        | (["jobs", _, "retry" | "cancel"], _, _) => {
            return error_json(405, &format!("{} is not allowed here", req.method));
        }
        _ => return error_json(404, &format!("no endpoint {}", req.path)),
    };
    answer.unwrap_or_else(|e| lib_error(&e))
}

fn jobs(app: &App, store: &mut Store, req: &Request) -> Response {
    let filter = match job_filter(app, store, req, 100) {
        Ok(f) => f,
        Err(r) => return r,
    };
    store
        .jobs(app.tenant, &filter)
        .map_or_else(|e| lib_error(&e), |jobs| json(200, &jobs))
}

fn runs(app: &App, store: &mut Store, req: &Request) -> Response {
    let limit = match number(req, "limit", 100, MAX_LIMIT) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let listed = match req.query("before") {
        None => store.runs(app.tenant, Some(limit)),
        Some(r) => store
            .resolve(IdKind::Run, app.tenant, r)
            .and_then(|id| store.run(app.tenant, id))
            .and_then(|run| {
                store.runs_before(
                    app.tenant,
                    (run.summary.created_at, run.summary.id),
                    Some(limit),
                )
            }),
    };
    listed.map_or_else(|e| lib_error(&e), |runs| json(200, &runs))
}

fn search(app: &App, store: &mut Store, req: &Request) -> Response {
    let Some(q) = req.query("q") else {
        return Response::text(400, "search needs q, the words to look for");
    };
    let limit = match number(req, "limit", 20, MAX_LIMIT) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let run = match req.query("run") {
        None => None,
        Some(r) => match store.resolve(IdKind::Run, app.tenant, r) {
            Ok(id) => Some(id),
            Err(e) => return lib_error(&e),
        },
    };
    store.search(app.tenant, q, run, limit).map_or_else(
        |e| lib_error(&e),
        |(hits, total)| json(200, &serde_json::json!({ "total": total, "hits": hits })),
    )
}

/// `POST /api/v1/bundles`: 201 with the new run and job, 200 for bytes
/// accepted before, 422 with every validation error.
fn bundles(app: &Arc<App>, req: &mut Request) -> Response {
    let allow_unknown = req
        .query("allow_unknown_type")
        .is_some_and(|v| v == "true" || v == "1");
    let report = app
        .with_store(|s| {
            Ok(upload::accept_upload(
                &app.home,
                s,
                app.tenant,
                req,
                allow_unknown,
            ))
        })
        .unwrap_or_else(|e| Err(lib_error(&e)));
    match report {
        Err(r) => r,
        Ok(report) => {
            overview::invalidate(app);
            let status = match report.verdict {
                Verdict::Accepted { .. } => 201,
                Verdict::Invalid { .. } => 422,
                _ => 200,
            };
            json(status, &report)
        }
    }
}

/// The id of the run a report names, if any.
pub fn run_of(verdict: &Verdict) -> Option<Uuid> {
    match verdict {
        Verdict::Accepted { run_id, .. }
        | Verdict::Duplicate { run_id }
        | Verdict::Recovered { run_id }
        | Verdict::Valid { run_id } => Some(*run_id),
        Verdict::Invalid { .. } => None,
    }
}

//! The dashboard's pages: overview, jobs, a job, runs, a run, search, the
//! inbox, and the forms that act (retry, cancel, retry-all / cancel-all,
//! pause / resume, upload). Rendered by maud, which escapes every value it
//! is given: titles, errors and file names come from bundles and are
//! never trusted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use uuid::Uuid;

use bundleq::accept::Verdict;
use bundleq::store::{IdKind, Job, JobFilter, MinuteCount};
use bundleq::timestamp::relative;
use bundleq::{Error, JobStatus, Store, Timestamp};

use super::api::{self, MAX_LIMIT, job_filter, status_of};
use super::gate::Access;
use super::http::{Request, Response};
use super::{App, overview, upload};
use crate::cli::commands::{JobAction, act_on_job};
use crate::cli::show;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// Rows on one page of a listing.
const PAGE: u32 = 50;
/// Most jobs one retry-all or cancel-all acts on.
const BULK_CAP: u32 = MAX_LIMIT;

/// What a page knows about the request it answers.
struct Ctx<'a> {
    app: &'a Arc<App>,
    access: Access,
    now: Timestamp,
}

impl Ctx<'_> {
    /// Forms that change things are shown.
    fn can_act(&self) -> bool {
        self.access.authorised && !self.app.gate.read_only()
    }
}

/// Answers every path outside `/api/`.
pub fn route(app: &Arc<App>, req: &mut Request, access: Access) -> Response {
    let ctx = Ctx {
        app,
        access,
        now: Timestamp::now(),
    };
    let path = req.path.clone();
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    match (parts.as_slice(), get, post) {
        ([] | [""], true, _) => page_result(&ctx, overview_page(&ctx)),
        (["static", "app.css"], true, _) => asset("text/css; charset=utf-8", CSS),
        (["static", "app.js"], true, _) => asset("text/javascript; charset=utf-8", JS),
        (["jobs"], true, _) => page_result(&ctx, jobs_page(&ctx, req)),
        (["jobs", "bulk"], true, _) => page_result(&ctx, bulk_confirm(&ctx, req)),
        (["jobs", "bulk"], _, true) => page_result(&ctx, bulk_act(&ctx, req)),
        (["jobs", id], true, _) => page_result(&ctx, job_page(&ctx, id)),
        (["jobs", id, action @ ("retry" | "cancel")], _, true) => {
            page_result(&ctx, job_act(&ctx, id, action))
        }
        (["runs"], true, _) => page_result(&ctx, runs_page(&ctx, req)),
        (["runs", id], true, _) => page_result(&ctx, run_page(&ctx, id)),
        (["search"], true, _) => page_result(&ctx, search_page(&ctx, req)),
        (["inbox"], true, _) => page_result(&ctx, inbox_page(&ctx)),
        (["upload"], _, true) => page_result(&ctx, upload_act(&ctx, req)),
        (["types", job_type, action @ ("pause" | "resume")], _, true) => {
            page_result(&ctx, pause_act(&ctx, job_type, action))
        }
        (["favicon.ico"], _, _) => Response::new(204, "image/x-icon", Vec::new()),
        _ if get || post => page(
            &ctx,
            404,
            "Not found",
            html! { p { "There is no page at " code { (path) } "." } },
        ),
        _ => Response::text(405, &format!("{} is not allowed here", req.method)),
    }
}

fn asset(content_type: &str, text: &str) -> Response {
    Response::new(200, content_type, text.as_bytes().to_vec())
        .with("Cache-Control", "public, max-age=3600")
}

/// A page's outcome: a response, or a library error shown as a page.
type PageResult = Result<Response, PageError>;

enum PageError {
    Lib(Error),
    Http(Response),
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        PageError::Lib(e)
    }
}

impl From<Response> for PageError {
    fn from(r: Response) -> Self {
        PageError::Http(r)
    }
}

fn page_result(ctx: &Ctx<'_>, result: PageResult) -> Response {
    match result {
        Ok(r) => r,
        Err(PageError::Lib(e)) => page(
            ctx,
            status_of(&e),
            "Cannot show this",
            html! { p.error { (e.to_string()) } },
        ),
        Err(PageError::Http(r)) if r.status >= 400 => {
            let message = String::from_utf8_lossy(&r.body).into_owned();
            page(
                ctx,
                r.status,
                "Cannot do this",
                html! { p.error { (message) } },
            )
        }
        Err(PageError::Http(r)) => r,
    }
}

/// A whole page around `body`.
fn page(ctx: &Ctx<'_>, status: u16, title: &str, body: Markup) -> Response {
    page_with(ctx, status, title, body, false)
}

/// A page that refreshes itself every few seconds while it is visible.
fn live_page(ctx: &Ctx<'_>, title: &str, body: Markup) -> Response {
    page_with(ctx, 200, title, body, true)
}

fn page_with(ctx: &Ctx<'_>, status: u16, title: &str, body: Markup, live: bool) -> Response {
    let app = ctx.app;
    let nav = [
        ("/", "Overview"),
        ("/jobs", "Jobs"),
        ("/runs", "Runs"),
        ("/search", "Search"),
        ("/inbox", "Inbox"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · bundleq" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body data-live=[live.then_some("5")] {
                header {
                    a.brand href="/" { "bundleq" }
                    nav {
                        @for (href, name) in nav {
                            a href=(href) { (name) }
                        }
                    }
                    span.who {
                        "tenant " strong { (app.tenant_name) }
                        @if app.gate.read_only() {
                            " · " span.badge { "read-only" }
                        } @else if !ctx.access.authorised {
                            " · " span.badge title="Open the URL serve printed (it holds the token) to retry, cancel, pause or upload" { "view only" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    "bundleq " (env!("CARGO_PKG_VERSION")) " · " (app.home.root().display().to_string())
                    " · " span.as-of { "as of " (ctx.now.to_string()) }
                }
            }
        }
    };
    Response::new(
        status,
        "text/html; charset=utf-8",
        markup.into_string().into_bytes(),
    )
}

/// A time shown relative, with the absolute time on hover.
fn when(ctx: &Ctx<'_>, t: Timestamp) -> Markup {
    html! { time datetime=(t.to_string()) title=(t.to_string()) { (relative(t, ctx.now)) } }
}

fn opt_when(ctx: &Ctx<'_>, t: Option<Timestamp>) -> Markup {
    match t {
        Some(t) => when(ctx, t),
        None => html! { "-" },
    }
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "status " (status) } { (status) } }
}

/// The short forms of ids, for links.
fn shorts(
    store: &mut Store,
    kind: IdKind,
    tenant: Uuid,
    ids: impl IntoIterator<Item = Uuid>,
) -> bundleq::Result<HashMap<Uuid, String>> {
    let ids: Vec<Uuid> = ids.into_iter().collect();
    store.short_ids(kind, tenant, &ids)
}

fn short(map: &HashMap<Uuid, String>, id: Uuid) -> String {
    map.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

/// A form that posts to `action` with one button (the token rides in the
/// cookie; the gate checks the request came from this origin).
fn button(action: &str, label: &str, class: &str, hidden: &[(&str, String)]) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            @for (k, v) in hidden {
                input type="hidden" name=(k) value=(v);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

// ----- overview -------------------------------------------------------

fn overview_page(ctx: &Ctx<'_>) -> PageResult {
    let snapshot = overview::get(ctx.app)?;
    let s = &snapshot.status;
    let cards = [
        ("ready", s.ready, "/jobs?status=queued"),
        ("scheduled", s.scheduled, "/jobs?status=queued"),
        ("retrying", s.retrying, "/jobs?status=queued"),
        ("running", s.running, "/jobs?status=running"),
        (
            "succeeded",
            s.count(JobStatus::Succeeded),
            "/jobs?status=succeeded",
        ),
        ("failed", s.count(JobStatus::Failed), "/jobs?status=failed"),
        (
            "cancelled",
            s.count(JobStatus::Cancelled),
            "/jobs?status=cancelled",
        ),
    ];
    let live: Vec<_> = s.live_serves(ctx.now).collect();
    let paused_all = s.paused.iter().any(|p| p.job_type.is_none());
    let body = html! {
        section.cards {
            @for (name, n, href) in cards {
                a class={ "card " (name) } href=(href) {
                    span.n { (n) }
                    span.label { (name) }
                }
            }
        }
        p.note {
            "Counts as of " (when(ctx, snapshot.at.min(ctx.now))) " (read in "
            (format!("{} ms", snapshot.took.as_millis())) "; refreshed in the background)."
            @if s.claimed_ahead > 0 { " " (s.claimed_ahead) " more claimed ahead by serves." }
        }
        section {
            h2 { "Finished per minute, last hour" }
            (chart(ctx, &snapshot.throughput))
        }
        @if !s.paused.is_empty() {
            section {
                h2 { "Paused" }
                ul {
                    @for p in &s.paused {
                        li {
                            strong { (p.job_type.as_deref().unwrap_or("every job type")) }
                            " since " (when(ctx, p.since))
                            @if ctx.can_act() {
                                " " (button(&format!("/types/{}/resume", p.job_type.as_deref().unwrap_or("*")), "Resume", "small", &[]))
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Job types" }
            @if s.by_type.is_empty() {
                p.empty { "No jobs yet: submit a bundle or drop one into the inbox." }
            } @else {
                table {
                    thead { tr {
                        th { "type" } th.num { "ready" } th.num { "scheduled" } th.num { "retry" }
                        th.num { "running" } th.num { "succeeded" } th.num { "failed" } th.num { "cancelled" } th {}
                    } }
                    tbody {
                        @for (t, m) in &s.by_type {
                            @let n = |k: &str| m.get(k).copied().unwrap_or(0);
                            @let paused = paused_all || s.paused.iter().any(|p| p.job_type.as_deref() == Some(t.as_str()));
                            tr {
                                td { a href={ "/jobs?type=" (urlenc(t)) } { (t) }
                                    @if paused { " " span.badge { "paused" } } }
                                td.num { (n("ready")) } td.num { (n("scheduled")) } td.num { (n("retrying")) }
                                td.num { (n("running")) } td.num { (n("succeeded")) }
                                td.num { a href={ "/jobs?status=failed&type=" (urlenc(t)) } { (n("failed")) } }
                                td.num { (n("cancelled")) }
                                td {
                                    @if ctx.can_act() {
                                        @if paused {
                                            (button(&format!("/types/{}/resume", urlenc(t)), "Resume", "small", &[]))
                                        } @else {
                                            (button(&format!("/types/{}/pause", urlenc(t)), "Pause", "small", &[]))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Serve processes" }
            @if live.is_empty() {
                p.empty { "None working this queue." }
            } @else {
                table {
                    thead { tr { th { "host" } th.num { "pid" } th.num { "workers" } th.num { "running" } th { "started" } th { "last heartbeat" } } }
                    tbody {
                        @for sv in &live {
                            tr {
                                td { (sv.host) } td.num { (sv.pid) } td.num { (sv.workers) } td.num { (sv.running) }
                                td { (when(ctx, sv.started_at)) } td { (when(ctx, sv.heartbeat_at)) }
                            }
                        }
                    }
                }
            }
            @let silent = s.serves.len() - live.len();
            @if silent > 0 { p.note { (silent) " more not heard from for over 3 minutes." } }
        }
        section {
            h2 { "Inbox" }
            p {
                (s.folders.inbox_backlog) " waiting · " (s.folders.accepted) " accepted · "
                (s.folders.duplicates) " duplicates · "
                a href="/inbox" { (s.folders.rejected) " rejected" }
            }
            p {
                @match s.last_full_verify {
                    None => { "Objects never verified (" code { "bundleq verify" } ")." }
                    Some(v) => { "Objects last verified " (when(ctx, v.at)) ": " (v.problems) " problem(s)." }
                }
            }
        }
    };
    Ok(live_page(ctx, "Overview", body))
}

/// Bars of the last hour, one per minute: succeeded, failed and retried
/// stacked, drawn on the server as SVG.
fn chart(ctx: &Ctx<'_>, minutes: &[MinuteCount]) -> Markup {
    const W: u64 = 720;
    const H: u64 = 120;
    let now_minute = ctx.now.to_string()[..16].to_owned();
    let bars: Vec<(u64, u64, u64, String)> = (0..60)
        .rev()
        .map(|ago: u64| {
            let t = Timestamp::from_system(
                std::time::SystemTime::now() - std::time::Duration::from_secs(ago * 60),
            );
            let key = t.to_string()[..16].to_owned();
            let m = minutes.iter().find(|m| m.minute.to_string()[..16] == key);
            m.map_or((0, 0, 0, key.clone()), |m| {
                (m.succeeded, m.failed, m.retried, key.clone())
            })
        })
        .collect();
    let max = bars
        .iter()
        .map(|(a, b, c, _)| a + b + c)
        .max()
        .unwrap_or(0)
        .max(1);
    let total: u64 = bars.iter().map(|(a, _, _, _)| a).sum();
    let failed: u64 = bars.iter().map(|(_, b, _, _)| b).sum();
    let bw = W / 60;
    let scale = |n: u64| n * (H - 20) / max;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"jobs finished per minute over the last hour\">"
    );
    for (i, (ok, bad, retry, key)) in bars.iter().enumerate() {
        let x = i as u64 * bw;
        let mut y = H - 14;
        for (n, class) in [(ok, "ok"), (bad, "bad"), (retry, "retry")] {
            let h = scale(*n);
            if h == 0 && *n > 0 {
                continue;
            }
            if h > 0 {
                y -= h;
                let _ = write!(
                    svg,
                    "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\"><title>{} UTC: {ok} succeeded, {bad} failed, {retry} retried</title></rect>",
                    bw.saturating_sub(2).max(1),
                    html! { (key) }.into_string(),
                );
            }
        }
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"0\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\"/><text class=\"label\" x=\"0\" y=\"{H}\">60 min ago</text><text class=\"label\" x=\"{x}\" y=\"{H}\" text-anchor=\"end\">now ({now_minute} UTC)</text><text class=\"label\" x=\"0\" y=\"10\">max {max}/min</text></svg>",
        y = H - 13,
        x = W,
    );
    html! {
        (PreEscaped(svg))
        p.note { (total) " succeeded and " (failed) " failed in the last hour." }
    }
}

/// Percent-encodes a query or path value.
fn urlenc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ----- jobs -----------------------------------------------------------

/// The query string of a filter (without its page and limit).
fn filter_query(req: &Request) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for k in ["status", "type", "run", "q"] {
        if let Some(v) = req.query(k) {
            out.append_pair(k, v);
        }
    }
    out.finish()
}

fn jobs_table(ctx: &Ctx<'_>, store: &mut Store, jobs: &[Job]) -> bundleq::Result<Markup> {
    let ids = shorts(
        store,
        IdKind::Job,
        ctx.app.tenant,
        jobs.iter().map(|j| j.id),
    )?;
    let runs = shorts(
        store,
        IdKind::Run,
        ctx.app.tenant,
        jobs.iter().map(|j| j.run_id),
    )?;
    Ok(html! {
        table.jobs {
            thead { tr { th { "job" } th { "status" } th { "type" } th.num { "attempts" } th { "run" } th { "created" } th { "note" } } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href={ "/jobs/" (j.id) } { code { (short(&ids, j.id)) } } }
                        td { (status_badge(j.status.as_str())) }
                        td { (j.job_type) }
                        td.num { (j.attempts) "/" (j.max_attempts) }
                        td { a href={ "/runs/" (j.run_id) } { code { (short(&runs, j.run_id)) } } }
                        td { (when(ctx, j.created_at)) }
                        td.note { (job_note(ctx, j)) }
                    }
                }
            }
        }
    })
}

fn job_note(ctx: &Ctx<'_>, j: &Job) -> Markup {
    match j.status {
        JobStatus::Succeeded => html! { "-" },
        JobStatus::Running => html! {
            "on " (j.locked_by.as_deref().unwrap_or("?")) " since " (opt_when(ctx, j.locked_at))
        },
        _ => match (j.retry_at, &j.last_error) {
            (Some(at), Some(e)) if at > ctx.now => html! { "retry " (when(ctx, at)) ": " (e) },
            (Some(at), None) if at > ctx.now => html! { "due " (when(ctx, at)) },
            (_, Some(e)) => html! { (e) },
            _ => html! { "-" },
        },
    }
}

fn jobs_page(ctx: &Ctx<'_>, req: &Request) -> PageResult {
    let app = ctx.app;
    let (jobs, body_table, total) = app.with_store(|store| {
        let filter = match job_filter(app, store, req, PAGE) {
            Ok(f) => f,
            Err(r) => {
                return Ok(Err(r));
            }
        };
        let jobs = store.jobs(app.tenant, &filter)?;
        let table = jobs_table(ctx, store, &jobs)?;
        let total = if filter.before.is_none() && (jobs.len() as u32) < filter.limit.unwrap_or(PAGE)
        {
            Some(jobs.len() as u64)
        } else {
            None
        };
        Ok(Ok((jobs, table, total)))
    })??;
    let status = req.query("status").unwrap_or("all");
    let query = filter_query(req);
    let next = jobs
        .last()
        .filter(|_| jobs.len() as u32 >= PAGE)
        .map(|j| format!("/jobs?{query}&before={}", j.id));
    let body = html! {
        form.filters method="get" action="/jobs" {
            label { "status "
                select name="status" {
                    @for s in ["all", "queued", "running", "succeeded", "failed", "cancelled"] {
                        option value=(s) selected[s == status] { (s) }
                    }
                }
            }
            label { "type " input type="text" name="type" value=[req.query("type")] size="14"; }
            label { "run " input type="text" name="run" value=[req.query("run")] size="12"; }
            label { "text " input type="search" name="q" value=[req.query("q")] placeholder="in payload or error"; }
            button type="submit" { "Filter" }
        }
        @if ctx.can_act() && !jobs.is_empty() {
            p.bulk {
                a.button href={ "/jobs/bulk?action=retry&" (query) } { "Retry all matching…" }
                " "
                a.button href={ "/jobs/bulk?action=cancel&" (query) } { "Cancel all matching…" }
            }
        }
        @if jobs.is_empty() {
            p.empty { "No jobs match." }
        } @else {
            (body_table)
        }
        p.pager {
            @if let Some(t) = total { (t) " job(s). " }
            @if req.query("before").is_some() { a href={ "/jobs?" (query) } { "« newest" } " " }
            @if let Some(n) = &next { a href=(n) { "older »" } }
        }
    };
    Ok(live_page(ctx, "Jobs", body))
}

fn job_page(ctx: &Ctx<'_>, id: &str) -> PageResult {
    let app = ctx.app;
    let (view, run_short) = app.with_store(|store| {
        let id = store.resolve(IdKind::Job, app.tenant, id)?;
        let view = show::job_view(store, app.tenant, id)?;
        let runs = shorts(store, IdKind::Run, app.tenant, [view.job.run_id])?;
        let run_short = short(&runs, view.job.run_id);
        Ok((view, run_short))
    })?;
    let j = &view.job;
    // Attempts and user actions in the order they happened.
    let mut timeline: Vec<(Timestamp, Markup)> = view
        .attempt_history
        .iter()
        .map(|a| {
            let outcome = a.outcome.as_deref().unwrap_or("running");
            (
                a.started_at,
                html! {
                    li class={ "attempt " (outcome) } {
                        (when(ctx, a.started_at)) " · "
                        strong { "attempt " (a.attempt) " " (outcome) }
                        " on " code { (a.worker) }
                        @if let Some(f) = a.finished_at {
                            " · ran " (format!("{:.1} s", f.since(a.started_at).as_secs_f64()))
                        }
                        @if let Some(e) = &a.error { pre.error { (e) } }
                        @if let Some(o) = &a.output { pre { (o) } }
                    }
                },
            )
        })
        .collect();
    timeline.extend(view.events.iter().map(|e| {
        (
            e.at,
            html! {
                li.event {
                    (when(ctx, e.at)) " · " strong { (e.action) " by a user" }
                    @if let Some(d) = &e.detail { " · " (d) }
                }
            },
        )
    }));
    timeline.sort_by_key(|(t, _)| *t);
    let can_retry = matches!(j.status, JobStatus::Failed | JobStatus::Cancelled);
    let can_cancel = matches!(j.status, JobStatus::Queued | JobStatus::Failed);
    let payload = serde_json::to_string_pretty(&j.payload_json).unwrap_or_default();
    let body = html! {
        dl.fields {
            dt { "id" } dd { code { (j.id) } }
            dt { "status" } dd { (status_badge(j.status.as_str())) }
            dt { "type" } dd { (j.job_type) }
            dt { "run" } dd { a href={ "/runs/" (j.run_id) } { code { (run_short) } } }
            dt { "attempts" } dd { (j.attempts) " of " (j.max_attempts) }
            @if let Some(at) = j.retry_at { dt { "not before" } dd { (when(ctx, at)) } }
            @if let Some(by) = &j.locked_by { dt { "running on" } dd { code { (by) } " since " (opt_when(ctx, j.locked_at)) } }
            @if j.status != JobStatus::Succeeded { @if let Some(e) = &j.last_error { dt { "last error" } dd { pre.error { (e) } } } }
            dt { "created" } dd { (when(ctx, j.created_at)) }
            dt { "updated" } dd { (when(ctx, j.updated_at)) }
        }
        @if ctx.can_act() && (can_retry || can_cancel) {
            p.actions {
                @if can_retry { (button(&format!("/jobs/{}/retry", j.id), "Retry", "primary", &[])) }
                " "
                @if can_cancel { (button(&format!("/jobs/{}/cancel", j.id), "Cancel", "danger", &[])) }
            }
        } @else if can_retry || can_cancel {
            p.note {
                @if ctx.app.gate.read_only() { "This dashboard is read-only: " code { "bundleq job retry" } " or " code { "cancel" } " act on the job." }
                @else { "To retry or cancel it here, open the URL the server printed at start (it holds this home's token)." }
            }
        }
        h2 { "Attempts" }
        @if timeline.is_empty() {
            p.empty { "Not run yet." }
        } @else {
            ol.timeline { @for (_, item) in &timeline { (item) } }
        }
        h2 { "Payload" }
        pre.json { (payload) }
    };
    Ok(live_page(
        ctx,
        &format!("Job {}", &j.id.to_string()[..13]),
        body,
    ))
}

fn job_act(ctx: &Ctx<'_>, id: &str, action: &str) -> PageResult {
    let app = ctx.app;
    let job = app.with_store(|store| {
        let id = store.resolve(IdKind::Job, app.tenant, id)?;
        let action = if action == "retry" {
            JobAction::Retry { at: None }
        } else {
            JobAction::Cancel
        };
        act_on_job(&app.home, store, app.tenant, id, action)
    })?;
    overview::invalidate(app);
    Ok(Response::see_other(&format!("/jobs/{}", job.id)))
}

/// The bulk action a request names.
fn bulk_action(req: &Request) -> Result<&'static str, Response> {
    match req.query("action") {
        Some("retry") => Ok("retry"),
        Some("cancel") => Ok("cancel"),
        _ => Err(Response::text(400, "action must be retry or cancel")),
    }
}

/// Which jobs an action applies to: retry takes failed and cancelled ones,
/// cancel queued and failed ones; a filter naming another status matches
/// none.
fn bulk_statuses(action: &str) -> &'static [JobStatus] {
    if action == "retry" {
        &[JobStatus::Failed, JobStatus::Cancelled]
    } else {
        &[JobStatus::Queued, JobStatus::Failed]
    }
}

/// The jobs a bulk action would act on (at most [`BULK_CAP`]), and how many
/// match in all.
fn bulk_targets(
    app: &App,
    store: &mut Store,
    req: &Request,
    action: &str,
) -> Result<Result<(Vec<Job>, u64), Response>, Error> {
    let base = match job_filter(app, store, req, BULK_CAP) {
        Ok(f) => f,
        Err(r) => return Ok(Err(r)),
    };
    let mut jobs = Vec::new();
    let mut total = 0;
    for status in bulk_statuses(action) {
        if base.status.is_some_and(|s| s != *status) {
            continue;
        }
        let filter = JobFilter {
            status: Some(*status),
            before: None,
            limit: Some(BULK_CAP),
            ..base.clone()
        };
        total += store.count_jobs(app.tenant, &filter)?;
        jobs.extend(store.jobs(app.tenant, &filter)?);
    }
    jobs.sort_by_key(|j| std::cmp::Reverse((j.created_at, j.id)));
    jobs.truncate(BULK_CAP as usize);
    Ok(Ok((jobs, total)))
}

fn bulk_confirm(ctx: &Ctx<'_>, req: &Request) -> PageResult {
    let action = bulk_action(req)?;
    if !ctx.can_act() {
        return Err(Response::text(
            403,
            "acting on jobs needs the token (open the URL serve printed)",
        )
        .into());
    }
    let (jobs, total) = ctx
        .app
        .with_store(|store| bulk_targets(ctx.app, store, req, action))??;
    let query = filter_query(req);
    let mut hidden: Vec<(&str, String)> = Vec::new();
    for k in ["status", "type", "run", "q"] {
        if let Some(v) = req.query(k) {
            hidden.push((k, v.to_owned()));
        }
    }
    hidden.push(("action", action.to_owned()));
    hidden.push(("expect", jobs.len().to_string()));
    let which = if action == "retry" {
        "failed or cancelled"
    } else {
        "queued or failed"
    };
    let body = html! {
        @if jobs.is_empty() {
            p { "No " (which) " job matches this filter: nothing to " (action) "." }
        } @else {
            p.confirm {
                (action) " " strong { (jobs.len()) } " " (which) " job(s)"
                @if total > jobs.len() as u64 { " — the newest " (BULK_CAP) " of " (total) " that match" }
                "?"
            }
            (button("/jobs/bulk", &format!("{} {} job(s)", if action == "retry" { "Retry" } else { "Cancel" }, jobs.len()), if action == "retry" { "primary" } else { "danger" }, &hidden))
        }
        p { a href={ "/jobs?" (query) } { "« back to the jobs" } }
    };
    Ok(page(
        ctx,
        200,
        &format!(
            "{} all matching",
            if action == "retry" { "Retry" } else { "Cancel" }
        ),
        body,
    ))
}

/// Decodes a urlencoded form body.
fn form(req: &mut Request) -> Result<Vec<(String, String)>, Response> {
    let body = req.body(64 * 1024)?;
    Ok(form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

fn bulk_act(ctx: &Ctx<'_>, req: &mut Request) -> PageResult {
    // The form's fields become the filter, as if they were the query.
    let fields = form(req)?;
    req.query = fields;
    let action = bulk_action(req)?;
    // Never more than the confirmation page counted.
    let confirmed = req
        .query("expect")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let app = ctx.app;
    let (done, refused) = app.with_store(|store| {
        let (mut jobs, _) = match bulk_targets(app, store, req, action)? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        jobs.truncate(confirmed);
        let mut done = 0u32;
        let mut refused: Vec<String> = Vec::new();
        for j in &jobs {
            let what = if action == "retry" {
                JobAction::Retry { at: None }
            } else {
                JobAction::Cancel
            };
            match act_on_job(&app.home, store, app.tenant, j.id, what) {
                Ok(_) => done += 1,
                Err(e @ (Error::InvalidTransition { .. } | Error::InvalidArgument { .. })) => {
                    refused.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Ok((done, refused)))
    })??;
    overview::invalidate(app);
    let query = filter_query(req);
    let body = html! {
        p { (if action == "retry" { "Retried " } else { "Cancelled " }) strong { (done) } " job(s)." }
        @if !refused.is_empty() {
            p { (refused.len()) " refused (they changed meanwhile):" }
            ul { @for r in refused.iter().take(20) { li { (r) } } }
        }
        p { a href={ "/jobs?" (query) } { "« back to the jobs" } }
    };
    Ok(page(ctx, 200, "Done", body))
}

fn pause_act(ctx: &Ctx<'_>, job_type: &str, action: &str) -> PageResult {
    let app = ctx.app;
    let job_type = (job_type != "*").then_some(job_type);
    if let Some(t) = job_type
        && !bundleq::bundle::valid_job_type(t)
    {
        return Err(Response::text(400, &format!("{t:?} is not a job type")).into());
    }
    app.with_store(|store| {
        if action == "pause" {
            store.pause(job_type, Timestamp::now()).map(|_| ())
        } else {
            store.resume(job_type).map(|_| ())
        }
    })?;
    log::info!(
        "http: {} {}",
        if action == "pause" {
            "paused"
        } else {
            "resumed"
        },
        job_type.unwrap_or("every job type")
    );
    overview::invalidate(app);
    Ok(Response::see_other("/"))
}

// ----- runs -----------------------------------------------------------

fn upload_form(ctx: &Ctx<'_>) -> Markup {
    html! {
        @if ctx.can_act() {
            form.upload method="post" action="/upload" enctype="multipart/form-data" {
                label { "Upload a bundle (a .json file, or a NAME.bundle folder as .tar) "
                    input type="file" name="bundle" accept=".json,.tar,application/json,application/x-tar" required; }
                button type="submit" class="primary" { "Upload" }
            }
        } @else if ctx.app.gate.read_only() {
            p.note { "This dashboard is read-only: bundles are uploaded elsewhere." }
        } @else {
            p.note { "To upload bundles (and retry, cancel or pause), open the URL the server printed at start: it holds this home's token." }
        }
    }
}

fn runs_page(ctx: &Ctx<'_>, req: &Request) -> PageResult {
    let app = ctx.app;
    let (runs, ids) = app.with_store(|store| {
        let runs = match req.query("before") {
            None => store.runs(app.tenant, Some(PAGE))?,
            Some(r) => {
                let id = store.resolve(IdKind::Run, app.tenant, r)?;
                let run = store.run(app.tenant, id)?;
                store.runs_before(
                    app.tenant,
                    (run.summary.created_at, run.summary.id),
                    Some(PAGE),
                )?
            }
        };
        let ids = shorts(store, IdKind::Run, app.tenant, runs.iter().map(|r| r.id))?;
        Ok((runs, ids))
    })?;
    let next = runs
        .last()
        .filter(|_| runs.len() as u32 >= PAGE)
        .map(|r| format!("/runs?before={}", r.id));
    let body = html! {
        (upload_form(ctx))
        @if runs.is_empty() {
            p.empty { "No runs yet." }
        } @else {
            table {
                thead { tr { th { "run" } th { "title" } th { "accepted" } th { "origin" } th { "bundle sha256" } } }
                tbody {
                    @for r in &runs {
                        tr {
                            td { a href={ "/runs/" (r.id) } { code { (short(&ids, r.id)) } } }
                            td { a href={ "/runs/" (r.id) } { (r.title) } }
                            td { (when(ctx, r.created_at)) }
                            td { (r.origin) @if let Some(n) = &r.origin_name { " · " (n) } }
                            td { code { (r.bundle_sha256[..12.min(r.bundle_sha256.len())]) } }
                        }
                    }
                }
            }
        }
        p.pager {
            @if req.query("before").is_some() { a href="/runs" { "« newest" } " " }
            @if let Some(n) = &next { a href=(n) { "older »" } }
        }
    };
    Ok(live_page(ctx, "Runs", body))
}

/// Most bytes of a bundle's JSON shown on its page.
const SHOWN_BUNDLE: usize = 256 * 1024;

fn run_page(ctx: &Ctx<'_>, id: &str) -> PageResult {
    let app = ctx.app;
    let (view, job_ids) = app.with_store(|store| {
        let id = store.resolve(IdKind::Run, app.tenant, id)?;
        let view = show::run_view(&app.home, store, app.tenant, id)?;
        let ids = shorts(
            store,
            IdKind::Job,
            app.tenant,
            view.jobs.iter().map(|j| j.id),
        )?;
        Ok((view, ids))
    })?;
    let s = &view.run.summary;
    let mut bundle = serde_json::to_string_pretty(&view.run.bundle_json).unwrap_or_default();
    let cut = bundle.len() > SHOWN_BUNDLE;
    if cut {
        let mut end = SHOWN_BUNDLE;
        while !bundle.is_char_boundary(end) {
            end -= 1;
        }
        bundle.truncate(end);
    }
    let body = html! {
        p.subtitle { (s.title) }
        dl.fields {
            dt { "id" } dd { code { (s.id) } }
            dt { "bundle sha256" } dd { code { (s.bundle_sha256) } }
            dt { "origin" } dd { (s.origin) @if let Some(n) = &s.origin_name { " · " (n) } }
            dt { "accepted" } dd { (when(ctx, s.created_at)) }
            dt { "verified" } dd {
                @match view.last_full_verify {
                    None => { "never (" code { "bundleq verify" } ")" }
                    Some(v) => { (when(ctx, v.at)) " (" (v.problems) " problem(s) then)" }
                }
            }
        }
        h2 { "Sources" }
        @if view.sources.is_empty() { p.empty { "None." } } @else {
            table.sources {
                thead { tr { th.num { "#" } th { "title / uri" } th { "sha256" } th.num { "bytes" } th { "stored" } th { "checked" } } }
                tbody {
                    @for p in &view.sources {
                        tr {
                            td.num { (p.idx) }
                            td { @if let Some(t) = &p.title { (t) br; } span.uri { (p.uri) } }
                            td { code title=(p.sha256) { (p.sha256[..12.min(p.sha256.len())]) } }
                            td.num { @if let Some(n) = p.size { (n) } @else { "-" } }
                            td { (p.stored) }
                            td {
                                @match (p.checked_at, p.check_ok) {
                                    (Some(at), Some(true)) => { "ok " (when(ctx, at)) }
                                    (Some(at), _) => { span.error { "CORRUPT " } (when(ctx, at)) }
                                    _ => { "never" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !view.findings.is_empty() {
            h2 { "Findings" }
            ol.findings {
                @for f in &view.findings {
                    li {
                        (f["text"].as_str().unwrap_or_default())
                        @if let Some(refs) = f["source_refs"].as_array() {
                            @if !refs.is_empty() {
                                " " span.refs { "(sources " (refs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")) ")" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Pipeline" }
        table {
            thead { tr { th { "step" } th { "after" } th { "status" } th { "job" } } }
            tbody {
                @for st in &view.pipeline {
                    tr {
                        td { (st.step) }
                        td { (st.after.as_deref().unwrap_or("-")) }
                        td { (status_badge(&st.status)) }
                        td { @if let Some(j) = st.job_id { a href={ "/jobs/" (j) } { code { (short(&job_ids, j)) } } } @else { "-" } }
                    }
                }
            }
        }
        h2 { "Jobs" }
        table {
            thead { tr { th { "job" } th { "type" } th { "status" } th.num { "attempts" } th { "note" } } }
            tbody {
                @for j in &view.jobs {
                    tr {
                        td { a href={ "/jobs/" (j.id) } { code { (short(&job_ids, j.id)) } } }
                        td { (j.job_type) }
                        td { (status_badge(j.status.as_str())) }
                        td.num { (j.attempts) "/" (j.max_attempts) }
                        td.note { (job_note(ctx, j)) }
                    }
                }
            }
        }
        h2 { "Bundle" }
        pre.json { (bundle) }
        @if cut { p.note { "Shown up to " (SHOWN_BUNDLE / 1024) " KiB; " code { "bundleq export" } " writes it whole." } }
    };
    Ok(live_page(
        ctx,
        &format!("Run {}", &s.id.to_string()[..13]),
        body,
    ))
}

fn upload_act(ctx: &Ctx<'_>, req: &mut Request) -> PageResult {
    let app = ctx.app;
    let report = app.with_store(|store| {
        Ok(upload::accept_upload(
            &app.home, store, app.tenant, req, false,
        ))
    })??;
    overview::invalidate(app);
    if let Some(run) = api::run_of(&report.verdict) {
        return Ok(Response::see_other(&format!("/runs/{run}")));
    }
    let Verdict::Invalid { errors } = &report.verdict else {
        return Ok(Response::see_other("/runs"));
    };
    let body = html! {
        p { code { (report.path.display().to_string()) } " is not a valid bundle; nothing was recorded:" }
        table.errors {
            thead { tr { th { "path" } th { "message" } th { "input" } } }
            tbody {
                @for e in errors.errors() {
                    tr { td { code { (e.path) } } td { (e.message) } td { @if let Some(i) = &e.input { code { (i) } } } }
                }
            }
        }
        p { a href="/runs" { "« back" } }
    };
    Ok(page(ctx, 422, "Upload refused", body))
}

// ----- search and inbox -------------------------------------------------

/// A snippet with its `[`…`]` hits as `<mark>`, everything else escaped.
fn snippet(text: &str) -> Markup {
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        parts.push((false, &rest[..open]));
        parts.push((true, &rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    parts.push((false, rest));
    html! {
        @for (hit, part) in parts {
            @if hit { mark { (part) } } @else { (part) }
        }
    }
}

fn search_page(ctx: &Ctx<'_>, req: &Request) -> PageResult {
    let app = ctx.app;
    let q = req.query("q").unwrap_or("");
    let found = if q.trim().is_empty() {
        None
    } else {
        Some(app.with_store(|store| {
            let (hits, total) = store.search(app.tenant, q, None, 50)?;
            let ids = shorts(
                store,
                IdKind::Run,
                app.tenant,
                hits.iter().map(|h| h.run_id),
            )?;
            Ok((hits, total, ids))
        })?)
    };
    let body = html! {
        form.filters method="get" action="/search" {
            input type="search" name="q" value=(q) placeholder="words, \"a phrase\", glac*, OR, NOT" size="40" autofocus;
            button type="submit" { "Search" }
        }
        @if let Some((hits, total, ids)) = &found {
            p.note { (total) " hit(s)" @if *total > hits.len() as u64 { ", the best " (hits.len()) " shown" } "." }
            ol.hits {
                @for h in hits {
                    li {
                        a href={ "/runs/" (h.run_id) } { code { (short(ids, h.run_id)) } " " (h.run_title) }
                        " · source " (h.idx) ": " (h.title.as_deref().unwrap_or(&h.uri))
                        p.snippet { (snippet(&h.snippet)) }
                    }
                }
            }
        }
    };
    Ok(page(ctx, 200, "Search", body))
}

fn inbox_page(ctx: &Ctx<'_>) -> PageResult {
    let entries = bundleq::inbox::recent_entries(&ctx.app.home, 7, 200);
    let folders = bundleq::inbox::folder_counts(
        &ctx.app.home,
        &bundleq::inbox::inbox_dir(&ctx.app.home, None),
        ctx.app.tenant,
    )?;
    let body = html! {
        p {
            (folders.inbox_backlog) " waiting in the inbox · " (folders.accepted) " accepted · "
            (folders.duplicates) " duplicates · " (folders.rejected) " rejected."
        }
        (upload_form(ctx))
        h2 { "Recently decided (last 7 days)" }
        @if entries.is_empty() { p.empty { "Nothing yet." } } @else {
            table.inbox {
                thead { tr { th { "when" } th { "file" } th { "verdict" } th { "errors" } } }
                tbody {
                    @for e in &entries {
                        tr class=(e.kind) {
                            td { (when(ctx, e.at)) }
                            td { code { (e.name) } }
                            td { (status_badge(e.kind)) }
                            td {
                                @if !e.errors.is_empty() {
                                    ul.errors {
                                        @for err in &e.errors {
                                            li { @if !err.path.is_empty() { code { (err.path) } ": " } (err.message) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(live_page(ctx, "Inbox", body))
}

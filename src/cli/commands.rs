//! One function per command: open the home, call the library, render.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use bundleq::accept::{self, AcceptReport, Origin, Verdict};
use bundleq::bundle::{Follow, Limits};
use bundleq::handler::{GuardProgram, Handlers};
use bundleq::inbox::{self, Inbox};
use bundleq::presence::Presence;
use bundleq::store::{JobFilter, PruneFilter};
use bundleq::worker::{PoolConfig, PoolControl, run_pool};
use bundleq::{Config, Error, Home, JobStatus, Result, Store, SystemClock, Timestamp};

use super::output::{self, cut, opt};
use super::{
    Cli, Command, DbCommand, EXIT_DATA, EXIT_ERROR, EXIT_JOBS_FAILED, EXIT_OK, JobCommand,
    JobsArgs, RunCommand, ServeArgs, TenantsCommand,
};

/// Runs the command and returns its exit code; errors become exit 1.
pub fn dispatch(cli: &Cli) -> Result<u8> {
    let home_dir = home_dir(cli)?;
    if let Command::Init { inbox } = &cli.command {
        return init(cli, &home_dir, inbox.as_deref());
    }
    if let Command::Validate { paths } = &cli.command {
        return validate(cli, &home_dir, paths);
    }
    if let Command::Bench(args) = &cli.command {
        return super::bench::bench(cli.global.json, args);
    }
    let mut home = Home::open(&home_dir)?;
    if let Command::Db(DbCommand::Check) = &cli.command {
        return db_check(cli.global.json, &home);
    }
    if let Command::Serve(args) = &cli.command {
        let mut config = home.config().clone();
        serve_overrides(&mut config, args)?;
        home.set_config(config);
    }
    let mut store = if cli.command.writes() {
        open_for_writing(&home)?
    } else {
        open_for_reading(&home)?
    };
    let ctx = Ctx {
        json: cli.global.json,
        tenant: tenant_of(cli, &home, &mut store)?,
    };
    match &cli.command {
        Command::Init { .. } | Command::Validate { .. } | Command::Bench(_) => Ok(EXIT_OK),
        Command::Db(DbCommand::Check) => Ok(EXIT_OK),
        Command::Submit { paths } => {
            let results = accept::accept_many(
                &mut store,
                &home,
                paths,
                ctx.tenant,
                Origin::Submit,
                Timestamp::now(),
            );
            Ok(report_verdicts(ctx.json, &results))
        }
        Command::Db(DbCommand::Current) => db_current(&ctx, &store),
        Command::Db(DbCommand::Migrate) => {
            let v = store.migrate_to_head()?;
            if ctx.json {
                output::json(&v);
            } else {
                output::line(format!("migrated to V{}__{} (head)", v.version, v.name));
            }
            Ok(EXIT_OK)
        }
        Command::Serve(args) => serve(&ctx, &home, store, args),
        Command::Ingest { inbox } => ingest(&ctx, &home, &mut store, inbox.as_deref()),
        Command::Tenants { command } => tenants(&ctx, &mut store, command.as_ref()),
        Command::Search { query, run, limit } => {
            search(&ctx, &mut store, &query.join(" "), *run, *limit)
        }
        Command::Jobs(args) => jobs(&ctx, &mut store, args),
        Command::Job(cmd) => job(&ctx, &mut store, cmd),
        Command::Runs { limit } => runs(&ctx, &mut store, *limit),
        Command::Run(RunCommand::Show { id }) => run_show(&ctx, &mut store, *id),
        Command::Status => status(&ctx, &home, &mut store),
        Command::Prune {
            finished_before,
            status,
        } => {
            let filter = PruneFilter {
                finished_before: Timestamp::now().minus(*finished_before),
                statuses: status.clone(),
            };
            let n = store.prune(ctx.tenant, &filter)?;
            if ctx.json {
                output::json(&serde_json::json!({ "pruned": n }));
            } else {
                output::line(format!("pruned {n} finished job(s)"));
            }
            Ok(EXIT_OK)
        }
    }
}

struct Ctx {
    json: bool,
    tenant: Uuid,
}

/// True when this user cannot write the home's folder or database.
fn read_only_home(home: &Home) -> bool {
    let w = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_err();
    w(home.root()) || w(&home.db_path())
}

/// True when opening the home failed because this user may not write it
/// (not because the database is busy, gone or damaged).
fn cannot_write(home: &Home, e: &Error) -> bool {
    !matches!(
        e,
        Error::Busy { .. } | Error::DatabaseGone { .. } | Error::Corrupt { .. }
    ) && (read_only_home(home) || matches!(e, Error::ReadOnly { .. }))
}

/// The database for a command that writes: a home this user cannot write
/// is refused as read-only, whatever SQLite's words for it would be.
fn open_for_writing(home: &Home) -> Result<Store> {
    home.store().map_err(|e| {
        if cannot_write(home, &e) {
            Error::ReadOnly {
                action: "open the home for writing",
                path: home.db_path(),
            }
        } else {
            e
        }
    })
}

/// The database for a command that only reads: migrated and used as usual
/// when this user may write it, else opened read-only (where SQLite can).
fn open_for_reading(home: &Home) -> Result<Store> {
    match home.store() {
        Ok(s) => Ok(s),
        Err(e) if cannot_write(home, &e) => home.store_read_only().map_err(|ro| match ro {
            Error::InvalidArgument { .. } | Error::Corrupt { .. } => ro,
            _ => Error::ReadOnly {
                action: "open the home",
                path: home.db_path(),
            },
        }),
        Err(e) => Err(e),
    }
}

/// `--tenant` (a name or an id the home knows), or the home's default.
fn tenant_of(cli: &Cli, home: &Home, store: &mut Store) -> Result<Uuid> {
    match &cli.global.tenant {
        Some(t) => Ok(store.tenant(t)?.id),
        None => home.default_tenant(store),
    }
}

fn ingest(ctx: &Ctx, home: &Home, store: &mut Store, dir: Option<&Path>) -> Result<u8> {
    let dir = inbox::inbox_dir(home, dir);
    inbox::check_inbox(home, &dir)?;
    let presence = Presence::register(&home.run_dir())?;
    let mut inbox = Inbox::new(
        home,
        dir,
        ctx.tenant,
        home.config().inbox.clone(),
        &presence,
    );
    let summary = inbox.scan(store, &HashSet::new())?;
    if inbox.holds_nothing() {
        drop(inbox);
        presence.leave();
    }
    if ctx.json {
        output::json(&summary);
    } else {
        output::line(format!(
            "{} accepted, {} duplicates, {} rejected, {} waiting",
            summary.accepted, summary.duplicates, summary.rejected, summary.waiting
        ));
    }
    match &summary.failure {
        Some(failure) => {
            output::error_line(failure);
            Ok(EXIT_ERROR)
        }
        None => Ok(EXIT_OK),
    }
}

fn tenants(ctx: &Ctx, store: &mut Store, command: Option<&TenantsCommand>) -> Result<u8> {
    match command {
        None | Some(TenantsCommand::List) => {
            let all = store.tenants()?;
            if ctx.json {
                output::json(&all);
                return Ok(EXIT_OK);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|t| vec![t.name.clone(), t.id.to_string(), t.created_at.to_string()])
                .collect();
            output::table(&["NAME", "ID", "CREATED"], &rows);
        }
        Some(TenantsCommand::Create { name, id }) => {
            let t = store.create_tenant(name, *id, Timestamp::now())?;
            if ctx.json {
                output::json(&t);
            } else {
                output::line(format!("created tenant {} ({})", t.name, t.id));
            }
        }
    }
    Ok(EXIT_OK)
}

fn db_check(json: bool, home: &Home) -> Result<u8> {
    let path = home.db_path();
    let problems = match Store::open_unchecked(&path, home.config().store_options()) {
        Ok(store) => store.integrity_check()?,
        Err(e @ Error::Corrupt { .. }) => vec![e.to_string()],
        Err(e) => return Err(e),
    };
    let ok = problems == ["ok"];
    if json {
        output::json(
            &serde_json::json!({ "database": path, "ok": ok, "problems": if ok { Vec::new() } else { problems.clone() } }),
        );
    } else if ok {
        output::line(format!(
            "ok: {} passed SQLite's integrity check",
            path.display()
        ));
    } else {
        output::line(format!("damaged: {}", path.display()));
        for p in &problems {
            output::line(p);
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_ERROR })
}

fn home_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(h) = &cli.global.home {
        return Ok(h.clone());
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    data.map(|d| d.join("bundleq"))
        .ok_or_else(|| Error::InvalidArgument {
            what: "home",
            message: "no --home given and neither BUNDLEQ_HOME nor HOME is set".to_owned(),
        })
}

fn init(cli: &Cli, dir: &Path, inbox: Option<&Path>) -> Result<u8> {
    let (home, report) = Home::init(dir)?;
    let store = home.store()?;
    let version = store.current_version()?;
    let adopted = inbox.map(|d| inbox::adopt_inbox(&home, d)).transpose()?;
    if cli.global.json {
        output::json(&serde_json::json!({
            "home": report.home,
            "created": report.created,
            "default_tenant": report.default_tenant,
            "schema": version,
            "inbox": adopted,
        }));
    } else {
        let verb = if report.created {
            "created"
        } else {
            "already initialised:"
        };
        output::line(format!("{verb} home {}", report.home.display()));
        output::line(format!("default tenant {}", report.default_tenant));
        if let Some(d) = adopted {
            output::line(format!(
                "inbox {} adopted: use `--inbox {}` with serve and ingest, or set `path` in [inbox] of bundleq.toml",
                d.display(),
                d.display()
            ));
        }
    }
    Ok(EXIT_OK)
}

fn db_current(ctx: &Ctx, store: &Store) -> Result<u8> {
    let v = store.current_version()?;
    if ctx.json {
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

fn jobs(ctx: &Ctx, store: &mut Store, args: &JobsArgs) -> Result<u8> {
    let filter = JobFilter {
        status: args.status,
        job_type: args.job_type.clone(),
        run_id: args.run,
        limit: Some(args.limit),
    };
    let jobs = store.jobs(ctx.tenant, &filter)?;
    if ctx.json {
        output::json(&jobs);
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.status.to_string(),
                format!("{}/{}", j.attempts, j.max_attempts),
                j.job_type.clone(),
                j.run_id.to_string(),
                j.created_at.to_string(),
                opt(&j.retry_at),
                j.last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| cut(e, 60)),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "STATUS",
            "ATTEMPTS",
            "TYPE",
            "RUN",
            "CREATED",
            "RETRY AT",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct JobView<'a> {
    #[serde(flatten)]
    job: &'a bundleq::store::Job,
    attempt_history: &'a [bundleq::store::Attempt],
}

fn show_job(ctx: &Ctx, store: &mut Store, id: Uuid) -> Result<()> {
    let job = store.job(ctx.tenant, id)?;
    let history = store.attempts(ctx.tenant, id)?;
    if ctx.json {
        output::json(&JobView {
            job: &job,
            attempt_history: &history,
        });
        return Ok(());
    }
    output::fields(&[
        ("id", job.id.to_string()),
        ("tenant_id", job.tenant_id.to_string()),
        ("run_id", job.run_id.to_string()),
        ("job_type", job.job_type.clone()),
        ("status", job.status.to_string()),
        ("attempts", format!("{}/{}", job.attempts, job.max_attempts)),
        ("retry_at", opt(&job.retry_at)),
        ("locked_at", opt(&job.locked_at)),
        ("locked_by", opt(&job.locked_by)),
        ("last_error", opt(&job.last_error)),
        ("payload_json", job.payload_json.to_string()),
        ("created_at", job.created_at.to_string()),
        ("updated_at", job.updated_at.to_string()),
    ]);
    output::line("");
    output::line("attempt history:");
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.worker.clone(),
                a.started_at.to_string(),
                opt(&a.finished_at),
                a.outcome.clone().unwrap_or_else(|| "running".to_owned()),
                a.error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| cut(e, 60)),
            ]
        })
        .collect();
    output::table(
        &[
            "ATTEMPT", "WORKER", "STARTED", "FINISHED", "OUTCOME", "ERROR",
        ],
        &rows,
    );
    Ok(())
}

fn job(ctx: &Ctx, store: &mut Store, cmd: &JobCommand) -> Result<u8> {
    match cmd {
        JobCommand::Show { id } => show_job(ctx, store, *id)?,
        JobCommand::Retry { id } | JobCommand::Cancel { id } => {
            let job = if matches!(cmd, JobCommand::Retry { .. }) {
                store.retry(ctx.tenant, *id, Timestamp::now())?
            } else {
                store.cancel(ctx.tenant, *id, Timestamp::now())?
            };
            if ctx.json {
                output::json(&job);
            } else {
                output::line(format!("job {} is now {}", job.id, job.status));
            }
        }
    }
    Ok(EXIT_OK)
}

fn runs(ctx: &Ctx, store: &mut Store, limit: u32) -> Result<u8> {
    let runs = store.runs(ctx.tenant, Some(limit))?;
    if ctx.json {
        output::json(&runs);
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.created_at.to_string(),
                r.origin.clone(),
                r.bundle_sha256[..12].to_owned(),
                cut(&r.title, 50),
            ]
        })
        .collect();
    output::table(&["RUN", "ACCEPTED", "ORIGIN", "SHA256", "TITLE"], &rows);
    Ok(EXIT_OK)
}

fn run_show(ctx: &Ctx, store: &mut Store, id: Uuid) -> Result<u8> {
    let run = store.run(ctx.tenant, id)?;
    let jobs = store.jobs(
        ctx.tenant,
        &JobFilter {
            run_id: Some(id),
            ..JobFilter::default()
        },
    )?;
    if ctx.json {
        output::json(&serde_json::json!({ "run": run, "jobs": jobs }));
        return Ok(EXIT_OK);
    }
    let s = &run.summary;
    output::fields(&[
        ("id", s.id.to_string()),
        ("tenant_id", s.tenant_id.to_string()),
        ("title", s.title.clone()),
        ("bundle_sha256", s.bundle_sha256.clone()),
        (
            "origin",
            format!("{} {}", s.origin, s.origin_name.as_deref().unwrap_or("")),
        ),
        ("created_at", s.created_at.to_string()),
    ]);
    output::line("");
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.job_type.clone(),
                j.status.to_string(),
                format!("{}/{}", j.attempts, j.max_attempts),
            ]
        })
        .collect();
    output::table(&["JOB", "TYPE", "STATUS", "ATTEMPTS"], &rows);
    Ok(EXIT_OK)
}

fn status(ctx: &Ctx, home: &Home, store: &mut Store) -> Result<u8> {
    let stats = store.stats(ctx.tenant, Timestamp::now())?;
    let folders = inbox::folder_counts(home, &inbox::inbox_dir(home, None), ctx.tenant)?;
    if ctx.json {
        output::json(&serde_json::json!({
            "counts": stats.counts,
            "oldest_queued": stats.oldest_queued,
            "next_retry": stats.next_retry,
            "folders": folders,
        }));
        return Ok(EXIT_OK);
    }
    let mut pairs: Vec<(&str, String)> = JobStatus::ALL
        .iter()
        .map(|s| {
            (
                s.as_str(),
                stats.counts.get(s).copied().unwrap_or(0).to_string(),
            )
        })
        .collect();
    pairs.push(("oldest queued", opt(&stats.oldest_queued)));
    pairs.push(("next retry", opt(&stats.next_retry)));
    let f = [
        folders.inbox_backlog,
        folders.accepted,
        folders.duplicates,
        folders.rejected,
    ]
    .map(|n| n.to_string());
    let [backlog, accepted, duplicates, rejected] = f;
    pairs.push(("inbox backlog", backlog));
    pairs.push(("accepted files", accepted));
    pairs.push(("duplicate files", duplicates));
    pairs.push(("rejected files", rejected));
    output::fields(&pairs);
    Ok(EXIT_OK)
}

fn validate(cli: &Cli, home_dir: &Path, paths: &[PathBuf]) -> Result<u8> {
    // Inside a home, its limits and tenant apply; elsewhere the defaults.
    let (limits, tenant) = match Home::open(home_dir) {
        Ok(home) => {
            let tenant = tenant_of(cli, &home, &mut open_for_reading(&home)?)?;
            (home.config().limits.clone(), Some(tenant))
        }
        Err(Error::NotAHome { .. }) => {
            let tenant = match &cli.global.tenant {
                None => None,
                Some(t) => Some(Uuid::try_parse(t).map_err(|_| Error::InvalidArgument {
                    what: "tenant",
                    message: format!("{t:?}: without a home, --tenant must be a UUID"),
                })?),
            };
            (Limits::default(), tenant)
        }
        Err(e) => return Err(e),
    };
    let results: Vec<Result<AcceptReport>> = paths
        .iter()
        .map(|p| accept::check(p, &limits, tenant, Follow::Link))
        .collect();
    Ok(report_verdicts(cli.global.json, &results))
}

/// Prints one line per bundle (invalid ones with their errors, on stderr)
/// and returns the exit code: 1 if any path could not be read, else 65 if
/// any bundle is invalid, else 0.
fn report_verdicts(json: bool, results: &[Result<AcceptReport>]) -> u8 {
    let mut code = EXIT_OK;
    let mut items = Vec::new();
    for r in results {
        match r {
            Ok(report) => {
                if matches!(report.verdict, Verdict::Invalid { .. }) && code == EXIT_OK {
                    code = EXIT_DATA;
                }
                if json {
                    items.push(serde_json::to_value(report).unwrap_or_default());
                } else {
                    print_verdict(report);
                }
            }
            Err(e) => {
                code = EXIT_ERROR;
                if json {
                    items.push(serde_json::json!({ "verdict": "error", "error": e.to_string() }));
                } else {
                    output::error_line(e);
                }
            }
        }
    }
    if json {
        output::json(&items);
    }
    code
}

fn print_verdict(r: &AcceptReport) {
    let path = r.path.display();
    match &r.verdict {
        Verdict::Accepted { run_id, job_id } => {
            output::line(format!("accepted   {path}  run {run_id}  job {job_id}"));
        }
        Verdict::Duplicate { run_id } | Verdict::Recovered { run_id } => {
            output::line(format!(
                "duplicate  {path}  already accepted as run {run_id}"
            ));
        }
        Verdict::Valid { run_id } => output::line(format!("valid      {path}  run {run_id}")),
        Verdict::Invalid { errors } => {
            output::error_text(&format!("invalid    {path}: {errors}"));
        }
    }
}

fn serve_overrides(config: &mut Config, args: &ServeArgs) -> Result<()> {
    if let Some(n) = args.workers {
        config.workers.count = usize::from(n);
    }
    if let Some(d) = args.lock_timeout {
        config.queue.lock_timeout = d;
    }
    if let Some(d) = args.poll_interval {
        config.workers.poll_interval = d;
    }
    if let Some(d) = args.grace_period {
        config.workers.grace_period = d;
    }
    config.check(Path::new("the command line"))
}

fn serve(ctx: &Ctx, home: &Home, mut store: Store, args: &ServeArgs) -> Result<u8> {
    let once = args.once;
    Handlers::check_commands(home)?;
    let inbox_dir = inbox::inbox_dir(home, args.inbox.as_deref());
    if !args.no_inbox {
        inbox::check_inbox(home, &inbox_dir)?;
    }
    let presence = Arc::new(Presence::register(&home.run_dir())?);
    let control = PoolControl::new();
    super::signals::forward_to(control.clone())?;
    let mut config = PoolConfig::from_config(&home.config().workers);
    config.once = once;
    config.presence = Some(Arc::clone(&presence));
    let tenant = ctx.tenant;
    let mut inbox_clean = true;
    if once && !args.no_inbox {
        let mut inbox = Inbox::new(
            home,
            inbox_dir.clone(),
            tenant,
            home.config().inbox.clone(),
            &presence,
        );
        inbox.scan(&mut store, &HashSet::new())?;
        inbox_clean = inbox.holds_nothing();
    }
    // The inbox thread writes through a connection that shares the pool's
    // write lock.
    let (quit_tx, quit_rx) = crossbeam_channel::bounded::<()>(0);
    let watcher = if once || args.no_inbox {
        None
    } else {
        let mut inbox_store = store.reopen()?;
        let root = home.root().to_owned();
        let (home, control, presence) = (home.clone(), control.clone(), Arc::clone(&presence));
        let handle = std::thread::Builder::new()
            .name("bundleq-inbox".to_owned())
            .spawn(move || {
                let mut inbox = Inbox::new(
                    &home,
                    inbox_dir,
                    tenant,
                    home.config().inbox.clone(),
                    &presence,
                );
                let wake = || control.wake();
                let result = inbox.watch(&mut inbox_store, &quit_rx, &wake);
                if result.is_err() {
                    control.shutdown();
                }
                result.map(|()| inbox.holds_nothing())
            })
            .map_err(|source| Error::Io {
                action: "start the inbox thread",
                path: root,
                source,
            })?;
        Some(handle)
    };
    let stats = run_pool(
        store,
        Handlers::for_home(home, Some(GuardProgram::this_binary())),
        &config,
        std::sync::Arc::new(SystemClock),
        &control,
    );
    drop(quit_tx);
    drop(config);
    let watched = watcher.map(|handle| match handle.join() {
        Ok(r) => r,
        Err(_) => Err(Error::InvalidArgument {
            what: "inbox",
            message: "the inbox thread panicked".to_owned(),
        }),
    });
    // A fatal error of either thread is the answer; the pool's first.
    let stats = stats?;
    if let Some(w) = watched {
        inbox_clean &= w?;
    }
    // Leave the presence lock behind if anything may still be held under
    // this name, so the next serve can prove us gone and take it over.
    if inbox_clean
        && stats.unreleased == 0
        && let Ok(p) = Arc::try_unwrap(presence)
    {
        p.leave();
    }
    if once {
        if ctx.json {
            output::json(&stats);
        } else {
            output::line(format!(
                "{} succeeded, {} failed, {} waiting for a retry",
                stats.succeeded, stats.failed, stats.retried
            ));
        }
        if stats.failed > 0 || stats.retried > 0 {
            return Ok(EXIT_JOBS_FAILED);
        }
    }
    Ok(EXIT_OK)
}

fn search(ctx: &Ctx, store: &mut Store, query: &str, run: Option<Uuid>, limit: u32) -> Result<u8> {
    let hits = store.search(ctx.tenant, query, run, limit)?;
    if ctx.json {
        output::json(&hits);
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = hits
        .iter()
        .map(|h| vec![h.run_id.to_string(), cut(&h.uri, 40), cut(&h.snippet, 80)])
        .collect();
    output::table(&["RUN", "SOURCE", "SNIPPET"], &rows);
    Ok(EXIT_OK)
}

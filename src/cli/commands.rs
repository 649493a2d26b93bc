//! One function per command that changes something: open the home, call
//! the library, render. The read-only views live in `show`, `submit` and
//! `validate` in `submit`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use bundleq::bundle::Limits;
use bundleq::handler::{GuardProgram, Handlers};
use bundleq::inbox::{self, Inbox, ScanSummary};
use bundleq::presence::{self, Presence};
use bundleq::store::{BRIEF_PAGE_CACHE_KIB, IdKind};
use bundleq::timestamp::config_duration;
use bundleq::worker::{PoolConfig, PoolControl, log_transitions, run_pool};
use bundleq::{Config, Error, Home, JobStatus, Result, Store, SystemClock, Timestamp};

use super::output;
use super::render::{Ids, View};
use super::{
    Cli, Command, DbCommand, EXIT_ERROR, EXIT_JOBS_FAILED, EXIT_OK, JobCommand, PauseArgs,
    RunCommand, ServeArgs, TenantsCommand, WebArgs, show, submit, web,
};

/// Runs the command and returns its exit code; errors become exit 1.
pub fn dispatch(cli: &Cli) -> Result<u8> {
    let view = View::new(&cli.global);
    let json = cli.global.json;
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = super::command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "bundleq", &mut out);
            output::raw(&out);
            return Ok(EXIT_OK);
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(super::command())
                .render(&mut out)
                .map_err(|source| Error::Io {
                    action: "render",
                    path: "the manual page".into(),
                    source,
                })?;
            output::raw(&out);
            return Ok(EXIT_OK);
        }
        Command::Bench(args) => return super::bench::bench(json, args),
        _ => {}
    }
    let home_dir = home_dir(cli)?;
    if let Command::Init { inbox, database } = &cli.command {
        return init(json, &home_dir, inbox.as_deref(), database.as_deref());
    }
    if let Command::Validate(args) = &cli.command {
        // Inside a home, its limits and tenant apply; elsewhere the defaults.
        let (limits, tenant) = match Home::open(&home_dir) {
            Ok(home) => {
                let tenant = tenant_of(cli, &home, &mut open_for_reading(&home, true)?)?;
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
        return submit::validate(args, &limits, tenant, &view, json, cli.global.quiet);
    }
    let mut home = Home::open(&home_dir)?;
    if let Command::Db(DbCommand::Check) = &cli.command {
        return db_check(json, &home);
    }
    if let Command::Serve(args) = &cli.command {
        let mut config = home.config().clone();
        serve_overrides(&mut config, args)?;
        home.set_config(config);
    }
    let mut store = if cli.command.writes() {
        open_for_writing(&home)?
    } else {
        open_for_reading(&home, !matches!(cli.command, Command::Web { .. }))?
    };
    let tenant = tenant_of(cli, &home, &mut store)?;
    match &cli.command {
        Command::Init { .. }
        | Command::Validate(_)
        | Command::Bench(_)
        | Command::Completions { .. }
        | Command::Man
        | Command::Db(DbCommand::Check) => Ok(EXIT_OK),
        Command::Submit(args) => submit::submit(
            &mut store,
            &home,
            tenant,
            args,
            &view,
            json,
            cli.global.quiet,
        ),
        Command::Db(DbCommand::Current) => show::db_current(json, &mut store),
        Command::Db(DbCommand::Migrate) => {
            let v = store.migrate_to_head()?;
            if json {
                output::json(&v);
            } else {
                output::line(format!("migrated to V{}__{} (head)", v.version, v.name));
            }
            Ok(EXIT_OK)
        }
        Command::Serve(args) => serve(json, &home, store, tenant, args),
        Command::Web { http, web } => web_only(json, &home, &store, tenant, *http, web),
        Command::Pause(args) => pause(json, &view, &home, &mut store, args, true),
        Command::Resume(args) => pause(json, &view, &home, &mut store, args, false),
        Command::Ingest { inbox, wait } => {
            ingest(json, &home, &mut store, tenant, inbox.as_deref(), *wait)
        }
        Command::Tenants { command } => match command {
            None | Some(TenantsCommand::List) => show::tenants(json, &view, &mut store),
            Some(TenantsCommand::Create { name, id }) => {
                let t = store.create_tenant(name, *id, Timestamp::now())?;
                if json {
                    output::json(&t);
                } else {
                    output::line(format!("created tenant {} ({})", t.name, t.id));
                }
                Ok(EXIT_OK)
            }
        },
        Command::Search { query, run, limit } => {
            let run = run
                .as_deref()
                .map(|r| store.resolve(IdKind::Run, tenant, r))
                .transpose()?;
            show::search(
                json,
                &view,
                &mut store,
                tenant,
                &query.join(" "),
                run,
                *limit,
            )
        }
        Command::Jobs(args) => {
            let run = args
                .run
                .as_deref()
                .map(|r| store.resolve(IdKind::Run, tenant, r))
                .transpose()?;
            show::jobs(json, &view, &mut store, tenant, args, run)
        }
        Command::Job(cmd) => job(json, &view, &home, &mut store, tenant, cmd),
        Command::Runs { limit } => show::runs(json, &view, &mut store, tenant, *limit),
        Command::Run(RunCommand::Show { id }) => {
            let id = store.resolve(IdKind::Run, tenant, id)?;
            show::run_show(json, &view, &home, &mut store, tenant, id)
        }
        Command::Status { watch } => match watch {
            None => show::status(json, &view, &home, &mut store, tenant),
            Some(secs) => loop {
                let view = View::new(&cli.global);
                if output::stdout_is_terminal() && !json {
                    output::raw(b"\x1b[H\x1b[2J");
                }
                show::status(json, &view, &home, &mut store, tenant)?;
                if output::finished() {
                    return Ok(EXIT_OK);
                }
                std::thread::sleep(Duration::from_secs((*secs).max(1)));
            },
        },
        Command::Prune {
            finished_before,
            status,
            runs,
            dry_run,
        } => super::custody::prune(
            json,
            cli.global.quiet,
            &view,
            &home,
            &mut store,
            tenant,
            &super::custody::PruneArgs {
                finished_before: *finished_before,
                statuses: status,
                runs: *runs,
                dry_run: *dry_run,
            },
        ),
        Command::Verify {
            run,
            sample,
            repair,
        } => super::custody::verify(
            json,
            cli.global.quiet,
            &view,
            &home,
            &mut store,
            tenant,
            run.as_deref(),
            *sample,
            *repair,
        ),
        Command::Export { run, all: _, to } => {
            super::custody::export(json, &home, &mut store, tenant, run.as_deref(), to)
        }
        Command::Backup { dest, link } => {
            super::custody::backup(json, cli.global.quiet, &home, &mut store, dest, *link)
        }
    }
}

/// True when this user cannot write the home's folder or database.
fn read_only_home(home: &Home) -> bool {
    let w = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_err();
    w(home.root()) || home.location().file().is_some_and(w)
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
                path: home.location().to_string().into(),
            }
        } else {
            e
        }
    })
}

/// The database for a command that only reads: migrated and used as usual
/// when this user may write it, else opened read-only (where SQLite can).
/// A `brief` command (one that reads and exits) keeps a small page cache:
/// filling a large one costs a fresh process more in page faults than the
/// reads it saves (`search` over a million sources took 21 ms with 16 MiB,
/// 12 ms with 2 MiB).
fn open_for_reading(home: &Home, brief: bool) -> Result<Store> {
    let mut options = home.config().store_options();
    if brief {
        options.page_cache_kib = BRIEF_PAGE_CACHE_KIB;
    }
    match Store::open(&home.location(), options.clone()) {
        Ok(s) => Ok(s),
        Err(e) if cannot_write(home, &e) => Store::open_read_only(&home.location(), options)
            .map_err(|ro| match ro {
                Error::InvalidArgument { .. } | Error::Corrupt { .. } => ro,
                _ => Error::ReadOnly {
                    action: "open the home",
                    path: home.location().to_string().into(),
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

fn init(json: bool, dir: &Path, inbox: Option<&Path>, database: Option<&str>) -> Result<u8> {
    let (home, report) = Home::init_with(dir, database)?;
    let mut store = home.store()?;
    let version = store.current_version()?;
    let adopted = inbox.map(|d| inbox::adopt_inbox(&home, d)).transpose()?;
    if json {
        output::json(&serde_json::json!({
            "home": report.home,
            "created": report.created,
            "default_tenant": report.default_tenant,
            "schema": version,
            "database": home.location().to_string(),
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
        if home.location().is_server() {
            output::line(format!("database {}", home.location()));
        }
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

fn db_check(json: bool, home: &Home) -> Result<u8> {
    let path = home.location();
    let problems = match Store::open_unchecked(&path, home.config().store_options()) {
        Ok(mut store) => store.integrity_check()?,
        Err(e @ Error::Corrupt { .. }) => vec![e.to_string()],
        Err(e) => return Err(e),
    };
    let ok = problems == ["ok"];
    if json {
        output::json(&serde_json::json!({
            "database": path.to_string(),
            "ok": ok,
            "problems": if ok { Vec::new() } else { problems.clone() },
        }));
    } else if ok {
        output::line(format!("ok: {path} passed the database's integrity check"));
    } else {
        output::line(format!("damaged: {path}"));
        for p in &problems {
            output::line(p);
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_ERROR })
}

/// Frees a job left `running` by a worker that is provably gone: rescues
/// every job of that worker. A live worker (or one that cannot be proved
/// gone) is refused, saying what to do.
fn free_running(home: &Home, store: &mut Store, tenant: Uuid, id: Uuid) -> Result<Option<String>> {
    let job = store.job(tenant, id)?;
    if job.status != JobStatus::Running {
        return Ok(None);
    }
    let worker = job.locked_by.clone().unwrap_or_default();
    let run_dir = home.run_dir();
    match presence::prove_gone(&run_dir, &worker) {
        Some(gone) => {
            store.keep_transitions(true);
            let rescued = store.rescue_workers(std::slice::from_ref(&worker), Timestamp::now());
            log_transitions(&store.take_transitions());
            rescued?;
            let _ = store.forget_serves(std::slice::from_ref(&worker));
            if !home.claims().join(&worker).exists() {
                gone.forget();
            }
            Ok(Some(worker))
        }
        None => {
            let timeout = home.config().queue.lock_timeout;
            let due = job.locked_at.map(|t| t.plus(timeout));
            let why = if presence::known_here(&run_dir, &worker) {
                format!(
                    "job {id} is running on {worker}, which is alive; stop that serve (SIGTERM gives its jobs back) or wait for the job to end"
                )
            } else {
                format!(
                    "job {id} is running on {worker}, which cannot be proved gone from this host (another host, or an older bundleq); it is rescued when its lock expires{}",
                    due.map_or_else(String::new, |d| format!(" ({d})"))
                )
            };
            Err(Error::InvalidArgument {
                what: "job",
                message: why,
            })
        }
    }
}

/// What a user may do to one job (the CLI's `job retry|cancel|release`, the
/// dashboard's buttons).
#[derive(Clone, Copy, Debug)]
pub enum JobAction {
    /// Queue it again, not before `at`.
    Retry {
        at: Option<bundleq::timestamp::When>,
    },
    /// Cancel it.
    Cancel,
    /// Free it from a serve that is gone.
    Release,
}

/// Does `action` to job `id`: a job still running on a worker that is
/// provably gone is freed first (and that is recorded). Logs the state
/// changes; returns the job as it is now.
pub fn act_on_job(
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    id: Uuid,
    action: JobAction,
) -> Result<bundleq::store::Job> {
    let freed = free_running(home, store, tenant, id)?;
    if let Some(worker) = &freed {
        store.note_event(
            tenant,
            id,
            "release",
            &format!("worker {worker} was gone; the job was freed"),
            Timestamp::now(),
        )?;
    }
    let job = match action {
        JobAction::Release if freed.is_none() => {
            let job = store.job(tenant, id)?;
            return Err(Error::InvalidTransition {
                action: "release",
                id: id.to_string(),
                status: job.status,
            });
        }
        JobAction::Release => store.job(tenant, id)?,
        JobAction::Retry { at } => {
            let job = store.job(tenant, id)?;
            let now = Timestamp::now();
            if freed.is_some() && job.status == JobStatus::Queued && at.is_none() {
                job // freed and queued already: nothing more to do
            } else {
                store.keep_transitions(true);
                store.retry(tenant, id, now, at.map(|w| w.resolve(now)))?
            }
        }
        _ => {
            store.keep_transitions(true);
            store.cancel(tenant, id, Timestamp::now())?
        }
    };
    log_transitions(&store.take_transitions());
    Ok(job)
}

fn job(
    json: bool,
    view: &View,
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    cmd: &JobCommand,
) -> Result<u8> {
    let (JobCommand::Show { id }
    | JobCommand::Retry { id, .. }
    | JobCommand::Cancel { id }
    | JobCommand::Release { id }) = cmd;
    let id = store.resolve(IdKind::Job, tenant, id)?;
    if let JobCommand::Show { .. } = cmd {
        return show::job_show(json, view, store, tenant, id);
    }
    let action = match cmd {
        JobCommand::Retry { at, .. } => JobAction::Retry { at: *at },
        JobCommand::Cancel { .. } => JobAction::Cancel,
        _ => JobAction::Release,
    };
    let job = act_on_job(home, store, tenant, id, action)?;
    if json {
        output::json(&job);
    } else {
        let ids = Ids::of(store, view, IdKind::Job, tenant, [job.id])?;
        output::line(format!("job {} is now {}", ids.show(job.id), job.status));
    }
    Ok(EXIT_OK)
}

/// `bundleq pause` (`pausing`) and `bundleq resume`.
fn pause(
    json: bool,
    view: &View,
    home: &Home,
    store: &mut Store,
    args: &PauseArgs,
    pausing: bool,
) -> Result<u8> {
    let job_type = args.job_type.as_deref();
    if let Some(t) = job_type {
        let configured =
            t == bundleq::bundle::DEFAULT_JOB_TYPE || home.config().handlers.contains_key(t);
        if !bundleq::bundle::valid_job_type(t) {
            return Err(Error::InvalidArgument {
                what: "job type",
                message: format!(
                    "{t:?} is not a job type (1-64 characters of a-z, 0-9, '_', '-' or '.')"
                ),
            });
        }
        if !configured {
            log::warn!(
                "no [handlers.{t}] table in this home's bundleq.toml; pausing the type anyway (another host may run it)"
            );
        }
    }
    let what = job_type.map_or_else(|| "every job type".to_owned(), |t| format!("job type {t}"));
    let now = Timestamp::now();
    if pausing {
        let new = store.pause(job_type, now)?;
        let since = store
            .paused()?
            .into_iter()
            .find(|p| p.job_type.as_deref() == job_type)
            .map_or(now, |p| p.since);
        if json {
            output::json(&serde_json::json!({
                "paused": job_type.unwrap_or("*"),
                "since": since,
                "already": !new,
            }));
        } else if new {
            output::line(format!(
                "paused {what}: no serve claims its jobs until `bundleq resume{}`; running jobs finish",
                job_type.map_or_else(|| " --all".to_owned(), |t| format!(" {t}"))
            ));
        } else {
            output::line(format!("{what} was paused already ({})", view.time(since)));
        }
        return Ok(EXIT_OK);
    }
    let lifted = store.resume(job_type)?;
    if json {
        output::json(&serde_json::json!({ "resumed": lifted }));
        return Ok(EXIT_OK);
    }
    if lifted.is_empty() {
        let still = store.paused()?;
        let all = still.iter().any(|p| p.job_type.is_none());
        let hint = if all && job_type.is_some() {
            " (every type is paused: bundleq resume --all)"
        } else {
            ""
        };
        output::line(format!("{what} was not paused{hint}"));
    } else {
        for p in &lifted {
            output::line(format!(
                "resumed {} (paused {})",
                p.job_type
                    .as_deref()
                    .map_or_else(|| "every job type".to_owned(), |t| format!("job type {t}")),
                view.time(p.since)
            ));
        }
    }
    Ok(EXIT_OK)
}

fn ingest(
    json: bool,
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    dir: Option<&Path>,
    wait: bool,
) -> Result<u8> {
    let dir = inbox::inbox_dir(home, dir);
    inbox::check_inbox(home, &dir)?;
    let presence = Presence::register(&home.run_dir())?;
    let mut inbox = Inbox::new(home, dir, tenant, home.config().inbox.clone(), &presence);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut total = ScanSummary::default();
    loop {
        let s = inbox.scan(store, &HashSet::new(), Timestamp::now())?;
        total.accepted += s.accepted;
        total.duplicates += s.duplicates;
        total.rejected += s.rejected;
        total.settling = s.settling;
        total.waiting = s.waiting;
        total.failure = s.failure.or(total.failure);
        match s.next_check {
            Some(d) if wait && s.settling > 0 && Instant::now() + d < deadline => {
                std::thread::sleep(d + Duration::from_millis(10));
            }
            _ => break,
        }
    }
    if inbox.holds_nothing() {
        drop(inbox);
        presence.leave();
    }
    if json {
        output::json(&total);
    } else {
        let mut line = format!(
            "{} accepted, {} duplicates, {} rejected",
            total.accepted, total.duplicates, total.rejected
        );
        if total.settling > 0 {
            line.push_str(&format!(
                ", {} still being written (changed less than {} ago; --wait to wait for them)",
                total.settling,
                config_duration(home.config().inbox.settle)
            ));
        }
        if total.waiting > 0 {
            line.push_str(&format!(", {} waiting to be tried again", total.waiting));
        }
        output::line(line);
    }
    match &total.failure {
        Some(failure) => {
            output::error_line(failure);
            Ok(EXIT_ERROR)
        }
        None => Ok(EXIT_OK),
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

/// The line serve starts with: where it works and how.
fn start_line(home: &Home, inbox: Option<&Path>, once: bool) -> String {
    let c = home.config();
    let mut handlers = vec![bundleq::bundle::DEFAULT_JOB_TYPE.to_owned()];
    handlers.extend(c.handlers.keys().cloned());
    format!(
        "bundleq {} serving home {}: database {} (synchronous = {}), inbox {}, {} workers, handlers {}, lock timeout {}, poll {}, grace {}{}",
        env!("CARGO_PKG_VERSION"),
        home.root().display(),
        home.location(),
        match c.database.synchronous {
            bundleq::store::Synchronous::Full => "full",
            bundleq::store::Synchronous::Normal => "normal",
        },
        inbox.map_or_else(|| "off".to_owned(), |p| p.display().to_string()),
        c.workers.count,
        handlers.join(", "),
        config_duration(c.queue.lock_timeout),
        config_duration(c.workers.poll_interval),
        config_duration(c.workers.grace_period),
        if once { ", once" } else { "" }
    )
}

/// Starts the dashboard and says where to open it (the URL holds the
/// token, as Jupyter's does).
fn start_web(
    json: bool,
    home: &Home,
    store: &Store,
    tenant: Uuid,
    addr: std::net::SocketAddr,
    args: &WebArgs,
) -> Result<web::Web> {
    let options = web::WebOptions {
        addr,
        allow_hosts: args.allow_host.clone(),
        read_only: args.read_only || read_only_home(home),
    };
    let dashboard = web::start(home, store, tenant, &options)?;
    if json {
        output::json_line(&serde_json::json!({
            "listening": dashboard.addr().to_string(),
            "url": dashboard.url(),
            "read_only": options.read_only,
        }));
    } else {
        output::line(format!(
            "dashboard: {}{}",
            dashboard.url(),
            if options.read_only {
                " (read-only)"
            } else {
                ""
            }
        ));
    }
    log::info!("dashboard listening on {}", dashboard.addr());
    Ok(dashboard)
}

/// `bundleq web`: the dashboard alone, until a signal.
fn web_only(
    json: bool,
    home: &Home,
    store: &Store,
    tenant: Uuid,
    addr: std::net::SocketAddr,
    args: &WebArgs,
) -> Result<u8> {
    let control = PoolControl::new();
    super::signals::forward_to(control.clone())?;
    let dashboard = start_web(json, home, store, tenant, addr, args)?;
    while !control.is_shutting_down() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    dashboard.stop();
    Ok(EXIT_OK)
}

fn serve(json: bool, home: &Home, mut store: Store, tenant: Uuid, args: &ServeArgs) -> Result<u8> {
    let once = args.once;
    Handlers::check_commands(home)?;
    let inbox_dir = inbox::inbox_dir(home, args.inbox.as_deref());
    if !args.no_inbox {
        inbox::check_inbox(home, &inbox_dir)?;
    }
    log::info!(
        "{}",
        start_line(home, (!args.no_inbox).then_some(inbox_dir.as_path()), once)
    );
    let presence = Arc::new(Presence::register(&home.run_dir())?);
    let control = PoolControl::new();
    super::signals::forward_to(control.clone())?;
    let dashboard = match args.http {
        Some(addr) => Some(start_web(json, home, &store, tenant, addr, &args.web)?),
        None => None,
    };
    let mut config = PoolConfig::from_config(&home.config().workers);
    config.once = once;
    config.presence = Some(Arc::clone(&presence));
    let mut inbox_clean = true;
    if once && !args.no_inbox {
        let mut inbox = Inbox::new(
            home,
            inbox_dir.clone(),
            tenant,
            home.config().inbox.clone(),
            &presence,
        );
        inbox.scan(&mut store, &HashSet::new(), Timestamp::now())?;
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
                let wake = |s: &ScanSummary| {
                    if s.accepted > 0 {
                        control.wake();
                    }
                };
                let result = inbox.watch(&mut inbox_store, &quit_rx, &wake, &SystemClock);
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
        Arc::new(SystemClock),
        &control,
    );
    drop(quit_tx);
    drop(config);
    if let Some(d) = dashboard {
        d.stop();
    }
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
        if json {
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

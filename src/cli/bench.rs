//! `bundleq bench` (binary side): runs the library's measurements, adds the
//! ones that need a real `serve` process (idle CPU, resident memory with a
//! large queue), and prints the table.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use bundleq::bench::{self, BenchOptions, BenchReport};
use bundleq::store::Synchronous;
use bundleq::{Error, Home, Result};

use super::output;
use super::{BenchArgs, EXIT_OK, SyncArg};

#[derive(Serialize)]
struct Full<'a> {
    #[serde(flatten)]
    report: &'a BenchReport,
    /// CPU used by an idle serve, percent of one core.
    idle_serve_cpu_percent: f64,
    /// Seconds the idle serve was watched.
    idle_seconds: u64,
    /// Resident memory of serve working the large queue, MiB.
    serve_rss_big_queue_mib: f64,
    /// `search` run as its own process (start included) on the search home.
    search: Vec<SearchFigure>,
    /// The dashboard's overview on the large queue's home.
    overview: OverviewFigure,
    /// What the baseline is.
    baseline_is: &'static str,
    /// Every goal, its figure and whether this run met it.
    goals: Vec<Goal>,
}

/// One query of the search figure.
#[derive(Debug, Serialize)]
struct SearchFigure {
    /// The query.
    query: String,
    /// Sources it matches.
    total: u64,
    /// Wall time of `bundleq search`, process start to exit.
    latency: bench::Latency,
}

/// The dashboard's overview (`GET /`) on a home of many jobs, asked over
/// loopback as a browser polling it would.
#[derive(Debug, Serialize)]
struct OverviewFigure {
    /// Jobs in the home.
    jobs: u64,
    /// The first answer, which reads the counts (every later one is served
    /// from the snapshot while it is refreshed in the background).
    first_ms: f64,
    /// Later answers.
    p50_ms: f64,
    p95_ms: f64,
    samples: usize,
}

/// Times `GET /` of a dashboard on `home`, `samples` times, 20 ms apart (so
/// background refreshes of the counts run meanwhile, as they do while a
/// tab is open).
fn overview_figure(home: &Path, samples: usize) -> Result<OverviewFigure> {
    use std::io::{Read, Write};
    let home = Home::open(home)?;
    let mut store = home.store()?;
    let tenant = home.default_tenant(&mut store)?;
    // The tenant's jobs: the ones its overview counts.
    let jobs: u64 = store
        .stats(tenant, bundleq::Timestamp::now())?
        .counts
        .values()
        .sum();
    let web = super::web::start(
        &home,
        &store,
        tenant,
        &super::web::WebOptions {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_hosts: Vec::new(),
            read_only: true,
        },
    )?;
    let addr = web.addr();
    let get = || -> Result<Duration> {
        let start = std::time::Instant::now();
        let io = |source| Error::Io {
            action: "ask the dashboard",
            path: addr.to_string().into(),
            source,
        };
        let mut s = std::net::TcpStream::connect(addr).map_err(io)?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", addr.port()).as_bytes(),
        )
        .map_err(io)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).map_err(io)?;
        if !out.starts_with(b"HTTP/1.1 200") {
            return Err(Error::InvalidArgument {
                what: "bench",
                message: format!(
                    "the dashboard answered {}",
                    String::from_utf8_lossy(&out[..out.len().min(80)])
                ),
            });
        }
        Ok(start.elapsed())
    };
    let first = get()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        times.push(get()?);
        std::thread::sleep(Duration::from_millis(20));
    }
    web.stop();
    times.sort_unstable();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(OverviewFigure {
        jobs,
        first_ms: first.as_secs_f64() * 1000.0,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        samples: times.len(),
    })
}

/// One goal of the engine and whether this run met it.
#[derive(Debug, Serialize)]
struct Goal {
    /// What is measured.
    measure: &'static str,
    /// The goal, in words.
    goal: &'static str,
    /// The figure it is judged on.
    value: f64,
    /// Met in this run.
    met: bool,
}

const BASELINE_IS: &str = "the same schema driven by plain SQLite statements in batches (enqueue 1,000 per transaction, claim and complete 100 per transaction), with no engine around them, measured in this run";

fn goals(
    r: &BenchReport,
    idle_cpu: f64,
    rss: f64,
    search: &[SearchFigure],
    overview: &OverviewFigure,
) -> Vec<Goal> {
    let worst = |f: fn(&bench::Latency) -> f64| {
        search.iter().map(|s| f(&s.latency)).fold(0.0_f64, f64::max)
    };
    let (p50, p99) = (worst(|l| l.p50_us) / 1000.0, worst(|l| l.p99_us) / 1000.0);
    let goal = |measure, goal, value: f64, met: bool| Goal {
        measure,
        goal,
        value,
        met,
    };
    vec![
        goal(
            "engine life cycle vs baseline",
            ">= 0.8x baseline and >= 30,000 jobs/s",
            r.lifecycle_ratio,
            r.lifecycle_ratio >= 0.8 && r.lifecycle_per_s >= 30_000.0,
        ),
        goal(
            "claim p50 over the commit floor (µs)",
            "<= 50 µs",
            r.claim_overhead_us,
            r.claim_overhead_us <= 50.0,
        ),
        goal(
            "claim p50 under synchronous = normal (µs)",
            "<= 100 µs",
            r.claim_latency_normal.p50_us,
            r.claim_latency_normal.p50_us <= 100.0,
        ),
        goal(
            "claim cost, large vs small queue",
            "<= 1.5x",
            r.claim_cost_ratio,
            r.claim_cost_ratio <= 1.5,
        ),
        goal(
            "claim cost, large vs small queue, normal",
            "<= 1.5x",
            r.claim_cost_normal_ratio,
            r.claim_cost_normal_ratio <= 1.5,
        ),
        goal(
            "submit, 3 inline sources of 2 KiB (bundles/s)",
            ">= 5,000 bundles/s",
            r.submit_per_s,
            r.submit_per_s >= 5000.0,
        ),
        goal(
            "drop-folder ingest (files/s)",
            ">= 5,000 files/s",
            r.ingest_files_per_s,
            r.ingest_files_per_s >= 5000.0,
        ),
        goal(
            "drop to enqueued p50 (ms)",
            "<= 20 ms",
            r.drop_latency.p50_us / 1000.0,
            r.drop_latency.p50_us <= 20_000.0,
        ),
        goal(
            "disk per source byte, processed and indexed",
            "<= 2.5x",
            r.footprint_ratio,
            r.footprint_ratio <= 2.5,
        ),
        goal(
            "process_bundle of 1 MiB texts, 2 workers vs 1",
            ">= 1.6x",
            r.process_scaling,
            r.process_scaling >= 1.6,
        ),
        goal(
            "search p50, worst of 3 queries (ms; p99 <= 50 ms too)",
            "<= 10 ms",
            p50,
            !search.is_empty() && p50 <= 10.0 && p99 <= 50.0,
        ),
        goal(
            "verify vs reading + hashing the same objects",
            ">= 0.8x",
            r.verify_ratio,
            r.verify_ratio >= 0.8,
        ),
        goal(
            "dashboard overview p95, large queue's home (ms)",
            "<= 50 ms",
            overview.p95_ms,
            overview.p95_ms <= 50.0,
        ),
        goal("idle serve CPU (%)", "<= 0.5 %", idle_cpu, idle_cpu <= 0.5),
        goal(
            "serve RSS with the large queue (MiB)",
            "<= 64 MiB",
            rss,
            rss <= 64.0,
        ),
    ]
}

/// 1234567.8 as "1,234,568".
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn spawn_serve(home: &Path, extra: &[&str]) -> Result<Child> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        action: "find the bundleq binary",
        path: "current_exe".into(),
        source,
    })?;
    Command::new(&exe)
        .arg("--home")
        .arg(home)
        .arg("serve")
        .args(extra)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Io {
            action: "start",
            path: exe,
            source,
        })
}

/// Times `bundleq search` on the home at `home`, each run its own
/// process, `samples` times per query.
fn search_figures(home: &Path, samples: usize) -> Result<Vec<SearchFigure>> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        action: "find the bundleq binary",
        path: "current_exe".into(),
        source,
    })?;
    let mut out = Vec::new();
    for query in bench::search_queries() {
        let mut times = Vec::with_capacity(samples);
        let mut total = 0;
        for _ in 0..samples.max(1) {
            let start = std::time::Instant::now();
            let ran = Command::new(&exe)
                .arg("--home")
                .arg(home)
                .args(["--json", "search"])
                .args(query.split_whitespace())
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|source| Error::Io {
                    action: "run",
                    path: exe.clone(),
                    source,
                })?;
            times.push(start.elapsed());
            if !ran.status.success() {
                return Err(Error::InvalidArgument {
                    what: "bench",
                    message: format!("`bundleq search {query}` failed on the search home"),
                });
            }
            total = serde_json::from_slice::<serde_json::Value>(&ran.stdout)
                .ok()
                .and_then(|v| v["total"].as_u64())
                .unwrap_or(0);
        }
        out.push(SearchFigure {
            query,
            total,
            latency: bench::Latency::of(times),
        });
    }
    Ok(out)
}

fn stop(mut child: Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; after the ")" they are the 12th and 13th.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn bench(json: bool, args: &BenchArgs) -> Result<u8> {
    let base = if args.quick {
        BenchOptions::quick()
    } else {
        BenchOptions::default()
    };
    let opts = BenchOptions {
        jobs: args.jobs.unwrap_or(base.jobs).max(1),
        workers: args.workers.clamp(1, 1024),
        synchronous: match args.sync {
            SyncArg::Full => Synchronous::Full,
            SyncArg::Normal => Synchronous::Normal,
        },
        big_queue: args.big_queue.unwrap_or(base.big_queue).max(1000),
        drop_files: args.drop_files.unwrap_or(base.drop_files).max(1),
        samples: args.samples.unwrap_or(base.samples).max(10),
        submit_bundles: args.submit_bundles.unwrap_or(base.submit_bundles).max(1),
        footprint_bundles: args
            .footprint_bundles
            .unwrap_or(base.footprint_bundles)
            .max(1),
        scaling_bundles: args.scaling_bundles.unwrap_or(base.scaling_bundles).max(1),
        search_sources: args.search_sources.unwrap_or(base.search_sources).max(10),
    };
    let idle_seconds = args
        .idle_seconds
        .unwrap_or(if args.quick { 1 } else { 10 })
        .max(1);
    let tmp = match &args.dir {
        Some(d) => std::fs::create_dir_all(d).and_then(|()| tempfile::tempdir_in(d)),
        None => tempfile::tempdir(),
    }
    .map_err(|source| Error::Io {
        action: "create a temp folder",
        path: args.dir.clone().unwrap_or_default(),
        source,
    })?;
    let progress = |step: &str| output::error_text(&format!("bench: {step}…"));
    if let Some(url) = &args.database {
        let location =
            bundleq::store::Location::server(url).map_err(|message| Error::InvalidArgument {
                what: "--database",
                message,
            })?;
        let report = bench::run_server(&location, &opts, &progress)?;
        print_server(json, &report);
        return Ok(EXIT_OK);
    }
    let report = bench::run(tmp.path(), &opts, &progress)?;
    let step = |name: &str| bench::begin_step(tmp.path(), &progress, name);

    step("resident memory of serve working the large queue");
    let big = tmp.path().join("big");
    let child = spawn_serve(
        &big,
        &["--no-inbox", "--workers", &opts.workers.to_string()],
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let serve_rss_big_queue_mib = rss_mib(child.id()).unwrap_or(f64::NAN);
    stop(child);

    step("the dashboard's overview on the large queue's home");
    let overview = overview_figure(&big, if args.quick { 20 } else { 200 })?;

    step("CPU of an idle serve");
    let idle = tmp.path().join("idle");
    Home::init(&idle)?;
    let child = spawn_serve(&idle, &[])?;
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(idle_seconds));
    let after = cpu_ticks(child.id());
    stop(child);
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let idle_serve_cpu_percent = match (before, after) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / hz / idle_seconds as f64 * 100.0,
        _ => f64::NAN,
    };

    step("search: each query as its own process");
    let search = search_figures(
        &tmp.path().join("search"),
        opts.samples.min(if args.quick { 20 } else { 200 }),
    )?;

    let full = Full {
        report: &report,
        idle_serve_cpu_percent,
        idle_seconds,
        serve_rss_big_queue_mib,
        baseline_is: BASELINE_IS,
        goals: goals(
            &report,
            idle_serve_cpu_percent,
            serve_rss_big_queue_mib,
            &search,
            &overview,
        ),
        search,
        overview,
    };
    if json {
        output::json(&full);
    } else {
        print_table(&full);
    }
    Ok(EXIT_OK)
}

/// The database-server figures and their goals.
fn print_server(json: bool, r: &bench::ServerBenchReport) {
    let k = thousands;
    let one = r.scaling.first();
    let lifecycle = |n: usize| {
        r.scaling
            .iter()
            .find(|s| s.claimers == n)
            .map_or(0.0, |s| s.lifecycle_per_s)
    };
    let goals = [
        (
            "engine life cycle vs plain SQL, 1 claimer",
            ">= 0.8x",
            one.map_or(0.0, |s| s.ratio),
            one.is_some_and(|s| s.ratio >= 0.8),
        ),
        (
            "batched enqueue, jobs/s",
            ">= 100,000",
            r.enqueue_batch_per_s,
            r.enqueue_batch_per_s >= 100_000.0,
        ),
        (
            "one-job claim p50, µs",
            "<= 1,000",
            r.claim_latency.p50_us,
            r.claim_latency.p50_us <= 1000.0,
        ),
        (
            "life cycle 4 pools / 1 pool",
            "> 1x",
            lifecycle(4) / lifecycle(1).max(1e-9),
            lifecycle(4) > lifecycle(1),
        ),
    ];
    if json {
        let goals: Vec<serde_json::Value> = goals
            .iter()
            .map(|(g, t, v, met)| serde_json::json!({"goal": g, "target": t, "this_run": v, "met": met}))
            .collect();
        output::json(&serde_json::json!({"report": r, "goals": goals}));
        return;
    }
    output::line(format!(
        "bundleq bench on {}: N = {} jobs, {} workers per pool",
        r.database,
        k(r.jobs as f64),
        r.workers
    ));
    output::line(
        "baseline: plain SQL in the same database — unnest enqueue of 1,000, SKIP LOCKED claims of 100 and completions of 100 per transaction, by as many connections as the engine has pools",
    );
    output::line("");
    let mut rows: Vec<Vec<String>> = r
        .scaling
        .iter()
        .map(|s| {
            vec![
                format!("life cycle, {} pool(s) / connection(s)", s.claimers),
                k(s.lifecycle_per_s),
                k(s.baseline_lifecycle_per_s),
                format!("{:.2}x", s.ratio),
            ]
        })
        .collect();
    rows.push(vec![
        "enqueue, batch API (1,000/tx)".into(),
        k(r.enqueue_batch_per_s),
        k(r.baseline_enqueue_per_s),
        format!(
            "{:.2}x",
            r.enqueue_batch_per_s / r.baseline_enqueue_per_s.max(1e-9)
        ),
    ]);
    rows.push(vec![
        "one-job claim p50 / p99 (µs), 10,000 queued".into(),
        format!(
            "{} / {}",
            k(r.claim_latency.p50_us),
            k(r.claim_latency.p99_us)
        ),
        format!("floor {}", k(r.commit_p50_us)),
        String::new(),
    ]);
    output::table(&["MEASURE", "ENGINE", "BASELINE", "RATIO"], &rows, None);
    output::line("");
    let goal_rows: Vec<Vec<String>> = goals
        .iter()
        .map(|(g, t, v, met)| {
            vec![
                (*g).to_owned(),
                (*t).to_owned(),
                format!(
                    "{} {}",
                    if *v < 100.0 { format!("{v:.2}") } else { k(*v) },
                    if *met { "met" } else { "NOT met" }
                ),
            ]
        })
        .collect();
    output::table(&["GOAL", "TARGET", "THIS RUN"], &goal_rows, None);
}

fn print_table(f: &Full<'_>) {
    let r = f.report;
    let k = thousands;
    let sync = match r.synchronous {
        Synchronous::Full => "full",
        Synchronous::Normal => "normal",
    };
    output::line(format!(
        "bundleq bench: N = {} jobs, {} workers, synchronous = {sync}, {} cores",
        k(r.jobs as f64),
        r.workers,
        r.cores
    ));
    output::line(format!("baseline: {BASELINE_IS}"));
    output::line("");
    let row = |m: String, v: String, u: &str, c: String| vec![m, v, u.to_owned(), c];
    let p50_p99 = |l: &bench::Latency| format!("{} / {}", k(l.p50_us), k(l.p99_us));
    let rows = vec![
        row(
            "baseline enqueue (1,000/tx)".into(),
            k(r.baseline.enqueue_per_s),
            "jobs/s",
            String::new(),
        ),
        row(
            "baseline claim+complete (100/tx)".into(),
            k(r.baseline.claim_complete_per_s),
            "jobs/s",
            String::new(),
        ),
        row(
            "baseline life cycle".into(),
            k(r.baseline.lifecycle_per_s),
            "jobs/s",
            String::new(),
        ),
        row(
            "enqueue, one per transaction".into(),
            k(r.enqueue_single_per_s),
            "jobs/s",
            String::new(),
        ),
        row(
            "enqueue, batch API".into(),
            k(r.enqueue_batch_per_s),
            "jobs/s",
            format!(
                "{:.2}x baseline enqueue",
                r.enqueue_batch_per_s / r.baseline.enqueue_per_s
            ),
        ),
        row(
            "engine drain (pool, no-op handler)".into(),
            k(r.drain_per_s),
            "jobs/s",
            format!("{:.2}x baseline claim+complete", r.drain_ratio),
        ),
        row(
            "engine life cycle".into(),
            k(r.lifecycle_per_s),
            "jobs/s",
            format!("{:.2}x baseline life cycle", r.lifecycle_ratio),
        ),
        row(
            "commit floor p50 / p99 (one-row update)".into(),
            p50_p99(&r.claim_floor),
            "µs",
            "in turns with the claims".into(),
        ),
        row(
            "claim latency p50 / p99".into(),
            p50_p99(&r.claim_latency),
            "µs",
            format!("floor + {:.0} µs", r.claim_overhead_us),
        ),
        row(
            "claim latency p50 / p99, normal".into(),
            p50_p99(&r.claim_latency_normal),
            "µs",
            String::new(),
        ),
        row(
            format!(
                "claim cost, 1,000 vs {} due + {} parked",
                k(r.big_queue as f64),
                k(r.big_queue as f64)
            ),
            format!("{} / {}", k(r.claim_cost_small_us), k(r.claim_cost_big_us)),
            "µs",
            format!("{:.2}x", r.claim_cost_ratio),
        ),
        row(
            "the same, normal".to_owned(),
            format!(
                "{} / {}",
                k(r.claim_cost_normal_small_us),
                k(r.claim_cost_normal_big_us)
            ),
            "µs",
            format!("{:.2}x", r.claim_cost_normal_ratio),
        ),
        row(
            format!(
                "drop-folder ingest, {} files at once",
                k(r.drop_files as f64)
            ),
            k(r.ingest_files_per_s),
            "files/s",
            String::new(),
        ),
        row(
            "drop to enqueued p50 / p99".into(),
            format!(
                "{:.1} / {:.1}",
                r.drop_latency.p50_us / 1000.0,
                r.drop_latency.p99_us / 1000.0
            ),
            "ms",
            String::new(),
        ),
        row(
            format!(
                "submit, {} bundles (3 x 2 KiB inline)",
                k(r.submit_bundles as f64)
            ),
            k(r.submit_per_s),
            "bundles/s",
            format!(
                "{:.2}x reading + hashing them",
                r.submit_per_s / r.submit_read_hash_per_s.max(1e-9)
            ),
        ),
        row(
            format!(
                "process_bundle, {} bundles (10 x 1.1 KB)",
                k(r.footprint_bundles as f64)
            ),
            k(r.process_per_s),
            "jobs/s",
            String::new(),
        ),
        row(
            "home on disk, processed and indexed".into(),
            format!("{:.1}", r.footprint_disk_bytes as f64 / 1e6),
            "MB",
            format!(
                "{:.2}x the {:.1} MB of sources",
                r.footprint_ratio,
                r.footprint_source_bytes as f64 / 1e6
            ),
        ),
        row(
            format!(
                "process_bundle, {} x 1 MiB text, 1 / 2 workers",
                r.scaling_bundles
            ),
            format!(
                "{:.1} / {:.1}",
                r.process_one_worker_mib_s, r.process_two_workers_mib_s
            ),
            "MiB/s",
            format!(
                "{:.2}x; sha256 on one core {:.0} MiB/s",
                r.process_scaling, r.sha256_one_core_mib_s
            ),
        ),
    ];
    let mut rows = rows;
    rows.extend([
        row(
            format!("verify's object pass, {} x 1 MiB files", r.scaling_bundles),
            format!("{:.0}", r.verify_mib_s),
            "MiB/s",
            format!(
                "{:.2}x reading + hashing them ({:.0} MiB/s)",
                r.verify_ratio, r.verify_read_hash_mib_s
            ),
        ),
        row(
            format!(
                "verify's object pass, {} x 10 objects in the db",
                k(r.footprint_bundles as f64)
            ),
            k(r.verify_small_objects_per_s),
            "objects/s",
            String::new(),
        ),
    ]);
    for s in &f.search {
        rows.push(row(
            format!(
                "search {:?} ({} of {} sources)",
                s.query,
                k(s.total as f64),
                k(r.search_sources as f64)
            ),
            format!(
                "{:.1} / {:.1}",
                s.latency.p50_us / 1000.0,
                s.latency.p99_us / 1000.0
            ),
            "ms p50/p99",
            "whole process".to_owned(),
        ));
    }
    rows.extend([
        row(
            format!("dashboard overview, {} jobs", k(f.overview.jobs as f64)),
            format!("{:.1} / {:.1}", f.overview.p50_ms, f.overview.p95_ms),
            "ms p50/p95",
            format!("first (reads the counts) {:.0} ms", f.overview.first_ms),
        ),
        row(
            format!("idle serve CPU over {} s", f.idle_seconds),
            format!("{:.2}", f.idle_serve_cpu_percent),
            "%",
            String::new(),
        ),
        row(
            format!("serve RSS, {} jobs queued", k(r.big_queue as f64)),
            format!("{:.1}", f.serve_rss_big_queue_mib),
            "MiB",
            String::new(),
        ),
    ]);
    output::table(&["MEASURE", "VALUE", "UNIT", "COMPARED"], &rows, None);
    output::line("");
    let goal_rows: Vec<Vec<String>> = f
        .goals
        .iter()
        .map(|g| {
            vec![
                g.measure.to_owned(),
                g.goal.to_owned(),
                if g.met { "met" } else { "NOT met" }.to_owned(),
            ]
        })
        .collect();
    output::table(&["GOAL", "TARGET", "THIS RUN"], &goal_rows, None);
}

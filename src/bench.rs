//! `bundleq bench`: the engine's hot paths measured in temp homes, next to a
//! baseline of plain SQLite statements measured in the same run, so figures
//! are quoted as ratios that survive a noisy machine.
//!
//! What runs in another process (idle CPU and resident memory of `serve`)
//! is measured by the binary; everything else is here.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use uuid::Uuid;

use crate::accept::{AcceptReport, Origin, Verdict, accept_many};
use crate::error::{IoContext, Result};
use crate::handler::{Handlers, JobContext};
use crate::home::Home;
use crate::inbox::{Inbox, ScanSummary};
use crate::presence::Presence;
use crate::state::Outcome;
use crate::store::{
    BaselineFigures, Completion, Location, NewJob, NewRun, NewSource, RunSources, Store,
    StoreOptions, Synchronous, run_baseline,
};
use crate::timestamp::{SystemClock, Timestamp};
use crate::worker::{PoolConfig, PoolControl, run_pool};

/// What to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Jobs for the baseline and the engine life cycle.
    pub jobs: usize,
    /// Worker threads of the pool.
    pub workers: usize,
    /// Durability setting for every database of the run.
    pub synchronous: Synchronous,
    /// Due jobs of the "large queue" claim-cost measurement, queued behind
    /// as many jobs parked on a future `retry_at`.
    pub big_queue: usize,
    /// Files of the drop-folder ingest measurement.
    pub drop_files: usize,
    /// Samples of each latency measurement.
    pub samples: usize,
    /// Bundles (3 inline sources of 2 KiB each) of the submit figure.
    pub submit_bundles: usize,
    /// Bundles (10 inline sources of 1,100 bytes each) submitted,
    /// processed and indexed for the footprint figure.
    pub footprint_bundles: usize,
    /// Bundles (one 1 MiB text file each) processed by one and by two
    /// workers for the scaling figure.
    pub scaling_bundles: usize,
    /// Sources (about 150 bytes of text each) indexed in the home that
    /// `search` is timed on (`dir/search`).
    pub search_sources: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            jobs: 100_000,
            workers: 4,
            synchronous: Synchronous::Full,
            big_queue: 1_000_000,
            drop_files: 10_000,
            samples: 1000,
            submit_bundles: 10_000,
            footprint_bundles: 10_000,
            scaling_bundles: 48,
            search_sources: 1_000_000,
        }
    }
}

impl BenchOptions {
    /// Sizes for a smoke run of about ten seconds: every figure, none of
    /// them meaningful.
    pub fn quick() -> BenchOptions {
        BenchOptions {
            jobs: 5_000,
            big_queue: 20_000,
            drop_files: 300,
            samples: 100,
            submit_bundles: 500,
            footprint_bundles: 200,
            scaling_bundles: 4,
            search_sources: 10_000,
            ..BenchOptions::default()
        }
    }
}

/// A latency distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Samples taken.
    pub samples: usize,
}

impl Latency {
    /// The distribution of `samples`.
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        Latency {
            p50_us: at(0.50),
            p99_us: at(0.99),
            samples: samples.len(),
        }
    }
}

/// Every in-process figure of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// Jobs of the life-cycle measurements.
    pub jobs: usize,
    /// Pool workers.
    pub workers: usize,
    /// `full` or `normal`.
    pub synchronous: Synchronous,
    /// Cores the OS reports.
    pub cores: usize,
    /// Plain statements, no engine.
    pub baseline: BaselineFigures,
    /// `Store::enqueue`, one transaction per job.
    pub enqueue_single_per_s: f64,
    /// `Store::enqueue_many`, 1,000 per transaction.
    pub enqueue_batch_per_s: f64,
    /// The engine's drain alone: the pool working N queued jobs.
    pub drain_per_s: f64,
    /// N / (batch enqueue time + drain time).
    pub lifecycle_per_s: f64,
    /// `lifecycle_per_s / baseline.lifecycle_per_s`.
    pub lifecycle_ratio: f64,
    /// `drain_per_s / baseline.claim_complete_per_s`.
    pub drain_ratio: f64,
    /// `Store::claim(1)` with 10,000 jobs queued.
    pub claim_latency: Latency,
    /// The commit floor (the baseline's minimal commit: a one-row table's
    /// row updated, in the claims' own database) timed in turns with
    /// `claim_latency`'s claims: one floor commit, one claim, and again.
    pub claim_floor: Latency,
    /// `claim_latency.p50_us` minus `claim_floor.p50_us`: what the engine
    /// adds to a commit.
    pub claim_overhead_us: f64,
    /// `Store::claim(1)` with 10,000 jobs queued under `synchronous =
    /// normal`, whatever the run's setting.
    pub claim_latency_normal: Latency,
    /// Median `claim(1)` with 1,000 jobs queued, microseconds.
    pub claim_cost_small_us: f64,
    /// Median `claim(1)` with `big_queue` jobs queued, microseconds.
    pub claim_cost_big_us: f64,
    /// `claim_cost_big_us / claim_cost_small_us`.
    pub claim_cost_ratio: f64,
    /// `claim_cost_small_us` under `synchronous = normal`, whatever the
    /// run's setting (the same databases, connections set to `normal`).
    pub claim_cost_normal_small_us: f64,
    /// `claim_cost_big_us` under `synchronous = normal`.
    pub claim_cost_normal_big_us: f64,
    /// `claim_cost_normal_big_us / claim_cost_normal_small_us`.
    pub claim_cost_normal_ratio: f64,
    /// Due jobs queued for `claim_cost_big_us`, behind as many parked on a
    /// future `retry_at`.
    pub big_queue: usize,
    /// Drop-folder files ingested per second by one scan.
    pub ingest_files_per_s: f64,
    /// Files of that scan.
    pub drop_files: usize,
    /// Rename into a watched inbox until the job is committed.
    pub drop_latency: Latency,
    /// Bundles of the submit figure.
    pub submit_bundles: usize,
    /// Their files read and hashed (sha256) per second on one thread: the
    /// input's own cost, measured in this run.
    pub submit_read_hash_per_s: f64,
    /// Bundles accepted per second by the accept path `submit` uses, each
    /// durable (run, job and source bytes committed) when counted.
    pub submit_per_s: f64,
    /// Bundles of the footprint figure.
    pub footprint_bundles: usize,
    /// Their sources' bytes.
    pub footprint_source_bytes: u64,
    /// Disk space of the home after submitting, processing and indexing
    /// them (blocks allocated, WAL checkpointed).
    pub footprint_disk_bytes: u64,
    /// `footprint_disk_bytes / footprint_source_bytes`.
    pub footprint_ratio: f64,
    /// Their `process_bundle` jobs per second (verify, record, index).
    pub process_per_s: f64,
    /// Bundles of the scaling figure.
    pub scaling_bundles: usize,
    /// sha256 of one core in this run, MiB/s.
    pub sha256_one_core_mib_s: f64,
    /// `process_bundle` of 1 MiB text sources with one worker, MiB/s.
    pub process_one_worker_mib_s: f64,
    /// The same with two workers, MiB/s.
    pub process_two_workers_mib_s: f64,
    /// `process_two_workers_mib_s / process_one_worker_mib_s`.
    pub process_scaling: f64,
    /// Sources indexed in the search home.
    pub search_sources: usize,
    /// `verify` of the scaling home (its 1 MiB object files): its pass
    /// that reads and hashes every object, MiB/s.
    pub verify_mib_s: f64,
    /// The same object files read and hashed (sha256) on one thread, in
    /// this run: the limit `verify` is held against, MiB/s.
    pub verify_read_hash_mib_s: f64,
    /// `verify_mib_s / verify_read_hash_mib_s`.
    pub verify_ratio: f64,
    /// `verify` of the footprint home (small objects in the database),
    /// objects per second.
    pub verify_small_objects_per_s: f64,
}

fn per_s(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn store_at(path: &Path, synchronous: Synchronous) -> Result<Store> {
    Store::create(
        &Location::Sqlite(path.to_owned()),
        StoreOptions {
            synchronous,
            ..StoreOptions::default()
        },
    )
}

fn jobs(n: usize, tenant: Uuid, not_before: Option<Timestamp>) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            tenant_id: tenant,
            run_id: Uuid::now_v7(),
            job_type: "bench".to_owned(),
            payload: serde_json::json!({}),
            max_attempts: None,
            not_before,
        })
        .collect()
}

fn enqueue_batched(store: &mut Store, n: usize, batch: usize) -> Result<Duration> {
    enqueue_parked(store, Uuid::now_v7(), n, batch, None)
}

/// Enqueues `n` jobs of `tenant` in batches, not due before `not_before`
/// when given.
fn enqueue_parked(
    store: &mut Store,
    tenant: Uuid,
    n: usize,
    batch: usize,
    not_before: Option<Timestamp>,
) -> Result<Duration> {
    let mut spent = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        let js = jobs(k, tenant, not_before);
        let start = Instant::now();
        store.enqueue_many(&js, Timestamp::now())?;
        spent += start.elapsed();
        left -= k;
    }
    Ok(spent)
}

/// Median cost of one `claim(1)` (each claimed job is then completed),
/// over `rounds` rounds. The median, because a commit's fsync time is
/// noisy on a shared disk.
fn claim_cost(store: &mut Store, rounds: usize) -> Result<(f64, Vec<Duration>)> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let now = Timestamp::now();
        let start = Instant::now();
        let claims = store.claim(1, "bench", now)?;
        samples.push(start.elapsed());
        for c in claims {
            store.report(&c.token, &Outcome::Succeeded, now)?;
        }
    }
    let median = Latency::of(samples.clone()).p50_us;
    Ok((median, samples))
}

/// `rounds` one-job claims on `store` (each then completed) and as many
/// commits of the floor on its connection, in turns: the claims' latency
/// and the floor's.
fn claims_in_turns_with_floor(store: &mut Store, rounds: usize) -> Result<(Latency, Latency)> {
    store.add_commit_floor()?;
    let (mut claims, mut floors) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        floors.push(store.commit_floor()?);
        claims.extend(claim_cost(store, 1)?.1);
    }
    Ok((Latency::of(claims), Latency::of(floors)))
}

/// Rounds of each claim-cost figure.
const CLAIM_COST_ROUNDS: usize = 500;

/// Median cost of one `claim(1)` on `small` and on `big`, over `rounds`
/// rounds taken in turns (one on each, then again), so that both see the
/// disk as it is at the time: a commit's fsync time drifts on a shared
/// disk, and measured one after the other the ratio would measure the
/// drift.
fn claim_costs(small: &mut Store, big: &mut Store, rounds: usize) -> Result<(f64, f64)> {
    let (mut on_small, mut on_big) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        on_small.extend(claim_cost(small, 1)?.1);
        on_big.extend(claim_cost(big, 1)?.1);
    }
    Ok((Latency::of(on_small).p50_us, Latency::of(on_big).p50_us))
}

fn small_bundle(i: usize) -> String {
    serde_json::json!({
        "bundle_version": 1,
        "run_id": Uuid::now_v7(),
        "title": format!("Bench run {i}"),
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{"uri": format!("https://example.org/{i}"), "sha256": "c".repeat(64)}]
    })
    .to_string()
}

/// A home under `dir` set to `synchronous`.
fn bench_home(dir: &Path, synchronous: Synchronous) -> Result<Home> {
    let (mut home, _) = Home::init(dir)?;
    let mut config = home.config().clone();
    config.database.synchronous = synchronous;
    home.set_config(config);
    Ok(home)
}

/// Builds a home with `n` jobs parked until tomorrow (older, so ahead of
/// the due ones in creation order) and `n` due jobs, for the claim-cost and
/// memory figures (and the dashboard's overview: they are the home's
/// default tenant's), and returns its folder.
pub fn big_queue_home(dir: &Path, synchronous: Synchronous, n: usize) -> Result<(PathBuf, Store)> {
    let root = dir.join("big");
    let home = bench_home(&root, synchronous)?;
    let mut store = home.store()?;
    let tenant = home.default_tenant(&mut store)?;
    let tomorrow = Timestamp::now().plus(Duration::from_secs(86_400));
    enqueue_parked(&mut store, tenant, n, 10_000, Some(tomorrow))?;
    enqueue_parked(&mut store, tenant, n, 10_000, None)?;
    Ok((root, store))
}

/// One engine life cycle: `opts.jobs` jobs enqueued in batches, then
/// drained by a pool of `opts.workers` running a no-op handler.
struct LifeCycle {
    enqueue: Duration,
    drained: usize,
    drain: Duration,
}

impl LifeCycle {
    fn lifecycle_per_s(&self) -> f64 {
        per_s(self.drained, self.enqueue + self.drain)
    }
}

fn engine_life_cycle(db: &Path, opts: &BenchOptions) -> Result<LifeCycle> {
    let mut engine = store_at(db, opts.synchronous)?;
    let enqueue = enqueue_batched(&mut engine, opts.jobs, 1000)?;
    let mut handlers = Handlers::new();
    handlers.register("bench", |_: &mut JobContext<'_>| Outcome::Succeeded);
    let mut config = PoolConfig::from_config(&crate::config::WorkersConfig::default());
    config.workers = opts.workers;
    config.once = true;
    let start = Instant::now();
    let stats = run_pool(
        engine,
        handlers,
        &config,
        Arc::new(SystemClock),
        &PoolControl::new(),
    )?;
    Ok(LifeCycle {
        enqueue,
        drained: usize::try_from(stats.succeeded).unwrap_or(0),
        drain: start.elapsed(),
    })
}

/// Writes out what earlier steps left unwritten in the page cache on the
/// file system holding `dir`, so that a figure is not charged for it: the
/// kernel writes dirty pages back about 30 s after they were written,
/// whatever runs then, and a step's `fsync`s wait behind it (hundreds of
/// MB after the footprint step: the scaling figure's one-worker or
/// two-worker half ran 30 % slower for it, whichever came at the time).
/// Best effort: a folder that cannot be opened is left as it is.
fn settle(dir: &Path) {
    if let Ok(folder) = File::open(dir) {
        let _ = rustix::fs::syncfs(&folder);
    }
}

/// Starts a step of the bench whose temp folders are under `dir`: writes
/// out what earlier steps left unwritten on that file system (a `syncfs`),
/// then tells `progress` the step's name.
pub fn begin_step(dir: &Path, progress: &dyn Fn(&str), name: &str) {
    settle(dir);
    progress(name);
}

/// Runs every in-process measurement in temp folders under `dir`, each
/// step starting on a settled disk ([`begin_step`]). `progress` hears which
/// step starts.
pub fn run(dir: &Path, opts: &BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchReport> {
    let sync = opts.synchronous;
    let step = |name: &str| begin_step(dir, progress, name);
    step("enqueue: one job per transaction");
    let single_n = opts.jobs.clamp(1, 2000);
    let mut single = store_at(&dir.join("single.db"), sync)?;
    let tenant = Uuid::now_v7();
    let js = jobs(single_n, tenant, None);
    let start = Instant::now();
    for j in &js {
        single.enqueue(j, Timestamp::now())?;
    }
    let enqueue_single_per_s = per_s(single_n, start.elapsed());
    drop(single);

    // The baseline and the engine in turns, twice, each figure the better of
    // its two runs: the machine's load drifts over a run, and a figure taken
    // once, seconds away from the other, measured the drift as much as the
    // engine.
    let turn = |k: u32| -> Result<(crate::store::BaselineFigures, LifeCycle)> {
        step(&format!("baseline: plain statements (turn {k} of 2)"));
        let baseline = run_baseline(
            &Location::Sqlite(dir.join(format!("baseline-{k}.db"))),
            sync,
            opts.jobs,
            1,
            opts.samples,
        )?;
        step(&format!(
            "engine life cycle: batch enqueue, then the pool drains (turn {k} of 2)"
        ));
        let engine = engine_life_cycle(&dir.join(format!("engine-{k}.db")), opts)?;
        Ok((baseline, engine))
    };
    let (mut baseline, mut engine) = turn(1)?;
    let (other_baseline, other_engine) = turn(2)?;
    if other_baseline.lifecycle_per_s > baseline.lifecycle_per_s {
        baseline = other_baseline;
    }
    if other_engine.lifecycle_per_s() > engine.lifecycle_per_s() {
        engine = other_engine;
    }
    let (enqueue, drain_per_s, lifecycle_per_s) = (
        engine.enqueue,
        per_s(engine.drained, engine.drain),
        engine.lifecycle_per_s(),
    );

    step("claim latency with 10,000 queued, in turns with the commit floor");
    let mut lat = store_at(&dir.join("latency.db"), sync)?;
    enqueue_batched(&mut lat, 10_000, 1000)?;
    lat.checkpoint()?;
    // In the same database and on the same connection: its commits append
    // to the same WAL as the claims' (a new file of its own, growing, made
    // the floor dearer), and leave the claims' pages cached (a commit from
    // another connection made each claim read its pages again).
    let (claim_latency, claim_floor) =
        claims_in_turns_with_floor(&mut lat, opts.samples.min(9_000))?;
    drop(lat);

    step("claim latency with 10,000 queued, synchronous = normal");
    let mut lat = store_at(&dir.join("latency-normal.db"), Synchronous::Normal)?;
    enqueue_batched(&mut lat, 10_000, 1000)?;
    lat.checkpoint()?;
    let (_, samples) = claim_cost(&mut lat, opts.samples.min(9_000))?;
    let claim_latency_normal = Latency::of(samples);
    drop(lat);

    step("claim cost with 1,000 queued and with the large queue (building it)");
    let small_path = dir.join("small.db");
    let mut small = store_at(&small_path, sync)?;
    enqueue_batched(&mut small, 1000 + 2 * CLAIM_COST_ROUNDS, 1000)?;
    small.checkpoint()?;
    let (big_root, mut big) = big_queue_home(dir, sync, opts.big_queue)?;
    big.checkpoint()?;
    let (claim_cost_small_us, claim_cost_big_us) =
        claim_costs(&mut small, &mut big, CLAIM_COST_ROUNDS)?;
    drop((small, big));
    // The same files through connections set to `normal` (a per-connection
    // setting): the claim's own cost, with no fsync to hide it.
    let (claim_cost_normal_small_us, claim_cost_normal_big_us) = claim_costs(
        &mut store_at(&small_path, Synchronous::Normal)?,
        &mut store_at(&big_root.join(crate::home::DB_FILE), Synchronous::Normal)?,
        CLAIM_COST_ROUNDS,
    )?;

    step("drop-folder ingest");
    let home = bench_home(&dir.join("ingest"), sync)?;
    let mut store = home.store()?;
    let tenant = home.default_tenant(&mut store)?;
    let old = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..opts.drop_files {
        let p = home.inbox().join(format!("b{i:05}.json"));
        fs::write(&p, small_bundle(i)).io("write", &p)?;
        File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(old))
            .io("set the time of", &p)?;
    }
    let presence = Presence::register(&home.run_dir())?;
    let mut inbox = Inbox::new(
        &home,
        home.inbox(),
        tenant,
        home.config().inbox.clone(),
        &presence,
    );
    let start = Instant::now();
    let summary = inbox.scan(&mut store, &HashSet::new(), Timestamp::now())?;
    let ingest_files_per_s = per_s(
        usize::try_from(summary.accepted).unwrap_or(0),
        start.elapsed(),
    );

    step("drop-to-enqueued latency");
    let drop_latency = drop_latency(&home, store, tenant, opts.samples.min(200))?;

    step("submit: bundles with 3 inline sources of 2 KiB");
    let submit = submit_figures(dir, sync, opts.submit_bundles)?;
    step("footprint: bundles with 10 inline sources, submitted, processed, indexed");
    let footprint = footprint_figures(dir, sync, opts)?;
    step("process_bundle of 1 MiB text sources, one worker, then two");
    let scaling = scaling_figures(dir, sync, opts.scaling_bundles)?;
    step("verify: the scaling home's object files, then the footprint home");
    let verified = verify_figures(dir)?;
    step("search home: indexing the sources");
    search_home(&dir.join("search"), sync, opts.search_sources)?;

    let claim_overhead_us = claim_latency.p50_us - claim_floor.p50_us;
    Ok(BenchReport {
        jobs: opts.jobs,
        workers: opts.workers,
        synchronous: sync,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        lifecycle_ratio: lifecycle_per_s / baseline.lifecycle_per_s.max(1e-9),
        drain_ratio: drain_per_s / baseline.claim_complete_per_s.max(1e-9),
        baseline,
        enqueue_single_per_s,
        enqueue_batch_per_s: per_s(opts.jobs, enqueue),
        drain_per_s,
        lifecycle_per_s,
        claim_floor,
        claim_overhead_us,
        claim_latency,
        claim_latency_normal,
        claim_cost_small_us,
        claim_cost_big_us,
        claim_cost_ratio: claim_cost_big_us / claim_cost_small_us.max(1e-9),
        claim_cost_normal_small_us,
        claim_cost_normal_big_us,
        claim_cost_normal_ratio: claim_cost_normal_big_us / claim_cost_normal_small_us.max(1e-9),
        big_queue: opts.big_queue,
        ingest_files_per_s,
        drop_files: opts.drop_files,
        drop_latency,
        submit_bundles: opts.submit_bundles,
        submit_read_hash_per_s: submit.read_hash_per_s,
        submit_per_s: submit.per_s,
        footprint_bundles: opts.footprint_bundles,
        footprint_source_bytes: footprint.source_bytes,
        footprint_disk_bytes: footprint.disk_bytes,
        footprint_ratio: footprint.disk_bytes as f64 / footprint.source_bytes.max(1) as f64,
        process_per_s: footprint.process_per_s,
        scaling_bundles: opts.scaling_bundles,
        sha256_one_core_mib_s: scaling.sha256_mib_s,
        process_one_worker_mib_s: scaling.one,
        process_two_workers_mib_s: scaling.two,
        process_scaling: scaling.two / scaling.one.max(1e-9),
        search_sources: opts.search_sources,
        verify_mib_s: verified.mib_s,
        verify_read_hash_mib_s: verified.read_hash_mib_s,
        verify_ratio: verified.mib_s / verified.read_hash_mib_s.max(1e-9),
        verify_small_objects_per_s: verified.small_per_s,
    })
}

struct VerifyFigures {
    mib_s: f64,
    read_hash_mib_s: f64,
    small_per_s: f64,
}

/// `verify` of the homes the scaling and footprint figures left (1 MiB
/// object files; small objects in the database), next to reading and
/// hashing the same object files without bundleq.
fn verify_figures(dir: &Path) -> Result<VerifyFigures> {
    let home = Home::open(&dir.join("scaling-2-2"))?;
    let objects = home.object_store();
    let start = Instant::now();
    let mut bytes = 0u64;
    for sha in objects.files()? {
        let path = objects.path_of(&sha);
        let data = fs::read(&path).io("read", &path)?;
        bytes += data.len() as u64;
        std::hint::black_box(crate::digest::Sha256Hex::of(&data));
    }
    let read_hash_mib_s = bytes as f64 / MIB as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let verify = |home: &Home| -> Result<crate::custody::VerifyReport> {
        crate::custody::verify(
            home,
            &mut home.store()?,
            &crate::custody::VerifyOptions::default(),
            Timestamp::now(),
            &mut |_| {},
        )
    };
    // The pass that re-reads and hashes the objects (the integrity check
    // of the database and the runs' bundles come on top: see `seconds`).
    let report = verify(&home)?;
    let mib_s = report.bytes_checked as f64 / MIB as f64 / report.hash_seconds.max(1e-9);
    let report = verify(&Home::open(&dir.join("footprint"))?)?;
    Ok(VerifyFigures {
        mib_s,
        read_hash_mib_s,
        small_per_s: report.objects_checked as f64 / report.hash_seconds.max(1e-9),
    })
}

struct ScalingFigures {
    sha256_mib_s: f64,
    one: f64,
    two: f64,
}

const MIB: usize = 1024 * 1024;

/// `process_bundle` of `n` bundles with one 1 MiB text file each, by one
/// worker and by two, next to sha256 on one core.
fn scaling_figures(dir: &Path, sync: Synchronous, n: usize) -> Result<ScalingFigures> {
    let corpus = dir.join("scaling-in");
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let folder = corpus.join(format!("b{i:03}.bundle"));
        fs::create_dir_all(&folder).io("create folder", &folder)?;
        let text = prose(1_000_000 + i as u64, MIB);
        let file = folder.join("text.txt");
        fs::write(&file, &text).io("write", &file)?;
        let bundle = serde_json::json!({
            "bundle_version": 1,
            "run_id": Uuid::now_v7(),
            "title": format!("Scaling run {i}"),
            "created_at": "2026-11-28T10:00:00Z",
            "sources": [{
                "uri": "file:text.txt",
                "path": "text.txt",
                "sha256": crate::digest::Sha256Hex::of(text.as_bytes()),
                "media_type": "text/plain",
            }],
        });
        let json = folder.join("bundle.json");
        fs::write(&json, bundle.to_string()).io("write", &json)?;
        paths.push(folder);
    }
    let block = prose(7, 64 * MIB);
    let start = Instant::now();
    std::hint::black_box(crate::digest::Sha256Hex::of(block.as_bytes()));
    let sha256_mib_s = 64.0 / start.elapsed().as_secs_f64().max(1e-9);
    // One worker, two, and again: each rate the better of its two runs
    // (the machine's load drifts; see `run`).
    let mut rates = [0.0f64; 2];
    for turn in 1..=2 {
        for (workers, rate) in [1, 2].into_iter().zip(rates.iter_mut()) {
            let home = bench_home(&dir.join(format!("scaling-{workers}-{turn}")), sync)?;
            let (succeeded, spent) = submit_and_process(&home, &paths, workers)?;
            *rate = rate.max(succeeded as f64 / spent.as_secs_f64().max(1e-9));
        }
    }
    Ok(ScalingFigures {
        sha256_mib_s,
        one: rates[0],
        two: rates[1],
    })
}

/// Builds a home at `root` whose runs hold `n` processed and indexed
/// sources of about 150 bytes of text each (10 per run), recorded the way
/// `process_bundle` records them.
pub fn search_home(root: &Path, sync: Synchronous, n: usize) -> Result<()> {
    let home = bench_home(root, sync)?;
    let mut store = home.store()?;
    let tenant = home.default_tenant(&mut store)?;
    let runs = n.div_ceil(10);
    let mut done = 0;
    while done < runs {
        let k = (runs - done).min(1000);
        let batch: Vec<NewRun> = (done..done + k)
            .map(|i| {
                NewRun::from_api(
                    tenant,
                    format!("Search run {i}"),
                    serde_json::json!({"bench": i}).to_string(),
                    "process_bundle",
                )
            })
            .collect();
        let now = Timestamp::now();
        store.insert_runs(&batch, now)?;
        let claims = store.claim(u32::try_from(k).unwrap_or(u32::MAX), "bench", now)?;
        let completions: Vec<Completion> = claims
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                let run = done + j;
                let sources = (0..10)
                    .map(|idx| {
                        let text = prose((run * 10 + idx) as u64, 150);
                        NewSource {
                            idx: idx as u32,
                            uri: format!("https://example.org/{run}/{idx}"),
                            title: None,
                            sha256: crate::digest::Sha256Hex::of(text.as_bytes()).to_string(),
                            media_type: None,
                            retrieved_at: None,
                            size: Some(text.len() as u64),
                            text: Some(text),
                            indexed_apart: None,
                        }
                    })
                    .collect();
                Completion {
                    sources: Some(RunSources {
                        tenant_id: tenant,
                        run_id: c.job.run_id,
                        sources,
                    }),
                    ..Completion::new(c.token, Outcome::Succeeded)
                }
            })
            .collect();
        store.complete(&completions, now)?;
        done += k;
    }
    store.checkpoint()?;
    Ok(())
}

/// Word `i` of the made-up vocabulary (its syllables are the digits of
/// `i` in base 16), appended to `out`.
fn push_word(out: &mut String, mut i: usize) {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "gu", "shi", "ar", "en", "ol",
        "th",
    ];
    loop {
        out.push_str(SYLLABLES[i % 16]);
        i /= 16;
        if i == 0 {
            break;
        }
    }
}

fn word(i: usize) -> String {
    let mut w = String::new();
    push_word(&mut w, i);
    w
}

/// The searches of the search figure: one word found in about one source
/// of 200, two words each in about one of 70, and a prefix of several
/// words.
pub fn search_queries() -> Vec<String> {
    let prefix: String = word(700).chars().take(5).collect();
    vec![
        word(300),
        format!("{} {}", word(40), word(41)),
        format!("{prefix}*"),
    ]
}

/// Made-up prose of exactly `len` bytes (ASCII): words of a fixed
/// vocabulary of 20,000, common ones more often (like text), so the search
/// index is sized as for real text. Deterministic in `seed`.
fn prose(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let r = next();
        push_word(&mut out, (r * r * 20_000.0) as usize);
        out.push(if next() < 0.1 { '\n' } else { ' ' });
    }
    out.truncate(len);
    out
}

/// Writes `n` bundle files with `sources` inline sources of `bytes` bytes
/// each into `folder`; returns their paths and the sources' total bytes.
fn write_corpus(
    folder: &Path,
    n: usize,
    sources: usize,
    bytes: usize,
) -> Result<(Vec<PathBuf>, u64)> {
    fs::create_dir_all(folder).io("create folder", folder)?;
    let mut paths = Vec::with_capacity(n);
    let mut total = 0u64;
    for i in 0..n {
        let list: Vec<serde_json::Value> = (0..sources)
            .map(|k| {
                let text = prose((i * sources + k) as u64, bytes);
                total += text.len() as u64;
                serde_json::json!({
                    "uri": format!("https://example.org/{i}/{k}"),
                    "sha256": crate::digest::Sha256Hex::of(text.as_bytes()),
                    "content": text,
                })
            })
            .collect();
        let bundle = serde_json::json!({
            "bundle_version": 1,
            "run_id": Uuid::now_v7(),
            "title": format!("Bench run {i}"),
            "created_at": "2026-11-28T10:00:00Z",
            "sources": list,
        });
        let p = folder.join(format!("b{i:05}.json"));
        fs::write(&p, bundle.to_string()).io("write", &p)?;
        paths.push(p);
    }
    Ok((paths, total))
}

struct SubmitFigures {
    read_hash_per_s: f64,
    per_s: f64,
}

/// The submit figure, next to reading and hashing the same files.
fn submit_figures(dir: &Path, sync: Synchronous, n: usize) -> Result<SubmitFigures> {
    let (paths, _) = write_corpus(&dir.join("submit-in"), n, 3, 2048)?;
    settle(dir);
    let start = Instant::now();
    for p in &paths {
        let bytes = fs::read(p).io("read", p)?;
        std::hint::black_box(crate::digest::Sha256Hex::of(&bytes));
    }
    let read_hash_per_s = per_s(n, start.elapsed());
    let home = bench_home(&dir.join("submit"), sync)?;
    let mut store = home.store()?;
    let tenant = home.default_tenant(&mut store)?;
    let start = Instant::now();
    let results = accept_many(
        &mut store,
        &home,
        &paths,
        tenant,
        Origin::Submit,
        Timestamp::now(),
    );
    let spent = start.elapsed();
    let accepted = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Ok(AcceptReport {
                    verdict: Verdict::Accepted { .. },
                    ..
                })
            )
        })
        .count();
    Ok(SubmitFigures {
        read_hash_per_s,
        per_s: per_s(accepted, spent),
    })
}

struct FootprintFigures {
    source_bytes: u64,
    disk_bytes: u64,
    process_per_s: f64,
}

/// Submits, processes and indexes the footprint corpus, then measures the
/// home's disk space.
fn footprint_figures(
    dir: &Path,
    sync: Synchronous,
    opts: &BenchOptions,
) -> Result<FootprintFigures> {
    let n = opts.footprint_bundles;
    let (paths, source_bytes) = write_corpus(&dir.join("footprint-in"), n, 10, 1100)?;
    let home = bench_home(&dir.join("footprint"), sync)?;
    let (succeeded, spent) = submit_and_process(&home, &paths, opts.workers)?;
    let process_per_s = per_s(usize::try_from(succeeded).unwrap_or(0), spent);
    let mut store = home.store()?;
    store.checkpoint()?;
    drop(store);
    Ok(FootprintFigures {
        source_bytes,
        disk_bytes: disk_usage(home.root())?,
        process_per_s,
    })
}

/// Submits `paths` to `home`, then times a pool of `workers` processing
/// them (`process_bundle`): jobs that succeeded, and the time taken.
fn submit_and_process(home: &Home, paths: &[PathBuf], workers: usize) -> Result<(u64, Duration)> {
    let mut store = home.store()?;
    let tenant = home.default_tenant(&mut store)?;
    accept_many(
        &mut store,
        home,
        paths,
        tenant,
        Origin::Submit,
        Timestamp::now(),
    );
    let mut config = PoolConfig::from_config(&home.config().workers);
    config.workers = workers;
    config.once = true;
    settle(home.root());
    let start = Instant::now();
    let stats = run_pool(
        store,
        Handlers::for_home(home, None),
        &config,
        Arc::new(SystemClock),
        &PoolControl::new(),
    )?;
    Ok((stats.succeeded, start.elapsed()))
}

/// Bytes of disk blocks allocated to the files under `root`.
fn disk_usage(root: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in fs::read_dir(root).io("list", root)? {
        let entry = entry.io("list", root)?;
        let meta = entry.metadata().io("inspect", entry.path())?;
        total += if meta.is_dir() {
            disk_usage(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

/// Renames bundles one at a time into a watched inbox and times each until
/// the watcher has committed it.
fn drop_latency(home: &Home, mut store: Store, tenant: Uuid, samples: usize) -> Result<Latency> {
    let staging = home.root().join("staging");
    fs::create_dir_all(&staging).io("create folder", &staging)?;
    let (quit_tx, quit_rx) = crossbeam_channel::bounded::<()>(0);
    let (scans_tx, scans) = crossbeam_channel::unbounded::<u64>();
    let watcher_home = home.clone();
    let watcher = std::thread::spawn(move || {
        let presence = Presence::register(&watcher_home.run_dir())?;
        let mut inbox = Inbox::new(
            &watcher_home,
            watcher_home.inbox(),
            tenant,
            watcher_home.config().inbox.clone(),
            &presence,
        );
        let signal = |s: &ScanSummary| {
            let _ = scans_tx.send(s.accepted);
        };
        inbox.watch(&mut store, &quit_rx, &signal, &SystemClock)
    });
    // The start-up scan ingests nothing; the samples begin after it.
    let started = scans.recv_timeout(Duration::from_secs(30)).is_ok();
    let mut times = Vec::with_capacity(samples);
    for i in (0..samples).take_while(|_| started) {
        let name = format!("drop-{i:04}.json");
        let staged = staging.join(&name);
        fs::write(&staged, small_bundle(1_000_000 + i)).io("write", &staged)?;
        let start = Instant::now();
        fs::rename(&staged, home.inbox().join(&name)).io("rename", &staged)?;
        // Scans that took nothing (a notification of the staging rename,
        // say) do not end the sample.
        let deadline = Instant::now() + Duration::from_secs(30);
        let taken = loop {
            match scans.recv_deadline(deadline) {
                Ok(0) => continue,
                Ok(_) => break true,
                Err(_) => break false,
            }
        };
        if !taken {
            break;
        }
        times.push(start.elapsed());
    }
    drop(quit_tx);
    let _ = watcher.join();
    Ok(Latency::of(times))
}

/// What `bench --database URL` measures on a database server, each figure
/// beside a plain-SQL baseline run in the same database in the same run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerBenchReport {
    /// The database (password hidden).
    pub database: String,
    /// Jobs of each life cycle.
    pub jobs: usize,
    /// Worker threads of each pool.
    pub workers: usize,
    /// Per number of claimers (1, 2, 4): the engine's life cycle (that
    /// many pools, each its own connections as a serve process has, the
    /// jobs enqueued in batches of 1,000) and the baseline's (that many
    /// connections claiming 100 at a time).
    pub scaling: Vec<ServerScaling>,
    /// The engine's batched enqueue (1,000 jobs per transaction), jobs/s.
    pub enqueue_batch_per_s: f64,
    /// The baseline's `unnest` enqueue (1,000 per statement), jobs/s.
    pub baseline_enqueue_per_s: f64,
    /// One-job claims with 10,000 queued.
    pub claim_latency: Latency,
    /// The floor under a claim: the baseline's minimal commit (a one-row
    /// update in the claims' schema, on a connection of its own) timed in
    /// turns with `claim_latency`'s claims, p50 microseconds.
    pub commit_p50_us: f64,
}

/// One row of [`ServerBenchReport::scaling`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerScaling {
    /// Pools (engine) and claiming connections (baseline).
    pub claimers: usize,
    /// Engine: enqueue plus drain, jobs/s.
    pub lifecycle_per_s: f64,
    /// Baseline: enqueue plus drain, jobs/s.
    pub baseline_lifecycle_per_s: f64,
    /// Engine / baseline.
    pub ratio: f64,
}

/// Runs the database-server figures in scratch schemas of the database at
/// `location` (each dropped when done). `progress` hears which step starts.
pub fn run_server(
    location: &Location,
    opts: &BenchOptions,
    progress: &dyn Fn(&str),
) -> Result<ServerBenchReport> {
    let options = StoreOptions {
        synchronous: opts.synchronous,
        ..StoreOptions::default()
    };
    let scratch = || -> Result<(Location, crate::store::Scratch)> {
        crate::store::scratch(location)?.ok_or_else(|| crate::Error::InvalidArgument {
            what: "--database",
            message: "give a PostgreSQL database (a SQLite bench makes its own files)".to_owned(),
        })
    };
    let mut scaling = Vec::new();
    let mut enqueue_batch_per_s = 0.0;
    let mut baseline_enqueue_per_s = 0.0;
    for claimers in [1, 2, 4] {
        progress(&format!("baseline with {claimers} claiming connection(s)"));
        let (at, _guard) = scratch()?;
        drop(Store::create(&at, options.clone())?);
        let baseline = run_baseline(&at, opts.synchronous, opts.jobs, claimers, opts.samples)?;
        if claimers == 1 {
            baseline_enqueue_per_s = baseline.enqueue_per_s;
        }
        progress(&format!("engine life cycle with {claimers} pool(s)"));
        let (at, _guard) = scratch()?;
        let mut store = Store::create(&at, options.clone())?;
        let enqueue = enqueue_batched(&mut store, opts.jobs, 1000)?;
        if claimers == 1 {
            enqueue_batch_per_s = per_s(opts.jobs, enqueue);
        }
        let start = Instant::now();
        let drained = std::thread::scope(|scope| -> Result<u64> {
            let pools: Vec<_> = (0..claimers)
                .map(|_| {
                    let store = store.reopen();
                    scope.spawn(move || -> Result<u64> {
                        let mut handlers = Handlers::new();
                        handlers.register("bench", |_: &mut JobContext<'_>| Outcome::Succeeded);
                        let mut config =
                            PoolConfig::from_config(&crate::config::WorkersConfig::default());
                        config.workers = opts.workers;
                        config.once = true;
                        let stats = run_pool(
                            store?,
                            handlers,
                            &config,
                            Arc::new(SystemClock),
                            &PoolControl::new(),
                        )?;
                        Ok(stats.succeeded)
                    })
                })
                .collect();
            let mut done = 0;
            for p in pools {
                done += p.join().unwrap_or(Ok(0))?;
            }
            Ok(done)
        })?;
        let drain = start.elapsed();
        let lifecycle_per_s = per_s(usize::try_from(drained).unwrap_or(0), enqueue + drain);
        scaling.push(ServerScaling {
            claimers,
            lifecycle_per_s,
            baseline_lifecycle_per_s: baseline.lifecycle_per_s,
            ratio: lifecycle_per_s / baseline.lifecycle_per_s.max(1e-9),
        });
    }
    progress("one-job claims with 10,000 queued, in turns with the commit floor");
    let (at, _guard) = scratch()?;
    let mut store = Store::create(&at, options)?;
    enqueue_batched(&mut store, 10_000, 1000)?;
    let (claim_latency, floor_latency) =
        claims_in_turns_with_floor(&mut store, opts.samples.min(9_000))?;
    Ok(ServerBenchReport {
        database: location.to_string(),
        jobs: opts.jobs,
        workers: opts.workers,
        scaling,
        enqueue_batch_per_s,
        baseline_enqueue_per_s,
        claim_latency,
        commit_p50_us: floor_latency.p50_us,
    })
}

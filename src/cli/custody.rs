//! `prune`, `verify`, `export` and `backup`: the commands that keep the
//! research data provable, rendered as lines or JSON.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

use bundleq::custody::{
    self, BackupOptions, Problem, ProblemKind, Progress, SweepReport, VerifyOptions, VerifyReport,
};
use bundleq::store::{IdKind, PruneFilter};
use bundleq::{Home, JobStatus, Result, Store, Timestamp};

use super::output::{self, cut};
use super::render::{Ids, View, took};
use super::{EXIT_ERROR, EXIT_OK};

/// What `prune` was asked to do.
#[derive(Debug)]
pub struct PruneArgs<'a> {
    pub finished_before: Option<Duration>,
    pub statuses: &'a [JobStatus],
    pub runs: Option<Duration>,
    pub dry_run: bool,
}

/// `bundleq prune`: finished jobs, old runs, then unreferenced objects.
pub fn prune(
    json: bool,
    quiet: bool,
    view: &View,
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    args: &PruneArgs<'_>,
) -> Result<u8> {
    let now = Timestamp::now();
    let dry_run = args.dry_run;
    let jobs = match args.finished_before {
        Some(age) => {
            let filter = PruneFilter {
                finished_before: now.minus(age),
                statuses: args.statuses.to_vec(),
            };
            Some((
                store.prune(tenant, &filter, dry_run)?,
                filter.finished_before,
            ))
        }
        None => None,
    };
    let runs = match args.runs {
        Some(age) => Some((
            store.prune_runs(tenant, now.minus(age), dry_run)?,
            now.minus(age),
        )),
        None => None,
    };
    let swept = custody::sweep(home, store, dry_run, custody::SWEEP_WAIT)?;
    if json {
        output::json(&serde_json::json!({
            "dry_run": dry_run,
            "pruned": jobs.as_ref().map_or(&[][..], |j| &j.0[..]),
            "runs": runs.as_ref().map_or(&[][..], |r| &r.0[..]),
            "objects": swept,
        }));
        return Ok(if swept.done { EXIT_OK } else { EXIT_ERROR });
    }
    let verb = if dry_run { "would prune" } else { "pruned" };
    let listed = |header: &[&str], rows: Vec<Vec<String>>, line: String| {
        if !rows.is_empty() && !quiet {
            output::table(header, &rows, view.fit());
        }
        output::line(line);
    };
    if let Some((pruned, before)) = &jobs {
        listed(
            &["JOB", "STATUS", "TYPE", "FINISHED"],
            pruned
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.status.to_string(),
                        cut(&p.job_type, 16),
                        view.time(p.updated_at),
                    ]
                })
                .collect(),
            format!(
                "{verb} {} finished job(s) that ended before {before}",
                pruned.len()
            ),
        );
    }
    if let Some((pruned, before)) = &runs {
        listed(
            &["RUN", "ACCEPTED", "JOBS", "TITLE"],
            pruned
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        view.time(r.created_at),
                        r.jobs.to_string(),
                        r.title.clone(),
                    ]
                })
                .collect(),
            format!(
                "{verb} {} run(s) accepted before {before} whose jobs had all finished",
                pruned.len()
            ),
        );
    }
    sweep_line(&swept, dry_run);
    Ok(if swept.done { EXIT_OK } else { EXIT_ERROR })
}

/// The line that says what a sweep removed.
fn sweep_line(swept: &SweepReport, dry_run: bool) {
    if !swept.done {
        output::line(
            "objects: not swept: submits or ingests kept storing objects for a minute; run prune again",
        );
        return;
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut line = format!(
        "objects: {verb} {} no run names ({} in the database, {} files, {} bytes)",
        swept.database.len() + swept.files.len(),
        swept.database.len(),
        swept.files.len(),
        swept.bytes()
    );
    if swept.staging_folders > 0 {
        line.push_str(&format!(
            "; removed {} staging folder(s) left by processes that died",
            swept.staging_folders
        ));
    }
    if !swept.leftover_shards.is_empty() {
        line.push_str(&format!(
            "; {verb} {} search shard file(s) left unregistered by processes stopped while making them",
            swept.leftover_shards.len()
        ));
    }
    output::line(line);
}

/// A progress bar on a terminal (hidden otherwise, with --json or -q).
fn bar(json: bool, quiet: bool, what: &str) -> ProgressBar {
    if json || quiet || !output::stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{bar:30}} {{bytes}}/{{total_bytes}} {what}  {{bytes_per_sec}}  eta {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// `bundleq verify`.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    json: bool,
    quiet: bool,
    view: &View,
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    run: Option<&str>,
    sample: Option<f64>,
    repair: bool,
) -> Result<u8> {
    let run = run
        .map(|r| store.resolve(IdKind::Run, tenant, r))
        .transpose()?;
    let options = VerifyOptions {
        run: run.map(|r| (tenant, r)),
        sample_percent: sample,
        repair,
    };
    let bar = bar(json, quiet, "hashed");
    let report = custody::verify(
        home,
        store,
        &options,
        Timestamp::now(),
        &mut |p: Progress| {
            bar.set_length(p.total);
            bar.set_position(p.bytes);
        },
    )?;
    bar.finish_and_clear();
    if json {
        output::json(&report);
    } else {
        let runs = report
            .problems
            .iter()
            .flat_map(|p| p.sources.iter().map(|s| s.run_id));
        let ids = Ids::of(store, view, IdKind::Run, tenant, runs)?;
        for p in &report.problems {
            output::line(problem_line(p, &ids));
        }
        output::line(summary(&report));
    }
    let unrepaired = report.problems.iter().any(|p| !p.repaired);
    Ok(if unrepaired { EXIT_ERROR } else { EXIT_OK })
}

/// One problem on one line: what, which object, where, who names it.
fn problem_line(p: &Problem, ids: &Ids) -> String {
    let place = p.place.map_or("-", |pl| match pl {
        custody::Place::Database => "database",
        custody::Place::File => "file",
    });
    let mut line = format!("{:<9} {} {place}", p.kind.to_string(), p.sha256);
    if matches!(p.kind, ProblemKind::Bundle | ProblemKind::Database) {
        line = format!("{:<9} {}", p.kind.to_string(), p.detail);
        return line;
    }
    for s in &p.sources {
        line.push_str(&format!(
            " | run {} source {} {}",
            ids.show(s.run_id),
            s.idx,
            s.uri
        ));
    }
    if p.sources.is_empty() {
        line.push_str(&format!(" | {}", p.detail));
    }
    if p.repaired {
        line.push_str(" (removed)");
    }
    line
}

/// The closing line of a verification.
fn summary(r: &VerifyReport) -> String {
    let count = |k: ProblemKind| r.problems.iter().filter(|p| p.kind == k).count();
    let scope = if r.full {
        "every object"
    } else {
        "some objects (not a full verification)"
    };
    format!(
        "verified {scope}: {} objects, {} bytes hashed; {} sources, {} runs in {}: {} corrupt, {} missing, {} orphaned, {} damaged bundles{}",
        r.objects_checked,
        r.bytes_checked,
        r.sources,
        r.runs_checked,
        took(Duration::from_secs_f64(r.seconds)),
        count(ProblemKind::Corrupt),
        count(ProblemKind::Missing),
        count(ProblemKind::Orphaned),
        count(ProblemKind::Bundle),
        if count(ProblemKind::Database) > 0 {
            ", the database is damaged"
        } else {
            ""
        },
    )
}

/// `bundleq export`.
pub fn export(
    json: bool,
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    run: Option<&str>,
    to: &Path,
) -> Result<u8> {
    let runs: Vec<Uuid> = match run {
        Some(r) => vec![store.resolve(IdKind::Run, tenant, r)?],
        None => {
            let mut all: Vec<Uuid> = store
                .runs(tenant, None)?
                .into_iter()
                .map(|r| r.id)
                .collect();
            all.reverse();
            all
        }
    };
    let mut failed = 0usize;
    let mut files = 0usize;
    for id in &runs {
        match custody::export_run(home, store, tenant, *id, to) {
            Ok(e) => {
                files += e.files;
                if json {
                    output::json_line(&e);
                } else if e.already {
                    output::line(format!(
                        "exists     run {} in {} (an earlier export; left as it is)",
                        e.run_id,
                        e.folder.display()
                    ));
                } else {
                    output::line(format!(
                        "exported   run {} to {} ({} source files, {} bytes)",
                        e.run_id,
                        e.folder.display(),
                        e.files,
                        e.bytes
                    ));
                }
            }
            Err(err) => {
                failed += 1;
                if json {
                    output::json_line(&serde_json::json!({
                        "run_id": id,
                        "error": err.to_string(),
                    }));
                } else {
                    output::line(format!("failed     run {id}: {err}"));
                }
            }
        }
    }
    if !json && runs.len() != 1 {
        output::line(format!(
            "{} run(s) exported ({files} source files), {failed} failed",
            runs.len() - failed
        ));
    }
    Ok(if failed > 0 { EXIT_ERROR } else { EXIT_OK })
}

/// `bundleq backup`.
pub fn backup(
    json: bool,
    quiet: bool,
    home: &Home,
    store: &mut Store,
    dest: &Path,
    link: bool,
) -> Result<u8> {
    let bar = bar(json, quiet, "objects");
    let report = custody::backup(
        home,
        store,
        dest,
        BackupOptions { link },
        Timestamp::now(),
        &mut |p: Progress| {
            bar.set_length(p.total);
            bar.set_position(p.bytes);
        },
    )?;
    bar.finish_and_clear();
    let sound = report.verify.problems.is_empty();
    if json {
        output::json(&report);
    } else {
        output::line(format!(
            "backed up {} to {}: database {} bytes; objects {} copied, {} linked, {} already there, {} removed ({} bytes) in {}",
            home.root().display(),
            report.dest.display(),
            report.database_bytes,
            report.objects_copied,
            report.objects_linked,
            report.objects_kept,
            report.objects_removed,
            report.bytes,
            took(Duration::from_secs_f64(report.seconds)),
        ));
        let ids = Ids::full();
        for p in &report.verify.problems {
            output::line(problem_line(p, &ids));
        }
        output::line(format!(
            "the copy: {}{}",
            summary(&report.verify),
            if sound {
                ""
            } else {
                " — the backup is NOT sound (run `bundleq verify` on the home)"
            }
        ));
    }
    Ok(if sound { EXIT_OK } else { EXIT_ERROR })
}

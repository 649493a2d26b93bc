//! `submit` and `validate`: bundles given as files, bundle folders, folders
//! of bundles or standard input; verdicts streamed as they are known (for
//! `submit`, as each batch commits), a progress bar on a terminal, a
//! summary line at the end, and Ctrl-C that stops after the batch being
//! committed and says what was.
//!
//! `--json` output is JSON Lines, one object per bundle, always with the
//! same keys: `path`, `verdict` (`accepted`, `duplicate`, `valid`,
//! `invalid`, `error`), `sha256`, `run_id`, `job_id` (null when they do not
//! apply) and `errors` (a list of `{path, message, input}`, empty unless
//! the bundle is invalid or could not be read).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use uuid::Uuid;

use bundleq::accept::{self, AcceptOptions, AcceptReport, Input, Origin, Verdict};
use bundleq::bundle::{Follow, Limits};
use bundleq::store::IdKind;
use bundleq::{Error, Home, Result, Store, Timestamp};

use super::render::{Ids, View};
use super::{EXIT_DATA, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, output};

/// One thing to check or submit.
#[derive(Debug)]
enum Item {
    Path(PathBuf),
    Stdin,
}

/// Bundles found under the paths given: files and `NAME.bundle/` folders
/// as they are; a folder that is not a bundle is a folder of bundles (its
/// `*.json` files and `NAME.bundle/` folders; subfolders with `recursive`).
/// A folder is a bundle if its name ends in `.bundle` or it holds a
/// `bundle.json`.
fn expand(paths: &[PathBuf], recursive: bool, stdin: bool) -> (Vec<Item>, Vec<String>) {
    let mut items = Vec::new();
    let mut notes = Vec::new();
    for p in paths {
        if stdin && p.as_os_str() == "-" {
            items.push(Item::Stdin);
            continue;
        }
        match fs::metadata(p) {
            Ok(m) if m.is_dir() && !is_bundle_folder(p) => {
                let before = items.len();
                let mut skipped = 0;
                walk(p, recursive, &mut items, &mut skipped);
                if items.len() == before {
                    notes.push(format!(
                        "{}: no bundles in this folder (*.json files or NAME.bundle/ folders){}",
                        p.display(),
                        if skipped > 0 && !recursive {
                            format!("; {skipped} subfolder(s) not searched (use --recursive)")
                        } else {
                            String::new()
                        }
                    ));
                } else if skipped > 0 && !recursive {
                    notes.push(format!(
                        "{}: {skipped} subfolder(s) not searched (use --recursive)",
                        p.display()
                    ));
                }
            }
            _ => items.push(Item::Path(p.clone())),
        }
    }
    (items, notes)
}

fn is_bundle_folder(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "bundle") || p.join("bundle.json").is_file()
}

fn walk(dir: &Path, recursive: bool, items: &mut Vec<Item>, skipped: &mut usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        items.push(Item::Path(dir.to_owned()));
        return;
    };
    let mut entries: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let Ok(meta) = fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if is_bundle_folder(&p) {
                items.push(Item::Path(p));
            } else if recursive && !fs::symlink_metadata(&p).is_ok_and(|m| m.is_symlink()) {
                walk(&p, recursive, items, skipped);
            } else {
                *skipped += 1;
            }
        } else if p
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            items.push(Item::Path(p));
        }
    }
}

#[derive(Serialize)]
struct ErrorItem {
    path: String,
    message: String,
    input: Option<String>,
}

/// The JSON line for one bundle: the same keys for every verdict.
#[derive(Serialize)]
struct VerdictLine {
    path: String,
    verdict: &'static str,
    sha256: Option<String>,
    run_id: Option<Uuid>,
    job_id: Option<Uuid>,
    errors: Vec<ErrorItem>,
}

impl VerdictLine {
    fn of(result: &Result<AcceptReport>, fallback: &Path) -> VerdictLine {
        match result {
            Ok(r) => {
                let (verdict, run_id, job_id, errors) = match &r.verdict {
                    Verdict::Accepted { run_id, job_id } => {
                        ("accepted", Some(*run_id), Some(*job_id), Vec::new())
                    }
                    Verdict::Duplicate { run_id } | Verdict::Recovered { run_id } => {
                        ("duplicate", Some(*run_id), None, Vec::new())
                    }
                    Verdict::Valid { run_id } => ("valid", Some(*run_id), None, Vec::new()),
                    Verdict::Invalid { errors } => (
                        "invalid",
                        None,
                        None,
                        errors
                            .errors()
                            .iter()
                            .map(|e| ErrorItem {
                                path: e.path.clone(),
                                message: e.message.clone(),
                                input: e.input.clone(),
                            })
                            .collect(),
                    ),
                };
                VerdictLine {
                    path: r.path.display().to_string(),
                    verdict,
                    sha256: r.sha256.as_ref().map(ToString::to_string),
                    run_id,
                    job_id,
                    errors,
                }
            }
            Err(e) => VerdictLine {
                path: fallback.display().to_string(),
                verdict: "error",
                sha256: None,
                run_id: None,
                job_id: None,
                errors: vec![ErrorItem {
                    path: String::new(),
                    message: e.to_string(),
                    input: None,
                }],
            },
        }
    }
}

/// Counts for the summary line and the exit code.
#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    valid: u64,
    invalid: u64,
    errors: u64,
}

impl Tally {
    fn add(&mut self, result: &Result<AcceptReport>) {
        match result {
            Ok(r) => match r.verdict {
                Verdict::Accepted { .. } => self.accepted += 1,
                Verdict::Duplicate { .. } | Verdict::Recovered { .. } => self.duplicates += 1,
                Verdict::Valid { .. } => self.valid += 1,
                Verdict::Invalid { .. } => self.invalid += 1,
            },
            Err(_) => self.errors += 1,
        }
    }

    fn code(&self) -> u8 {
        if self.errors > 0 {
            EXIT_ERROR
        } else if self.invalid > 0 {
            EXIT_DATA
        } else {
            EXIT_OK
        }
    }

    fn summary(&self, submitting: bool) -> String {
        let mut parts = Vec::new();
        if submitting {
            parts.push(format!("{} accepted", self.accepted));
            parts.push(format!(
                "{} duplicate{}",
                self.duplicates,
                if self.duplicates == 1 { "" } else { "s" }
            ));
        } else {
            parts.push(format!("{} valid", self.valid));
        }
        parts.push(format!("{} invalid", self.invalid));
        if self.errors > 0 {
            parts.push(format!("{} could not be read", self.errors));
        }
        parts.join(", ")
    }
}

/// How verdicts are shown.
struct Printer<'a> {
    json: bool,
    quiet: bool,
    view: &'a View,
    bar: ProgressBar,
}

impl Printer<'_> {
    fn new(view: &View, json: bool, quiet: bool, total: usize) -> Printer<'_> {
        let bar = if json || quiet || !output::stderr_is_terminal() || total < 2 {
            ProgressBar::hidden()
        } else {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:30} {pos}/{len} bundles  {per_sec}  eta {eta}")
            {
                bar.set_style(style);
            }
            bar
        };
        Printer {
            json,
            quiet,
            view,
            bar,
        }
    }

    fn show(&self, results: &[(PathBuf, Result<AcceptReport>)], ids: Option<(&Ids, &Ids)>) {
        self.bar.suspend(|| {
            for (fallback, r) in results {
                if self.json {
                    output::json_line(&VerdictLine::of(r, fallback));
                    continue;
                }
                match r {
                    Ok(report) => self.text(report, ids),
                    Err(e) => output::error_line(e),
                }
            }
        });
        self.bar.inc(results.len() as u64);
    }

    fn text(&self, r: &AcceptReport, ids: Option<(&Ids, &Ids)>) {
        let path = r.path.display();
        let run = |id: Uuid| ids.map_or_else(|| id.to_string(), |(runs, _)| runs.show(id));
        match &r.verdict {
            Verdict::Invalid { errors } => {
                output::error_text(&format!("invalid    {path}: {errors}"));
            }
            _ if self.quiet => {}
            Verdict::Accepted { run_id, job_id } => {
                let job = ids.map_or_else(|| job_id.to_string(), |(_, jobs)| jobs.show(*job_id));
                output::line(format!(
                    "accepted   {path}  run {}  job {job}",
                    run(*run_id)
                ));
            }
            Verdict::Duplicate { run_id } | Verdict::Recovered { run_id } => {
                output::line(format!("duplicate  {path}  already run {}", run(*run_id)));
            }
            Verdict::Valid { run_id } => {
                let _ = self.view;
                output::line(format!("valid      {path}  run {run_id}"));
            }
        }
    }
}

/// Stops the stream at the next batch on the first Ctrl-C; a second one
/// ends the process at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let sig = signal_hook::consts::SIGINT;
    let _ = signal_hook::flag::register_conditional_default(sig, Arc::clone(&flag));
    let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
    flag
}

/// `bundleq submit`.
#[allow(clippy::too_many_arguments)]
pub fn submit(
    store: &mut Store,
    home: &Home,
    tenant: Uuid,
    args: &super::SubmitArgs,
    view: &View,
    json: bool,
    quiet: bool,
) -> Result<u8> {
    let (items, notes) = expand(&args.paths.paths, args.paths.recursive, false);
    for n in &notes {
        output::note(&format!("note: {n}"));
    }
    let inputs: Vec<Input> = items
        .iter()
        .filter_map(|i| match i {
            Item::Path(p) => Some(Input::path(p)),
            Item::Stdin => None,
        })
        .collect();
    if inputs.is_empty() {
        return Err(nothing_found());
    }
    let known_types = (!args.allow_unknown_type).then(|| {
        let mut t = vec![bundleq::bundle::DEFAULT_JOB_TYPE.to_owned()];
        t.extend(home.config().handlers.keys().cloned());
        t
    });
    let now = Timestamp::now();
    let options = AcceptOptions {
        tenant,
        origin: Origin::Submit,
        follow: Follow::Link,
        now,
        known_types,
        not_before: args.not_before.map(|w| w.resolve(now)),
    };
    let printer = Printer::new(view, json, quiet, inputs.len());
    let stop = interrupt_flag();
    let mut tally = Tally::default();
    let mut done = 0;
    // Ids are shortened against the home as it is after each commit.
    let mut id_store = store.reopen()?;
    let streamed = accept::accept_stream(store, home, &inputs, &options, &mut |batch| {
        let start = done;
        done += batch.len();
        let results: Vec<(PathBuf, Result<AcceptReport>)> = inputs[start..done]
            .iter()
            .map(|i| i.shown.clone())
            .zip(batch)
            .collect();
        for (_, r) in &results {
            tally.add(r);
        }
        let ids = (!json).then(|| short_ids(&mut id_store, view, tenant, &results));
        match &ids {
            Some(Ok((runs, jobs))) => printer.show(&results, Some((runs, jobs))),
            _ => printer.show(&results, None),
        }
        !stop.load(Ordering::Relaxed)
    });
    printer.bar.finish_and_clear();
    if let Err(e) = streamed {
        output::error_line(&e);
        return Ok(EXIT_ERROR);
    }
    let interrupted = done < inputs.len();
    if !json {
        output::line(tally.summary(true));
    }
    if interrupted {
        let message = format!(
            "interrupted: the {done} bundle(s) above were committed; {} were not submitted",
            inputs.len() - done
        );
        if json {
            output::error_line(&message);
        } else {
            output::note(&message);
        }
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(tally.code())
}

fn short_ids(
    store: &mut Store,
    view: &View,
    tenant: Uuid,
    results: &[(PathBuf, Result<AcceptReport>)],
) -> Result<(Ids, Ids)> {
    let mut runs = Vec::new();
    let mut jobs = Vec::new();
    for (_, r) in results {
        if let Ok(r) = r {
            match r.verdict {
                Verdict::Accepted { run_id, job_id } => {
                    runs.push(run_id);
                    jobs.push(job_id);
                }
                Verdict::Duplicate { run_id } | Verdict::Recovered { run_id } => runs.push(run_id),
                _ => {}
            }
        }
    }
    Ok((
        Ids::of(store, view, IdKind::Run, tenant, runs)?,
        Ids::of(store, view, IdKind::Job, tenant, jobs)?,
    ))
}

fn nothing_found() -> Error {
    Error::InvalidArgument {
        what: "paths",
        message: "no bundles found (*.json files, NAME.bundle/ folders, or folders of them)"
            .to_owned(),
    }
}

/// `bundleq validate`: writes nothing, works without a home.
pub fn validate(
    args: &super::ValidateArgs,
    limits: &Limits,
    tenant: Option<Uuid>,
    view: &View,
    json: bool,
    quiet: bool,
) -> Result<u8> {
    let (items, notes) = expand(&args.paths, args.recursive, true);
    for n in &notes {
        output::note(&format!("note: {n}"));
    }
    if items.is_empty() {
        return Err(nothing_found());
    }
    let printer = Printer::new(view, json, quiet, items.len());
    let mut tally = Tally::default();
    for item in &items {
        let (shown, result) = match item {
            Item::Path(p) => (p.clone(), accept::check(p, limits, tenant, Follow::Link)),
            Item::Stdin => {
                let shown = PathBuf::from("-");
                let mut bytes = Vec::new();
                let read = std::io::stdin()
                    .lock()
                    .take(limits.max_bundle_bytes + 1)
                    .read_to_end(&mut bytes);
                let result = read
                    .map_err(|source| Error::Io {
                        action: "read",
                        path: shown.clone(),
                        source,
                    })
                    .map(|_| accept::check_bytes(&bytes, &shown, limits, tenant));
                (shown, result)
            }
        };
        tally.add(&result);
        printer.show(&[(shown, result)], None);
    }
    printer.bar.finish_and_clear();
    if !json {
        output::line(tally.summary(false));
    }
    Ok(tally.code())
}

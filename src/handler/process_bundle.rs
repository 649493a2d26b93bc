//! The built-in `process_bundle` handler: re-check the stored bundle,
//! verify every source's stored bytes against its sha256 (they were stored
//! when the bundle was accepted), index the text of big sources (file
//! objects) here, on the worker's thread, where the store can
//! ([`Store::index_apart`]), and hand the sources to the pool, which records
//! them (indexing the small ones) in the transaction that marks the job
//! done.

use super::{Handler, JobContext};
use crate::bundle::{self, Sha256Hex, SourceBody};
use crate::home::Home;
use crate::objects::{IN_DATABASE_MAX, Objects};
use crate::state::Outcome;
use crate::store::{NewSource, Readers, RunSources, Store};
use uuid::Uuid;

/// Text beyond this many bytes of a source is not indexed.
const MAX_INDEXED_BYTES: u64 = 8 * 1024 * 1024;

/// The `process_bundle` handler.
#[derive(Debug)]
pub struct ProcessBundle {
    home: Home,
    reads: Readers,
}

impl ProcessBundle {
    /// A handler working in `home`.
    pub fn new(home: Home, reads: Readers) -> ProcessBundle {
        ProcessBundle { home, reads }
    }
}

impl Handler for ProcessBundle {
    fn handle(&self, ctx: &mut JobContext<'_>) -> Outcome {
        let job = ctx.job;
        let (tenant, run_id) = (job.tenant_id, job.run_id);
        // One read connection for the whole job: the stored bundle and the
        // objects kept in the database are read through it.
        // Big texts are indexed here, on this worker's thread, in a search
        // shard of their own (where the store can): the writer only records
        // where they are.
        let processed = self.reads.with(|store| {
            Ok(self
                .sources_of(store, tenant, run_id)
                .and_then(|(mut sources, step)| {
                    store
                        .index_apart(tenant, run_id, &mut sources, IN_DATABASE_MAX)
                        .map_err(|e| Outcome::Retry(e.to_string()))?;
                    Ok((sources, step))
                }))
        });
        let (sources, step) = match processed {
            Ok(Ok(done)) => done,
            Ok(Err(outcome)) => return outcome,
            // No read connection: the database may be busy or briefly
            // unreachable, which may pass.
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let count = sources.len();
        // The run's own job type is its next step.
        if step != crate::bundle::DEFAULT_JOB_TYPE {
            ctx.then(&step);
        }
        ctx.record_sources(RunSources {
            tenant_id: tenant,
            run_id,
            sources,
        });
        log::debug!("Job {}: run {run_id} processed, {count} sources", job.id);
        Outcome::Succeeded
    }
}

impl ProcessBundle {
    /// The run's sources, verified, with their text, and the bundle's job
    /// type; or the outcome that ends the job without them.
    fn sources_of(
        &self,
        store: &mut Store,
        tenant: Uuid,
        run_id: Uuid,
    ) -> Result<(Vec<NewSource>, String), Outcome> {
        let json = match store.run_bundle_json(tenant, run_id) {
            Ok(j) => j,
            // The run row is missing or the database is unreadable: the
            // latter may pass, so retry.
            Err(crate::Error::RunNotFound { .. }) => {
                return Err(Outcome::Fail(format!(
                    "run {run_id} of tenant {tenant} does not exist"
                )));
            }
            Err(e) => return Err(Outcome::Retry(e.to_string())),
        };
        let objects = self.home.object_store();
        let limits = &self.home.config().limits;
        let bundle = match bundle::validate_stored(json.as_bytes(), limits, &objects, store) {
            Ok(Ok(b)) => b,
            // The stored bundle passed at upload; failing now means its
            // stored bytes are damaged, which retrying will not mend.
            Ok(Err(errors)) => return Err(Outcome::Fail(errors.to_string())),
            // A stored object could not be read (a missing or unreadable
            // file, a disk error): this machine's problem, which may pass.
            Err(e) => return Err(Outcome::Retry(e.to_string())),
        };
        let mut sources = Vec::with_capacity(bundle.sources().len());
        for (idx, s) in bundle.sources().iter().enumerate() {
            let (size, text) = match s.body() {
                SourceBody::Reference => (None, None),
                SourceBody::Inline(text) => (Some(text.len() as u64), Some(text.clone())),
                SourceBody::File(f) => match text_of(&objects, store, s.sha256(), s.media_type()) {
                    Ok(text) => (Some(f.size), text),
                    // Read a moment ago to check its hash: an I/O failure.
                    Err(e) => return Err(Outcome::Retry(e.to_string())),
                },
            };
            sources.push(NewSource {
                idx: u32::try_from(idx).unwrap_or(u32::MAX),
                uri: s.uri().to_owned(),
                title: s.title().map(str::to_owned),
                sha256: s.sha256().to_string(),
                media_type: s.media_type().map(str::to_owned),
                retrieved_at: s.retrieved_at(),
                size,
                text,
                indexed_apart: None,
            });
        }
        Ok((sources, bundle.job_type().to_owned()))
    }
}

/// The text of a stored object, if it is text (`None` for binary media
/// types and bytes that are not UTF-8).
fn text_of(
    objects: &Objects,
    store: &mut Store,
    sha: &Sha256Hex,
    media_type: Option<&str>,
) -> crate::Result<Option<String>> {
    let textual = media_type.is_none_or(|m| {
        m.starts_with("text/") || m.ends_with("json") || m.ends_with("xml") || m.ends_with("csv")
    });
    if !textual {
        return Ok(None);
    }
    let bytes = objects.read(store, sha, MAX_INDEXED_BYTES)?;
    Ok(String::from_utf8(bytes).ok())
}

//! Run bundles (RunBundleV1): reading, bounded parsing and validation.
//!
//! The edge is untyped: bytes become a bounded `serde_json::Value`
//! (`parse`), whose top level is split by serde into known fields and
//! unknown ones (`rules::RawBundle`). `rules` then checks every field and
//! collects **every** error with its path, seed style
//! (`sources.0.sha256: sha256 must be 64 hex characters (input: 'abc')`).
//! Only a bundle that passes becomes a [`Bundle`], whose fields are private:
//! a `Bundle` cannot hold invalid data.
//!
//! Invariants: nothing here writes; reading a file never reads more than its
//! limit + 1 bytes; source files of a directory bundle are opened without
//! following symlinks, and the bytes hashed are the bytes handed on.

mod files;
mod parse;
mod rules;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use uuid::Uuid;

pub use files::{Follow, SourceFile, read_bundle};
pub use rules::{DEFAULT_JOB_TYPE, valid_job_type};

pub use crate::digest::Sha256Hex;
use crate::objects::Objects;
use crate::timestamp::Timestamp;

/// Bounds on what a bundle may contain. Anything beyond them is refused
/// with a clear error before it can cost memory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Size of the bundle JSON file.
    pub max_bundle_bytes: u64,
    /// Nesting depth of the JSON.
    pub max_depth: usize,
    /// Length of any one JSON string, in bytes.
    pub max_string_bytes: usize,
    /// Length of `title`, in characters.
    pub max_title_chars: usize,
    /// Number of `sources`.
    pub max_sources: usize,
    /// Number of `findings`.
    pub max_findings: usize,
    /// Number of items of any other array.
    pub max_array_items: usize,
    /// Number of keys of any one object.
    pub max_object_keys: usize,
    /// Size of one source file of a directory bundle.
    pub max_source_file_bytes: u64,
    /// All source files of one bundle together (each distinct file counted
    /// once): bounds the work one hostile bundle can cost.
    pub max_total_source_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bundle_bytes: 16 * 1024 * 1024,
            max_depth: 64,
            max_string_bytes: 4 * 1024 * 1024,
            max_title_chars: 500,
            max_sources: 10_000,
            max_findings: 10_000,
            max_array_items: 10_000,
            max_object_keys: 10_000,
            max_source_file_bytes: 256 * 1024 * 1024,
            max_total_source_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// One thing wrong with a bundle: where, what, and the offending input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    /// Dotted path to the field, e.g. `sources.0.sha256`; empty for the
    /// bundle as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// The offending value, shortened, when there is one to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

const MAX_INPUT_CHARS: usize = 80;

impl ValidationError {
    pub(crate) fn new(path: &str, message: impl Into<String>, input: Option<String>) -> Self {
        let input = input.map(|s| {
            if s.chars().count() > MAX_INPUT_CHARS {
                let mut cut: String = s.chars().take(MAX_INPUT_CHARS).collect();
                cut.push('…');
                cut
            } else {
                s
            }
        });
        ValidationError {
            path: path.to_owned(),
            message: message.into(),
            input,
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(bundle)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)?;
        if let Some(input) = &self.input {
            write!(f, " (input: '{input}')")?;
        }
        Ok(())
    }
}

/// Every error found in one bundle; never empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    pub(crate) fn one(e: ValidationError) -> Self {
        ValidationErrors(vec![e])
    }

    pub(crate) fn from_vec(errors: Vec<ValidationError>) -> Option<Self> {
        (!errors.is_empty()).then_some(ValidationErrors(errors))
    }

    /// The errors, in the order they were found.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The first line of the report: `3 validation errors for RunBundleV1`.
    pub fn summary(&self) -> String {
        let n = self.0.len();
        format!(
            "{n} validation error{} for RunBundleV1",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        for e in &self.0 {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Where a source's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceBody {
    /// Only a reference (`uri`); no bytes in the bundle.
    Reference,
    /// Inline text whose sha256 matched.
    Inline(String),
    /// A file of a directory bundle, hashed from its open handle.
    File(SourceFile),
}

/// One validated source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    uri: String,
    title: Option<String>,
    sha256: Sha256Hex,
    retrieved_at: Option<Timestamp>,
    media_type: Option<String>,
    body: SourceBody,
}

impl Source {
    /// Where the source came from.
    pub fn uri(&self) -> &str {
        &self.uri
    }
    /// Its title, if given.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }
    /// Its stated (and, for content or files, verified) digest.
    pub fn sha256(&self) -> &Sha256Hex {
        &self.sha256
    }
    /// When it was retrieved, if given.
    pub fn retrieved_at(&self) -> Option<Timestamp> {
        self.retrieved_at
    }
    /// Its media type, if given.
    pub fn media_type(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
    /// Its bytes, if the bundle carries them.
    pub fn body(&self) -> &SourceBody {
        &self.body
    }
}

/// One validated finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    text: String,
    source_refs: Vec<usize>,
}

impl Finding {
    /// The finding's text.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// Indexes into the bundle's sources, all in range.
    pub fn source_refs(&self) -> &[usize] {
        &self.source_refs
    }
}

/// A run bundle that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    run_id: Uuid,
    tenant_id: Option<Uuid>,
    job_type: String,
    title: String,
    question: Option<String>,
    created_at: Timestamp,
    sources: Vec<Source>,
    findings: Vec<Finding>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl Bundle {
    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }
    /// The tenant the bundle names, if any.
    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }
    /// The job type to enqueue (`process_bundle` unless the bundle says).
    pub fn job_type(&self) -> &str {
        &self.job_type
    }
    /// The run's title.
    pub fn title(&self) -> &str {
        &self.title
    }
    /// The research question, if given.
    pub fn question(&self) -> Option<&str> {
        self.question.as_deref()
    }
    /// When the run was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
    /// Its sources, never empty.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }
    /// Its findings.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
    /// Free-form metadata.
    pub fn metadata(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.metadata
    }
}

/// A bundle as read from disk: its bytes' digest, the JSON text, and
/// (when valid) the validated bundle.
#[derive(Debug)]
pub struct ReadBundle {
    /// The file or directory given.
    pub path: PathBuf,
    /// sha256 of the bundle JSON bytes (for a directory, of `bundle.json`);
    /// `None` when they were not all read (too large, not a bundle).
    pub sha256: Option<Sha256Hex>,
    /// The JSON text as received (UTF-8 checked), if it could be read.
    pub json: Option<String>,
    /// The verdict.
    pub verdict: Result<Bundle, ValidationErrors>,
}

/// Validates bundle JSON held in memory (no directory, so no `path`
/// sources). Used by tests and by `process_bundle` to re-check a stored
/// bundle.
pub fn validate_bytes(bytes: &[u8], limits: &Limits) -> Result<Bundle, ValidationErrors> {
    if bytes.len() as u64 > limits.max_bundle_bytes {
        return Err(ValidationErrors::one(too_large(bytes.len() as u64, limits)));
    }
    let value = parse::parse(bytes, limits).map_err(ValidationErrors::one)?;
    rules::validate(value, limits, &Files::None)
}

fn too_large(size: u64, limits: &Limits) -> ValidationError {
    ValidationError::new(
        "",
        format!(
            "bundle is larger than the limit of {} bytes ({} bytes or more)",
            limits.max_bundle_bytes, size
        ),
        None,
    )
}

/// Validates a bundle stored in the database: file sources are read back
/// from the object store by their sha256 and hashed again. A stored object
/// that cannot be read is an `Err` (an I/O failure to retry), not a
/// verdict: the bundle was valid when it was accepted.
pub fn validate_stored(
    bytes: &[u8],
    limits: &Limits,
    objects: &Objects,
    store: &mut crate::store::Store,
) -> crate::Result<Result<Bundle, ValidationErrors>> {
    let value = match parse::parse(bytes, limits) {
        Ok(v) => v,
        Err(e) => return Ok(Err(ValidationErrors::one(e))),
    };
    let stored = files::StoredFiles::new(objects, store, limits);
    let verdict = rules::validate(value, limits, &Files::Stored(&stored));
    match stored.take_io_error() {
        Some(e) => Err(e),
        None => Ok(verdict),
    }
}

/// Where the files named by sources' `path` are.
pub(crate) enum Files<'a> {
    /// A plain JSON bundle: `path` is not allowed.
    None,
    /// A bundle folder on disk.
    Dir(files::BundleDir<'a>),
    /// A stored bundle: files are objects, found by their sha256.
    Stored(&'a files::StoredFiles<'a>),
}

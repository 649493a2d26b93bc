//! The RunBundleV1 rules: from the raw JSON to a [`Bundle`], collecting
//! every error with its path.

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::files::{open_source, open_stored};
use super::{
    Bundle, Files, Finding, Limits, Sha256Hex, Source, SourceBody, ValidationError,
    ValidationErrors,
};
use crate::timestamp::Timestamp;

/// The job type of a bundle that names none.
pub const DEFAULT_JOB_TYPE: &str = "process_bundle";
const MAX_URI_CHARS: usize = 4096;
const MAX_SHORT_CHARS: usize = 1000;

/// The top level as serde splits it: known fields (untyped, so that every
/// type error can be reported with its path) and everything else.
#[derive(Debug, Deserialize)]
struct RawBundle {
    bundle_version: Option<Value>,
    run_id: Option<Value>,
    tenant_id: Option<Value>,
    job_type: Option<Value>,
    title: Option<Value>,
    question: Option<Value>,
    created_at: Option<Value>,
    sources: Option<Value>,
    findings: Option<Value>,
    metadata: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RawSource {
    uri: Option<Value>,
    title: Option<Value>,
    sha256: Option<Value>,
    retrieved_at: Option<Value>,
    media_type: Option<Value>,
    content: Option<Value>,
    path: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RawFinding {
    text: Option<Value>,
    source_refs: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// How a value is shown in `(input: '…')`.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Checker {
    errors: Vec<ValidationError>,
}

impl Checker {
    fn err(&mut self, path: &str, message: impl Into<String>, input: Option<&Value>) {
        self.errors
            .push(ValidationError::new(path, message, input.map(show)));
    }

    fn unknown(&mut self, prefix: &str, unknown: &Map<String, Value>) {
        for key in unknown.keys() {
            self.err(&join(prefix, key), "unknown field", None);
        }
    }

    /// A required string; `None` (after recording why) when it is not one.
    fn string(&mut self, path: &str, v: Option<Value>, max_chars: usize) -> Option<String> {
        match v {
            None => {
                self.err(path, "field required", None);
                None
            }
            Some(v) => self.opt_string(path, Some(v), max_chars),
        }
    }

    fn opt_string(&mut self, path: &str, v: Option<Value>, max_chars: usize) -> Option<String> {
        match v {
            None => None,
            Some(Value::String(s)) => {
                if s.trim().is_empty() {
                    self.err(path, "must not be empty", None);
                    None
                } else if s.chars().count() > max_chars {
                    self.err(
                        path,
                        format!("must be at most {max_chars} characters"),
                        Some(&Value::String(s)),
                    );
                    None
                } else {
                    Some(s)
                }
            }
            Some(other) => {
                self.err(
                    path,
                    format!("must be a string, not {}", type_name(&other)),
                    Some(&other),
                );
                None
            }
        }
    }

    fn uuid(&mut self, path: &str, v: Option<Value>, required: bool) -> Option<Uuid> {
        let s = if required {
            self.string(path, v, 100)?
        } else {
            self.opt_string(path, v, 100)?
        };
        // Only the hyphenated form, as the JSON Schema says.
        let parsed = (s.len() == 36).then(|| Uuid::try_parse(&s).ok()).flatten();
        match parsed {
            Some(u) if u.is_nil() => {
                self.err(path, "must not be the nil UUID", Some(&Value::String(s)));
                None
            }
            Some(u) => Some(u),
            None => {
                self.err(
                    path,
                    "must be a UUID like 0192c3c0-7a1e-7cc2-9a31-5b1f0f9e0a11",
                    Some(&Value::String(s)),
                );
                None
            }
        }
    }

    fn timestamp(&mut self, path: &str, v: Option<Value>, required: bool) -> Option<Timestamp> {
        let s = if required {
            self.string(path, v, 100)?
        } else {
            self.opt_string(path, v, 100)?
        };
        let parsed =
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .ok()
                .filter(|t| (1..=9999).contains(&t.to_offset(time::UtcOffset::UTC).year()));
        match parsed {
            Some(t) => Some(Timestamp::from_offset(t)),
            None => {
                self.err(
                    path,
                    "must be an RFC 3339 timestamp, e.g. 2026-11-28T10:00:00Z",
                    Some(&Value::String(s)),
                );
                None
            }
        }
    }

    fn array(&mut self, path: &str, v: Option<Value>) -> Option<Vec<Value>> {
        match v {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                self.err(
                    path,
                    format!("must be an array, not {}", type_name(&other)),
                    Some(&other),
                );
                None
            }
        }
    }

    fn object<T: for<'de> Deserialize<'de>>(&mut self, path: &str, v: Value) -> Option<T> {
        match v {
            Value::Object(_) => match serde_json::from_value(v) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.err(path, format!("invalid object: {e}"), None);
                    None
                }
            },
            other => {
                self.err(
                    path,
                    format!("must be an object, not {}", type_name(&other)),
                    Some(&other),
                );
                None
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A job type (and handler name): 1-64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
pub fn valid_job_type(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// Checks a parsed bundle. `dir` is given for a directory bundle, whose
/// sources may name files by `path`.
pub(crate) fn validate(
    value: Value,
    limits: &Limits,
    files: &Files<'_>,
) -> Result<Bundle, ValidationErrors> {
    let mut c = Checker { errors: Vec::new() };
    let Some(raw) = c.object::<RawBundle>("", value) else {
        return Err(ValidationErrors(c.errors));
    };
    c.unknown("", &raw.unknown);

    match raw.bundle_version {
        None => c.err("bundle_version", "field required", None),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => c.err(
            "bundle_version",
            "unsupported bundle version (expected 1)",
            Some(&other),
        ),
    }
    let run_id = c.uuid("run_id", raw.run_id, true);
    let tenant_id = c.uuid("tenant_id", raw.tenant_id, false);
    let job_type = match c.opt_string("job_type", raw.job_type, 64) {
        Some(t) if valid_job_type(&t) => Some(t),
        Some(t) => {
            c.err(
                "job_type",
                "must be 1-64 characters of a-z, 0-9, '_', '-' or '.'",
                Some(&Value::String(t)),
            );
            None
        }
        None => Some(DEFAULT_JOB_TYPE.to_owned()),
    };
    let title = c.string("title", raw.title, limits.max_title_chars);
    let question = c.opt_string("question", raw.question, usize::MAX);
    let created_at = c.timestamp("created_at", raw.created_at, true);

    let mut sources = Vec::new();
    let mut source_count = 0;
    match c.array("sources", raw.sources) {
        None if c.errors.iter().any(|e| e.path == "sources") => {}
        None => c.err("sources", "field required", None),
        Some(items) if items.is_empty() => c.err("sources", "must list at least one source", None),
        Some(items) => {
            source_count = items.len();
            for (i, item) in items.into_iter().enumerate() {
                if let Some(s) = source(&mut c, &format!("sources.{i}"), item, files) {
                    sources.push(s);
                }
            }
        }
    }

    let mut findings = Vec::new();
    if let Some(items) = c.array("findings", raw.findings) {
        for (i, item) in items.into_iter().enumerate() {
            if let Some(f) = finding(&mut c, &format!("findings.{i}"), item, source_count) {
                findings.push(f);
            }
        }
    }

    let metadata = match raw.metadata {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            c.err(
                "metadata",
                format!("must be an object, not {}", type_name(&other)),
                Some(&other),
            );
            Map::new()
        }
    };

    if let Some(errors) = ValidationErrors::from_vec(c.errors) {
        return Err(errors);
    }
    match (run_id, job_type, title, created_at) {
        (Some(run_id), Some(job_type), Some(title), Some(created_at)) => Ok(Bundle {
            run_id,
            tenant_id,
            job_type,
            title,
            question,
            created_at,
            sources,
            findings,
            metadata,
        }),
        // Unreachable: each None above recorded an error.
        _ => Err(ValidationErrors::one(ValidationError::new(
            "",
            "invalid bundle",
            None,
        ))),
    }
}

fn source(c: &mut Checker, at: &str, item: Value, files: &Files<'_>) -> Option<Source> {
    let raw: RawSource = c.object(at, item)?;
    let before = c.errors.len();
    c.unknown(at, &raw.unknown);
    let p = |k: &str| join(at, k);
    let uri = c.string(&p("uri"), raw.uri, MAX_URI_CHARS);
    let title = c.opt_string(&p("title"), raw.title, MAX_SHORT_CHARS);
    let sha256 = match raw.sha256 {
        None => {
            c.err(&p("sha256"), "field required", None);
            None
        }
        Some(Value::String(s)) => match Sha256Hex::parse(&s) {
            Some(h) => Some(h),
            None if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                c.err(
                    &p("sha256"),
                    "sha256 must be lowercase hex",
                    Some(&Value::String(s)),
                );
                None
            }
            None => {
                c.err(
                    &p("sha256"),
                    "sha256 must be 64 hex characters",
                    Some(&Value::String(s)),
                );
                None
            }
        },
        Some(other) => {
            c.err(
                &p("sha256"),
                format!("must be a string, not {}", type_name(&other)),
                Some(&other),
            );
            None
        }
    };
    let retrieved_at = c.timestamp(&p("retrieved_at"), raw.retrieved_at, false);
    let media_type = c.opt_string(&p("media_type"), raw.media_type, 255);
    let content = match raw.content {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            c.err(
                &p("content"),
                format!("must be a string, not {}", type_name(&other)),
                Some(&other),
            );
            None
        }
    };
    let path = c.opt_string(&p("path"), raw.path, MAX_SHORT_CHARS);

    let body = match (content, path) {
        (Some(_), Some(_)) => {
            c.err(at, "give either content or path, not both", None);
            None
        }
        (Some(text), None) => {
            let actual = Sha256Hex::of(text.as_bytes());
            match &sha256 {
                Some(stated) if *stated != actual => {
                    c.err(
                        &p("content"),
                        format!("content does not match sha256 (it hashes to {actual})"),
                        None,
                    );
                    None
                }
                _ => Some(SourceBody::Inline(text)),
            }
        }
        (None, Some(rel)) => {
            let opened = match (files, &sha256) {
                (Files::None, _) => {
                    Err("path is only allowed in a directory bundle (NAME.bundle/)".to_owned())
                }
                (Files::Dir(dir), _) => open_source(dir, &rel),
                (Files::Stored(stored), Some(sha)) => open_stored(stored, &rel, sha),
                (Files::Stored(_), None) => {
                    Err("cannot find the stored bytes without a valid sha256".to_owned())
                }
            };
            match opened {
                Err(message) => {
                    c.err(&p("path"), message, Some(&Value::String(rel)));
                    None
                }
                // The file's actual digest is never shown: it would let
                // anyone who can name a path learn the hash of a file they
                // cannot read.
                Ok(file) => match &sha256 {
                    Some(stated) if *stated != file.sha256 => {
                        c.err(
                            &p("path"),
                            "file does not match sha256",
                            Some(&Value::String(rel)),
                        );
                        None
                    }
                    _ => Some(SourceBody::File(file)),
                },
            }
        }
        (None, None) => Some(SourceBody::Reference),
    };
    if c.errors.len() > before {
        return None;
    }
    Some(Source {
        uri: uri?,
        title,
        sha256: sha256?,
        retrieved_at,
        media_type,
        body: body?,
    })
}

fn finding(c: &mut Checker, at: &str, item: Value, source_count: usize) -> Option<Finding> {
    let raw: RawFinding = c.object(at, item)?;
    let before = c.errors.len();
    c.unknown(at, &raw.unknown);
    let text = c.string(&join(at, "text"), raw.text, usize::MAX);
    let mut refs = Vec::new();
    if let Some(items) = c.array(&join(at, "source_refs"), raw.source_refs) {
        for (i, v) in items.iter().enumerate() {
            let path = format!("{at}.source_refs.{i}");
            match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n < source_count => refs.push(n),
                Some(_) => c.err(
                    &path,
                    format!(
                        "source_refs must point at a source (0 to {})",
                        source_count.saturating_sub(1)
                    ),
                    Some(v),
                ),
                None => c.err(&path, "must be a non-negative integer", Some(v)),
            }
        }
    }
    if c.errors.len() > before {
        return None;
    }
    Some(Finding {
        text: text?,
        source_refs: refs,
    })
}

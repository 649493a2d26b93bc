//! Bundles arriving over HTTP: a JSON body, a `NAME.bundle/` folder as a
//! tar stream, or either as the file of a `multipart/form-data` form. Each
//! is written to a private staging folder in the home (`objects/tmp/`, on
//! the disk the objects go to, not `$TMPDIR`) and handed to the same
//! accept path as `bundleq submit`, so it is validated, stored and
//! recorded exactly as a submitted file would be.
//!
//! Invariants: nothing is held past its limit (the JSON limit for a JSON
//! body or form, the JSON limit plus all source bytes for a tar); a tar
//! entry that is not a plain file or folder, or whose path leaves the
//! upload, is refused; the staging folder is removed when the request
//! ends, and one left by a server killed mid-upload is `flock`-free, so
//! the next `prune` (or `verify --repair`) removes it.

use std::io::{Read, Write};
use std::path::{Component, PathBuf};

use bundleq::Home;
use bundleq::accept::{AcceptOptions, AcceptReport, Input, Origin, accept_inputs};
use bundleq::bundle::{DEFAULT_JOB_TYPE, Follow};
use bundleq::objects::Staging;
use bundleq::{Store, Timestamp};
use uuid::Uuid;

use super::http::{Request, Response, read_failed, too_large};

/// A form's own fields around its file.
const FORM_SLACK: u64 = 64 * 1024;

/// What came in, written to a staging folder, ready to accept.
struct Staged {
    _dir: Staging,
    path: PathBuf,
    name: String,
}

/// Accepts the bundle `req` carries for `tenant`.
pub fn accept_upload(
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    req: &mut Request,
    allow_unknown_type: bool,
) -> Result<AcceptReport, Response> {
    let staged = stage(home, req)?;
    let known_types = (!allow_unknown_type).then(|| {
        let mut t = vec![DEFAULT_JOB_TYPE.to_owned()];
        t.extend(home.config().handlers.keys().cloned());
        t
    });
    let input = Input {
        path: staged.path.clone(),
        shown: PathBuf::from(format!("upload:{}", staged.name)),
        name: Some(staged.name.clone()),
        claim: None,
    };
    let options = AcceptOptions {
        tenant,
        origin: Origin::Api,
        follow: Follow::Never,
        now: Timestamp::now(),
        known_types,
        not_before: None,
    };
    let mut out = accept_inputs(store, home, &[input], &options);
    match out.pop() {
        Some(Ok(report)) => Ok(AcceptReport {
            path: PathBuf::from(&staged.name),
            ..report
        }),
        Some(Err(e)) => Err(Response::text(500, &e.to_string())),
        None => Err(Response::text(500, "nothing was accepted")),
    }
}

/// A private staging folder in the home, locked while this process lives.
fn staging(home: &Home) -> Result<Staging, Response> {
    home.object_store()
        .staging()
        .map_err(|e| Response::text(500, &format!("cannot make a staging folder: {e}")))
}

/// Writes what `req` carries to a staging folder.
fn stage(home: &Home, req: &mut Request) -> Result<Staged, Response> {
    let limits = &home.config().limits;
    let content_type = req
        .header("content-type")
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    match mime.as_str() {
        // What `curl --data-binary @run.json` sends without a -H.
        "application/json"
        | "text/json"
        | "text/plain"
        | "application/x-www-form-urlencoded"
        | "application/octet-stream" => {
            let body = req.body(limits.max_bundle_bytes)?;
            stage_json(home, &body, "upload.json")
        }
        "application/x-tar" | "application/tar" => {
            let limit = limits
                .max_bundle_bytes
                .saturating_add(limits.max_total_source_bytes)
                .saturating_add(1024 * 1024);
            let reader = req.body_reader(limit)?;
            stage_tar(home, reader, "upload.bundle", max_entries(limits))
        }
        "multipart/form-data" => {
            let boundary = content_type
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
                .map(|b| b.trim_matches('"').to_owned())
                .ok_or_else(|| Response::text(400, "multipart/form-data without a boundary"))?;
            // The boundary as sent (case kept).
            let boundary = req
                .header("content-type")
                .and_then(|c| {
                    let i = c.to_ascii_lowercase().find("boundary=")?;
                    Some(c[i + "boundary=".len()..].trim_matches('"').to_owned())
                })
                .unwrap_or(boundary);
            let body = req.body(limits.max_bundle_bytes.saturating_add(FORM_SLACK))?;
            let (filename, bytes) = form_file(&body, &boundary, "bundle")?;
            let filename = filename.unwrap_or_else(|| "upload.json".to_owned());
            if filename.to_ascii_lowercase().ends_with(".tar") {
                let stem = filename.trim_end_matches(".tar").trim_end_matches(".TAR");
                stage_tar(
                    home,
                    bytes,
                    &format!("{}.bundle", safe_name(stem)),
                    max_entries(limits),
                )
            } else {
                if bytes.len() as u64 > limits.max_bundle_bytes {
                    return Err(too_large(limits.max_bundle_bytes));
                }
                stage_json(home, bytes, &safe_name(&filename))
            }
        }
        other => Err(Response::text(
            415,
            &format!(
                "a bundle is sent as application/json, application/x-tar (a NAME.bundle/ folder) or multipart/form-data, not {other:?}"
            ),
        )),
    }
}

/// A file name made safe to write: its last component, no leading dot,
/// at most 200 bytes.
fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned();
    while clean.len() > 200 {
        clean.pop();
    }
    if clean.is_empty() {
        "upload".to_owned()
    } else {
        clean
    }
}

fn stage_json(home: &Home, bytes: &[u8], name: &str) -> Result<Staged, Response> {
    let dir = staging(home)?;
    let path = dir.path().join(if name.ends_with(".json") {
        name.to_owned()
    } else {
        format!("{name}.json")
    });
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Response::text(500, &format!("cannot write the upload: {e}")))?;
    Ok(Staged {
        _dir: dir,
        path,
        name: name.to_owned(),
    })
}

/// Most entries a bundle's tar may hold: its JSON, a file per source and
/// as many folders, and some slack.
fn max_entries(limits: &bundleq::bundle::Limits) -> usize {
    limits.max_sources.saturating_mul(2).saturating_add(64)
}

/// Unpacks a tar of one `NAME.bundle/` folder (or of a bundle folder's
/// contents) into a staging folder, refusing more than `max_entries`.
fn stage_tar(
    home: &Home,
    reader: impl Read,
    default_name: &str,
    max_entries: usize,
) -> Result<Staged, Response> {
    let dir = staging(home)?;
    let root = dir.path().join("in");
    std::fs::create_dir(&root)
        .map_err(|e| Response::text(500, &format!("cannot make a staging folder: {e}")))?;
    let mut archive = tar::Archive::new(reader);
    let mut tops: Vec<String> = Vec::new();
    let entries = archive.entries().map_err(|e| tar_error(&e))?;
    for (n, entry) in entries.enumerate() {
        if n >= max_entries {
            return Err(Response::text(
                413,
                &format!("the tar holds more than {max_entries} entries; a bundle needs far fewer"),
            ));
        }
        let mut entry = entry.map_err(|e| tar_error(&e))?;
        let path = entry.path().map_err(|e| tar_error(&e))?.into_owned();
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(Response::text(
                400,
                &format!(
                    "tar entry {} is not a plain file or folder (links are not taken)",
                    path.display()
                ),
            ));
        }
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => {
                    return Err(Response::text(
                        400,
                        &format!("tar entry {} leaves the bundle", path.display()),
                    ));
                }
            }
        }
        let Some(first) = parts.first() else { continue };
        if !tops.contains(first) {
            tops.push(first.clone());
        }
        let target = parts.iter().fold(root.clone(), |p, c| p.join(c));
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Response::text(500, &format!("cannot unpack: {e}")))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .and_then(|mut f| std::io::copy(&mut entry, &mut f).map(|_| ()))
        }
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                Response::text(400, &format!("tar entry {} appears twice", path.display()))
            }
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => read_failed(&e),
            _ => Response::text(400, &format!("cannot unpack {}: {e}", path.display())),
        })?;
    }
    // One NAME.bundle/ folder at the top is the bundle; anything else is a
    // bundle folder's contents.
    let (path, name) = match tops.as_slice() {
        [one] if one.ends_with(".bundle") && root.join(one).is_dir() => {
            (root.join(one), one.clone())
        }
        _ => {
            let named = dir.path().join(default_name);
            std::fs::rename(&root, &named)
                .map_err(|e| Response::text(500, &format!("cannot unpack: {e}")))?;
            (named, default_name.to_owned())
        }
    };
    Ok(Staged {
        _dir: dir,
        path,
        name,
    })
}

fn tar_error(e: &std::io::Error) -> Response {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => read_failed(e),
        _ => Response::text(400, &format!("not a readable tar: {e}")),
    }
}

/// The file field `field` of a multipart form held in `body`: its file
/// name and bytes.
fn form_file<'a>(
    body: &'a [u8],
    boundary: &str,
    field: &str,
) -> Result<(Option<String>, &'a [u8]), Response> {
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let mut starts: Vec<usize> = finder.find_iter(body).collect();
    starts.dedup();
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let Some(split) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..split]);
        let content = &part[split + 4..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("");
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k.eq_ignore_ascii_case(key)).then(|| v.trim_matches('"').to_owned())
            })
        };
        if param("name").as_deref() == Some(field) {
            return Ok((param("filename").filter(|f| !f.is_empty()), content));
        }
    }
    Err(Response::text(
        400,
        &format!("the form has no file field named {field:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_file_is_found_between_its_boundaries() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XyZ\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"run.json\"\r\nContent-Type: application/json\r\n\r\n{\"a\":\r\n1}\r\n--XyZ--\r\n";
        let (name, bytes) = form_file(body, "XyZ", "bundle").unwrap();
        assert_eq!(name.as_deref(), Some("run.json"));
        assert_eq!(bytes, b"{\"a\":\r\n1}");
        assert_eq!(form_file(body, "XyZ", "other").unwrap_err().status, 400);
    }

    #[test]
    fn names_from_uploads_cannot_leave_the_folder() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\x.json"), "x.json");
        assert_eq!(safe_name(".."), "upload");
        assert_eq!(safe_name(".hidden.json"), "hidden.json");
    }
}

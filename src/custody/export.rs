//! `bundleq export`: a run written back as the `NAME.bundle/` folder it
//! could have come as — the bundle JSON byte for byte as accepted, and
//! every file its sources name by `path`, each checked against its sha256
//! while it is written.

use std::collections::HashSet;
use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use super::{create_private, write_object};
use crate::digest::Sha256Hex;
use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::objects::sync_dir;
use crate::store::Store;

/// A run exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exported {
    /// The run.
    pub run_id: Uuid,
    /// The folder written (`<DIR>/<run id>.bundle`).
    pub folder: PathBuf,
    /// sha256 of its `bundle.json`: the run's `bundle_sha256`.
    pub bundle_sha256: String,
    /// Source files written.
    pub files: usize,
    /// Bytes written, `bundle.json` included.
    pub bytes: u64,
    /// The folder was there already, its `bundle.json` the run's bytes:
    /// nothing was written (an earlier export).
    pub already: bool,
}

/// Writes run `run` of `tenant` to `<to>/<run id>.bundle/`. The folder is
/// assembled under a temporary name and renamed into place when complete;
/// an existing folder of that name is never touched: an earlier export of
/// the run (its `bundle.json` the run's bytes) is reported as such, any
/// other is an error.
pub fn export_run(
    home: &Home,
    store: &mut Store,
    tenant: Uuid,
    run: Uuid,
    to: &Path,
) -> Result<Exported> {
    let (summary, json) = store.run_with_bundle(tenant, run)?;
    if Sha256Hex::of(json.as_bytes()).as_str() != summary.bundle_sha256 {
        return Err(Error::InvalidArgument {
            what: "run",
            message: format!(
                "the stored bundle of run {run} no longer hashes to its bundle_sha256 (run `bundleq verify`)"
            ),
        });
    }
    let files = files_of(&json, run)?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .io("create folder", to)?;
    let folder = to.join(format!("{run}.bundle"));
    if std::fs::symlink_metadata(&folder).is_ok() {
        let earlier = std::fs::read(folder.join("bundle.json"))
            .is_ok_and(|b| Sha256Hex::of(&b).as_str() == summary.bundle_sha256);
        if earlier {
            return Ok(Exported {
                run_id: run,
                folder,
                bundle_sha256: summary.bundle_sha256,
                files: 0,
                bytes: 0,
                already: true,
            });
        }
        return Err(Error::InvalidArgument {
            what: "export",
            message: format!(
                "{} already exists and is not this run's export; remove it or export somewhere else",
                folder.display()
            ),
        });
    }
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{run}.bundle.partial-"))
        .tempdir_in(to)
        .io("create a folder in", to)?;
    let objects = home.object_store();
    let mut bytes = json.len() as u64;
    let bundle_json = partial.path().join("bundle.json");
    let mut out = create_private(&bundle_json)?;
    out.write_all(json.as_bytes())
        .and_then(|()| out.sync_all())
        .io("write", &bundle_json)?;
    let mut written: HashSet<&str> = HashSet::new();
    for (rel, sha) in &files {
        if !written.insert(rel) {
            continue;
        }
        let path = partial.path().join(rel);
        if let Some(parent) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .io("create folder", parent)?;
        }
        bytes += write_object(&objects, store, sha, &path)?;
    }
    sync_tree(partial.path())?;
    let kept = partial.keep();
    std::fs::rename(&kept, &folder).io("move into place", &folder)?;
    sync_dir(to)?;
    Ok(Exported {
        run_id: run,
        folder,
        bundle_sha256: summary.bundle_sha256,
        files: written.len(),
        bytes,
        already: false,
    })
}

/// The files a bundle's sources name (`path`, digest), each path checked
/// to stay inside the folder.
fn files_of(json: &str, run: Uuid) -> Result<Vec<(String, Sha256Hex)>> {
    let corrupt = |what: String| Error::InvalidArgument {
        what: "run",
        message: format!("the stored bundle of run {run} {what}"),
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| corrupt(format!("does not parse: {e}")))?;
    let mut out = Vec::new();
    let sources = value
        .get("sources")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| corrupt("has no sources".to_owned()))?;
    for (i, s) in sources.iter().enumerate() {
        let Some(rel) = s.get("path").and_then(serde_json::Value::as_str) else {
            continue;
        };
        let sha = s
            .get("sha256")
            .and_then(serde_json::Value::as_str)
            .and_then(Sha256Hex::parse)
            .ok_or_else(|| corrupt(format!("has no valid sha256 in source {i}")))?;
        let inside = !rel.is_empty()
            && Path::new(rel)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(corrupt(format!("names a path outside its folder: {rel:?}")));
        }
        out.push((rel.to_owned(), sha));
    }
    Ok(out)
}

/// fsyncs every folder of a tree (files were fsynced as written), so that
/// the export survives a power loss once it has its name.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).io("list", dir)? {
        let entry = entry.io("list", dir)?;
        if entry.file_type().io("inspect", entry.path())?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::files_of;

    fn bundle(path: &str) -> String {
        serde_json::json!({
            "sources": [
                {"uri": "u", "sha256": "a".repeat(64)},
                {"uri": "f", "sha256": "b".repeat(64), "path": path},
            ]
        })
        .to_string()
    }

    #[test]
    fn only_paths_inside_the_folder_are_written() {
        let run = uuid::Uuid::nil();
        let files = files_of(&bundle("data/transect.csv"), run).unwrap_or_default();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "data/transect.csv");
        // A stored bundle changed behind bundleq's back cannot make export
        // write outside the folder.
        for hostile in ["../escape", "/etc/passwd", "a/../../b", "./x", ""] {
            assert!(files_of(&bundle(hostile), run).is_err(), "{hostile:?}");
        }
    }
}

//! Which folder may be an inbox: never the home or a folder around or
//! inside it (other than `<home>/inbox`), always on the home's filesystem,
//! and a folder outside the home only if bundleq made it an inbox (the
//! [`MARKER`] file) or it is empty.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::home::Home;

/// The file that makes a folder outside the home an inbox of that home.
pub const MARKER: &str = ".bundleq-inbox";

fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).io("resolve", path)
}

/// The inbox folder of `home`: `explicit` (a command-line flag), else
/// `[inbox] path`, else `<home>/inbox`.
pub fn inbox_dir(home: &Home, explicit: Option<&Path>) -> PathBuf {
    match explicit.or(home.config().inbox.path.as_deref()) {
        Some(p) if p.is_absolute() => p.to_owned(),
        Some(p) => home.root().join(p),
        None => home.inbox(),
    }
}

/// Checks that `dir` may be `home`'s inbox: not the home, not around it,
/// not inside it other than `<home>/inbox`, on the home's filesystem, and
/// (outside the home) adopted by this home or empty — an empty folder is
/// adopted on the spot. Every refusal says what to do instead.
pub fn check_inbox(home: &Home, dir: &Path) -> Result<()> {
    let refuse = |message: String| {
        Err(Error::InvalidArgument {
            what: "inbox",
            message,
        })
    };
    let root = canonical(home.root())?;
    let default = root.join("inbox");
    if !dir.exists() && fs::symlink_metadata(dir).is_err() {
        if dir == home.inbox() {
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .io("create folder", dir)?;
        } else {
            return refuse(format!(
                "{} does not exist; create it as an inbox with `bundleq --home {} init --inbox {}`",
                dir.display(),
                home.root().display(),
                dir.display()
            ));
        }
    }
    let canon = canonical(dir)?;
    if canon == root {
        return refuse(format!(
            "the inbox cannot be the home itself ({}): bundleq moves everything in an inbox to accepted/ or rejected/",
            dir.display()
        ));
    }
    if root.starts_with(&canon) {
        return refuse(format!(
            "the inbox {} contains the home {}: bundleq moves everything in an inbox to accepted/ or rejected/",
            dir.display(),
            home.root().display()
        ));
    }
    if canon.starts_with(&root) && canon != default {
        return refuse(format!(
            "the inbox {} is inside the home {}, whose folders are bundleq's own; use {} or a folder outside the home",
            dir.display(),
            home.root().display(),
            home.inbox().display()
        ));
    }
    let meta = fs::metadata(&canon).io("inspect", &canon)?;
    if !meta.is_dir() {
        return refuse(format!("the inbox {} is not a folder", dir.display()));
    }
    let home_dev = fs::metadata(&root).io("inspect", &root)?.dev();
    if meta.dev() != home_dev {
        return refuse(format!(
            "the inbox {} is on another filesystem than the home {}; entries are moved by rename, which cannot cross filesystems: use a folder on the home's filesystem",
            dir.display(),
            home.root().display()
        ));
    }
    if canon == default {
        return Ok(());
    }
    let adopt_hint = format!(
        "`bundleq --home {} init --inbox {}`",
        home.root().display(),
        dir.display()
    );
    match fs::read_to_string(canon.join(MARKER)) {
        Ok(text) => {
            let owner = text
                .lines()
                .find_map(|l| l.strip_prefix("home = "))
                .map(|v| v.trim().trim_matches('"').to_owned());
            match owner {
                Some(o) if Path::new(&o) == root => Ok(()),
                Some(o) => refuse(format!(
                    "{} is the inbox of another home ({o}); two homes must not share an inbox. To move it to this home: {adopt_hint}",
                    dir.display()
                )),
                None => refuse(format!(
                    "{} has an unreadable {MARKER} marker; adopt it again with {adopt_hint}",
                    dir.display()
                )),
            }
        }
        Err(_) => {
            let empty = fs::read_dir(&canon).io("list", &canon)?.next().is_none();
            if empty {
                write_marker(&root, &canon)
            } else {
                refuse(format!(
                    "{} is not empty and bundleq did not make it an inbox: bundleq would move everything in it to accepted/ or rejected/. If it is meant to be the inbox, adopt it with {adopt_hint}",
                    dir.display()
                ))
            }
        }
    }
}

fn write_marker(root: &Path, dir: &Path) -> Result<()> {
    let path = dir.join(MARKER);
    let text = format!(
        "# This folder is a bundleq inbox: every entry put here is moved to the\n# home's accepted/ or rejected/ folder.\nhome = {:?}\n",
        root.display().to_string()
    );
    fs::write(&path, text).io("write", &path)
}

/// Makes `dir` an inbox of `home` on purpose: creates it (0700) if missing
/// and writes the `.bundleq-inbox` marker, also into a folder that is not
/// empty (everything in it will be ingested). The folder must pass every
/// other check of [`check_inbox`].
pub fn adopt_inbox(home: &Home, dir: &Path) -> Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .io("create folder", dir)?;
    let root = canonical(home.root())?;
    let canon = canonical(dir)?;
    if canon != root.join("inbox") && !canon.starts_with(&root) && !root.starts_with(&canon) {
        write_marker(&root, &canon)?;
    }
    check_inbox(home, dir)?;
    Ok(canon)
}

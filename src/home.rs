//! A bundleq home: the one folder holding `bundleq.db`, `bundleq.toml`,
//! `inbox/`, `accepted/`, `rejected/`, `objects/`, and bundleq's private
//! `claims/` (inbox entries being ingested) and `run/` (presence locks).
//!
//! Invariants: a home and every folder in it are mode 0700, its database
//! and configuration 0600 (`init` makes an existing folder so too); only
//! `init` creates one, every other entry point refuses a folder without a
//! database instead of silently starting an empty home, and says
//! "permission denied" or "read-only" when that is why it cannot.

use std::fs::{self, DirBuilder};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::error::{Error, IoContext, Result};
use crate::store::{Location, Store};

/// Database file name inside a home.
pub const DB_FILE: &str = "bundleq.db";
/// Configuration file name inside a home.
pub const CONFIG_FILE: &str = "bundleq.toml";
/// The folders of a home, all mode 0700.
pub const FOLDERS: [&str; 6] = ["inbox", "accepted", "rejected", "objects", "claims", "run"];
const DEFAULT_TENANT_KEY: &str = "default_tenant";

/// An opened home: its folder and its parsed configuration.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
    config: Config,
}

/// What `init` found or made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InitReport {
    /// The home folder.
    pub home: PathBuf,
    /// False when the home already existed (init is idempotent).
    pub created: bool,
    /// The home's default tenant.
    pub default_tenant: Uuid,
}

impl Home {
    /// Creates a home (or completes a partial one): folders 0700, a commented
    /// default configuration, the database 0600 with its schema and a
    /// default tenant. Running it on an existing home changes nothing.
    pub fn init(root: &Path) -> Result<(Home, InitReport)> {
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(root).io("create home folder", root)?;
        private(root)?;
        for sub in FOLDERS {
            let p = root.join(sub);
            builder.create(&p).io("create folder", &p)?;
            private(&p)?;
        }
        let cfg = root.join(CONFIG_FILE);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&cfg)
        {
            Ok(mut f) => f.write_all(DEFAULT_CONFIG.as_bytes()).io("write", &cfg)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).io("write", &cfg),
        }
        let config = Config::load(&cfg)?;
        let home = Home {
            root: root.to_owned(),
            config,
        };
        let created = !home.location().exists().unwrap_or(true);
        let mut store = Store::create(&home.location(), home.config.store_options())?;
        store.meta_init(DEFAULT_TENANT_KEY, &Uuid::now_v7().to_string())?;
        let default_tenant = home.default_tenant(&store)?;
        store.ensure_tenant(default_tenant, "default", crate::Timestamp::now())?;
        Ok((
            home,
            InitReport {
                home: root.to_owned(),
                created,
                default_tenant,
            },
        ))
    }

    /// Opens an existing home; a folder without a database is an error,
    /// and one this user may not look into says "permission denied".
    pub fn open(root: &Path) -> Result<Home> {
        let config = Config::load(&root.join(CONFIG_FILE))?;
        let home = Home {
            root: root.to_owned(),
            config,
        };
        match home.location().exists() {
            Ok(true) => Ok(home),
            Ok(false) => Err(Error::NotAHome { path: root.into() }),
            Err(source) => Err(Error::Io {
                action: "open the home",
                path: home.location().file().unwrap_or(root).to_owned(),
                source,
            }),
        }
    }

    /// Opens a connection to the home's database.
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.location(), self.config.store_options())
    }

    /// Opens the home's database for reading only (works on a home this
    /// user cannot write, where SQLite allows it).
    pub fn store_read_only(&self) -> Result<Store> {
        Store::open_read_only(&self.location(), self.config.store_options())
    }

    /// Where the home's database is: `[database] path` (relative to the
    /// home), else `<home>/bundleq.db`.
    pub fn location(&self) -> Location {
        let text = self.config.database.path.as_deref().unwrap_or(DB_FILE);
        // `Config::check` refused a location that does not parse.
        Location::parse(text, &self.root)
            .unwrap_or_else(|_| Location::Sqlite(self.root.join(DB_FILE)))
    }

    /// The home's default tenant.
    pub fn default_tenant(&self, store: &Store) -> Result<Uuid> {
        store
            .meta_uuid(DEFAULT_TENANT_KEY)?
            .ok_or_else(|| Error::InvalidArgument {
                what: "home",
                message: format!(
                    "{} has no default tenant; run `bundleq --home {} init`",
                    self.root.display(),
                    self.root.display()
                ),
            })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the configuration (command-line overrides).
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `inbox/`.
    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }

    /// `accepted/`.
    pub fn accepted(&self) -> PathBuf {
        self.root.join("accepted")
    }

    /// `rejected/`.
    pub fn rejected(&self) -> PathBuf {
        self.root.join("rejected")
    }

    /// `objects/`: source bytes, content-addressed.
    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// `claims/`: inbox entries taken by a process and not yet archived,
    /// one folder per process (see `inbox`).
    pub fn claims(&self) -> PathBuf {
        self.root.join("claims")
    }

    /// `run/`: one presence lock file per live process (see `presence`).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
}

/// Sets a folder of ours to 0700 (an existing one too).
fn private(dir: &Path) -> Result<()> {
    let mode = fs::metadata(dir).io("inspect", dir)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).io("make private", dir)?;
    }
    Ok(())
}

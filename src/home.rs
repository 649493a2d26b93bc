//! A bundleq home: the one folder holding `bundleq.db`, `bundleq.toml`,
//! `inbox/`, `accepted/`, `rejected/` and `objects/`.
//!
//! Invariants: a home is created with mode 0700 and its database 0600; only
//! `init` creates one, every other entry point refuses a folder without a
//! database instead of silently starting an empty home.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::error::{Error, IoContext, Result};
use crate::store::Store;

/// Database file name inside a home.
pub const DB_FILE: &str = "bundleq.db";
/// Configuration file name inside a home.
pub const CONFIG_FILE: &str = "bundleq.toml";
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
        let created = !root.join(DB_FILE).exists();
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(root).io("create home folder", root)?;
        for sub in ["inbox", "accepted", "rejected", "objects"] {
            let p = root.join(sub);
            builder.create(&p).io("create folder", &p)?;
        }
        let cfg = root.join(CONFIG_FILE);
        if !cfg.exists() {
            fs::write(&cfg, DEFAULT_CONFIG).io("write", &cfg)?;
        }
        let config = Config::load(&cfg)?;
        let home = Home {
            root: root.to_owned(),
            config,
        };
        let mut store = Store::create(&home.db_path(), home.config.store_options())?;
        let tenant = store.meta_init(DEFAULT_TENANT_KEY, &Uuid::now_v7().to_string())?;
        let default_tenant = parse_tenant(&tenant)?;
        Ok((
            home,
            InitReport {
                home: root.to_owned(),
                created,
                default_tenant,
            },
        ))
    }

    /// Opens an existing home; a folder without a database is an error.
    pub fn open(root: &Path) -> Result<Home> {
        if !root.join(DB_FILE).is_file() {
            return Err(Error::NotAHome {
                path: root.to_owned(),
            });
        }
        let config = Config::load(&root.join(CONFIG_FILE))?;
        Ok(Home {
            root: root.to_owned(),
            config,
        })
    }

    /// Opens a connection to the home's database.
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.db_path(), self.config.store_options())
    }

    /// The home's default tenant.
    pub fn default_tenant(&self, store: &Store) -> Result<Uuid> {
        let value = store
            .meta(DEFAULT_TENANT_KEY)?
            .ok_or_else(|| Error::InvalidArgument {
                what: "home",
                message: format!(
                    "{} has no default tenant; run `bundleq --home {} init`",
                    self.root.display(),
                    self.root.display()
                ),
            })?;
        parse_tenant(&value)
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

    /// `bundleq.db`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join(DB_FILE)
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
}

fn parse_tenant(value: &str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|e| Error::InvalidArgument {
        what: "default tenant",
        message: format!("{value:?}: {e}"),
    })
}

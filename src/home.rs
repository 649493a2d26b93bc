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
use crate::objects::Objects;
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
    location: Location,
}

/// The environment variable naming a PostgreSQL database; it overrides
/// `[database]` of `bundleq.toml`.
pub const DATABASE_URL_ENV: &str = "BUNDLEQ_DATABASE_URL";

/// Where a home's database is: `BUNDLEQ_DATABASE_URL`, else `[database]
/// url`, else `[database] path` (relative to the home), else
/// `<home>/bundleq.db`.
fn location_of(root: &Path, config: &Config) -> Result<Location> {
    if let Ok(url) = std::env::var(DATABASE_URL_ENV)
        && !url.trim().is_empty()
    {
        return Location::server(&url).map_err(|message| Error::InvalidArgument {
            what: "BUNDLEQ_DATABASE_URL",
            message,
        });
    }
    if let Some(url) = &config.database.url {
        return Location::server(url).map_err(|message| Error::Config {
            path: root.join(CONFIG_FILE),
            message: format!("database.url: {message}"),
        });
    }
    let text = config.database.path.as_deref().unwrap_or(DB_FILE);
    Location::parse(text, root).map_err(|message| Error::Config {
        path: root.join(CONFIG_FILE),
        message: format!("database.path: {message}"),
    })
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
        Home::init_with(root, None)
    }

    /// [`Home::init`] with the home's database on a PostgreSQL server
    /// (`database`, a URL or connection string), written into the new
    /// `bundleq.toml` as `[database] url`. An existing configuration naming
    /// another database is refused.
    pub fn init_with(root: &Path, database: Option<&str>) -> Result<(Home, InitReport)> {
        if let Some(url) = database {
            Location::server(url).map_err(|message| Error::InvalidArgument {
                what: "--database",
                message,
            })?;
        }
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
        let text = match database {
            Some(url) => DEFAULT_CONFIG.replacen(
                "# [database]\n",
                &format!(
                    "[database]\nurl = {}\n",
                    toml::Value::String(url.trim().to_owned())
                ),
                1,
            ),
            None => DEFAULT_CONFIG.to_owned(),
        };
        let mut written = false;
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&cfg)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).io("write", &cfg)?;
                written = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).io("write", &cfg),
        }
        let config = Config::load(&cfg)?;
        if let Some(url) = database
            && config.database.url.as_deref().map(str::trim) != Some(url.trim())
        {
            return Err(Error::Config {
                path: cfg,
                message: "this home's configuration names another database; edit `[database]` in it instead of passing --database".to_owned(),
            });
        }
        let location = location_of(root, &config)?;
        let home = Home {
            root: root.to_owned(),
            config,
            location,
        };
        // A server's database exists before the home: a home is new when
        // its configuration is.
        let created =
            !home.location().exists().unwrap_or(true) || (home.location().is_server() && written);
        let mut store = Store::create(&home.location(), home.config.store_options())?;
        store.meta_init(DEFAULT_TENANT_KEY, &Uuid::now_v7().to_string())?;
        let default_tenant = home.default_tenant(&mut store)?;
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
        let location = location_of(root, &config)?;
        let home = Home {
            root: root.to_owned(),
            config,
            location,
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

    /// Where the home's database is (see `BUNDLEQ_DATABASE_URL`).
    pub fn location(&self) -> Location {
        self.location.clone()
    }

    /// The home's default tenant.
    pub fn default_tenant(&self, store: &mut Store) -> Result<Uuid> {
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
        if let Ok(location) = location_of(&self.root, &config) {
            self.location = location;
        }
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

    /// Where this home's source bytes are kept: small ones in the database
    /// and big ones under `objects/` on SQLite; all in the database on a
    /// server that several hosts share.
    pub fn object_store(&self) -> Objects {
        if self.location.is_server() {
            Objects::in_database_only(
                self.objects(),
                crate::store::Readers::at(&self.location, &self.config.store_options(), 4),
            )
        } else {
            Objects::new(self.objects())
        }
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

//! bundleq: an embedded, durable job engine for research run bundles.
//!
//! See `ARCHITECTURE.md` for the code map and the invariants each module
//! keeps. In short: [`store`] is the only module that runs SQL; [`state`]
//! holds the job state machine's pure rules; [`home`] owns the folder
//! layout and [`config`] its configuration file. The library never prints,
//! never exits the process and never installs a logger: it returns
//! [`Error`]s and emits `log` records.

// No `unwrap` in the library: a failure is an `Error` or a documented
// fallback, never a panic. (Unit tests may unwrap.)
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod accept;
pub mod bench;
pub mod bundle;
pub mod config;
pub mod custody;
pub mod digest;
pub mod error;
pub mod handler;
pub mod home;
pub mod inbox;
pub mod objects;
pub mod presence;
pub mod state;
pub mod store;
pub mod timestamp;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
pub use home::Home;
pub use state::{Backoff, JobStatus, Outcome};
pub use store::{Store, StoreOptions};
pub use timestamp::{Clock, ManualClock, SystemClock, Timestamp};

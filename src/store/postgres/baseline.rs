//! The benchmark's plain-SQL baseline on PostgreSQL — batched `unnest`
//! enqueue, `SKIP LOCKED` claims of 100 and completions of 100 by as many
//! claimers as the engine gets, no engine around them — and the scratch
//! schemas a benchmark runs in.

use std::time::Instant;

use postgres::{Client, NoTls};
use uuid::Uuid;

use super::{PgContext, PgLocation, PgStore};
use crate::error::Result;
use crate::store::BaselineFigures;

/// Jobs per enqueue transaction.
const ENQUEUE_BATCH: usize = 1000;
/// Jobs per claim and per completion transaction.
const CLAIM_BATCH: i64 = 100;

/// A schema made for one benchmark, dropped (with everything in it) when
/// this is dropped.
pub struct Scratch {
    location: PgLocation,
    schema: String,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({})", self.schema)
    }
}

impl Scratch {
    /// A new, empty schema in the database at `location`.
    pub fn new(location: &PgLocation) -> Result<Scratch> {
        let schema = format!("bundleq_bench_{}", Uuid::now_v7().simple());
        let mut client = location
            .config()
            .connect(NoTls)
            .pg("connect to the database")?;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .pg("create a scratch schema")?;
        Ok(Scratch {
            location: location.clone(),
            schema,
        })
    }

    /// The scratch schema's location (the same database, its search path
    /// set to the schema).
    pub fn location(&self) -> PgLocation {
        PgLocation {
            text: format!(
                "{} options='-c search_path={}'",
                keyword_form(&self.location),
                self.schema
            ),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut client) = self.location.config().connect(NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}

/// A location's connection settings as `key=value` text (a URL is turned
/// into that form so that options can be added).
fn keyword_form(location: &PgLocation) -> String {
    let config = location.config();
    let mut parts = Vec::new();
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    for h in config.get_hosts() {
        match h {
            postgres::config::Host::Tcp(name) => parts.push(format!("host={}", quote(name))),
            postgres::config::Host::Unix(p) => {
                parts.push(format!("host={}", quote(&p.display().to_string())));
            }
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(db) = config.get_dbname() {
        parts.push(format!("dbname={}", quote(db)));
    }
    if let Some(pw) = config.get_password() {
        parts.push(format!("password={}", quote(&String::from_utf8_lossy(pw))));
    }
    parts.join(" ")
}

fn connect(location: &PgLocation) -> Result<Client> {
    location
        .config()
        .connect(NoTls)
        .pg("connect to the database")
}

impl PgStore {
    /// Adds the commit floor's table (one row) to this schema.
    pub fn add_commit_floor(&mut self) -> Result<()> {
        self.client()?
            .batch_execute(FLOOR_TABLE)
            .pg("baseline setup")
    }

    /// Times one commit of the floor on this store's own connection.
    pub fn commit_floor(&mut self) -> Result<std::time::Duration> {
        floor_commit(self.client()?)
    }
}

const FLOOR_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS baseline_floor (id int PRIMARY KEY, n bigint NOT NULL);
     INSERT INTO baseline_floor VALUES (1, 0) ON CONFLICT DO NOTHING";

fn floor_commit(client: &mut Client) -> Result<std::time::Duration> {
    let t = Instant::now();
    client
        .execute("UPDATE baseline_floor SET n = n + 1 WHERE id = 1", &[])
        .pg("baseline commit floor")?;
    Ok(t.elapsed())
}

/// Runs the baseline for `n` jobs with `claimers` connections claiming at
/// once, in the (migrated) schema at `location`; times `samples` minimal
/// commits.
pub fn run(
    location: &PgLocation,
    n: usize,
    claimers: usize,
    samples: usize,
) -> Result<BaselineFigures> {
    let mut client = connect(location)?;
    client.batch_execute(FLOOR_TABLE).pg("baseline setup")?;
    let tenant = Uuid::now_v7();
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(ENQUEUE_BATCH);
        let ids: Vec<Uuid> = (0..k).map(|_| crate::store::new_job_id()).collect();
        client
            .execute(
                "INSERT INTO research_jobs (id, tenant_id, run_id, job_type, status, attempts,
                     max_attempts, payload_json, created_at, updated_at)
                 SELECT id, $2, $2, 'bench', 'queued', 0, 3, '{}', now(), now()
                 FROM unnest($1::uuid[]) AS id",
                &[&ids, &tenant],
            )
            .pg("baseline enqueue")?;
        left -= k;
    }
    let enqueue = start.elapsed();

    let drain_start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..claimers.max(1))
            .map(|_| {
                scope.spawn(move || -> Result<()> {
                    let mut c = connect(location)?;
                    loop {
                        let claimed: Vec<Uuid> = c
                            .query(
                                "UPDATE research_jobs SET status = 'running', attempts = attempts + 1,
                                     locked_at = now(), locked_by = 'baseline', updated_at = now()
                                 WHERE id IN (SELECT id FROM research_jobs
                                              WHERE status = 'queued' AND retry_at IS NULL
                                              ORDER BY created_at LIMIT $1
                                              FOR UPDATE SKIP LOCKED)
                                 RETURNING id",
                                &[&CLAIM_BATCH],
                            )
                            .pg("baseline claim")?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        if claimed.is_empty() {
                            return Ok(());
                        }
                        c.execute(
                            "UPDATE research_jobs SET status = 'succeeded', locked_at = NULL,
                                 locked_by = NULL, updated_at = now()
                             WHERE id = ANY($1)",
                            &[&claimed],
                        )
                        .pg("baseline complete")?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap_or(Ok(()))?;
        }
        Ok(())
    })?;
    let drain = drain_start.elapsed();

    let mut floor = Vec::with_capacity(samples);
    for _ in 0..samples {
        floor.push(floor_commit(&mut client)?);
    }
    floor.sort();
    let p50 = floor
        .get(floor.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6);
    let per_s = |d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    Ok(BaselineFigures {
        enqueue_per_s: per_s(enqueue),
        claim_complete_per_s: per_s(drain),
        lifecycle_per_s: per_s(enqueue + drain),
        commit_p50_us: p50,
    })
}

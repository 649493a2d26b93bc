//! `tenants`: the tenants a home knows. Every read and write is scoped to
//! one of them; an unknown or nil tenant is refused with
//! [`Error::UnknownTenant`] instead of silently starting an invisible one.

use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;

use super::convert::{DbContext, uuid_col};
use super::{SqliteStore, WriteTx};
use crate::error::{Error, Result};
use crate::store::Tenant;
use crate::timestamp::Timestamp;

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: uuid_col(row, 0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
    })
}

impl WriteTx<'_> {
    /// Fails with [`Error::UnknownTenant`] unless the home knows `id`.
    pub(crate) fn require_tenant(&self, id: Uuid) -> Result<()> {
        let known: bool = self
            .tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)")
            .and_then(|mut s| s.query_row([id.to_string()], |r| r.get(0)))
            .db("look up a tenant")?;
        if known {
            Ok(())
        } else {
            Err(Error::UnknownTenant {
                tenant: id.to_string(),
            })
        }
    }
}

impl SqliteStore {
    /// Every tenant, by name.
    pub fn tenants(&mut self) -> Result<Vec<Tenant>> {
        self.read("list tenants", |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT id, name, created_at FROM tenants ORDER BY name")
                .db("list tenants")?;
            let rows = stmt.query_map([], tenant_from_row).db("list tenants")?;
            rows.collect::<rusqlite::Result<_>>().db("list tenants")
        })
    }

    /// The tenant named by `key`: its id or its name. The nil UUID and
    /// tenants the home does not know are [`Error::UnknownTenant`].
    pub fn tenant(&mut self, key: &str) -> Result<Tenant> {
        let by_id = Uuid::try_parse(key).ok();
        let found = self.read("look up a tenant", |tx| {
            let sql = if by_id.is_some() {
                "SELECT id, name, created_at FROM tenants WHERE id = ?1"
            } else {
                "SELECT id, name, created_at FROM tenants WHERE name = ?1"
            };
            let key = by_id.map_or_else(|| key.to_owned(), |u| u.to_string());
            tx.prepare_cached(sql)
                .and_then(|mut s| s.query_row([key], tenant_from_row).optional())
                .db("look up a tenant")
        })?;
        found.ok_or_else(|| Error::UnknownTenant {
            tenant: key.to_owned(),
        })
    }

    /// Creates a tenant named `name`, with the given id or a new UUIDv7.
    pub fn create_tenant(
        &mut self,
        name: &str,
        id: Option<Uuid>,
        now: Timestamp,
    ) -> Result<Tenant> {
        let id = crate::store::new_tenant_id(name, id)?;
        self.write("create a tenant", |tx| {
            let clash: Option<(String, String)> = tx
                .prepare_cached("SELECT id, name FROM tenants WHERE id = ?1 OR name = ?2")
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), name], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })
                .db("create a tenant")?;
            if let Some((other_id, other_name)) = clash {
                return Err(Error::InvalidArgument {
                    what: "tenant",
                    message: format!("tenant {other_name} ({other_id}) already exists"),
                });
            }
            tx.prepare_cached("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![id.to_string(), name, now]))
                .db("create a tenant")?;
            Ok(())
        })?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
            created_at: now,
        })
    }

    /// Makes sure tenant `id` exists (named `name` when it is created).
    pub(crate) fn ensure_tenant(&mut self, id: Uuid, name: &str, now: Timestamp) -> Result<()> {
        self.write("create a tenant", |tx| {
            tx.prepare_cached(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![id.to_string(), name, now]))
            .db("create a tenant")?;
            Ok(())
        })
    }
}

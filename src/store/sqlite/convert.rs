//! Between rusqlite and the store's vocabulary: errors with their action,
//! timestamps as fixed-width text, ids and statuses read back from text.
//! Every conversion is written here once.

use rusqlite::Row;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::state::JobStatus;
use crate::timestamp::Timestamp;

/// Attaches an action to a rusqlite error: `.db("claim jobs")?`.
pub(crate) trait DbContext<T> {
    fn db(self, action: &'static str) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db(self, action: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            action,
            source: Box::new(e),
        })
    }
}

/// The rusqlite error inside a store error, if it is one.
pub(crate) fn sqlite_error(e: &Error) -> Option<&rusqlite::Error> {
    match e {
        Error::Db { source, .. } => source.downcast_ref::<rusqlite::Error>(),
        _ => None,
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_db()))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Timestamp::parse(text).ok_or_else(|| {
            FromSqlError::Other(format!("invalid timestamp in database: {text:?}").into())
        })
    }
}

fn conversion(
    idx: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
}

/// Every UUID read back from the database's text goes through here.
fn stored_uuid(text: &str) -> std::result::Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|e| format!("{text:?} is not a UUID: {e}"))
}

/// A UUID stored as text in column `idx`.
pub(crate) fn uuid_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(idx)?;
    stored_uuid(&text).map_err(|e| conversion(idx, e))
}

/// A UUID stored as text, read outside a row (inside a transaction, whose
/// errors are classified: this one as [`Error::Corrupt`]).
pub(crate) fn uuid_text(text: &str, action: &'static str) -> Result<Uuid> {
    stored_uuid(text).map_err(|e| Error::Db {
        action,
        source: Box::new(conversion(0, e)),
    })
}

/// True for rusqlite's "a stored value does not parse as its type".
pub(crate) fn is_unreadable_value(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

/// A job status stored as text in column `idx`.
pub(crate) fn status_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<JobStatus> {
    let text: String = row.get(idx)?;
    text.parse().map_err(|e: String| conversion(idx, e))
}

/// JSON stored as text in column `idx`.
pub(crate) fn json_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| conversion(idx, e))
}

/// A list as the JSON array a statement reads with `json_each(?N)`.
pub(crate) fn json_list(items: &[impl serde::Serialize]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

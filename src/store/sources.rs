//! `research_sources` and its FTS5 index: what `process_bundle` recorded for
//! each run, searchable offline.

use rusqlite::{Transaction, params};
use serde::Serialize;
use uuid::Uuid;

use super::Store;
use crate::error::{DbContext, Error, Result};
use crate::timestamp::Timestamp;

/// One source to record for a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSource {
    /// Position in the bundle's `sources`.
    pub idx: u32,
    /// Where it came from.
    pub uri: String,
    /// Its title.
    pub title: Option<String>,
    /// Digest of its bytes.
    pub sha256: String,
    /// Its media type.
    pub media_type: Option<String>,
    /// When it was retrieved.
    pub retrieved_at: Option<Timestamp>,
    /// Size of the bytes kept under `objects/`, if any.
    pub size: Option<u64>,
    /// Text to index, if the bytes are text.
    pub text: Option<String>,
}

/// All sources of one run, replacing whatever was recorded before (so a
/// job that runs again records them once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSources {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// Its sources.
    pub sources: Vec<NewSource>,
}

/// A search result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchHit {
    /// The run the source belongs to.
    pub run_id: Uuid,
    /// The source's position in its bundle.
    pub idx: u32,
    /// The source's uri.
    pub uri: String,
    /// The source's title.
    pub title: Option<String>,
    /// Matching text with the hits in `[` `]`.
    pub snippet: String,
    /// FTS5 bm25 rank: lower is better.
    pub rank: f64,
}

pub(super) fn replace_sources(
    tx: &Transaction<'_>,
    run: &RunSources,
    now: Timestamp,
) -> Result<()> {
    let (tenant, run_id) = (run.tenant_id.to_string(), run.run_id.to_string());
    tx.prepare_cached(
        "DELETE FROM research_sources_fts WHERE rowid IN
             (SELECT rowid FROM research_sources WHERE tenant_id = ?1 AND run_id = ?2)",
    )
    .and_then(|mut s| s.execute(params![tenant, run_id]))
    .db("replace sources")?;
    tx.prepare_cached("DELETE FROM research_sources WHERE tenant_id = ?1 AND run_id = ?2")
        .and_then(|mut s| s.execute(params![tenant, run_id]))
        .db("replace sources")?;
    for s in &run.sources {
        let size = s
            .size
            .map(i64::try_from)
            .transpose()
            .map_err(|_| Error::InvalidArgument {
                what: "source size",
                message: "too large".to_owned(),
            })?;
        tx.prepare_cached(
            "INSERT INTO research_sources (tenant_id, run_id, idx, uri, title, sha256,
                 media_type, retrieved_at, size, indexed, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut st| {
            st.execute(params![
                tenant,
                run_id,
                s.idx,
                s.uri,
                s.title,
                s.sha256,
                s.media_type,
                s.retrieved_at,
                size,
                s.text.is_some(),
                now
            ])
        })
        .db("record a source")?;
        let rowid = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO research_sources_fts (rowid, title, uri, body, tenant_id, run_id, idx)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| {
            st.execute(params![
                rowid,
                s.title.as_deref().unwrap_or(""),
                s.uri,
                s.text.as_deref().unwrap_or(""),
                tenant,
                run_id,
                s.idx
            ])
        })
        .db("index a source")?;
    }
    Ok(())
}

/// Turns free text into an FTS5 query that matches documents containing
/// every word: each word becomes a quoted string, so no input is FTS5
/// syntax (and none can be a syntax error).
fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

impl Store {
    /// Sources of `tenant` whose text, title or uri contain every word of
    /// `query`, best first.
    pub fn search(
        &mut self,
        tenant: Uuid,
        query: &str,
        run: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SearchHit>> {
        let Some(q) = fts_query(query) else {
            return Err(Error::InvalidArgument {
                what: "query",
                message: "give at least one word to search for".to_owned(),
            });
        };
        self.read("search sources", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT f.run_id, f.idx, s.uri, s.title,
                            snippet(research_sources_fts, 2, '[', ']', '…', 12), f.rank
                     FROM research_sources_fts AS f
                     JOIN research_sources AS s ON s.rowid = f.rowid
                     WHERE research_sources_fts MATCH ?1 AND f.tenant_id = ?2
                       AND (?3 IS NULL OR f.run_id = ?3)
                     ORDER BY f.rank LIMIT ?4",
                )
                .db("search sources")?;
            let rows = stmt
                .query_map(
                    params![q, tenant.to_string(), run.map(|r| r.to_string()), limit],
                    |r| {
                        let run_id: String = r.get(0)?;
                        Ok(SearchHit {
                            run_id: Uuid::parse_str(&run_id).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    0,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })?,
                            idx: r.get(1)?,
                            uri: r.get(2)?,
                            title: r.get(3)?,
                            snippet: r.get(4)?,
                            rank: r.get(5)?,
                        })
                    },
                )
                .db("search sources")?;
            rows.collect::<rusqlite::Result<_>>().db("search sources")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn user_text_never_becomes_fts_syntax() {
        assert_eq!(
            fts_query("glacier NEAR retreat").unwrap(),
            r#""glacier" "NEAR" "retreat""#
        );
        assert_eq!(fts_query(r#"a"b"#).unwrap(), r#""a""b""#);
        assert_eq!(fts_query("   "), None);
    }
}

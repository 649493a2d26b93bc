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
    /// The title of the run.
    pub run_title: String,
    /// FTS5 bm25 rank: lower is better (an internal, not in `--json`).
    #[serde(skip)]
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

/// One piece of a search query as the user typed it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// A word or a "quoted phrase", with a trailing `*` for a prefix.
    Term {
        text: String,
        prefix: bool,
    },
    Or,
    Not,
    And,
    Open,
    Close,
}

fn pieces(input: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            chars.next();
            out.push(if c == '(' { Piece::Open } else { Piece::Close });
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
            let prefix = chars.peek() == Some(&'*');
            if prefix {
                chars.next();
            }
            out.push(Piece::Term { text, prefix });
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' || c == '(' || c == ')' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(match word.as_str() {
                "OR" => Piece::Or,
                "NOT" => Piece::Not,
                "AND" => Piece::And,
                _ => {
                    let prefix = word.ends_with('*');
                    Piece::Term {
                        text: word.trim_end_matches('*').to_owned(),
                        prefix,
                    }
                }
            });
        }
    }
    out
}

/// Turns what a user typed into an FTS5 query: words (`glacier`), prefixes
/// (`glac*`), `"quoted phrases"`, `OR`, `NOT`, `AND` (implied between
/// terms) and parentheses. Every word and phrase is passed quoted, so no
/// other text is FTS5 syntax; a misplaced operator is an error that says
/// what to write instead.
pub(crate) fn fts_query(input: &str) -> std::result::Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0i32;
    // Whether the last piece can be followed by an operator.
    let mut after_term = false;
    for piece in pieces(input) {
        match piece {
            Piece::Term { text, prefix } => {
                if text.chars().all(|c| !c.is_alphanumeric()) {
                    continue; // punctuation alone matches nothing
                }
                if after_term {
                    out.push("AND".to_owned());
                }
                let mut t = format!("\"{}\"", text.replace('"', "\"\""));
                if prefix {
                    t.push('*');
                }
                out.push(t);
                after_term = true;
            }
            Piece::Or | Piece::Not | Piece::And => {
                let word = match piece {
                    Piece::Or => "OR",
                    Piece::Not => "NOT",
                    _ => "AND",
                };
                if !after_term {
                    return Err(format!(
                        "{word} needs a word before it, as in `glacier {word} retreat`"
                    ));
                }
                out.push(word.to_owned());
                after_term = false;
            }
            Piece::Open => {
                if after_term {
                    out.push("AND".to_owned());
                }
                depth += 1;
                out.push("(".to_owned());
                after_term = false;
            }
            Piece::Close => {
                if depth == 0 {
                    return Err("a ')' has no '(' before it".to_owned());
                }
                if !after_term {
                    return Err("give a word before ')'".to_owned());
                }
                depth -= 1;
                out.push(")".to_owned());
                after_term = true;
            }
        }
    }
    if out.is_empty() {
        return Err("give at least one word to search for".to_owned());
    }
    if !after_term {
        return Err(format!(
            "{} needs a word after it",
            out.last().map_or("the query", String::as_str)
        ));
    }
    if depth > 0 {
        return Err("a '(' is not closed".to_owned());
    }
    Ok(out.join(" "))
}

impl Store {
    /// Sources of `tenant` that match `query` (see the README for its
    /// syntax), best first, at most `limit`, and how many match in all.
    pub fn search(
        &mut self,
        tenant: Uuid,
        query: &str,
        run: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<SearchHit>, u64)> {
        let q = fts_query(query).map_err(|message| Error::InvalidArgument {
            what: "search",
            message,
        })?;
        self.read("search sources", |tx| {
            let total: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM research_sources_fts AS f
                     WHERE research_sources_fts MATCH ?1 AND f.tenant_id = ?2
                       AND (?3 IS NULL OR f.run_id = ?3)",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![q, tenant.to_string(), run.map(|r| r.to_string())],
                        |r| r.get(0),
                    )
                })
                .db("search sources")?;
            let mut stmt = tx
                .prepare_cached(
                    "SELECT f.run_id, f.idx, s.uri, s.title,
                            snippet(research_sources_fts, 2, '[', ']', '…', 12), f.rank,
                            r.title
                     FROM research_sources_fts AS f
                     JOIN research_sources AS s ON s.rowid = f.rowid
                     JOIN research_runs AS r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
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
                            run_title: r.get(6)?,
                        })
                    },
                )
                .db("search sources")?;
            let hits = rows.collect::<rusqlite::Result<_>>().db("search sources")?;
            Ok((hits, u64::try_from(total).unwrap_or(0)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn user_text_becomes_fts_syntax_only_through_the_operators() {
        assert_eq!(
            fts_query("glacier NEAR retreat").unwrap(),
            r#""glacier" AND "NEAR" AND "retreat""#
        );
        assert_eq!(fts_query("glac* OR ice").unwrap(), r#""glac"* OR "ice""#);
        assert_eq!(
            fts_query(r#""terminus retreat" NOT moraine"#).unwrap(),
            r#""terminus retreat" NOT "moraine""#
        );
        assert_eq!(
            fts_query("(ice OR snow) melt").unwrap(),
            r#"( "ice" OR "snow" ) AND "melt""#
        );
        assert_eq!(fts_query(r#"a"b"#).unwrap(), r#""a" AND "b""#);
        assert!(fts_query("   ").unwrap_err().contains("at least one word"));
        assert!(fts_query("NOT ice").unwrap_err().contains("before it"));
        assert!(fts_query("ice OR").unwrap_err().contains("after it"));
        assert!(fts_query("(ice").unwrap_err().contains("not closed"));
    }
}

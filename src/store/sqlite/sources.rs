//! `research_sources` and its FTS5 index: what `process_bundle` recorded for
//! each run, searchable offline.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};
use uuid::Uuid;

use super::convert::{DbContext, uuid_col};
use super::{SqliteStore, shards};
use crate::error::{Error, Result};
use crate::store::search::Token;
use crate::store::{RunSources, SearchHit};
use crate::timestamp::Timestamp;

/// Rows for the search index, written when the transaction's other
/// statements are done. FTS5 writes its pending terms to disk as a new
/// segment whenever a later statement of the transaction opens a statement
/// savepoint (most multi-row writes do), and merges those segments as they
/// pile up: indexing each source as its job's outcome is recorded cost half
/// of the writer's time. Written last, a batch's rows become one segment.
#[derive(Debug, Default)]
pub(super) struct PendingIndex {
    rows: Vec<PendingRow>,
}

#[derive(Debug)]
struct PendingRow {
    rowid: i64,
    tenant_id: String,
    run_id: String,
    title: String,
    uri: String,
    body: String,
}

impl PendingIndex {
    /// Forgets the rows of one run (its sources are being replaced) and
    /// returns their rowids: they are not in the index yet.
    fn take_run(&mut self, tenant: &str, run_id: &str) -> Vec<i64> {
        let mut taken = Vec::new();
        self.rows.retain(|r| {
            let of_run = r.tenant_id == tenant && r.run_id == run_id;
            if of_run {
                taken.push(r.rowid);
            }
            !of_run
        });
        taken
    }

    /// Indexes the rows; call after every other write of the transaction.
    pub(super) fn write(self, tx: &Transaction<'_>) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO research_sources_fts (rowid, title, uri, body) VALUES (?1, ?2, ?3, ?4)",
            )
            .db("index sources")?;
        for r in &self.rows {
            insert
                .execute(params![r.rowid, r.title, r.uri, r.body])
                .db("index sources")?;
        }
        Ok(())
    }
}

/// Records a run's sources in place of those it had; their index rows are
/// added to `index`, for the end of the transaction.
pub(super) fn replace_sources(
    tx: &Transaction<'_>,
    run: &RunSources,
    now: Timestamp,
    index: &mut PendingIndex,
) -> Result<()> {
    let (tenant, run_id) = (run.tenant_id.to_string(), run.run_id.to_string());
    // Sources recorded earlier in this transaction are not indexed yet:
    // only the others leave the index. The index reads what it removes from
    // its content, so rows leave it before their text and source row.
    let unindexed = index.take_run(&tenant, &run_id);
    let indexed: Vec<i64> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT rowid FROM research_sources
                 WHERE tenant_id = ?1 AND run_id = ?2 AND search_shard IS NULL",
            )
            .db("replace sources")?;
        let rows = stmt
            .query_map(params![tenant, run_id], |r| r.get(0))
            .db("replace sources")?;
        rows.collect::<rusqlite::Result<Vec<i64>>>()
            .db("replace sources")?
            .into_iter()
            .filter(|rowid| !unindexed.contains(rowid))
            .collect()
    };
    for rowid in indexed {
        tx.prepare_cached("DELETE FROM research_sources_fts WHERE rowid = ?1")
            .and_then(|mut s| s.execute([rowid]))
            .db("replace sources")?;
    }
    for sql in [
        "DELETE FROM research_source_texts WHERE source_rowid IN
             (SELECT rowid FROM research_sources WHERE tenant_id = ?1 AND run_id = ?2)",
        "DELETE FROM research_sources WHERE tenant_id = ?1 AND run_id = ?2",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute(params![tenant, run_id]))
            .db("replace sources")?;
    }
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
                 media_type, retrieved_at, size, indexed, created_at, search_shard)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
                s.text.is_some() || s.indexed_apart.is_some(),
                now,
                s.indexed_apart
            ])
        })
        .db("record a source")?;
        let rowid = tx.last_insert_rowid();
        // Its text and index row are in a search shard already.
        if s.indexed_apart.is_some() {
            continue;
        }
        // The text is kept once: when it is the whole of the source's object
        // in the database (same digest, same length), the index reads it
        // from there; otherwise (a file object, a text cut at the indexing
        // limit) it is kept beside the source.
        if let Some(text) = &s.text {
            let whole_object: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM objects WHERE sha256 = unhex(?1) AND length(bytes) = ?2)",
                )
                .and_then(|mut st| {
                    st.query_row(
                        params![s.sha256, i64::try_from(text.len()).unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )
                })
                .db("index a source")?;
            if !whole_object {
                tx.prepare_cached(
                    "INSERT INTO research_source_texts (source_rowid, body) VALUES (?1, ?2)",
                )
                .and_then(|mut st| st.execute(params![rowid, text]))
                .db("index a source")?;
            }
        }
        index.rows.push(PendingRow {
            rowid,
            tenant_id: tenant.clone(),
            run_id: run_id.clone(),
            title: s.title.clone().unwrap_or_default(),
            uri: s.uri.clone(),
            body: s.text.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

/// The FTS5 form of a parsed query: every term quoted (so no text is FTS5
/// syntax), operators and parentheses as they are.
pub(crate) fn fts_query(input: &str) -> std::result::Result<String, String> {
    let parts: Vec<String> = crate::store::search::parse(input)?
        .into_iter()
        .map(|t| match t {
            Token::Term { text, prefix } => {
                let mut q = format!("\"{}\"", text.replace('"', "\"\""));
                if prefix {
                    q.push('*');
                }
                q
            }
            Token::And => "AND".to_owned(),
            Token::Or => "OR".to_owned(),
            Token::Not => "NOT".to_owned(),
            Token::Open => "(".to_owned(),
            Token::Close => ")".to_owned(),
        })
        .collect();
    Ok(parts.join(" "))
}

impl SqliteStore {
    /// How many sources the handlers of `tenant`'s runs recorded.
    pub fn count_sources(&mut self, tenant: Uuid) -> Result<u64> {
        self.count_of_tenant(
            "count sources",
            "SELECT count(*) FROM research_sources WHERE tenant_id = ?1",
            tenant,
        )
    }

    /// Sources of `tenant` that match `query` (see the README for its
    /// syntax), best first, at most `limit`, and how many match in all.
    ///
    /// The database's own index and every search shard (big texts, see
    /// `shards`) are asked for their best rows, each ranked by bm25 over its
    /// own rows, and the best of all of them are taken.
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
        let (tenant, run) = (tenant.to_string(), run.map(|r| r.to_string()));
        self.with_shards_attached(|store, shards| {
            store.read("search sources", |tx| {
                let (top, mut total) = main_top(tx, &q, &tenant, run.as_deref(), limit)?;
                // (rank, shard or the database's own index, rowid there)
                let mut ranked: Vec<(f64, Option<u32>, i64)> =
                    top.into_iter().map(|(id, rank)| (rank, None, id)).collect();
                for &k in shards {
                    let (top, count) =
                        shards::shard_top(tx, k, &q, &tenant, run.as_deref(), limit)?;
                    total += count;
                    ranked.extend(top.into_iter().map(|(id, rank)| (rank, Some(k), id)));
                }
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
                ranked.truncate(limit as usize);
                let mut found: HashMap<Option<u32>, HashMap<i64, SearchHit>> = HashMap::new();
                for place in std::iter::once(None).chain(shards.iter().copied().map(Some)) {
                    let ids: Vec<i64> = ranked
                        .iter()
                        .filter(|r| r.1 == place)
                        .map(|r| r.2)
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let hits = match place {
                        None => main_hits(tx, &q, &ids)?,
                        Some(k) => shards::shard_hits(tx, k, &q, &ids)?,
                    };
                    found.insert(place, hits);
                }
                let hits: Vec<SearchHit> = ranked
                    .iter()
                    .filter_map(|(rank, place, id)| {
                        let mut hit = found.get_mut(place)?.remove(id)?;
                        hit.rank = *rank;
                        Some(hit)
                    })
                    .collect();
                Ok((hits, u64::try_from(total).unwrap_or(0)))
            })
        })
    }
}

/// The best rows of the database's own index for a search: rowids and
/// ranks, at most `limit`, and how many match in all.
fn main_top(
    tx: &Connection,
    q: &str,
    tenant: &str,
    run: Option<&str>,
    limit: u32,
) -> Result<(Vec<(i64, f64)>, i64)> {
    // Which sources may match, said as cheaply as the data allows: one
    // run's few sources; every source, when the tenant owns them all (the
    // common case of a home with one tenant: the index is then asked alone,
    // and ranks only its own matches); otherwise a join on the tenant.
    let sole_owner: bool = tx
        .prepare_cached(
            "SELECT coalesce((SELECT min(tenant_id) FROM research_sources) = ?1
                             AND (SELECT max(tenant_id) FROM research_sources) = ?1, 0)",
        )
        .and_then(|mut st| st.query_row([tenant], |r| r.get(0)))
        .db("search sources")?;
    let (from, filter, params): (&str, &str, Vec<&dyn rusqlite::ToSql>) = match &run {
        Some(run) => (
            "research_sources_fts AS f",
            "AND f.rowid IN (SELECT rowid FROM research_sources
                             WHERE tenant_id = ?2 AND run_id = ?3)",
            vec![&q, &tenant, run],
        ),
        None if sole_owner => ("research_sources_fts AS f", "", vec![&q]),
        None => (
            "research_sources_fts AS f JOIN research_sources AS s ON s.rowid = f.rowid",
            "AND s.tenant_id = ?2",
            vec![&q, &tenant],
        ),
    };
    // `bm25()` called by name: ordering by the `rank` column computed it
    // twice.
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT f.rowid, bm25(research_sources_fts)
             FROM {from}
             WHERE research_sources_fts MATCH ?1 {filter}"
        ))
        .db("search sources")?;
    best_rows(&mut stmt, params.as_slice(), limit)
}

/// A search's `(rowid, rank)` rows, at most `limit` of them, best first
/// (lowest rank, then lowest rowid), and how many rows there were: one pass
/// over the matches. `ORDER BY rank LIMIT n` and then `count(*)` would
/// evaluate the query twice, and a prefix merges the lists of all its
/// words each time (a tenth of a search for a prefix matching 66,815
/// sources).
pub(super) fn best_rows(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    limit: u32,
) -> Result<(Vec<(i64, f64)>, i64)> {
    /// Ordered by rank, then rowid: the heap's top is the worst kept.
    struct Ranked(f64, i64);
    impl PartialEq for Ranked {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other).is_eq()
        }
    }
    impl Eq for Ranked {}
    impl PartialOrd for Ranked {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Ranked {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
        }
    }
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut best = std::collections::BinaryHeap::with_capacity(keep.min(1024) + 1);
    let mut total: i64 = 0;
    let mut rows = stmt.query(params).db("search sources")?;
    while let Some(row) = rows.next().db("search sources")? {
        total += 1;
        let (rowid, rank): (i64, f64) = (
            row.get(0).db("search sources")?,
            row.get(1).db("search sources")?,
        );
        if best.len() < keep {
            best.push(Ranked(rank, rowid));
        } else if best
            .peek()
            .is_some_and(|worst| Ranked(rank, rowid) < *worst)
        {
            best.pop();
            best.push(Ranked(rank, rowid));
        }
    }
    let top = best
        .into_sorted_vec()
        .into_iter()
        .map(|Ranked(rank, rowid)| (rowid, rank))
        .collect();
    Ok((top, total))
}

/// The database's own index's rows `ids` as hits (rank left 0), with their
/// snippets: one more evaluation of the query, kept to the rowid range the
/// rows span; the unary `+` keeps the list of rowids a filter (as an index
/// it would evaluate the query once per row), so only those rows get a
/// snippet, which reads their text.
fn main_hits(tx: &Connection, q: &str, ids: &[i64]) -> Result<HashMap<i64, SearchHit>> {
    let mut found = HashMap::new();
    let (Some(&low), Some(&high)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(found);
    };
    let mut stmt = tx
        .prepare_cached(
            "SELECT f.rowid, s.run_id, s.idx, s.uri, s.title,
                    snippet(research_sources_fts, 2, '[', ']', '…', 12), r.title
             FROM research_sources_fts AS f
             JOIN research_sources AS s ON s.rowid = f.rowid
             JOIN research_runs AS r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
             WHERE research_sources_fts MATCH ?1 AND f.rowid BETWEEN ?2 AND ?3
               AND +f.rowid IN (SELECT value FROM json_each(?4))",
        )
        .db("search sources")?;
    let rows = stmt
        .query_map(params![q, low, high, super::convert::json_list(ids)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                SearchHit {
                    run_id: uuid_col(r, 1)?,
                    idx: r.get(2)?,
                    uri: r.get(3)?,
                    title: r.get(4)?,
                    snippet: r.get(5)?,
                    rank: 0.0,
                    run_title: r.get(6)?,
                },
            ))
        })
        .db("search sources")?;
    for row in rows {
        let (rowid, hit) = row.db("search sources")?;
        found.insert(rowid, hit);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{best_rows, fts_query};

    #[test]
    fn best_rows_keeps_the_lowest_ranks_ties_by_rowid_and_counts_every_row() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE r (id INTEGER PRIMARY KEY, rank REAL);
             INSERT INTO r VALUES (1, -1.0), (2, -3.0), (3, -2.0), (4, -3.0), (5, 0.5),
                                  (6, -2.0), (7, -10.0);",
        )
        .unwrap();
        let mut stmt = conn.prepare("SELECT id, rank FROM r").unwrap();
        let mut ids = |limit| {
            let (top, total) = best_rows(&mut stmt, [], limit).unwrap();
            assert_eq!(total, 7);
            top.into_iter().map(|(id, _)| id).collect::<Vec<i64>>()
        };
        assert_eq!(ids(3), [7, 2, 4]);
        assert_eq!(ids(5), [7, 2, 4, 3, 6]);
        assert_eq!(ids(100), [7, 2, 4, 3, 6, 1, 5]);
        assert_eq!(ids(u32::MAX), [7, 2, 4, 3, 6, 1, 5]);
        assert!(ids(0).is_empty());
        // Every keep size over a shuffled stream agrees with a full sort.
        let mut state = 7u64;
        let rows: Vec<(i64, f64)> = (1..=500)
            .map(|id| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (id, f64::from((state >> 40) as u32 % 37) * -0.5)
            })
            .collect();
        let list = serde_json::to_string(&rows).unwrap();
        let mut stmt = conn
            .prepare("SELECT value ->> 0, value ->> 1 FROM json_each(?1)")
            .unwrap();
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        for keep in [1usize, 2, 19, 20, 21, 250, 499, 500, 501] {
            let (top, total) = best_rows(&mut stmt, [&list], keep as u32).unwrap();
            assert_eq!(total, 500);
            assert_eq!(top, sorted[..keep.min(500)], "keep {keep}");
        }
    }

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

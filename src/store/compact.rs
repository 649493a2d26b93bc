//! Bundle JSON stored compactly: the text of an inline source is kept once,
//! as its object, and the stored JSON holds `null` where the text's JSON
//! string was, plus a list of holes: `[[byte offset, digest], …]`, where
//! the digest is the byte offset of the text's sha256 (64 hex digits)
//! elsewhere in the stored JSON itself — the source's own `sha256` field, as
//! a rule, before or after its `content` (writers that sort keys put
//! `content` first) — or, when it is not near, the hex digits.
//! Filling the holes gives back the bytes received, exactly: a text is cut
//! only where its JSON string, written by [`quoted`] (the shortest escapes,
//! as JSON writers commonly produce), appears verbatim, and the same
//! function writes it back. `quoted` is ours, not a library's, so that a
//! dependency update can never change how stored bundles are rebuilt. A
//! text written with other escapes (`\u00e9`, `\/`) is not found and stays
//! in the JSON. The stored JSON stays valid JSON; the backend checks a
//! rebuilt bundle against its sha256.
//!
//! Backend-neutral: a backend stores the compact text and the holes next to
//! each other and fills them when the bundle is read.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Hex;

/// What stands in a hole of the stored JSON.
const PLACEHOLDER: &str = "null";
/// A text shorter than this (as a JSON string) is not worth a hole.
const MIN_CUT: usize = 64;
/// Bytes of a text's JSON string searched for before comparing it whole.
const PREFIX: usize = 48;
/// How far from a hole, either way, its digest is looked for in the stored
/// JSON: the rest of its source's fields. Bounded, so that a bundle of many
/// sources is not searched whole once per source.
const NEAR: usize = 4096;

/// Where an inline text was cut out, and the digest of its object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Hole(usize, Digest);

/// A hole's digest: where it is written in the stored JSON, or itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Digest {
    At(usize),
    Hex(String),
}

/// `text` as a JSON string with the shortest escapes: `\"`, `\\`, `\b`,
/// `\f`, `\n`, `\r`, `\t`, other control characters as `\u00XX`,
/// everything else as itself. This must never change: stored bundles are
/// rebuilt with it.
fn quoted(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&text[plain..]);
    out.push('"');
    out
}

/// Cuts the JSON strings of `texts` (inline source texts with their
/// digests, in document order) out of `json`. `None` when nothing was worth
/// cutting; otherwise the compact JSON and its holes (as JSON text).
pub(crate) fn cut(json: &str, texts: &[(&Sha256Hex, &str)]) -> Option<(String, String)> {
    let mut out = String::with_capacity(json.len() / 2);
    let mut holes = Vec::new();
    let mut from = 0;
    for (sha, text) in texts {
        let q = quoted(text);
        if q.len() < MIN_CUT {
            continue;
        }
        // Found by a short prefix, then compared whole: building a searcher
        // for a long needle costs more than the search.
        let rest = json.get(from..)?.as_bytes();
        let prefix = &q.as_bytes()[..q.len().min(PREFIX)];
        let Some(found) = memchr::memmem::find_iter(rest, prefix)
            .find(|&i| rest.get(i..i + q.len()) == Some(q.as_bytes()))
        else {
            continue;
        };
        let at = from + found;
        out.push_str(json.get(from..at)?);
        holes.push(Hole(out.len(), Digest::Hex(sha.as_str().to_owned())));
        out.push_str(PLACEHOLDER);
        from = at + q.len();
    }
    if holes.is_empty() {
        return None;
    }
    out.push_str(json.get(from..)?);
    // Now that the stored text is whole, each digest written near its hole
    // (before it first) is pointed at instead of repeated.
    for Hole(at, digest) in &mut holes {
        let Digest::Hex(hex) = digest else { continue };
        let (needle, text) = (hex.as_bytes(), out.as_bytes());
        let before = text.get(at.saturating_sub(NEAR)..*at)?;
        let after_from = *at + PLACEHOLDER.len();
        let after = text.get(after_from..(after_from + NEAR).min(text.len()))?;
        let found = memchr::memmem::rfind(before, needle)
            .map(|i| *at - before.len() + i)
            .or_else(|| memchr::memmem::find(after, needle).map(|i| after_from + i));
        if let Some(i) = found {
            *digest = Digest::At(i);
        }
    }
    let holes = serde_json::to_string(&holes).ok()?;
    Some((out, holes))
}

/// The bundle a run's stored JSON stands for: its holes filled by `fetch`,
/// and the result checked to be the very bytes accepted (`bundle_sha256`).
/// An error is a message saying what is missing or damaged.
pub(crate) fn rebuild(
    compact: &str,
    holes: &str,
    bundle_sha256: &str,
    fetch: &mut dyn FnMut(&Sha256Hex) -> crate::Result<Option<Vec<u8>>>,
) -> Result<String, String> {
    let json = fill(compact, holes, fetch)?;
    if Sha256Hex::of(json.as_bytes()).as_str() == bundle_sha256 {
        Ok(json)
    } else {
        Err("rebuilt, it does not match its sha256".to_owned())
    }
}

/// Fills the holes of a compact JSON text with the texts `fetch` gives for
/// their digests. An error is a message saying what is missing or damaged.
pub(crate) fn fill(
    compact: &str,
    holes: &str,
    fetch: &mut dyn FnMut(&Sha256Hex) -> crate::Result<Option<Vec<u8>>>,
) -> Result<String, String> {
    let holes: Vec<Hole> = serde_json::from_str(holes)
        .map_err(|e| format!("its list of holes does not parse: {e}"))?;
    let mut out = String::with_capacity(compact.len() * 2);
    let mut from = 0;
    for Hole(at, digest) in holes {
        let placeholder = at
            .checked_add(PLACEHOLDER.len())
            .and_then(|end| compact.get(at..end));
        if at < from || placeholder != Some(PLACEHOLDER) {
            return Err(format!("its hole at byte {at} is not where the text says"));
        }
        let sha = match &digest {
            Digest::At(i) => i
                .checked_add(64)
                .and_then(|end| compact.get(*i..end))
                .unwrap_or_default(),
            Digest::Hex(hex) => hex.as_str(),
        };
        let digest =
            Sha256Hex::parse(sha).ok_or_else(|| format!("its hole names no sha256: {sha:?}"))?;
        let bytes = fetch(&digest)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the object {sha} of an inline source is missing"))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("the object {sha} is not UTF-8 text"))?;
        out.push_str(compact.get(from..at).unwrap_or_default());
        out.push_str(&quoted(&text));
        from = at + PLACEHOLDER.len();
    }
    out.push_str(compact.get(from..).unwrap_or_default());
    Ok(out)
}

/// The sources of a stored run that carry bytes: a `content` string, a
/// `path`, or a `content` cut out into a hole (its `null` stands where a
/// hole's digest says; a `null` the bundle itself held carries nothing).
/// An error is a message saying what does not parse.
pub(crate) fn object_refs(
    tenant_id: uuid::Uuid,
    run_id: uuid::Uuid,
    compact: &str,
    holes: Option<&str>,
) -> Result<Vec<crate::store::ObjectRef>, String> {
    let cut: std::collections::HashSet<String> = match holes {
        None => std::collections::HashSet::new(),
        Some(holes) => serde_json::from_str::<Vec<Hole>>(holes)
            .map_err(|e| format!("its list of holes does not parse: {e}"))?
            .into_iter()
            .map(|Hole(_, digest)| match digest {
                Digest::At(i) => compact
                    .get(i..i.saturating_add(64))
                    .unwrap_or_default()
                    .to_owned(),
                Digest::Hex(hex) => hex,
            })
            .collect(),
    };
    let value: serde_json::Value =
        serde_json::from_str(compact).map_err(|e| format!("its JSON does not parse: {e}"))?;
    // A run recorded through the library may hold any JSON: no list of
    // sources, or a source without a digest, names no object.
    let sources = value
        .get("sources")
        .and_then(serde_json::Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut out = Vec::new();
    for (idx, source) in sources.iter().enumerate() {
        let text = |key: &str| source.get(key).and_then(serde_json::Value::as_str);
        let Some(sha256) = text("sha256").and_then(Sha256Hex::parse) else {
            continue;
        };
        let carries = text("content").is_some()
            || text("path").is_some()
            || (source
                .get("content")
                .is_some_and(serde_json::Value::is_null)
                && cut.contains(sha256.as_str()));
        if carries {
            out.push(crate::store::ObjectRef {
                tenant_id,
                run_id,
                idx: u32::try_from(idx).unwrap_or(u32::MAX),
                uri: text("uri").unwrap_or_default().to_owned(),
                sha256,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(text: &str) -> Sha256Hex {
        Sha256Hex::of(text.as_bytes())
    }

    fn round_trip(json: &str, texts: &[&str]) -> Option<(String, String)> {
        let shas: Vec<Sha256Hex> = texts.iter().map(|t| sha(t)).collect();
        let pairs: Vec<(&Sha256Hex, &str)> = shas.iter().zip(texts.iter().copied()).collect();
        let cut = cut(json, &pairs)?;
        let back = fill(&cut.0, &cut.1, &mut |s| {
            Ok(pairs
                .iter()
                .find(|(x, _)| *x == s)
                .map(|(_, t)| t.as_bytes().to_vec()))
        })
        .unwrap();
        assert_eq!(back, json);
        serde_json::from_str::<serde_json::Value>(&cut.0).expect("the compact text is JSON");
        Some(cut)
    }

    #[test]
    fn quoted_writes_what_serde_json_writes() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        for text in [all.as_str(), "", "plain", "\u{1F600}\u{2028}\"\\/"] {
            assert_eq!(quoted(text), serde_json::Value::from(text).to_string());
        }
    }

    #[test]
    fn inline_texts_are_cut_and_filled_back_exactly() {
        let a = "alpha ".repeat(30);
        let b = "line one\nline \"two\" é \u{1F600}".repeat(5);
        let json = serde_json::json!({"sources": [
            {"uri": "u1", "content": a},
            {"uri": "u2", "content": b},
        ]})
        .to_string();
        let (compact, holes) = round_trip(&json, &[&a, &b]).unwrap();
        assert!(compact.len() < 100, "{compact}");
        assert_eq!(holes.matches('[').count(), 3);
        // No `sha256` field in this JSON: the digests are in the holes.
        assert!(holes.contains(sha(&a).as_str()), "{holes}");
    }

    #[test]
    fn a_digest_written_before_the_text_is_pointed_at_not_repeated() {
        let text = "Ice thickness at forty stations along the transect. ".repeat(4);
        let digest = sha(&text);
        let json = format!(
            r#"{{"sources": [{{"sha256": "{}", "content": {}}}]}}"#,
            digest.as_str(),
            quoted(&text)
        );
        let (compact, holes) = round_trip(&json, &[&text]).unwrap();
        assert!(!holes.contains(digest.as_str()), "{holes}");
        assert!(holes.len() < 20, "{holes}");
        assert!(compact.contains(digest.as_str()));
    }

    #[test]
    fn a_digest_written_after_the_text_is_pointed_at_too() {
        // Writers that sort keys (serde_json's default map, Python's
        // `sort_keys`) put `content` before `sha256`.
        let texts: Vec<String> = (0..50)
            .map(|i| format!("Station {i}: ice thickness, é \u{1F600}. ").repeat(4))
            .collect();
        let sources: Vec<serde_json::Value> = texts
            .iter()
            .map(|t| serde_json::json!({"content": t, "sha256": sha(t), "uri": "u"}))
            .collect();
        let json = serde_json::json!({"sources": sources}).to_string();
        assert!(json.find("content") < json.find("sha256"));
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (compact, holes) = round_trip(&json, &refs).unwrap();
        for t in &texts {
            assert!(!holes.contains(sha(t).as_str()), "{holes}");
        }
        assert_eq!(compact.matches("null").count(), 50);
    }

    #[test]
    fn a_digest_far_from_its_hole_is_written_out() {
        let text = "Ice thickness at forty stations along the transect. ".repeat(4);
        let digest = sha(&text);
        // Multibyte characters on every side, so that the bounds of the
        // search fall inside characters.
        let far = "é".repeat(NEAR);
        for json in [
            format!(
                r#"{{"sha256": "{}", "pad": "{far}", "content": {}}}"#,
                digest.as_str(),
                quoted(&text)
            ),
            format!(
                r#"{{"content": {}, "pad": "{far}", "sha256": "{}"}}"#,
                quoted(&text),
                digest.as_str()
            ),
        ] {
            let (_, holes) = round_trip(&json, &[&text]).unwrap();
            assert!(holes.contains(digest.as_str()), "{holes}");
        }
    }

    #[test]
    fn a_text_written_with_other_escapes_stays_in_the_json() {
        // `\u00e9` for é and `\/` are valid JSON that serde_json would not
        // write: the text is not found, nothing is cut.
        let text = format!("caf\u{e9} {}", "x".repeat(80));
        let json = format!(
            "{{\"content\": \"caf\\u00e9 {}\", \"p\": \"a\\/b\"}}",
            "x".repeat(80)
        );
        assert!(round_trip(&json, &[&text]).is_none());
    }

    #[test]
    fn a_repeated_text_short_texts_and_odd_layouts_round_trip() {
        let t = "the same text, twice over, long enough to be cut out".repeat(2);
        let json = format!(
            "{{ \"sources\" : [ {{\"content\"  :\n{q} }}, {{\"content\":{q}}} ] , \"title\": {q} }}",
            q = quoted(&t)
        );
        let (compact, _) = round_trip(&json, &[&t, &t]).unwrap();
        // Two cut (one per source), the title's copy kept.
        assert_eq!(compact.matches("null").count(), 2);
        assert!(round_trip(r#"{"content": "short"}"#, &["short"]).is_none());
    }

    #[test]
    fn damaged_holes_are_errors_not_panics() {
        let nothing = &mut |_: &Sha256Hex| Ok(None);
        for holes in [
            "",
            "[[99, \"x\"]]",
            "[[0, \"zz\"]]",
            "[[1, \"a\"]]",
            "{}",
            "[[0, 0]]",
            "[[0, 999]]",
        ] {
            assert!(fill("null", holes, nothing).is_err(), "{holes}");
        }
        let h = format!("[[0, \"{}\"]]", "a".repeat(64));
        assert!(fill("null", &h, nothing).unwrap_err().contains("missing"));
    }
}

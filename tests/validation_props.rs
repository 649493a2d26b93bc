//! Property tests over the RunBundleV1 rules: hostile bytes and JSON never
//! panic and always explain themselves; generated valid bundles pass; each
//! kind of damage is reported at its own path.

use bundleq::bundle::{Limits, validate_bytes};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("bundle_version".to_owned()),
                    Just("run_id".to_owned()),
                    Just("title".to_owned()),
                    Just("sources".to_owned()),
                    Just("sha256".to_owned()),
                    Just("source_refs".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid bundle: random title, 1–5 sources (some with inline content
/// whose hash matches), findings pointing at existing sources.
fn valid_bundle() -> impl Strategy<Value = Value> {
    let source = (
        "[a-z]{1,12}",
        proptest::option::of(".{0,40}"),
        any::<bool>(),
    )
        .prop_map(|(host, content, with_title)| {
            let mut s = json!({ "uri": format!("https://{host}.example/x") });
            match content {
                Some(text) => {
                    s["sha256"] = hex(text.as_bytes()).into();
                    s["content"] = text.into();
                }
                None => s["sha256"] = hex(host.as_bytes()).into(),
            }
            if with_title {
                s["title"] = format!("About {host}").into();
            }
            s
        });
    (
        "[A-Za-z][A-Za-z ]{0,40}",
        prop::collection::vec(source, 1..6),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(title, sources, refs)| {
            let n = sources.len();
            let findings: Vec<Value> = refs
                .iter()
                .map(|r| json!({ "text": "a finding", "source_refs": [r.index(n)] }))
                .collect();
            json!({
                "bundle_version": 1,
                "run_id": uuid::Uuid::now_v7(),
                "title": title,
                "created_at": "2026-11-28T10:00:00Z",
                "sources": sources,
                "findings": findings,
                "metadata": { "n": n }
            })
        })
}

fn error_paths(v: &Value) -> Vec<String> {
    match validate_bytes(v.to_string().as_bytes(), &Limits::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors().iter().map(|e| e.path.clone()).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_error_explains_itself(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match validate_bytes(&bytes, &Limits::default()) {
            Err(errors) => {
                prop_assert!(!errors.errors().is_empty());
                for e in errors.errors() {
                    prop_assert!(!e.message.is_empty());
                }
            }
            // Accepted bytes were a JSON document.
            Ok(_) => prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok()),
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_is_never_valid_by_accident(v in any_json()) {
        let text = v.to_string();
        let verdict = validate_bytes(text.as_bytes(), &Limits::default());
        // A random document lacks run_id/title/created_at/sources of the right shape.
        prop_assert!(verdict.is_err());
    }

    #[test]
    fn generated_valid_bundles_pass_and_keep_their_fields(v in valid_bundle()) {
        let b = validate_bytes(v.to_string().as_bytes(), &Limits::default());
        let b = b.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(b.title(), v["title"].as_str().unwrap());
        prop_assert_eq!(b.sources().len(), v["sources"].as_array().unwrap().len());
        prop_assert_eq!(b.run_id().to_string(), v["run_id"].as_str().unwrap());
    }

    #[test]
    fn a_bad_hash_is_reported_at_its_source(v in valid_bundle(), which in any::<prop::sample::Index>(), bad in "[0-9a-f]{0,63}|[0-9a-f]{65,70}|[g-z]{64}") {
        let mut v = v;
        let i = which.index(v["sources"].as_array().unwrap().len());
        v["sources"][i]["sha256"] = bad.into();
        prop_assert_eq!(error_paths(&v), vec![format!("sources.{i}.sha256")]);
    }

    #[test]
    fn tampered_content_is_reported_at_its_content(v in valid_bundle(), which in any::<prop::sample::Index>(), text in ".{0,40}", extra in "[a-z]{1,8}") {
        // Give one source inline content that matches its digest...
        let mut v = v;
        let i = which.index(v["sources"].as_array().unwrap().len());
        v["sources"][i]["sha256"] = hex(text.as_bytes()).into();
        v["sources"][i]["content"] = text.clone().into();
        prop_assert_eq!(error_paths(&v), Vec::<String>::new());
        // ...then change the content but not the digest.
        v["sources"][i]["content"] = format!("{text}{extra}").into();
        prop_assert_eq!(error_paths(&v), vec![format!("sources.{i}.content")]);
    }

    #[test]
    fn an_unknown_field_is_reported_by_name(v in valid_bundle(), key in "x_[a-z]{1,8}") {
        let mut v = v;
        v[key.as_str()] = json!(1);
        prop_assert_eq!(error_paths(&v), vec![key]);
    }

    #[test]
    fn an_out_of_range_source_ref_is_reported_at_the_ref(v in valid_bundle(), past in 0usize..5) {
        let mut v = v;
        let n = v["sources"].as_array().unwrap().len();
        v["findings"] = json!([{ "text": "t", "source_refs": [0, n + past] }]);
        prop_assert_eq!(error_paths(&v), vec!["findings.0.source_refs.1".to_owned()]);
    }
}

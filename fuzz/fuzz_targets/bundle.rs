//! Bundle parsing and validation on arbitrary bytes: must never panic,
//! allocate without bound, or accept a bundle whose stated hashes do not
//! match its inline content.
#![no_main]

use bundleq::bundle::{Limits, SourceBody, Sha256Hex, validate_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bundle_bytes: 64 * 1024,
        ..Limits::default()
    };
    match validate_bytes(data, &limits) {
        Ok(bundle) => {
            assert!(!bundle.sources().is_empty());
            for s in bundle.sources() {
                if let SourceBody::Inline(text) = s.body() {
                    assert_eq!(&Sha256Hex::of(text.as_bytes()), s.sha256());
                }
            }
            for f in bundle.findings() {
                assert!(f.source_refs().iter().all(|&r| r < bundle.sources().len()));
            }
        }
        Err(errors) => {
            assert!(!errors.errors().is_empty());
            assert!(errors.errors().iter().all(|e| !e.message.is_empty()));
        }
    }
});

//! The content address of bytes: a sha256 digest as lowercase hex. Shared
//! by bundle validation (a source's declared digest) and the object store
//! (where the bytes live); it depends on nothing else in the crate.

use std::fmt;

use serde::Serialize;

/// A lowercase hex sha256 digest, known to be 64 hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Parses 64 lowercase hex characters.
    pub fn parse(s: &str) -> Option<Sha256Hex> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Sha256Hex(s.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Hex {
        use sha2::Digest;
        Sha256Hex::from_digest(&sha2::Sha256::digest(bytes))
    }

    pub(crate) fn from_digest(digest: &[u8]) -> Sha256Hex {
        use std::fmt::Write;
        let mut s = String::with_capacity(64);
        for b in digest {
            let _ = write!(s, "{b:02x}");
        }
        Sha256Hex(s)
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

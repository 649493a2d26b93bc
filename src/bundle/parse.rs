//! Bounded JSON parsing: bytes to a `serde_json::Value` that respects the
//! [`Limits`] while it is being built, so hostile input is refused before it
//! can cost memory or stack: nesting depth, string length, array and object
//! sizes are checked element by element, duplicate keys are refused, and
//! numbers that cannot be stored are refused: too large (`1e400`, integers
//! beyond 64 bits) and too small (`1e-400`, which would silently become 0).
//! A UTF-8 byte order mark is refused with a message saying so.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{Limits, ValidationError};

/// Parses `bytes` as one JSON document within `limits`.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Value, ValidationError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(ValidationError::new(
            "",
            "the bundle starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without a BOM",
            None,
        ));
    }
    let state = State {
        limits,
        path: RefCell::new(Vec::new()),
        error: RefCell::new(None),
        floats_seen: Cell::new(0),
        tiny: tiny_floats(bytes),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Node {
        state: &state,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(state.error.take().unwrap_or_else(|| {
            let message = if e.is_eof() {
                format!(
                    "invalid JSON: the document ends too early (line {} column {})",
                    e.line(),
                    e.column()
                )
            } else {
                format!("invalid JSON: {e}")
            };
            // A syntax or range error of serde_json's own: the path stack
            // still says where the parser was.
            ValidationError::new(&state.path.borrow().join("."), message, None)
        })),
    }
}

struct State<'a> {
    limits: &'a Limits,
    /// Where the parser is, for error paths (`sources.3.uri`).
    path: RefCell<Vec<String>>,
    /// The structured error that made the parse stop, if it was ours.
    error: RefCell<Option<ValidationError>>,
    /// Numbers with a fraction or exponent visited so far (serde_json hands
    /// them over in document order, as `tiny_floats` counts them).
    floats_seen: Cell<usize>,
    /// Which of those underflow (see [`tiny_floats`]).
    tiny: Vec<usize>,
}

/// The positions, among the numbers written with a fraction or exponent
/// (counted in document order), of those that are not zero as written but
/// become 0 or a subnormal as an f64 (`1e-400`): serde_json would hand us
/// the rounded value without a word.
fn tiny_floats(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &bytes[start..i];
                if token.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                    let mantissa_end = token
                        .iter()
                        .position(|b| matches!(b, b'e' | b'E'))
                        .unwrap_or(token.len());
                    let nonzero = token[..mantissa_end]
                        .iter()
                        .any(|b| matches!(b, b'1'..=b'9'));
                    let value = std::str::from_utf8(token)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok());
                    if nonzero && value.is_some_and(|v| v.abs() < f64::MIN_POSITIVE) {
                        out.push(count);
                    }
                    count += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

impl State<'_> {
    fn fail<E: de::Error>(&self, message: String, input: Option<String>) -> E {
        let path = self.path.borrow().join(".");
        let err = ValidationError::new(&path, message, input);
        let text = err.to_string();
        *self.error.borrow_mut() = Some(err);
        E::custom(text)
    }

    fn array_limit(&self) -> (usize, &'static str) {
        let path = self.path.borrow();
        match path.as_slice() {
            [p] if p == "sources" => (self.limits.max_sources, "sources"),
            [p] if p == "findings" => (self.limits.max_findings, "findings"),
            _ => (self.limits.max_array_items, "items"),
        }
    }
}

#[derive(Clone, Copy)]
struct Node<'s, 'a> {
    state: &'s State<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Node<'_, '_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.state.limits.max_depth {
            return Err(self.state.fail(
                format!(
                    "nesting is deeper than the limit of {} levels",
                    self.state.limits.max_depth
                ),
                None,
            ));
        }
        Ok(Node {
            state: self.state,
            depth,
        })
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        let k = self.state.floats_seen.get();
        self.state.floats_seen.set(k + 1);
        if self.state.tiny.binary_search(&k).is_ok() {
            return Err(self.state.fail(
                "number is too small to store (it would become 0 or lose its precision)".to_owned(),
                None,
            ));
        }
        // Integers come as i64/u64; an integral float this large is an
        // integer literal that did not fit in 64 bits, and would be stored
        // rounded.
        if v.fract() == 0.0 && !(-9.223_372_036_854_776e18..1.844_674_407_370_955_2e19).contains(&v)
        {
            return Err(self.state.fail(
                "number is too large to store exactly (integers must fit in 64 bits)".to_owned(),
                None,
            ));
        }
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.state.fail("number is out of range".to_owned(), None))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        if v.len() > self.state.limits.max_string_bytes {
            return Err(self.state.fail(
                format!(
                    "string is longer than the limit of {} bytes ({} bytes)",
                    self.state.limits.max_string_bytes,
                    v.len()
                ),
                None,
            ));
        }
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let (limit, what) = self.state.array_limit();
        let mut items = Vec::new();
        loop {
            if items.len() == limit {
                // One more element is an error; we never hold more than the limit.
                self.state.path.borrow_mut().push(items.len().to_string());
                let more = seq.next_element_seed(inner)?;
                self.state.path.borrow_mut().pop();
                if more.is_some() {
                    return Err(self
                        .state
                        .fail(format!("too many {what}: the limit is {limit}"), None));
                }
                break;
            }
            self.state.path.borrow_mut().push(items.len().to_string());
            let next = seq.next_element_seed(inner)?;
            self.state.path.borrow_mut().pop();
            match next {
                Some(v) => items.push(v),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let limit = self.state.limits.max_object_keys;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.state.path.borrow_mut().push(key.clone());
            if out.contains_key(&key) {
                return Err(self.state.fail("duplicate key".to_owned(), None));
            }
            if out.len() == limit {
                return Err(self.state.fail(
                    format!("too many keys in one object: the limit is {limit}"),
                    None,
                ));
            }
            let value = map.next_value_seed(inner)?;
            self.state.path.borrow_mut().pop();
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

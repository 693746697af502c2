//! SQLite values as syncd carries them: in change batches, in the state, in
//! the conflict log.
//!
//! Two encodings live here because both must agree with SQLite's own rules:
//! the *row key* encoding sorts exactly like SQLite's `ORDER BY ... COLLATE
//! BINARY` (so capture can merge-join the user's table with the state), and
//! the *value hash* that capture compares to find changed columns.

use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// One SQLite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn from_ref(v: ValueRef<'_>) -> Value {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }

    /// The value as JSON, for the conflict log and `syncctl conflicts`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => (*i).into(),
            Value::Real(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Value::Text(t) => t.clone().into(),
            Value::Blob(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                serde_json::json!({ "blob": hex })
            }
        }
    }

    /// Reads a value back from [`Value::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Array(_) => Value::Null,
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Object(o) => {
                let hex = o.get("blob").and_then(|h| h.as_str()).unwrap_or("");
                Value::Blob(
                    (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect(),
                )
            }
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_ref()))
    }
}

/// Hash of one column value. The type is part of the hash: `1` and `'1'` are
/// different values to SQLite and to the application.
///
/// The digest is xxh3 of `type byte, [length,] bytes`. Capture hashes every
/// column of every row, so short values are laid out in a stack buffer and
/// hashed in one call: the streaming hasher gives the same digest but costs
/// several times more per value (its state is ~600 bytes to set up).
pub fn hash_value(v: ValueRef<'_>) -> u64 {
    let (tag, bytes) = match v {
        ValueRef::Null => return xxh3_64(&[0]),
        ValueRef::Integer(i) => return hash_number(1, i.to_le_bytes()),
        ValueRef::Real(f) => return hash_number(2, f.to_bits().to_le_bytes()),
        ValueRef::Text(t) => (3u8, t),
        ValueRef::Blob(b) => (4u8, b),
    };
    // Two buffer sizes: most values are short, and a buffer costs its size
    // to set up at every call.
    if bytes.len() <= 64 - 9 {
        hash_bytes::<64>(tag, bytes)
    } else if bytes.len() <= SHORT_INPUT - 9 {
        hash_bytes::<SHORT_INPUT>(tag, bytes)
    } else {
        let mut h = Xxh3::new();
        h.update(&[tag]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
        h.digest()
    }
}

fn hash_number(tag: u8, bits: [u8; 8]) -> u64 {
    let mut buf = [tag; 9];
    buf[1..].copy_from_slice(&bits);
    xxh3_64(&buf)
}

/// `bytes` must fit in `N` with its 9-byte prefix.
fn hash_bytes<const N: usize>(tag: u8, bytes: &[u8]) -> u64 {
    let mut buf = [0u8; N];
    buf[0] = tag;
    buf[1..9].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf[9..9 + bytes.len()].copy_from_slice(bytes);
    xxh3_64(&buf[..9 + bytes.len()])
}

/// Inputs up to this length are hashed from a stack buffer.
const SHORT_INPUT: usize = 256;

/// Hash of a whole row from its column hashes, in a fixed column order (the
/// caller sorts by column name, so two peers with the same columns agree).
/// The digest is xxh3 of the concatenated `name hash, value hash` pairs.
pub fn hash_row(column_hashes: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut buf = [0u8; SHORT_INPUT];
    let mut used = 0;
    let mut column_hashes = column_hashes;
    for (name_hash, value_hash) in column_hashes.by_ref() {
        buf[used..used + 8].copy_from_slice(&name_hash.to_le_bytes());
        buf[used + 8..used + 16].copy_from_slice(&value_hash.to_le_bytes());
        used += 16;
        if used == SHORT_INPUT {
            // A wide row: stream the rest, which digests the same bytes.
            let mut h = Xxh3::new();
            h.update(&buf);
            for (name_hash, value_hash) in column_hashes {
                h.update(&name_hash.to_le_bytes());
                h.update(&value_hash.to_le_bytes());
            }
            return h.digest();
        }
    }
    xxh3_64(&buf[..used])
}

/// Hash of a column name, precomputed once per table.
pub fn hash_name(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// The length of a number's key encoding: its tag, the orderable image of
/// its `f64`, the exact remainder, its type.
pub const NUMBER_KEY_BYTES: usize = 18;

const TAG_NULL: u8 = 0x05;
const TAG_NUMBER: u8 = 0x10;
const TAG_TEXT: u8 = 0x20;
const TAG_BLOB: u8 = 0x30;

/// Appends the order-preserving encoding of one key value.
///
/// Byte order of encodings equals SQLite's BINARY ordering: NULL < numbers
/// (integers and reals compared by value) < text < blob. Numbers are the
/// orderable bits of their `f64` image, then the exact integer remainder as
/// a tie-breaker, then a type byte so that the value decodes to its type.
pub fn encode_key_value(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.push(TAG_NULL),
        ValueRef::Integer(i) => {
            let f = i as f64;
            out.push(TAG_NUMBER);
            out.extend_from_slice(&orderable_f64(f).to_be_bytes());
            let rest = (i as i128 - f as i128) as i64;
            out.extend_from_slice(&((rest as u64) ^ (1 << 63)).to_be_bytes());
            out.push(0);
        }
        ValueRef::Real(f) => {
            out.push(TAG_NUMBER);
            out.extend_from_slice(&orderable_f64(f).to_be_bytes());
            out.extend_from_slice(&(1u64 << 63).to_be_bytes());
            out.push(1);
        }
        ValueRef::Text(t) => {
            out.push(TAG_TEXT);
            escape_bytes(t, out);
        }
        ValueRef::Blob(b) => {
            out.push(TAG_BLOB);
            escape_bytes(b, out);
        }
    }
}

/// Encodes a whole key (one or more values).
pub fn encode_key<'a>(values: impl IntoIterator<Item = ValueRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(NUMBER_KEY_BYTES);
    for v in values {
        encode_key_value(v, &mut out);
    }
    out
}

fn orderable_f64(f: f64) -> u64 {
    // -0.0 and 0.0 are equal to SQLite; give them one encoding.
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) }
}

fn unorderable_f64(u: u64) -> f64 {
    let bits = if u >> 63 == 1 { u ^ (1 << 63) } else { !u };
    f64::from_bits(bits)
}

// 0x00 inside the value becomes 0x00 0xFF and the value ends with 0x00, which
// keeps memcmp order and makes each encoding prefix-free.
fn escape_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.push(0);
}

/// The number a key of one numeric value encodes, without decoding
/// anything else: `None` for any other key.
pub fn single_number(key: &[u8]) -> Option<Value> {
    let bytes: &[u8; NUMBER_KEY_BYTES] = key.try_into().ok()?;
    if bytes[0] != TAG_NUMBER {
        return None;
    }
    let (f, rest, kind) = number_parts(&bytes[1..]);
    match kind {
        0 => Some(Value::Integer((f as i128 + rest as i128) as i64)),
        1 if rest == 0 => Some(Value::Real(f)),
        _ => None,
    }
}

/// The parts of a number's encoding after its tag (17 bytes): the `f64`
/// image, the exact integer remainder, and the type byte (0: integer).
fn number_parts(bytes: &[u8]) -> (f64, i64, u8) {
    let f = unorderable_f64(u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")));
    let rest = (u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
    (f, rest, bytes[16])
}

/// A key encoding that does not decode: the state is damaged.
#[derive(Debug, thiserror::Error)]
#[error("malformed row key in the state")]
pub struct MalformedKey;

/// Decodes a key made by [`encode_key`].
pub fn decode_key(mut bytes: &[u8]) -> Result<Vec<Value>, MalformedKey> {
    let mut values = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        match tag {
            TAG_NULL => values.push(Value::Null),
            TAG_NUMBER => {
                if bytes.len() < 17 {
                    return Err(MalformedKey);
                }
                let (f, rest, kind) = number_parts(bytes);
                values.push(match kind {
                    0 => Value::Integer((f as i128 + rest as i128) as i64),
                    _ => Value::Real(f),
                });
                bytes = &bytes[17..];
            }
            TAG_TEXT | TAG_BLOB => {
                let mut raw = Vec::new();
                let mut i = 0;
                loop {
                    match bytes.get(i) {
                        None => return Err(MalformedKey),
                        Some(0) if bytes.get(i + 1) == Some(&0xFF) => {
                            raw.push(0);
                            i += 2;
                        }
                        Some(0) => {
                            i += 1;
                            break;
                        }
                        Some(&b) => {
                            raw.push(b);
                            i += 1;
                        }
                    }
                }
                bytes = &bytes[i..];
                values.push(if tag == TAG_TEXT {
                    Value::Text(String::from_utf8(raw).map_err(|_| MalformedKey)?)
                } else {
                    Value::Blob(raw)
                });
            }
            _ => return Err(MalformedKey),
        }
    }
    Ok(values)
}

/// A short human-readable form of a key, for logs and `syncctl conflicts`.
pub fn key_text(values: &[Value]) -> String {
    let parts: Vec<String> = values.iter().map(|v| v.to_json().to_string()).collect();
    parts.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_filter("SQLite has no NaN", |f| !f.is_nan()).prop_map(Value::Real),
            ".{0,8}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Blob),
        ]
    }

    /// Values on both sides of the stack-buffer limit of [`hash_value`].
    pub(crate) fn arb_long_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            arb_value(),
            ".{240,260}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..600).prop_map(Value::Blob),
        ]
    }

    proptest! {
        #[test]
        fn key_encoding_sorts_like_sqlite(a in proptest::collection::vec(arb_value(), 1..3),
                                          b in proptest::collection::vec(arb_value(), 1..3)) {
            prop_assume!(a.len() == b.len());
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            // ORDER BY is the ordering capture relies on; IS is SQLite's equality.
            let n = a.len();
            let cols: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
            let left: Vec<String> = (0..n).map(|i| format!("?{} AS c{i}", i + 1)).collect();
            let right: Vec<String> = (0..n).map(|i| format!("?{}", n + i + 1)).collect();
            let same: Vec<String> = (0..n).map(|i| format!("?{} IS ?{}", i + 1, n + i + 1)).collect();
            let sql = format!(
                "SELECT (SELECT w FROM (SELECT 1 AS w, {} UNION ALL SELECT 2, {}) ORDER BY {} LIMIT 1), {}",
                left.join(", "), right.join(", "), cols.join(", "), same.join(" AND ")
            );
            let params: Vec<&Value> = a.iter().chain(b.iter()).collect();
            let (first, eq): (i64, bool) = conn
                .query_row(&sql, rusqlite::params_from_iter(params), |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
            let lt = first == 1;
            let ka = encode_key(a.iter().map(Value::as_ref));
            let kb = encode_key(b.iter().map(Value::as_ref));
            if !eq {
                prop_assert_eq!(lt, ka < kb, "{:?} vs {:?}", a, b);
            }
        }

        #[test]
        fn value_hash_is_the_streamed_digest_peers_already_store(v in arb_long_value()) {
            // States and peers keep hashes made by the streaming hasher; a
            // different digest would make every row look changed.
            let mut h = Xxh3::new();
            match v.as_ref() {
                ValueRef::Null => h.update(&[0]),
                ValueRef::Integer(i) => { h.update(&[1]); h.update(&i.to_le_bytes()); }
                ValueRef::Real(f) => { h.update(&[2]); h.update(&f.to_bits().to_le_bytes()); }
                ValueRef::Text(t) => { h.update(&[3]); h.update(&(t.len() as u64).to_le_bytes()); h.update(t); }
                ValueRef::Blob(b) => { h.update(&[4]); h.update(&(b.len() as u64).to_le_bytes()); h.update(b); }
            }
            prop_assert_eq!(hash_value(v.as_ref()), h.digest());
        }

        #[test]
        fn row_hash_is_the_streamed_digest_peers_already_store(cols in proptest::collection::vec(any::<(u64, u64)>(), 0..40)) {
            let mut h = Xxh3::new();
            for (n, v) in &cols {
                h.update(&n.to_le_bytes());
                h.update(&v.to_le_bytes());
            }
            prop_assert_eq!(hash_row(cols.iter().copied()), h.digest());
        }

        #[test]
        fn key_encoding_round_trips(a in proptest::collection::vec(arb_value(), 0..4)) {
            let k = encode_key(a.iter().map(Value::as_ref));
            let back = decode_key(&k).unwrap();
            prop_assert_eq!(back.len(), a.len());
            for (x, y) in back.iter().zip(a.iter()) {
                match (x, y) {
                    (Value::Real(p), Value::Real(q)) => prop_assert!(p == q),
                    _ => prop_assert_eq!(x, y),
                }
            }
        }
    }
}

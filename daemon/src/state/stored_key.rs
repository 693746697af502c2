//! How a row's key is kept in the state's `rows` table.
//!
//! Everywhere else a key is its order-preserving encoding
//! ([`value::encode_key`]). Most tables are keyed by one integer, whose
//! encoding takes 18 bytes compared byte by byte; the state keeps such a
//! key, and any other single number, as an SQL number instead, a few bytes
//! that SQLite compares as one number. Recording 100,000 applied rows took
//! 15% less time that way in a micro-benchmark, on top of what the smaller
//! column states save ([`super::columns`]). Every other key (text, blob,
//! NULL, several columns) is kept as its encoding.
//!
//! SQLite orders every number before every blob, while encodings put a
//! NULL before the numbers, and a key of several columns that starts with
//! a number among them: [`scan`] and [`greatest`] read a table's keys in
//! encoding order all the same, from three ranges of the primary key.

use crate::value::{self, Value};
use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};

/// A key as bound to the `key` column of `rows`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StoredKey<'k> {
    Integer(i64),
    Real(f64),
    Encoded(&'k [u8]),
}

impl<'k> StoredKey<'k> {
    /// How the key encoded as `key` is kept.
    pub fn of(key: &'k [u8]) -> StoredKey<'k> {
        match value::single_number(key) {
            Some(Value::Integer(i)) => StoredKey::Integer(i),
            Some(Value::Real(f)) => StoredKey::Real(f),
            _ => StoredKey::Encoded(key),
        }
    }
}

impl<'k> StoredKey<'k> {
    pub fn as_value_ref(&self) -> ValueRef<'k> {
        match *self {
            StoredKey::Integer(i) => ValueRef::Integer(i),
            StoredKey::Real(f) => ValueRef::Real(f),
            StoredKey::Encoded(b) => ValueRef::Blob(b),
        }
    }
}

impl ToSql for StoredKey<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_value_ref()))
    }
}

/// Appends the encoding of a key read from the `key` column to `out`.
fn encode_into(stored: ValueRef<'_>, out: &mut Vec<u8>) -> rusqlite::Result<()> {
    match stored {
        ValueRef::Blob(b) => out.extend_from_slice(b),
        ValueRef::Integer(_) | ValueRef::Real(_) => value::encode_key_value(stored, out),
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                0,
                other.data_type(),
                "a row key in the state is neither a number nor a blob".into(),
            ));
        }
    }
    Ok(())
}

/// The three ranges of a table's stored keys, each in SQLite's order: the
/// encodings below every number's (a NULL first), the numbers, and the
/// encodings from the numbers' tag on (text, blobs, several columns, which
/// may start with a number and so fall among the numbers).
const BELOW_NUMBERS: &str = "key >= X'' AND key < X'10'";
const NUMBERS: &str = "key < X''";
const FROM_NUMBERS: &str = "key >= X'10'";

/// The greatest key of table `tbl`, in encoding order.
pub fn greatest(conn: &rusqlite::Connection, tbl: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    let max_in = |range: &str| -> rusqlite::Result<Option<Vec<u8>>> {
        let sql = format!("SELECT max(key) FROM rows WHERE tbl = ?1 AND {range}");
        conn.prepare_cached(&sql)?.query_row([tbl], |r| match r.get_ref(0)? {
            ValueRef::Null => Ok(None),
            key => {
                let mut out = Vec::with_capacity(value::NUMBER_KEY_BYTES);
                encode_into(key, &mut out)?;
                Ok(Some(out))
            }
        })
    };
    let greatest = match (max_in(NUMBERS)?, max_in(FROM_NUMBERS)?) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    match greatest {
        Some(g) => Ok(Some(g)),
        None => max_in(BELOW_NUMBERS),
    }
}

/// Calls `f` with each row of table `tbl` in encoding order: the key's
/// encoding, the row's hash and whether it is a tombstone. Stops when `f`
/// returns false.
pub fn scan(
    reader: &rusqlite::Connection,
    tbl: i64,
    mut f: impl FnMut(&[u8], u64, bool) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let sql = |range: &str| {
        format!("SELECT key, hash, del_clock IS NOT NULL FROM rows WHERE tbl = ?1 AND {range} ORDER BY key")
    };
    let mut below = reader.prepare_cached(&sql(BELOW_NUMBERS))?;
    let mut rows = below.query([tbl])?;
    while let Some(r) = rows.next()? {
        if !f(r.get_ref(0)?.as_blob()?, r.get::<_, i64>(1)? as u64, r.get(2)?)? {
            return Ok(());
        }
    }
    // The numbers and the encodings from their tag on, merged.
    let mut numbers = reader.prepare_cached(&sql(NUMBERS))?;
    let mut from = reader.prepare_cached(&sql(FROM_NUMBERS))?;
    let mut numbers = Cursor::new(numbers.query([tbl])?)?;
    let mut from = Cursor::new(from.query([tbl])?)?;
    loop {
        let next = match (&numbers.current, &from.current) {
            (Some(a), Some(b)) if a.0 <= b.0 => &mut numbers,
            (Some(_), None) => &mut numbers,
            (_, Some(_)) => &mut from,
            (None, None) => return Ok(()),
        };
        let (key, hash, deleted) = next.current.as_ref().expect("chosen because it has a row");
        if !f(key, *hash, *deleted)? {
            return Ok(());
        }
        next.advance()?;
    }
}

/// One range of [`scan`], standing on a row.
struct Cursor<'s> {
    rows: rusqlite::Rows<'s>,
    current: Option<(Vec<u8>, u64, bool)>,
}

impl<'s> Cursor<'s> {
    fn new(rows: rusqlite::Rows<'s>) -> rusqlite::Result<Cursor<'s>> {
        let mut c = Cursor { rows, current: None };
        c.advance()?;
        Ok(c)
    }

    fn advance(&mut self) -> rusqlite::Result<()> {
        let mut key = self.current.take().map(|(k, ..)| k).unwrap_or_default();
        self.current = match self.rows.next()? {
            Some(r) => {
                key.clear();
                encode_into(r.get_ref(0)?, &mut key)?;
                Some((key, r.get::<_, i64>(1)? as u64, r.get(2)?))
            }
            None => None,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::state::{RowState, State, scan_rows};
    use crate::value::{self, Value, tests::arb_value};
    use proptest::prelude::*;

    fn put_all(state: &State, tbl: i64, keys: &[Vec<u8>]) {
        for (n, key) in keys.iter().enumerate() {
            let row = RowState { hash: n as u64, deleted: None, cols: Vec::new() };
            state.put_row(tbl, key, &row).unwrap();
        }
    }

    fn scanned(state: &State, tbl: i64) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        scan_rows(state.connection(), tbl, |key, _, _| {
            keys.push(key.to_vec());
            Ok(true)
        })
        .unwrap();
        keys
    }

    /// A real that SQLite takes for an integer key is the same row: no
    /// table holds both.
    fn is_integral(v: &Value) -> bool {
        matches!(v, Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.3e18)
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Keys of every kind in one table, numbers kept as SQL numbers,
        /// come back in the order of their encodings, and each is found.
        #[test]
        fn keys_of_every_kind_scan_in_encoding_order_and_are_found(
            keys in proptest::collection::vec(proptest::collection::vec(arb_value(), 1..3), 1..40)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut state = State::open(&dir.path().join("s.db")).unwrap();
            let tbl = state.table_id("t").unwrap();
            let other = state.table_id("u").unwrap();
            let mut encoded: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| !(k.len() == 1 && is_integral(&k[0])))
                .map(|k| value::encode_key(k.iter().map(Value::as_ref)))
                .collect();
            encoded.sort();
            encoded.dedup();
            put_all(&state, tbl, &encoded);
            // Rows of another table are neither scanned nor the greatest.
            put_all(&state, other, &[value::encode_key([Value::Blob(vec![0xff; 4]).as_ref()])]);
            prop_assert_eq!(&scanned(&state, tbl), &encoded);
            prop_assert_eq!(state.greatest_key(tbl).unwrap(), encoded.last().cloned());
            for (n, key) in encoded.iter().enumerate() {
                prop_assert_eq!(state.row(tbl, key).unwrap().map(|r| r.hash), Some(n as u64));
            }
        }
    }

    #[test]
    fn a_key_of_one_number_is_kept_as_that_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("s.db")).unwrap();
        let tbl = state.table_id("t").unwrap();
        let keys = [Value::Integer(-7), Value::Real(2.5), Value::Text("7".into())];
        put_all(&state, tbl, &keys.iter().map(|k| value::encode_key([k.as_ref()])).collect::<Vec<_>>());
        let types: Vec<String> = state
            .connection()
            .prepare("SELECT typeof(key) FROM rows ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(types, ["integer", "real", "blob"]);
    }
}

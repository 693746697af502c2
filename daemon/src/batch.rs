//! The body of a change batch: the row changes one peer captured in one go,
//! and what that peer had seen when it captured them.
//!
//! The body is wrapped in the self-checking [`crate::container`] before it
//! reaches the hub. Its encoding is the one codec of `syncd_proto`.

use crate::value::Value;
use serde::{Deserialize, Serialize};

/// Body format of a change batch; bumped with any incompatible change.
/// 2: inserts are told apart from whole-row images ([`Op::Insert`]).
pub const BODY_VERSION: u32 = 2;

/// What a peer had seen of another peer when it made a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// Peer id, 32 hex characters.
    pub peer_id: String,
    /// The last batch of that peer applied.
    pub seq: u64,
    /// The highest clock value of that peer applied. A version `(clock, p)`
    /// was seen by the author of this batch iff `clock <= seen[p].clock`.
    pub clock: u64,
}

/// One change batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchBody {
    pub body_version: u32,
    /// The version clock of every change in this batch (the author is the
    /// batch's peer).
    pub clock: u64,
    /// The author's view when it captured: its own entry carries `clock`.
    pub seen: Vec<Seen>,
    pub tables: Vec<TableChanges>,
}

/// Why a batch body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("batch body format {found} is newer than this syncd reads ({BODY_VERSION}): upgrade syncd")]
    Newer { found: u32 },
    #[error("unreadable batch body: {0}")]
    Malformed(String),
}

impl BatchBody {
    /// Decodes a body, refusing (not misreading) a newer format.
    pub fn decode(bytes: &[u8]) -> Result<BatchBody, BodyError> {
        // `body_version` is the first field, so it reads whatever follows.
        if let Some(found) = syncd_proto::decode_prefix::<u32>(bytes)
            && found > BODY_VERSION
        {
            return Err(BodyError::Newer { found });
        }
        syncd_proto::decode(bytes).map_err(|e| BodyError::Malformed(e.to_string()))
    }

    pub fn change_count(&self) -> usize {
        self.tables.iter().map(|t| t.changes.len()).sum()
    }

    /// The highest clock the author had seen of `peer_id`, 0 if none.
    pub fn seen_clock(&self, peer_id: &str) -> u64 {
        self.seen.iter().find(|s| s.peer_id == peer_id).map(|s| s.clock).unwrap_or(0)
    }
}

/// The changes to one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableChanges {
    pub table: String,
    /// Names of the columns the author synced, indexed by [`Op`] entries.
    pub columns: Vec<String>,
    /// Names of the key columns, in key order.
    pub key_columns: Vec<String>,
    /// False: the table has no primary key and rows are their own identity.
    pub has_primary_key: bool,
    #[serde(deserialize_with = "changes_reserved")]
    pub changes: Vec<RowChange>,
}

/// At most this many changes are reserved up front when a table's changes
/// are decoded: the count comes from a body a buggy peer may have written.
/// Above what a batch holds ([`crate::outbox::MAX_BATCH_CHANGES`]).
const MAX_RESERVED_CHANGES: usize = 1 << 17;

/// Decodes a table's changes into a vector reserved for their number.
/// serde's own reserves at most 1 MiB of them, and a full batch's vector
/// would be copied twice more as it grows.
fn changes_reserved<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<Vec<RowChange>, D::Error> {
    struct Changes;
    impl<'de> serde::de::Visitor<'de> for Changes {
        type Value = Vec<RowChange>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of row changes")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RowChange>, A::Error> {
            let mut changes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RESERVED_CHANGES));
            while let Some(change) = seq.next_element()? {
                changes.push(change);
            }
            Ok(changes)
        }
    }
    decoder.deserialize_seq(Changes)
}

/// One changed row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// Key values, in `key_columns` order.
    pub key: Vec<Value>,
    pub op: Op,
    /// For a change to an existing row: the version of that row's insert,
    /// when known. Two machines can make two different rows with one
    /// integer key; this says which of them the change is about.
    pub born: Option<Born>,
}

/// A row's birth as it travels (see [`crate::merge::Birth`]): the version
/// of its insert and the key it was made with (an integer key, else its
/// hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Born {
    pub clock: u64,
    /// The peer id's 32 hex digits as a number.
    pub peer: u128,
    pub key: u64,
}

impl Born {
    /// A known birth (clock 0 means unknown) of a peer named by its id.
    pub fn of(clock: u64, peer_id: &str, key: u64) -> Option<Born> {
        if clock == 0 {
            return None;
        }
        Some(Born { clock, peer: Born::peer_number(peer_id)?, key })
    }

    /// A peer id's 32 hex digits as the number births carry.
    pub fn peer_number(peer_id: &str) -> Option<u128> {
        u128::from_str_radix(peer_id, 16).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The full row of an existing row, one value per entry of `columns`:
    /// an update of a table whose conflict policy decides whole rows, or a
    /// row republished whole (it won against a delete, `push --force`).
    Row(Vec<Value>),
    /// Only the columns that changed: `(index into columns, value)`.
    Columns(Vec<(u32, Value)>),
    Delete,
    /// A row this peer made: the full row, as `Row`. Two inserts of one
    /// integer key that did not see each other are two different rows
    /// (DESIGN §4, "keys made on two machines"); a `Row` never is.
    Insert(Vec<Value>),
}

impl Op {
    /// The full row, for an insert or a whole-row image.
    pub fn whole_row(&self) -> Option<&[Value]> {
        match self {
            Op::Row(values) | Op::Insert(values) => Some(values),
            _ => None,
        }
    }
}

impl TableChanges {
    /// `(column name, value)` pairs of one change, for applying by name.
    pub fn named_values<'a>(&'a self, op: &'a Op) -> Vec<(&'a str, &'a Value)> {
        match op {
            Op::Row(values) | Op::Insert(values) => {
                self.columns.iter().map(String::as_str).zip(values.iter()).collect()
            }
            Op::Columns(cols) => {
                cols.iter().filter_map(|(i, v)| self.columns.get(*i as usize).map(|n| (n.as_str(), v))).collect()
            }
            Op::Delete => Vec::new(),
        }
    }
}

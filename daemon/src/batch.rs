//! The body of a change batch: the row changes one peer captured in one go,
//! and what that peer had seen when it captured them.
//!
//! The body is wrapped in the self-checking [`crate::container`] before it
//! reaches the hub. Its encoding is the one codec of `syncd_proto`.

use crate::value::Value;
use serde::{Deserialize, Serialize};

/// Body format of a change batch; bumped with any incompatible change.
pub const BODY_VERSION: u32 = 1;

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

impl BatchBody {
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
    pub changes: Vec<RowChange>,
}

/// One changed row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// Key values, in `key_columns` order.
    pub key: Vec<Value>,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The full row, one value per entry of `columns`: an insert, or an
    /// update of a table whose conflict policy decides whole rows.
    Row(Vec<Value>),
    /// Only the columns that changed: `(index into columns, value)`.
    Columns(Vec<(u32, Value)>),
    Delete,
}

impl TableChanges {
    /// `(column name, value)` pairs of one change, for applying by name.
    pub fn named_values<'a>(&'a self, op: &'a Op) -> Vec<(&'a str, &'a Value)> {
        match op {
            Op::Row(values) => self.columns.iter().map(String::as_str).zip(values.iter()).collect(),
            Op::Columns(cols) => {
                cols.iter().filter_map(|(i, v)| self.columns.get(*i as usize).map(|n| (n.as_str(), v))).collect()
            }
            Op::Delete => Vec::new(),
        }
    }
}

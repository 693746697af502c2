//! Capture: finds the rows of the user's database that changed since the last
//! capture and records them, with fresh versions, in the state and the outbox.
//!
//! Each table is scanned in key order next to the state's rows of that table
//! (a merge join), comparing row hashes; only rows whose hash differs are
//! looked at column by column. Capture only reads the user's database, inside
//! one read transaction, so it sees one consistent state of it and never
//! blocks the application's writers (in WAL mode).

use crate::batch::{Born, Op, RowChange, TableChanges};
use crate::config::Policy;
use crate::hlc::Hlc;
use crate::outbox::{BatchWriter, WriteError};
use crate::schema::{Table, quote_ident};
use crate::state::{self, ColState, RowState, State, Version};
use crate::value::{self, Value};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use std::cmp::Ordering;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("reading the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the state is damaged: {0}")]
    Damaged(String),
}

/// What one capture found.
#[derive(Debug, Default, Clone, Copy)]
pub struct CaptureStats {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

impl CaptureStats {
    pub fn total(&self) -> u64 {
        self.inserts + self.updates + self.deletes
    }
}

/// Captures every table. The caller runs this inside a state transaction and
/// a read transaction on `user`; `reader` is a second connection to the state
/// that sees it as it was before this capture.
#[allow(clippy::too_many_arguments)] // each input is a distinct fact the decision needs
pub fn capture_tables(
    user: &Connection,
    state: &mut State,
    reader: &Connection,
    tables: &[Table],
    policy_for: &dyn Fn(&str) -> Policy,
    self_peer: u32,
    hlc: &mut Hlc,
    out: &mut BatchWriter<'_>,
) -> Result<CaptureStats, CaptureError> {
    let mut stats = CaptureStats::default();
    for table in tables {
        let row_level = policy_for(&table.name).is_row_level();
        let tbl = state.table_id(&table.name)?;
        let mut scan = TableScan {
            table,
            changes: TableChanges {
                table: table.name.clone(),
                columns: table.column_names(),
                key_columns: table.key_names(),
                has_primary_key: table.has_primary_key,
                changes: Vec::new(),
            },
            tbl,
            row_level,
            self_peer,
            stats: &mut stats,
        };
        match scan.run_streaming(user, state, reader, hlc, out) {
            Err(ScanError::OutOfOrder) => {
                // Only if SQLite's order differs from the key encoding (a
                // database in UTF-16, for example): sort in memory instead.
                tracing::debug!(table = %table.name, "rows not in key order; capturing sorted in memory");
                return Err(CaptureError::Damaged(format!(
                    "table {} is not scanned in key order; capture restarts sorted in memory",
                    table.name
                )));
            }
            Err(ScanError::Capture(e)) => return Err(e),
            Ok(()) => {}
        }
    }
    Ok(stats)
}

enum ScanError {
    OutOfOrder,
    Capture(CaptureError),
}

impl<E: Into<CaptureError>> From<E> for ScanError {
    fn from(e: E) -> Self {
        ScanError::Capture(e.into())
    }
}

struct TableScan<'t, 's> {
    table: &'t Table,
    changes: TableChanges,
    tbl: i64,
    row_level: bool,
    self_peer: u32,
    stats: &'s mut CaptureStats,
}

/// One row of the state, as the scan reads it.
struct StateRow {
    key: Vec<u8>,
    hash: u64,
    deleted: bool,
    cols: Vec<u8>,
}

impl TableScan<'_, '_> {
    fn run_streaming(
        &mut self,
        user: &Connection,
        state: &State,
        reader: &Connection,
        hlc: &mut Hlc,
        out: &mut BatchWriter<'_>,
    ) -> Result<(), ScanError> {
        let sql = format!(
            "SELECT {} FROM main.{} ORDER BY {}",
            self.table.select_list(),
            quote_ident(&self.table.name),
            self.table.key_order()
        );
        let mut user_stmt = user.prepare(&sql)?;
        let mut user_rows = user_stmt.query([])?;
        let mut state_stmt = state::scan_rows(reader)?;
        let mut state_rows = state_stmt.query([self.tbl])?;
        let mut next_state = read_state_row(state_rows.next()?)?;
        let mut previous_key: Option<Vec<u8>> = None;
        let ncols = self.table.columns.len();
        while let Some(row) = user_rows.next()? {
            let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(ncols);
            for i in 0..ncols {
                values.push(row.get_ref(i)?);
            }
            let key = value::encode_key(self.table.key.iter().map(|&i| values[i]));
            if let Some(prev) = &previous_key {
                match prev.as_slice().cmp(&key) {
                    Ordering::Less => {}
                    // A table without a primary key may hold the same row
                    // twice; as a set it is one row.
                    Ordering::Equal if !self.table.has_primary_key => continue,
                    _ => return Err(ScanError::OutOfOrder),
                }
            }
            let mut matched = None;
            while let Some(s) = next_state.take() {
                match s.key.cmp(&key) {
                    Ordering::Less => {
                        if !s.deleted {
                            self.emit_delete(state, &s.key, &s.cols, hlc, out)?;
                        }
                        next_state = read_state_row(state_rows.next()?)?;
                    }
                    Ordering::Equal => {
                        matched = Some(s);
                        next_state = read_state_row(state_rows.next()?)?;
                        break;
                    }
                    Ordering::Greater => {
                        next_state = Some(s);
                        break;
                    }
                }
            }
            self.visit_row(state, &key, &values, matched, hlc, out)?;
            previous_key = Some(key);
        }
        while let Some(s) = next_state.take() {
            if !s.deleted {
                self.emit_delete(state, &s.key, &s.cols, hlc, out)?;
            }
            next_state = read_state_row(state_rows.next()?)?;
        }
        Ok(())
    }

    fn visit_row(
        &mut self,
        state: &State,
        key: &[u8],
        values: &[ValueRef<'_>],
        known: Option<StateRow>,
        hlc: &mut Hlc,
        out: &mut BatchWriter<'_>,
    ) -> Result<(), CaptureError> {
        let value_hashes: Vec<u64> = values.iter().map(|v| value::hash_value(*v)).collect();
        let row_hash = value::hash_row(self.table.hash_order.iter().map(|&(i, n)| (n, value_hashes[i])));
        let known = match known {
            Some(k) if !k.deleted && k.hash == row_hash => return Ok(()),
            Some(k) if !k.deleted => Some(k),
            _ => None,
        };
        let clock = out.clock(hlc);
        let version = Version { clock, peer: self.self_peer };
        let mut new_state = RowState { hash: row_hash, deleted: None, cols: Vec::with_capacity(values.len()) };
        let mut born = None;
        let op = match known {
            None => {
                for &(i, name_hash) in &self.table.hash_order {
                    let value_hash =
                        if self.table.key.contains(&i) { self.table.birth_key(values[i]) } else { value_hashes[i] };
                    new_state.cols.push(ColState { name_hash, value_hash, version });
                }
                self.stats.inserts += 1;
                Op::Insert(values.iter().map(|v| Value::from_ref(*v)).collect())
            }
            Some(k) => {
                let old = state::decode_cols(&k.cols);
                born = self.born(state, &old);
                let mut changed = Vec::new();
                for &(i, name_hash) in &self.table.hash_order {
                    let before = old.iter().find(|c| c.name_hash == name_hash);
                    let col = match before {
                        // A key column keeps the row's birth: the version of
                        // its insert and the key it was made with (a moved
                        // row has another key now). Unknown, it is older
                        // than all.
                        Some(c) if self.table.key.contains(&i) => *c,
                        Some(c) if c.value_hash == value_hashes[i] => *c,
                        _ if self.table.key.contains(&i) => {
                            let value_hash = self.table.birth_key(values[i]);
                            ColState { name_hash, value_hash, version: Version::default() }
                        }
                        _ => {
                            changed.push(i);
                            ColState { name_hash, value_hash: value_hashes[i], version }
                        }
                    };
                    new_state.cols.push(col);
                }
                if changed.is_empty() {
                    // Only a column that no longer exists changed: record the
                    // new hash, nothing to publish.
                    state.put_row(self.tbl, key, &new_state)?;
                    return Ok(());
                }
                self.stats.updates += 1;
                // No column state but the key's: the row is to go out whole
                // (it beat a delete, or `push --force`), as the same row.
                let key_names = self.table.key_name_hashes();
                let republish = old.iter().all(|c| key_names.contains(&c.name_hash));
                if self.row_level || republish {
                    // Whole-row policies compare whole rows: every column
                    // takes this version and the full image travels.
                    for c in new_state.cols.iter_mut().filter(|c| !key_names.contains(&c.name_hash)) {
                        c.version = version;
                    }
                    Op::Row(values.iter().map(|v| Value::from_ref(*v)).collect())
                } else {
                    changed.sort_unstable();
                    Op::Columns(changed.into_iter().map(|i| (i as u32, Value::from_ref(values[i]))).collect())
                }
            }
        };
        state.put_row(self.tbl, key, &new_state)?;
        let key_values = self.table.key.iter().map(|&i| Value::from_ref(values[i])).collect();
        self.push(state, RowChange { key: key_values, op, born }, out)
    }

    fn emit_delete(
        &mut self,
        state: &State,
        key: &[u8],
        cols: &[u8],
        hlc: &mut Hlc,
        out: &mut BatchWriter<'_>,
    ) -> Result<(), CaptureError> {
        let key_values = value::decode_key(key).map_err(|e| CaptureError::Damaged(e.to_string()))?;
        let clock = out.clock(hlc);
        let deleted = Some(Version { clock, peer: self.self_peer });
        let key_cols = state::key_cols(&state::decode_cols(cols), self.table);
        let born = self.born(state, &key_cols);
        let tombstone = RowState { hash: 0, deleted, cols: key_cols };
        state.put_row(self.tbl, key, &tombstone)?;
        self.stats.deletes += 1;
        self.push(state, RowChange { key: key_values, op: Op::Delete, born }, out)
    }

    /// The birth of a known row (its key's column state), to send with a
    /// change.
    fn born(&self, state: &State, cols: &[ColState]) -> Option<Born> {
        let key = *self.table.key_name_hashes().first()?;
        let c = cols.iter().find(|c| c.name_hash == key)?;
        let peer = u128::from_str_radix(state.peer_id(c.version.peer), 16).ok()?;
        (c.version.clock != 0).then_some(Born { clock: c.version.clock, peer, key: c.value_hash })
    }

    fn push(&mut self, state: &State, change: RowChange, out: &mut BatchWriter<'_>) -> Result<(), CaptureError> {
        out.push(state, &self.changes, change)?;
        Ok(())
    }
}

fn read_state_row(row: Option<&rusqlite::Row<'_>>) -> rusqlite::Result<Option<StateRow>> {
    row.map(|r| {
        let (key, hash, deleted, cols) = state::scanned_row(r)?;
        Ok(StateRow { key, hash, deleted, cols })
    })
    .transpose()
}

//! Capture: finds the rows of the user's database that changed since the last
//! capture and records them, with fresh versions, in the state and the outbox.
//!
//! Each table is scanned in key order next to the state's rows of that table
//! (a merge join), comparing row hashes; only rows whose hash differs are
//! looked at column by column. Capture only reads the user's database, inside
//! one read transaction, so it sees one consistent state of it and never
//! blocks the application's writers (in WAL mode).
//!
//! The state's side of the join is read by a helper thread on its own
//! connection and handed over in chunks: reading the state costs about as
//! much as reading the user's table, so the two reads overlap instead of
//! adding up. Only the calling thread writes (the state and the outbox).

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
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("reading the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the state is damaged: {0}")]
    Damaged(String),
    #[error("starting the thread that reads the state: {0}")]
    Thread(std::io::Error),
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
/// that sees it as it was before this capture (the scanner thread reads the
/// state's rows through it).
#[allow(clippy::too_many_arguments)] // each input is a distinct fact the decision needs
pub fn capture_tables(
    user: &Connection,
    state: &mut State,
    reader: Connection,
    tables: &[Table],
    policy_for: &dyn Fn(&str) -> Policy,
    self_peer: u32,
    hlc: &mut Hlc,
    out: &mut BatchWriter<'_>,
) -> Result<CaptureStats, CaptureError> {
    let tbls = tables.iter().map(|t| state.table_id(&t.name)).collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel(CHUNKS_IN_FLIGHT);
        let tbls_to_scan = &tbls;
        let scanner = std::thread::Builder::new()
            .name("syncd-capture-scan".into())
            .spawn_scoped(scope, move || scan_state(&reader, tbls_to_scan, sender))
            .map_err(CaptureError::Thread)?;
        let mut state_rows = StateRows::new(receiver);
        let joined = join_tables(user, state, tables, &tbls, &mut state_rows, policy_for, self_peer, hlc, out);
        // Stops the scanner early if the join stopped early.
        drop(state_rows);
        let scanned = scanner.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A failed scan ended the join's view of the state too soon: what
        // the join concluded from it must not be committed.
        scanned?;
        joined
    })
}

/// The merge join of every table with the state's rows from `state_rows`.
#[allow(clippy::too_many_arguments)] // the inputs of capture_tables, plus the scanned state
fn join_tables(
    user: &Connection,
    state: &mut State,
    tables: &[Table],
    tbls: &[i64],
    state_rows: &mut StateRows,
    policy_for: &dyn Fn(&str) -> Policy,
    self_peer: u32,
    hlc: &mut Hlc,
    out: &mut BatchWriter<'_>,
) -> Result<CaptureStats, CaptureError> {
    let mut stats = CaptureStats::default();
    for (table, &tbl) in tables.iter().zip(tbls) {
        let row_level = policy_for(&table.name).is_row_level();
        state_rows.start_table();
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
        match scan.run_streaming(user, state, state_rows, hlc, out) {
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

/// A live state row whose hash differs: its column blob, fetched only now.
struct KnownRow {
    cols: Vec<u8>,
}

impl TableScan<'_, '_> {
    fn run_streaming(
        &mut self,
        user: &Connection,
        state: &State,
        state_rows: &mut StateRows,
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
        // Nearly every row is unchanged: the loop allocates nothing for them.
        let ncols = self.table.columns.len();
        let mut key = Vec::new();
        let mut previous_key = Vec::new();
        let mut has_previous = false;
        let mut value_hashes = vec![0u64; ncols];
        // Key columns in column order (the usual case) are encoded in the
        // pass that hashes the values: each value is read once.
        let is_key_in_column_order = self.table.key.is_sorted();
        while let Some(row) = user_rows.next()? {
            key.clear();
            let mut key_columns = self.table.key.iter().peekable();
            for (i, h) in value_hashes.iter_mut().enumerate() {
                let v = row.get_ref(i)?;
                *h = value::hash_value(v);
                if is_key_in_column_order && key_columns.next_if_eq(&&i).is_some() {
                    value::encode_key_value(v, &mut key);
                }
            }
            if !is_key_in_column_order {
                for &i in &self.table.key {
                    value::encode_key_value(row.get_ref(i)?, &mut key);
                }
            }
            if has_previous {
                match previous_key.as_slice().cmp(&key) {
                    Ordering::Less => {}
                    // A table without a primary key may hold the same row
                    // twice; as a set it is one row.
                    Ordering::Equal if !self.table.has_primary_key => continue,
                    _ => return Err(ScanError::OutOfOrder),
                }
            }
            let mut matched = None;
            while let Some((state_key, hash, deleted)) = state_rows.current() {
                match state_key.cmp(&key) {
                    Ordering::Less => {
                        if !deleted {
                            self.emit_delete(state, state_key, hlc, out)?;
                        }
                        state_rows.advance();
                    }
                    Ordering::Equal => {
                        matched = Some((hash, deleted));
                        state_rows.advance();
                        break;
                    }
                    Ordering::Greater => break,
                }
            }
            let row_hash = value::hash_row(self.table.hash_order.iter().map(|&(i, n)| (n, value_hashes[i])));
            let is_unchanged = matches!(matched, Some((hash, false)) if hash == row_hash);
            if !is_unchanged {
                let known = match matched {
                    Some((_, false)) => Some(KnownRow { cols: state.cols_of_row(self.tbl, &key)? }),
                    Some((_, true)) => {
                        self.keep_delete_of_tombstone(state, &key)?;
                        None
                    }
                    None => None,
                };
                let values = (0..ncols).map(|i| row.get_ref(i)).collect::<rusqlite::Result<Vec<_>>>()?;
                self.visit_row(state, &key, &values, &value_hashes, row_hash, known, hlc, out)?;
            }
            std::mem::swap(&mut key, &mut previous_key);
            has_previous = true;
        }
        while let Some((state_key, _, deleted)) = state_rows.current() {
            if !deleted {
                self.emit_delete(state, state_key, hlc, out)?;
            }
            state_rows.advance();
        }
        Ok(())
    }

    /// Records and publishes a row that is new (`known` is `None`) or whose
    /// hash differs from the state's.
    #[allow(clippy::too_many_arguments)] // the row as the scan already decoded it
    fn visit_row(
        &mut self,
        state: &State,
        key: &[u8],
        values: &[ValueRef<'_>],
        value_hashes: &[u64],
        row_hash: u64,
        known: Option<KnownRow>,
        hlc: &mut Hlc,
        out: &mut BatchWriter<'_>,
    ) -> Result<(), CaptureError> {
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
                let old = state.decode_cols(&k.cols)?;
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
        hlc: &mut Hlc,
        out: &mut BatchWriter<'_>,
    ) -> Result<(), CaptureError> {
        let key_values = value::decode_key(key).map_err(|e| CaptureError::Damaged(e.to_string()))?;
        let clock = out.clock(hlc);
        let deleted = Some(Version { clock, peer: self.self_peer });
        // The tombstone keeps the row's birth (see merge).
        let cols = state.cols_of_row(self.tbl, key)?;
        let key_cols = state::key_cols(&state.decode_cols(&cols)?, self.table);
        let born = self.born(state, &key_cols);
        let tombstone = RowState { hash: 0, deleted, cols: key_cols };
        state.put_row(self.tbl, key, &tombstone)?;
        self.stats.deletes += 1;
        self.push(state, RowChange { key: key_values, op: Op::Delete, born }, out)
    }

    /// A row made here at the key of a deleted one (SQLite hands keys out
    /// again) takes its tombstone: the delete is kept by the deleted row's
    /// birth, for when that row arrives again (moved, or published whole).
    fn keep_delete_of_tombstone(&self, state: &State, key: &[u8]) -> Result<(), CaptureError> {
        if !self.table.integer_primary_key {
            return Ok(());
        }
        let Some(tombstone) = state.row(self.tbl, key)? else { return Ok(()) };
        let (Some(deleted), Some(born)) = (tombstone.deleted, self.born(state, &tombstone.cols)) else {
            return Ok(());
        };
        let Some(peer) = Born::peer_number(state.peer_id(deleted.peer)).filter(|_| deleted.clock != 0) else {
            return Ok(());
        };
        state.keep_delete(self.tbl, born, (deleted.clock, peer))?;
        Ok(())
    }

    /// The birth of a known row (its key's column state), to send with a
    /// change.
    fn born(&self, state: &State, cols: &[ColState]) -> Option<Born> {
        let key = *self.table.key_name_hashes().first()?;
        let c = cols.iter().find(|c| c.name_hash == key)?;
        Born::of(c.version.clock, state.peer_id(c.version.peer), c.value_hash)
    }

    fn push(&mut self, state: &State, change: RowChange, out: &mut BatchWriter<'_>) -> Result<(), CaptureError> {
        out.push(state, &self.changes, change)?;
        Ok(())
    }
}

/// State rows per chunk handed from the scanner to the join, and chunks
/// queued at most: enough to keep both threads busy, little memory.
const CHUNK_ROWS: usize = 1024;
const CHUNKS_IN_FLIGHT: usize = 8;

/// Consecutive state rows of one table, keys packed in one buffer.
#[derive(Default)]
struct StateChunk {
    keys: Vec<u8>,
    rows: Vec<ScannedRow>,
    /// The table's last chunk (possibly empty).
    ends_table: bool,
}

#[derive(Clone, Copy)]
struct ScannedRow {
    key_start: usize,
    key_end: usize,
    hash: u64,
    deleted: bool,
}

impl StateChunk {
    fn with_capacity() -> StateChunk {
        StateChunk {
            keys: Vec::with_capacity(CHUNK_ROWS * 24),
            rows: Vec::with_capacity(CHUNK_ROWS),
            ends_table: false,
        }
    }
}

/// Runs on the scanner thread: every state row of each table in `tbls`, in
/// key order, table after table. Stops quietly when the join hangs up.
fn scan_state(reader: &Connection, tbls: &[i64], to_join: SyncSender<StateChunk>) -> Result<(), CaptureError> {
    for &tbl in tbls {
        let mut chunk = StateChunk::with_capacity();
        let mut hung_up = false;
        state::scan_rows(reader, tbl, |key, hash, deleted| {
            let key_start = chunk.keys.len();
            chunk.keys.extend_from_slice(key);
            chunk.rows.push(ScannedRow { key_start, key_end: chunk.keys.len(), hash, deleted });
            if chunk.rows.len() == CHUNK_ROWS {
                hung_up = to_join.send(std::mem::replace(&mut chunk, StateChunk::with_capacity())).is_err();
            }
            Ok(!hung_up)
        })?;
        chunk.ends_table = true;
        if hung_up || to_join.send(chunk).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The join's side of the scanner: the state rows of the current table, one
/// at a time.
struct StateRows {
    from_scanner: Receiver<StateChunk>,
    chunk: StateChunk,
    pos: usize,
}

impl StateRows {
    fn new(from_scanner: Receiver<StateChunk>) -> StateRows {
        StateRows { from_scanner, chunk: StateChunk::default(), pos: 0 }
    }

    /// Moves to the next table's rows; the previous table's are all read.
    fn start_table(&mut self) {
        self.receive();
    }

    /// The row the join stands on: (key, hash, is_deleted), or `None` after
    /// the table's last row.
    fn current(&self) -> Option<(&[u8], u64, bool)> {
        let r = self.chunk.rows.get(self.pos)?;
        Some((&self.chunk.keys[r.key_start..r.key_end], r.hash, r.deleted))
    }

    fn advance(&mut self) {
        self.pos += 1;
        if self.pos >= self.chunk.rows.len() && !self.chunk.ends_table {
            self.receive();
        }
    }

    fn receive(&mut self) {
        // A scanner that stopped early has failed; capture_tables returns
        // its error, so ending the table here decides nothing.
        self.chunk =
            self.from_scanner.recv().unwrap_or_else(|_| StateChunk { ends_table: true, ..StateChunk::default() });
        self.pos = 0;
    }
}

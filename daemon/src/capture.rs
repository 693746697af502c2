//! Capture: finds the rows of the user's database that changed since the last
//! capture and records them, with fresh versions, in the state and the outbox.
//!
//! Each table is scanned in key order next to the state's rows of that table
//! (a merge join), comparing row hashes; only rows whose hash differs are
//! looked at column by column. Capture only reads the user's database, inside
//! one read transaction, so it sees one consistent state of it and never
//! blocks the application's writers (in WAL mode).
//!
//! Three threads share the work. The state's side of the join is read by a
//! scanner on its own connection and handed over in chunks: reading the
//! state costs about as much as reading the user's table, so the two reads
//! overlap instead of adding up. The calling thread reads the user's table
//! and joins; what it finds (rows new, changed or gone) goes in order to a
//! recorder, the only thread that writes (the state and the outbox), so
//! that recording overlaps the join too.

use crate::batch::{Born, Op, RowChange, TableChanges};
use crate::config::Policy;
use crate::hlc::Hlc;
use crate::outbox::{BatchWriter, WriteError};
use crate::schema::{Table, quote_ident};
use crate::state::{self, ColState, RowState, State, Version};
use crate::value::{self, Value};
use rusqlite::Connection;
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
    #[error("starting a capture thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "the rows of table {0} are not read in key order, which capture relies on (a database in UTF-16?): convert the database to UTF-8 or exclude the table"
    )]
    OutOfOrder(String),
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
    let row_levels: Vec<bool> = tables.iter().map(|t| policy_for(&t.name).is_row_level()).collect();
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel(CHUNKS_IN_FLIGHT);
        let tbls_to_scan = &tbls;
        let scanner = std::thread::Builder::new()
            .name("syncd-capture-scan".into())
            .spawn_scoped(scope, move || scan_state(&reader, tbls_to_scan, sender))
            .map_err(CaptureError::Thread)?;
        let (to_record, found) = sync_channel(FOUND_IN_FLIGHT);
        let recorder = Recorder { tables, tbls: &tbls, row_levels: &row_levels, self_peer };
        let recording = std::thread::Builder::new()
            .name("syncd-capture-record".into())
            .spawn_scoped(scope, move || recorder.record(state, hlc, out, found))
            .map_err(CaptureError::Thread)?;
        let mut state_rows = StateRows::new(receiver);
        let joined = join_tables(user, tables, &mut state_rows, to_record);
        // Stops the scanner early if the join stopped early.
        drop(state_rows);
        let scanned = scanner.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let recorded = recording.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A failed scan ended the join's view of the state too soon: what
        // the join concluded from it must not be committed. A recorder that
        // failed stopped the join, which then only saw it hang up.
        scanned?;
        let stats = recorded?;
        match joined {
            Ok(()) => Ok(stats),
            // Only if SQLite's order differs from the key encoding (a
            // database in UTF-16, for example).
            Err(ScanError::OutOfOrder(table)) => Err(CaptureError::OutOfOrder(table)),
            Err(ScanError::Capture(e)) => Err(e),
            Err(ScanError::RecorderGone) => Err(CaptureError::Damaged("the capture's recorder stopped".into())),
        }
    })
}

/// The merge join of every table with the state's rows from `state_rows`:
/// sends what differs to the recorder, in order.
fn join_tables(
    user: &Connection,
    tables: &[Table],
    state_rows: &mut StateRows,
    to_record: SyncSender<Vec<Found>>,
) -> Result<(), ScanError> {
    let mut found = Findings { to_record, group: Vec::with_capacity(FOUND_GROUP) };
    for (at, table) in tables.iter().enumerate() {
        state_rows.start_table();
        found.push(Found::Table(at))?;
        join_table(user, table, state_rows, &mut found)?;
    }
    found.send()
}

/// What the join found, grouped for the recorder.
struct Findings {
    to_record: SyncSender<Vec<Found>>,
    group: Vec<Found>,
}

impl Findings {
    fn push(&mut self, found: Found) -> Result<(), ScanError> {
        self.group.push(found);
        if self.group.len() < FOUND_GROUP {
            return Ok(());
        }
        self.send()
    }

    fn send(&mut self) -> Result<(), ScanError> {
        let group = std::mem::replace(&mut self.group, Vec::with_capacity(FOUND_GROUP));
        self.to_record.send(group).map_err(|_| ScanError::RecorderGone)
    }
}

/// One thing the join found, for the recorder.
enum Found {
    /// The rows of `tables[i]` follow.
    Table(usize),
    /// A row that is new, or whose hash differs from the state's; the state
    /// has nothing at its key, a live row, or a tombstone.
    Row { key: Vec<u8>, values: Vec<Value>, value_hashes: Vec<u64>, row_hash: u64, state_has: StateHas },
    /// A live row of the state that is no longer in the table.
    Gone { key: Vec<u8> },
}

#[derive(Clone, Copy)]
enum StateHas {
    Nothing,
    Row,
    Tombstone,
}

/// Groups of findings queued for the recorder at most, and their size.
const FOUND_IN_FLIGHT: usize = 8;
const FOUND_GROUP: usize = 256;

enum ScanError {
    /// The table's rows did not come in key order (named).
    OutOfOrder(String),
    Capture(CaptureError),
    RecorderGone,
}

impl<E: Into<CaptureError>> From<E> for ScanError {
    fn from(e: E) -> Self {
        ScanError::Capture(e.into())
    }
}

/// Joins one table's rows, read in key order, with the state's.
fn join_table(
    user: &Connection,
    table: &Table,
    state_rows: &mut StateRows,
    found: &mut Findings,
) -> Result<(), ScanError> {
    let sql =
        format!("SELECT {} FROM main.{} ORDER BY {}", table.select_list(), quote_ident(&table.name), table.key_order());
    let mut user_stmt = user.prepare(&sql)?;
    let mut user_rows = user_stmt.query([])?;
    // Nearly every row is unchanged: the loop allocates nothing for them.
    let ncols = table.columns.len();
    let mut key = Vec::new();
    let mut previous_key = Vec::new();
    let mut has_previous = false;
    let mut value_hashes = vec![0u64; ncols];
    // Key columns in column order (the usual case) are encoded in the pass
    // that hashes the values: each value is read once.
    let is_key_in_column_order = table.key.is_sorted();
    let gone = |key: &[u8]| Found::Gone { key: key.to_vec() };
    while let Some(row) = user_rows.next()? {
        key.clear();
        let mut key_columns = table.key.iter().peekable();
        for (i, h) in value_hashes.iter_mut().enumerate() {
            let v = row.get_ref(i)?;
            *h = value::hash_value(v);
            if is_key_in_column_order && key_columns.next_if_eq(&&i).is_some() {
                value::encode_key_value(v, &mut key);
            }
        }
        if !is_key_in_column_order {
            for &i in &table.key {
                value::encode_key_value(row.get_ref(i)?, &mut key);
            }
        }
        if has_previous {
            match previous_key.as_slice().cmp(&key) {
                Ordering::Less => {}
                // A table without a primary key may hold the same row twice;
                // as a set it is one row.
                Ordering::Equal if !table.has_primary_key => continue,
                _ => return Err(ScanError::OutOfOrder(table.name.clone())),
            }
        }
        let mut matched = None;
        while let Some((state_key, hash, deleted)) = state_rows.current() {
            match state_key.cmp(&key) {
                Ordering::Less => {
                    if !deleted {
                        found.push(gone(state_key))?;
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
        let row_hash = value::hash_row(table.hash_order.iter().map(|&(i, n)| (n, value_hashes[i])));
        let state_has = match matched {
            Some((hash, false)) if hash == row_hash => None,
            Some((_, false)) => Some(StateHas::Row),
            Some((_, true)) => Some(StateHas::Tombstone),
            None => Some(StateHas::Nothing),
        };
        if let Some(state_has) = state_has {
            let values = (0..ncols).map(|i| row.get_ref(i).map(Value::from_ref)).collect::<rusqlite::Result<_>>()?;
            found.push(Found::Row {
                key: key.clone(),
                values,
                value_hashes: value_hashes.clone(),
                row_hash,
                state_has,
            })?;
        }
        std::mem::swap(&mut key, &mut previous_key);
        has_previous = true;
    }
    while let Some((state_key, _, deleted)) = state_rows.current() {
        if !deleted {
            found.push(gone(state_key))?;
        }
        state_rows.advance();
    }
    Ok(())
}

/// The recording thread's view of the capture: what it needs to turn
/// findings into state rows and changes.
struct Recorder<'a> {
    tables: &'a [Table],
    tbls: &'a [i64],
    /// Per table: its policy compares whole rows.
    row_levels: &'a [bool],
    self_peer: u32,
}

impl Recorder<'_> {
    /// Records every finding, in order, until the join hangs up.
    fn record(
        self,
        state: &mut State,
        hlc: &mut Hlc,
        out: &mut BatchWriter<'_>,
        found: Receiver<Vec<Found>>,
    ) -> Result<CaptureStats, CaptureError> {
        let mut stats = CaptureStats::default();
        let mut table = None;
        for group in found {
            for finding in group {
                match finding {
                    Found::Table(at) => {
                        table = Some(TableRecord {
                            table: &self.tables[at],
                            changes: changes_header(&self.tables[at]),
                            tbl: self.tbls[at],
                            row_level: self.row_levels[at],
                            self_peer: self.self_peer,
                            stats: &mut stats,
                        });
                    }
                    Found::Row { key, values, value_hashes, row_hash, state_has } => {
                        let t = table.as_mut().ok_or_else(found_before_table)?;
                        let known = match state_has {
                            StateHas::Row => Some(KnownRow { cols: state.cols_of_row(t.tbl, &key)? }),
                            StateHas::Tombstone => {
                                t.keep_delete_of_tombstone(state, &key)?;
                                None
                            }
                            StateHas::Nothing => None,
                        };
                        t.visit_row(state, &key, values, &value_hashes, row_hash, known, hlc, out)?;
                    }
                    Found::Gone { key } => {
                        table.as_mut().ok_or_else(found_before_table)?.emit_delete(state, &key, hlc, out)?;
                    }
                }
            }
        }
        drop(table);
        Ok(stats)
    }
}

fn found_before_table() -> CaptureError {
    CaptureError::Damaged("the capture found a row before its table".into())
}

/// The header of the changes captured in `table`.
fn changes_header(table: &Table) -> TableChanges {
    TableChanges {
        table: table.name.clone(),
        columns: table.column_names(),
        key_columns: table.key_names(),
        has_primary_key: table.has_primary_key,
        changes: Vec::new(),
    }
}

/// Records the rows of one table that the join found.
struct TableRecord<'t, 's> {
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

impl TableRecord<'_, '_> {
    /// Records and publishes a row that is new (`known` is `None`) or whose
    /// hash differs from the state's.
    #[allow(clippy::too_many_arguments)] // the row as the scan already decoded it
    fn visit_row(
        &mut self,
        state: &State,
        key: &[u8],
        mut values: Vec<Value>,
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
        let key_values = self.table.key.iter().map(|&i| values[i].clone()).collect();
        let op = match known {
            None => {
                for &(i, name_hash) in &self.table.hash_order {
                    let value_hash = if self.table.key.contains(&i) {
                        self.table.birth_key(values[i].as_ref())
                    } else {
                        value_hashes[i]
                    };
                    new_state.cols.push(ColState { name_hash, value_hash, version });
                }
                self.stats.inserts += 1;
                Op::Insert(values)
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
                            let value_hash = self.table.birth_key(values[i].as_ref());
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
                    Op::Row(values)
                } else {
                    changed.sort_unstable();
                    Op::Columns(
                        changed
                            .into_iter()
                            .map(|i| (i as u32, std::mem::replace(&mut values[i], Value::Null)))
                            .collect(),
                    )
                }
            }
        };
        state.put_row(self.tbl, key, &new_state)?;
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

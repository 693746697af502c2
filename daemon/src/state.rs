//! The state: syncd's own bookkeeping for one database, in a separate SQLite
//! file under the state directory, never inside the user's database.
//!
//! It holds, per row, the hash and version of every column (what capture
//! compares against), the outbox of captured batches not yet in the hub, the
//! cursor of every peer (what has been applied), the conflict log, the parked
//! changes, and the batch being applied (for crash recovery). Every SQL
//! statement on the state lives in this module.

use crate::borrowing_statement::BorrowingStatement;
use crate::value::Value;
pub use checkpointer::Checkpointer;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

mod checkpointer;
mod columns;
mod stored_key;
use columns::Layouts;
use std::cell::RefCell;
use stored_key::StoredKey;

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

/// The columns of the `rows` table, also used to move a state to format 3.
/// `key` is the row key (see [`stored_key`]); `cols` its column states
/// (see [`columns`]).
macro_rules! rows_table {
    () => {
        "(tbl INTEGER NOT NULL, key BLOB NOT NULL, hash INTEGER NOT NULL,
    del_clock INTEGER, del_peer INTEGER, cols BLOB NOT NULL,
    PRIMARY KEY(tbl, key)) WITHOUT ROWID"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peers(idx INTEGER PRIMARY KEY, peer_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS tables(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS layouts(id INTEGER PRIMARY KEY, names BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS rows",
    rows_table!(),
    ";
CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY, changes INTEGER NOT NULL, file BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors(peer_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, clock INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts(
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, tbl TEXT NOT NULL, key TEXT NOT NULL,
    key_values TEXT NOT NULL, col TEXT, loser TEXT, winner TEXT,
    loser_clock INTEGER NOT NULL, loser_peer TEXT NOT NULL,
    winner_clock INTEGER NOT NULL, winner_peer TEXT NOT NULL, reason TEXT NOT NULL,
    UNIQUE(tbl, key, col, loser_clock, loser_peer, winner_clock, winner_peer));
CREATE TABLE IF NOT EXISTS parked(
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, peer_id TEXT NOT NULL, seq INTEGER NOT NULL,
    tbl TEXT NOT NULL, change BLOB NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS own_snapshots(path TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, covers_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS moved(
    tbl INTEGER NOT NULL, born_clock INTEGER NOT NULL, born_peer BLOB NOT NULL, born_key INTEGER NOT NULL,
    key BLOB NOT NULL, PRIMARY KEY(tbl, born_clock, born_peer, born_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deletes_by_birth(
    tbl INTEGER NOT NULL, born_clock INTEGER NOT NULL, born_peer BLOB NOT NULL, born_key INTEGER NOT NULL,
    del_clock INTEGER NOT NULL, del_peer BLOB NOT NULL,
    PRIMARY KEY(tbl, born_clock, born_peer, born_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inflight(
    peer_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, body BLOB NOT NULL,
    done INTEGER NOT NULL, pending_end INTEGER NOT NULL);
"
);

/// The layout of the state this build writes, in its `user_version`. 2:
/// column states may share one version, which builds before it would
/// misread. 3: column names are kept once per layout ([`columns`]) and a
/// key of one number as an SQL number ([`stored_key`]); a format 2 state
/// is moved to it when opened. A build refuses a newer state rather than
/// misread it.
const FORMAT: i64 = 3;

/// A version as the state stores it: a clock value and the peer that made it
/// (an index into the `peers` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    pub clock: u64,
    pub peer: u32,
}

/// One column of one row: the hash of its value and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColState {
    pub name_hash: u64,
    pub value_hash: u64,
    pub version: Version,
}

/// The column states of a row's key: what a tombstone keeps of the row, so
/// that the row's birth outlives it (see [`crate::merge`]).
pub fn key_cols(cols: &[ColState], table: &crate::schema::Table) -> Vec<ColState> {
    let keys = table.key_name_hashes();
    cols.iter().filter(|c| keys.contains(&c.name_hash)).copied().collect()
}

/// What the state knows of one row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowState {
    /// Hash of the row as last captured or applied.
    pub hash: u64,
    /// Set when the row is deleted: the version of the delete (a tombstone).
    pub deleted: Option<Version>,
    pub cols: Vec<ColState>,
}

impl RowState {
    pub fn col(&self, name_hash: u64) -> Option<&ColState> {
        self.cols.iter().find(|c| c.name_hash == name_hash)
    }

    pub fn set_col(&mut self, col: ColState) {
        match self.cols.iter_mut().find(|c| c.name_hash == col.name_hash) {
            Some(c) => *c = col,
            None => self.cols.push(col),
        }
    }
}

/// The statement that puts rows' states, up to its `VALUES`.
macro_rules! put_rows_into {
    () => {
        "INSERT OR REPLACE INTO rows(tbl, key, hash, del_clock, del_peer, cols) VALUES "
    };
}

const PUT_ROW: &str = concat!(put_rows_into!(), "(?1, ?2, ?3, ?4, ?5, ?6)");

/// Rows a [`RowWriter`] puts with one statement: a multi-row `INSERT`
/// steps SQLite's statement machinery once for all of them, which is a
/// third of the cost of recording a row one by one.
const ROWS_PER_STATEMENT: usize = 64;

/// A row's state as bound to [`PUT_ROW`]'s parameters: its key and encoded
/// column states are ranges of its [`RowWriter`]'s bytes.
struct PendingRow {
    tbl: i64,
    key: Range<usize>,
    hash: i64,
    deleted: Option<(i64, u32)>,
    cols: Range<usize>,
}

impl PendingRow {
    /// The row's parameters, in [`PUT_ROW`]'s order; `bytes` are its
    /// writer's.
    fn params<'b>(&self, bytes: &'b [u8]) -> [ValueRef<'b>; 6] {
        let deleted = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
        [
            ValueRef::Integer(self.tbl),
            StoredKey::of(&bytes[self.key.clone()]).as_value_ref(),
            ValueRef::Integer(self.hash),
            deleted(self.deleted.map(|d| d.0)),
            deleted(self.deleted.map(|d| i64::from(d.1))),
            ValueRef::Blob(&bytes[self.cols.clone()]),
        ]
    }
}

/// Writes rows' states in groups (see [`State::write_rows`]). Rows put
/// here are in the state only once the writer is finished.
pub struct RowWriter<'s> {
    conn: &'s Connection,
    layouts: &'s RefCell<Layouts>,
    pending: Vec<PendingRow>,
    /// The keys and encoded column states of the pending rows: one buffer
    /// reused for every statement, not two allocations per row.
    bytes: Vec<u8>,
    /// The statement that puts a full group, prepared at the first.
    put_group: Option<BorrowingStatement<'s>>,
}

impl<'s> RowWriter<'s> {
    fn new(conn: &'s Connection, layouts: &'s RefCell<Layouts>) -> RowWriter<'s> {
        RowWriter { conn, layouts, pending: Vec::new(), bytes: Vec::new(), put_group: None }
    }

    pub fn put(&mut self, tbl: i64, key: &[u8], row: &RowState) -> Result<()> {
        let deleted = row.deleted.map(|v| (v.clock as i64, v.peer));
        self.push(tbl, key, row.hash, deleted, |layouts, conn, out| layouts.encode_into(conn, &row.cols, out))
    }

    /// Puts the state of a row written whole by one change: its columns
    /// `names` (in layout order), each at `version`, their values hashing
    /// to `value_hashes`, the row to `hash`. The same as [`Self::put`] of
    /// the [`RowState`] they make, without making it.
    pub fn put_whole(
        &mut self,
        tbl: i64,
        key: &[u8],
        hash: u64,
        version: Version,
        names: &[u64],
        value_hashes: &[u64],
    ) -> Result<()> {
        self.push(tbl, key, hash, None, |layouts, conn, out| {
            layouts.encode_whole_into(conn, names, version, value_hashes, out)
        })
    }

    /// Adds a row whose column states `encode_cols` appends to the
    /// writer's bytes, and puts the group once it is full.
    fn push(
        &mut self,
        tbl: i64,
        key: &[u8],
        hash: u64,
        deleted: Option<(i64, u32)>,
        encode_cols: impl FnOnce(&mut Layouts, &Connection, &mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let key_from = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let cols_from = self.bytes.len();
        encode_cols(&mut self.layouts.borrow_mut(), self.conn, &mut self.bytes)?;
        let cols = cols_from..self.bytes.len();
        self.pending.push(PendingRow { tbl, key: key_from..cols_from, hash: hash as i64, deleted, cols });
        if self.pending.len() == ROWS_PER_STATEMENT {
            let put_group = match &mut self.put_group {
                Some(statement) => statement,
                None => {
                    self.put_group.insert(BorrowingStatement::prepare(self.conn, &put_rows_sql(ROWS_PER_STATEMENT))?)
                }
            };
            let bytes = &self.bytes;
            put_group.execute(self.pending.iter().flat_map(|row| row.params(bytes)))?;
            self.pending.clear();
            self.bytes.clear();
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn.prepare_cached(PUT_ROW)?;
        for row in &self.pending {
            for (at, value) in row.params(&self.bytes).into_iter().enumerate() {
                stmt.raw_bind_parameter(at + 1, rusqlite::types::ToSqlOutput::Borrowed(value))?;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }
}

/// [`PUT_ROW`] for `rows` rows at once. Later rows replace earlier ones
/// with the same key, as separate statements would.
fn put_rows_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?, ?)"; rows].join(", ");
    format!("{}{values}", put_rows_into!())
}

/// The condition on `conflicts` that picks the entries holding a row out
/// of its key for an older row ([`crate::merge::KEY_COLLISION`]), bound by
/// [`key_collision_params`].
macro_rules! key_collision_of {
    () => {
        "tbl = (SELECT name FROM tables WHERE id = ?1) AND col IS NULL \
         AND loser_clock = ?2 AND loser_peer = ?3 AND key = ?4 AND substr(reason, 1, length(?5)) = ?5"
    };
}

/// The parameters of `key_collision_of!` for the row born `born`.
fn key_collision_params(tbl: i64, born: crate::batch::Born) -> (i64, i64, String, String, &'static str) {
    let key = crate::value::key_text(&[Value::Integer(born.key as i64)]);
    (tbl, born.clock as i64, format!("{:032x}", born.peer), key, crate::merge::KEY_COLLISION)
}

/// A birth as the state's tables keep it by: `born_clock`, `born_peer`
/// (16 bytes, big-endian) and `born_key`.
struct BirthColumns {
    clock: i64,
    peer: [u8; 16],
    key: i64,
}

impl BirthColumns {
    fn of(born: crate::batch::Born) -> BirthColumns {
        BirthColumns { clock: born.clock as i64, peer: born.peer.to_be_bytes(), key: born.key as i64 }
    }
}

/// How far this peer has applied another peer's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub seq: u64,
    pub clock: u64,
}

/// A losing value or row image kept in the conflict log.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub id: i64,
    pub at_ms: i64,
    pub table: String,
    pub key: Vec<Value>,
    /// The column for a per-column conflict, `None` for a whole row.
    pub column: Option<String>,
    /// JSON object `{column: value}` of the losing version (null: a delete).
    pub loser: Option<String>,
    pub winner: Option<String>,
    pub loser_clock: u64,
    pub loser_peer: String,
    pub winner_clock: u64,
    pub winner_peer: String,
    pub reason: String,
}

/// A remote change that could not be applied yet, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub id: i64,
    pub peer_id: String,
    pub seq: u64,
    pub table: String,
    /// Encoded [`crate::apply::ParkedChange`].
    pub change: Vec<u8>,
    pub reason: String,
}

/// The batch being applied, kept until its last chunk is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Inflight {
    pub peer_id: String,
    pub seq: u64,
    pub body: Vec<u8>,
    /// Changes (in batch order) fully recorded in the state.
    pub done: u64,
    /// Changes up to here may be written to the user's database but not yet
    /// recorded here.
    pub pending_end: u64,
}

/// The state database of one synced database.
pub struct State {
    conn: Connection,
    layouts: RefCell<Layouts>,
    peers: Vec<String>,
    peer_index: HashMap<String, u32>,
    tables: HashMap<String, i64>,
}

impl State {
    pub fn open(path: &Path) -> Result<State> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a batch name is published right after its outbox commit; a
        // commit lost to a power cut would reuse that sequence number.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let format: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if format > FORMAT {
            let message = format!(
                "{} was written by a newer syncd (state format {format}; this build reads up to {FORMAT}): run that newer syncd",
                path.display()
            );
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(message),
            ));
        }
        conn.execute_batch(SCHEMA)?;
        let mut state = State {
            conn,
            layouts: RefCell::new(Layouts::default()),
            peers: Vec::new(),
            peer_index: HashMap::new(),
            tables: HashMap::new(),
        };
        if format < FORMAT {
            let started = std::time::Instant::now();
            let moved = state.transaction(State::move_to_format_3)?;
            if moved > 0 {
                tracing::info!(rows = moved, ms = started.elapsed().as_millis() as u64, "state moved to format 3");
            }
        }
        state.load_peers()?;
        Ok(state)
    }

    /// A second connection to the same state, for reading while the first
    /// one writes (capture scans the rows table while recording changes).
    pub fn open_reader(path: &Path) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(conn)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn load_peers(&mut self) -> Result<()> {
        let mut stmt = self.conn.prepare("SELECT idx, peer_id FROM peers ORDER BY idx")?;
        let rows: Vec<(u32, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_>>()?;
        drop(stmt);
        for (idx, id) in rows {
            let idx = idx as usize;
            if self.peers.len() <= idx {
                self.peers.resize(idx + 1, String::new());
            }
            self.peers[idx] = id.clone();
            self.peer_index.insert(id, idx as u32);
        }
        Ok(())
    }

    /// Whether commits wait for the disk. Recording applied changes need not:
    /// a lost commit is redone from the batch, which stays in the hub. The
    /// outbox must: its sequence numbers are published right after.
    pub fn set_durable(&self, durable: bool) -> Result<()> {
        self.conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })
    }

    /// [`Self::transaction`], committed durably whatever `set_durable` says:
    /// for what must be on disk before another file is written. (Its sync
    /// also makes the commits before it durable.)
    pub fn durable_transaction<T, E: From<rusqlite::Error>>(
        &mut self,
        f: impl FnOnce(&mut State) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let was: i64 = self.conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        self.set_durable(true)?;
        let result = self.transaction(f);
        self.conn.pragma_update(None, "synchronous", was)?;
        result
    }

    /// Commits through this connection no longer copy the WAL into the
    /// file when it grows: a [`Checkpointer`] does, on a thread of its own.
    pub fn leave_checkpoints_to_a_checkpointer(&self) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)
    }

    /// Moves a state of an earlier format to [`FORMAT`] (run in one
    /// transaction): rows' column states get layouts and keys of one number
    /// become SQL numbers. Returns how many rows moved; a state no build
    /// has written to yet has none.
    fn move_to_format_3(&mut self) -> Result<u64> {
        // Another process may have moved it since this one looked.
        if self.conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? >= FORMAT {
            return Ok(0);
        }
        let (conn, layouts) = (&self.conn, self.layouts.get_mut());
        conn.execute_batch(concat!("CREATE TABLE rows_format_3", rows_table!(), ";"))?;
        let mut moved = 0;
        {
            let mut read = conn.prepare("SELECT tbl, key, hash, del_clock, del_peer, cols FROM rows")?;
            let mut write = conn.prepare("INSERT INTO rows_format_3 VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            let mut rows = read.query([])?;
            while let Some(r) = rows.next()? {
                let key = r.get_ref(1)?.as_blob()?;
                let mut cols = Vec::new();
                layouts.encode_into(conn, &columns::decode_format_2(r.get_ref(5)?.as_blob()?), &mut cols)?;
                write.execute(params![
                    r.get::<_, i64>(0)?,
                    StoredKey::of(key),
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    cols
                ])?;
                moved += 1;
            }
        }
        conn.execute_batch("DROP TABLE rows; ALTER TABLE rows_format_3 RENAME TO rows;")?;
        conn.pragma_update(None, "user_version", FORMAT)?;
        Ok(moved)
    }

    /// Runs `f` in one write transaction of the state.
    pub fn transaction<T, E: From<rusqlite::Error>>(
        &mut self,
        f: impl FnOnce(&mut State) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // Cached ids may name rows the rollback removed.
                self.peers.clear();
                self.peer_index.clear();
                self.tables.clear();
                self.layouts.get_mut().forget();
                self.load_peers()?;
                Err(e)
            }
        }
    }

    pub fn meta<T: rusqlite::types::FromSql>(&self, key: &str) -> Result<Option<T>> {
        self.conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
    }

    pub fn set_meta(&self, key: &str, value: impl rusqlite::ToSql) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }

    /// The index of a peer id in this state, adding it when new.
    pub fn peer_index(&mut self, peer_id: &str) -> Result<u32> {
        if let Some(&i) = self.peer_index.get(peer_id) {
            return Ok(i);
        }
        self.conn.prepare_cached("INSERT INTO peers(peer_id) VALUES(?1)")?.execute([peer_id])?;
        let idx = self.conn.last_insert_rowid() as usize;
        if self.peers.len() <= idx {
            self.peers.resize(idx + 1, String::new());
        }
        self.peers[idx] = peer_id.to_string();
        self.peer_index.insert(peer_id.to_string(), idx as u32);
        Ok(idx as u32)
    }

    /// Every known peer id, by index (index 0 is unused and empty).
    pub fn peer_ids(&self) -> Vec<String> {
        let mut ids = self.peers.clone();
        if ids.is_empty() {
            ids.push(String::new());
        }
        ids
    }

    /// The peer id behind an index from [`State::peer_index`].
    pub fn peer_id(&self, idx: u32) -> &str {
        self.peers.get(idx as usize).map(String::as_str).unwrap_or("")
    }

    pub fn table_id(&mut self, name: &str) -> Result<i64> {
        if let Some(&id) = self.tables.get(name) {
            return Ok(id);
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM tables WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn.prepare_cached("INSERT INTO tables(name) VALUES(?1)")?.execute([name])?;
                self.conn.last_insert_rowid()
            }
        };
        self.tables.insert(name.to_string(), id);
        Ok(id)
    }

    /// Names of every table the state has rows for.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT name FROM tables ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<Result<_>>()?;
        Ok(names)
    }

    pub fn row(&self, tbl: i64, key: &[u8]) -> Result<Option<RowState>> {
        self.conn
            .prepare_cached("SELECT hash, del_clock, del_peer, cols FROM rows WHERE tbl = ?1 AND key = ?2")?
            .query_row(params![tbl, StoredKey::of(key)], |r| {
                let del_clock: Option<i64> = r.get(1)?;
                let del_peer: Option<u32> = r.get(2)?;
                Ok(RowState {
                    hash: r.get::<_, i64>(0)? as u64,
                    deleted: del_clock.map(|c| Version { clock: c as u64, peer: del_peer.unwrap_or(0) }),
                    cols: self.decode_cols(r.get_ref(3)?.as_blob()?)?,
                })
            })
            .optional()
    }

    pub fn put_row(&self, tbl: i64, key: &[u8], row: &RowState) -> Result<()> {
        self.write_rows(|rows| rows.put(tbl, key, row))
    }

    /// Runs `f` with a writer that puts rows' states in groups: what
    /// recording an applied chunk's tens of thousands of rows needs. The
    /// rows are written when `f` returns `Ok`; nothing `f` reads of the
    /// state sees them before.
    pub fn write_rows<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&mut RowWriter<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut rows = RowWriter::new(&self.conn, &self.layouts);
        let value = f(&mut rows)?;
        rows.finish()?;
        Ok(value)
    }

    /// The column states encoded as `bytes` (from [`Self::cols_of_row`]).
    pub fn decode_cols(&self, bytes: &[u8]) -> Result<Vec<ColState>> {
        self.layouts.borrow_mut().decode(&self.conn, bytes)
    }

    /// The encoded column states of a row (see [`Self::decode_cols`]), empty if
    /// the row is unknown. Capture reads it through this connection, which
    /// writes the row next: the page is then read once.
    pub fn cols_of_row(&self, tbl: i64, key: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .conn
            .prepare_cached("SELECT cols FROM rows WHERE tbl = ?1 AND key = ?2")?
            .query_row(params![tbl, StoredKey::of(key)], |r| r.get(0))
            .optional()?
            .unwrap_or_default())
    }

    /// True when the state knows any row at all.
    pub fn has_any_rows(&self) -> Result<bool> {
        self.conn.query_row("SELECT EXISTS(SELECT 1 FROM rows)", [], |r| r.get(0))
    }

    /// The greatest key of a row (or tombstone) the state knows in this
    /// table, `None` if it knows none.
    pub fn greatest_key(&self, tbl: i64) -> Result<Option<Vec<u8>>> {
        stored_key::greatest(&self.conn, tbl)
    }

    pub fn live_row_count(&self) -> Result<u64> {
        self.conn.query_row("SELECT count(*) FROM rows WHERE del_clock IS NULL", [], |r| {
            r.get::<_, i64>(0).map(|n| n as u64)
        })
    }

    pub fn cursors(&self) -> Result<BTreeMap<String, Cursor>> {
        let mut stmt = self.conn.prepare_cached("SELECT peer_id, seq, clock FROM cursors")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Cursor { seq: r.get::<_, i64>(1)? as u64, clock: r.get::<_, i64>(2)? as u64 },
                ))
            })?
            .collect::<Result<_>>()?;
        Ok(rows)
    }

    pub fn set_cursor(&self, peer_id: &str, cursor: Cursor) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO cursors(peer_id, seq, clock) VALUES(?1, ?2, ?3)")?
            .execute(params![peer_id, cursor.seq as i64, cursor.clock as i64])?;
        Ok(())
    }

    pub fn push_outbox(&self, seq: u64, changes: u64, file: &[u8]) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO outbox(seq, changes, file) VALUES(?1, ?2, ?3)")?.execute(params![
            seq as i64,
            changes as i64,
            file
        ])?;
        Ok(())
    }

    /// The oldest batch not yet in the hub.
    pub fn first_outbox(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.conn
            .prepare_cached("SELECT seq, file FROM outbox ORDER BY seq LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()
    }

    pub fn remove_outbox(&self, seq: u64) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?.execute([seq as i64])?;
        Ok(())
    }

    /// (batches, changes) waiting in the outbox.
    pub fn outbox_size(&self) -> Result<(u64, u64)> {
        self.conn.query_row("SELECT count(*), coalesce(sum(changes), 0) FROM outbox", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
    }

    pub fn add_conflict(&self, c: &Conflict) -> Result<()> {
        let key_values = serde_json::Value::Array(c.key.iter().map(Value::to_json).collect()).to_string();
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO conflicts(at_ms, tbl, key, key_values, col, loser, winner, loser_clock, \
                 loser_peer, winner_clock, winner_peer, reason) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
            )?
            .execute(params![
                c.at_ms,
                c.table,
                crate::value::key_text(&c.key),
                key_values,
                c.column,
                c.loser,
                c.winner,
                c.loser_clock as i64,
                c.loser_peer,
                c.winner_clock as i64,
                c.winner_peer,
                c.reason
            ])?;
        Ok(())
    }

    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, tbl, key_values, col, loser, winner, loser_clock, loser_peer, winner_clock, \
             winner_peer, reason FROM conflicts ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let key_json: String = r.get(3)?;
                let key = serde_json::from_str::<Vec<serde_json::Value>>(&key_json)
                    .unwrap_or_default()
                    .iter()
                    .map(Value::from_json)
                    .collect();
                Ok(Conflict {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    table: r.get(2)?,
                    key,
                    column: r.get(4)?,
                    loser: r.get(5)?,
                    winner: r.get(6)?,
                    loser_clock: r.get::<_, i64>(7)? as u64,
                    loser_peer: r.get(8)?,
                    winner_clock: r.get::<_, i64>(9)? as u64,
                    winner_peer: r.get(10)?,
                    reason: r.get(11)?,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(rows)
    }

    pub fn conflict_count(&self) -> Result<u64> {
        self.conn.query_row("SELECT count(*) FROM conflicts", [], |r| r.get::<_, i64>(0).map(|n| n as u64))
    }

    pub fn park(&self, peer_id: &str, seq: u64, table: &str, change: &[u8], reason: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO parked(at_ms, peer_id, seq, tbl, change, reason) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![crate::hlc::wall_ms() as i64, peer_id, seq as i64, table, change, reason])?;
        Ok(())
    }

    pub fn parked(&self) -> Result<Vec<Parked>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, peer_id, seq, tbl, change, reason FROM parked ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Parked {
                    id: r.get(0)?,
                    peer_id: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    table: r.get(3)?,
                    change: r.get(4)?,
                    reason: r.get(5)?,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(rows)
    }

    pub fn unpark(&self, id: i64) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM parked WHERE id = ?1")?.execute([id])?;
        Ok(())
    }

    pub fn parked_count(&self) -> Result<u64> {
        self.conn.query_row("SELECT count(*) FROM parked", [], |r| r.get::<_, i64>(0).map(|n| n as u64))
    }

    /// Remembers a snapshot this peer took, and the last own batch it covers.
    pub fn record_snapshot(&self, path: &str, created_ms: i64, covers_seq: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO own_snapshots(path, created_ms, covers_seq) VALUES(?1, ?2, ?3)",
            params![path, created_ms, covers_seq as i64],
        )?;
        Ok(())
    }

    pub fn own_snapshots(&self) -> Result<Vec<crate::retention::SnapshotFact>> {
        let mut stmt = self.conn.prepare("SELECT path, created_ms, covers_seq FROM own_snapshots")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(crate::retention::SnapshotFact {
                    path: r.get(0)?,
                    created_ms: r.get(1)?,
                    covers_seq: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(rows)
    }

    pub fn forget_snapshot(&self, path: &str) -> Result<()> {
        self.conn.execute("DELETE FROM own_snapshots WHERE path = ?1", [path])?;
        Ok(())
    }

    /// Makes every live row look changed in every column, so the next
    /// capture publishes all of them with a new version (`push --force`).
    pub fn mark_all_rows_changed(&self) -> Result<u64> {
        Ok(self.conn.execute("UPDATE rows SET hash = 0, cols = x'' WHERE del_clock IS NULL", [])? as u64)
    }

    /// Takes over the rows, peers, cursors and parked changes of another
    /// state (a rebuild's), keeping this one's sequence numbers, conflicts
    /// and snapshots; drops the outbox. The caller reopens the state after.
    pub fn adopt(&mut self, other: &Path) -> Result<()> {
        self.conn.execute("ATTACH DATABASE ?1 AS other", [other.display().to_string()])?;
        let result = self.conn.execute_batch(
            "BEGIN IMMEDIATE;
             DELETE FROM rows; DELETE FROM peers; DELETE FROM tables; DELETE FROM cursors;
             DELETE FROM parked; DELETE FROM inflight; DELETE FROM outbox;
             INSERT INTO peers SELECT * FROM other.peers;
             INSERT INTO tables SELECT * FROM other.tables;
             DELETE FROM layouts; INSERT INTO layouts SELECT * FROM other.layouts;
             INSERT INTO rows SELECT * FROM other.rows;
             INSERT INTO cursors SELECT * FROM other.cursors;
             INSERT INTO parked SELECT * FROM other.parked;
             INSERT OR REPLACE INTO meta(key, value)
                 SELECT 'hlc', max(coalesce((SELECT value FROM main.meta WHERE key = 'hlc'), 0),
                                   coalesce((SELECT value FROM other.meta WHERE key = 'hlc'), 0));
             COMMIT;",
        );
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.conn.execute_batch("DETACH DATABASE other")?;
        result
    }

    /// Records that the row born `born` now lives at `key` (it moved off a
    /// key another row kept), so that changes addressed to it at its old key
    /// find it.
    pub fn record_move(&self, tbl: i64, born: crate::batch::Born, key: &[u8]) -> Result<()> {
        let b = BirthColumns::of(born);
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO moved(tbl, born_clock, born_peer, born_key, key) VALUES(?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![tbl, b.clock, &b.peer[..], b.key, key])?;
        Ok(())
    }

    /// Forgets the conflict entries that kept the row born `born` after it
    /// met an older row with its key (see [`crate::merge::KEY_COLLISION`]):
    /// the row now has a key of its own here, and restoring it would make
    /// it twice.
    pub fn forget_key_collision(&self, tbl: i64, born: crate::batch::Born) -> Result<usize> {
        self.conn
            .prepare_cached(concat!("DELETE FROM conflicts WHERE ", key_collision_of!()))?
            .execute(key_collision_params(tbl, born))
    }

    /// True when the conflict log holds the row born `born` out of its key
    /// for an older row, until it moves (what [`Self::forget_key_collision`]
    /// forgets).
    pub fn holds_out_for_its_key(&self, tbl: i64, born: crate::batch::Born) -> Result<bool> {
        self.conn
            .prepare_cached(concat!("SELECT EXISTS(SELECT 1 FROM conflicts WHERE ", key_collision_of!(), ")"))?
            .query_row(key_collision_params(tbl, born), |r| r.get(0))
    }

    /// Where the row born `born` moved to, if it did.
    pub fn moved_to(&self, tbl: i64, born: crate::batch::Born) -> Result<Option<Vec<u8>>> {
        let b = BirthColumns::of(born);
        self.conn
            .prepare_cached(
                "SELECT key FROM moved WHERE tbl = ?1 AND born_clock = ?2 AND born_peer = ?3 AND born_key = ?4",
            )?
            .query_row(params![tbl, b.clock, &b.peer[..], b.key], |r| r.get(0))
            .optional()
    }

    /// Keeps the delete of the row born `born` (`deleted`: its clock and
    /// peer id) after another row took the row's key and its tombstone
    /// with it: the row may still arrive, published whole by a peer or
    /// moved, and the delete must still be judged against it. Of two
    /// deletes of one row the later stays.
    pub fn keep_delete(&self, tbl: i64, born: crate::batch::Born, deleted: (u64, u128)) -> Result<()> {
        let b = BirthColumns::of(born);
        self.conn
            .prepare_cached(
                "INSERT INTO deletes_by_birth(tbl, born_clock, born_peer, born_key, del_clock, del_peer) \
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO UPDATE SET \
                 del_clock = excluded.del_clock, del_peer = excluded.del_peer WHERE excluded.del_clock > del_clock",
            )?
            .execute(params![tbl, b.clock, &b.peer[..], b.key, deleted.0 as i64, &deleted.1.to_be_bytes()[..]])?;
        Ok(())
    }

    /// The delete kept for the row born `born` ([`Self::keep_delete`]).
    pub fn kept_delete(&self, tbl: i64, born: crate::batch::Born) -> Result<Option<(u64, u128)>> {
        let b = BirthColumns::of(born);
        self.conn
            .prepare_cached(
                "SELECT del_clock, del_peer FROM deletes_by_birth \
                 WHERE tbl = ?1 AND born_clock = ?2 AND born_peer = ?3 AND born_key = ?4",
            )?
            .query_row(params![tbl, b.clock, &b.peer[..], b.key], |r| {
                let peer: Vec<u8> = r.get(1)?;
                Ok((r.get::<_, i64>(0)? as u64, peer.try_into().map(u128::from_be_bytes).unwrap_or(0)))
            })
            .optional()
    }

    /// Forgets the delete kept for the row born `born`: the row is back,
    /// its edit having won, and its state carries it from now on.
    pub fn forget_kept_delete(&self, tbl: i64, born: crate::batch::Born) -> Result<()> {
        let b = BirthColumns::of(born);
        self.conn
            .prepare_cached(
                "DELETE FROM deletes_by_birth WHERE tbl = ?1 AND born_clock = ?2 AND born_peer = ?3 AND born_key = ?4",
            )?
            .execute(params![tbl, b.clock, &b.peer[..], b.key])?;
        Ok(())
    }

    pub fn inflight(&self) -> Result<Option<Inflight>> {
        self.conn
            .prepare_cached("SELECT peer_id, seq, body, done, pending_end FROM inflight LIMIT 1")?
            .query_row([], |r| {
                Ok(Inflight {
                    peer_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    body: r.get(2)?,
                    done: r.get::<_, i64>(3)? as u64,
                    pending_end: r.get::<_, i64>(4)? as u64,
                })
            })
            .optional()
    }

    pub fn begin_inflight(&self, peer_id: &str, seq: u64, body: &[u8]) -> Result<()> {
        self.conn.execute("DELETE FROM inflight", [])?;
        self.conn
            .prepare_cached("INSERT INTO inflight(peer_id, seq, body, done, pending_end) VALUES(?1, ?2, ?3, 0, 0)")?
            .execute(params![peer_id, seq as i64, body])?;
        Ok(())
    }

    pub fn set_inflight_progress(&self, done: u64, pending_end: u64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE inflight SET done = ?1, pending_end = ?2")?
            .execute(params![done as i64, pending_end as i64])?;
        Ok(())
    }

    pub fn end_inflight(&self) -> Result<()> {
        self.conn.execute("DELETE FROM inflight", [])?;
        Ok(())
    }
}

/// Scans the state rows of one table in key order, for capture's merge join:
/// `f` gets each row's key, hash, and whether the row is a tombstone, and
/// returns false to stop. The column blob is left out: most rows are
/// unchanged and never need it, and reading it for each costs as much as the
/// rest of the row. [`State::cols_of_row`] fetches it for a row that changed.
pub fn scan_rows(reader: &Connection, tbl: i64, f: impl FnMut(&[u8], u64, bool) -> Result<bool>) -> Result<()> {
    stored_key::scan(reader, tbl, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(n: u64, version: Version) -> ColState {
        ColState { name_hash: n * 7919, value_hash: n.wrapping_mul(0x9E37_79B9_7F4A_7C15), version }
    }

    fn row(cols: Vec<ColState>) -> RowState {
        RowState { hash: 1, deleted: None, cols }
    }

    #[test]
    fn column_states_come_back_as_written_with_one_version_or_many() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let tbl = state.table_id("t").unwrap();
        let one = Version { clock: 1 << 40, peer: 3 };
        let other = Version { clock: 1 << 41, peer: 0 };
        // Rows of many layouts, one after another, so that the layouts
        // remembered are not only the last one used.
        for n in 0..40u64 {
            let shared = row((0..n).map(|i| col(i, one)).collect());
            let mixed = row((0..n).map(|i| col(i, if i % 2 == 0 { one } else { other })).collect());
            state.put_row(tbl, &[1, n as u8], &shared).unwrap();
            state.put_row(tbl, &[2, n as u8], &mixed).unwrap();
        }
        let reopened = State::open(&dir.path().join("state.db")).unwrap();
        for n in 0..40u64 {
            for (form, s) in [(1, &state), (2, &state), (1, &reopened), (2, &reopened)] {
                let r = s.row(tbl, &[form, n as u8]).unwrap().expect("there");
                let version = |i: u64| if form == 2 && i % 2 == 1 { other } else { one };
                assert_eq!(r.cols, (0..n).map(|i| col(i, version(i))).collect::<Vec<_>>(), "{n} columns");
            }
        }
    }

    #[test]
    fn rows_written_in_groups_are_all_there_and_the_last_put_of_a_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let tbl = state.table_id("t").unwrap();
        let key = |i: u64| i.to_be_bytes().to_vec();
        let at = |clock: u64| row((0..3).map(|i| col(i, Version { clock, peer: 0 })).collect());
        // More rows than one group holds, and key 5 put again in a later
        // group and once more among the rows left over at the end.
        let n = ROWS_PER_STATEMENT as u64 * 2 + 10;
        state
            .write_rows(|rows| -> Result<()> {
                for i in 0..n {
                    rows.put(tbl, &key(i), &at(i))?;
                }
                rows.put(tbl, &key(5), &at(1000))?;
                rows.put(tbl, &key(5), &at(2000))
            })
            .unwrap();
        for i in 0..n {
            let expected = if i == 5 { at(2000) } else { at(i) };
            assert_eq!(state.row(tbl, &key(i)).unwrap(), Some(expected), "row {i}");
        }
    }

    #[test]
    fn a_state_of_a_newer_format_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(State::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", FORMAT + 1).unwrap();
        let err = State::open(&path).err().expect("refused").to_string();
        assert!(err.contains("newer syncd") && err.contains("state.db"), "{err}");
        let format: i64 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(format, FORMAT + 1);
    }

    #[test]
    fn one_version_for_every_column_is_kept_once_and_names_once_per_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let tbl = state.table_id("t").unwrap();
        let v = Version { clock: 99, peer: 1 };
        state.put_row(tbl, b"k", &row((0..5).map(|i| col(i, v)).collect())).unwrap();
        let cols: Vec<u8> = state.conn.query_row("SELECT cols FROM rows", [], |r| r.get(0)).unwrap();
        // Form, layout id, the version, five value hashes.
        assert_eq!(cols.len(), 1 + 1 + 12 + 5 * 8);
    }

    #[test]
    fn a_row_naming_a_layout_the_state_lacks_is_reported_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let tbl = state.table_id("t").unwrap();
        state.put_row(tbl, b"k", &row(vec![col(1, Version::default())])).unwrap();
        state.conn.execute("DELETE FROM layouts", []).unwrap();
        let reopened = State::open(&dir.path().join("state.db")).unwrap();
        let err = reopened.row(tbl, b"k").unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("layout"), "{err}");
    }

    /// A state as format 2 wrote it: one version for all columns (one
    /// integer key) and a version per column (a text key), and a tombstone.
    #[test]
    fn a_format_2_state_is_moved_to_format_3_and_reads_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let int_key = crate::value::encode_key([rusqlite::types::ValueRef::Integer(42)]);
        let text_key = crate::value::encode_key([rusqlite::types::ValueRef::Text(b"a")]);
        let v = |clock| Version { clock, peer: 2 };
        let shared = row(vec![col(1, v(5)), col(2, v(5))]);
        let mixed = row(vec![col(1, v(5)), col(3, v(7))]);
        let tombstone = RowState { hash: 0, deleted: Some(v(9)), cols: vec![col(1, v(5))] };
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE tables(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
                 INSERT INTO tables VALUES (1, 't');
                 CREATE TABLE rows(tbl INTEGER NOT NULL, key BLOB NOT NULL, hash INTEGER NOT NULL,
                     del_clock INTEGER, del_peer INTEGER, cols BLOB NOT NULL,
                     PRIMARY KEY(tbl, key)) WITHOUT ROWID;
                 PRAGMA user_version = 2;",
            )
            .unwrap();
            let format_2 = |r: &RowState| -> Vec<u8> {
                let mut out = Vec::new();
                if r.cols.iter().all(|c| c.version == r.cols[0].version) {
                    out.push(1);
                    out.extend_from_slice(&r.cols[0].version.clock.to_le_bytes());
                    out.extend_from_slice(&r.cols[0].version.peer.to_le_bytes());
                    for c in &r.cols {
                        out.extend_from_slice(&c.name_hash.to_le_bytes());
                        out.extend_from_slice(&c.value_hash.to_le_bytes());
                    }
                } else {
                    for c in &r.cols {
                        out.extend_from_slice(&c.name_hash.to_le_bytes());
                        out.extend_from_slice(&c.value_hash.to_le_bytes());
                        out.extend_from_slice(&c.version.clock.to_le_bytes());
                        out.extend_from_slice(&c.version.peer.to_le_bytes());
                    }
                }
                out
            };
            let tomb_key = crate::value::encode_key([rusqlite::types::ValueRef::Integer(43)]);
            for (key, r) in [(&int_key, &shared), (&text_key, &mixed), (&tomb_key, &tombstone)] {
                c.execute(
                    "INSERT INTO rows VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                    params![
                        key,
                        r.hash as i64,
                        r.deleted.map(|d| d.clock as i64),
                        r.deleted.map(|d| d.peer),
                        format_2(r)
                    ],
                )
                .unwrap();
            }
        }
        let state = State::open(&path).unwrap();
        assert_eq!(state.row(1, &int_key).unwrap(), Some(shared));
        assert_eq!(state.row(1, &text_key).unwrap(), Some(mixed));
        let tomb_key = crate::value::encode_key([rusqlite::types::ValueRef::Integer(43)]);
        assert_eq!(state.row(1, &tomb_key).unwrap(), Some(tombstone));
        let format: i64 = state.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        let numbers: i64 =
            state.conn.query_row("SELECT count(*) FROM rows WHERE typeof(key) = 'integer'", [], |r| r.get(0)).unwrap();
        assert_eq!((format, numbers), (3, 2));
    }

    /// Two processes that open one format 2 state at once both set out to
    /// move it: the second finds it moved and leaves it.
    #[test]
    fn a_state_already_moved_to_format_3_is_not_moved_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let tbl = state.table_id("t").unwrap();
        let r = row(vec![col(1, Version { clock: 5, peer: 1 }), col(2, Version { clock: 6, peer: 1 })]);
        state.put_row(tbl, b"k", &r).unwrap();
        state.transaction(State::move_to_format_3).unwrap();
        assert_eq!(state.row(tbl, b"k").unwrap(), Some(r));
    }

    #[test]
    fn a_durable_transaction_syncs_its_commit_and_leaves_the_setting_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("s.db")).unwrap();
        let synchronous = |s: &State| -> i64 { s.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap() };
        state.set_durable(false).unwrap();
        let inside = state.durable_transaction(|s| -> Result<i64> { Ok(synchronous(s)) }).unwrap();
        assert_eq!((inside, synchronous(&state)), (2, 1), "FULL inside, NORMAL again after");
        state.set_durable(true).unwrap();
        state.durable_transaction(|_| -> Result<()> { Ok(()) }).unwrap();
        assert_eq!(synchronous(&state), 2);
    }
}

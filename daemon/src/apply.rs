//! Apply: carries the merge's decisions out on the user's database, in short
//! write transactions, and records them in the state.
//!
//! Per chunk of changes: decide (reading only the state), mark the chunk as
//! pending in the state, write the user's database in one short transaction
//! (busy timeout, foreign keys deferred), then record the new row states,
//! conflicts and parked changes in the state. If the process dies between
//! the two commits, [`recover_inflight`] finds which writes reached the
//! user's database and records them, so they are neither echoed back as
//! local edits nor applied twice.
//!
//! A row that the application changed after the last capture is never
//! overwritten: the change is parked and retried after the next capture, when
//! the local edit has a version and takes part in the merge.

use crate::batch::{BatchBody, Born, Op, RowChange, Seen, TableChanges};
use crate::borrowing_statement::BorrowingStatement;
use crate::config::Policy;
use crate::constraints::Constraints;
use crate::merge::{self, Action, ColumnMap, ConflictNote, Decision, Loser, ParkReason, PeerBook, RemoteBatch};
use crate::schema::{Table, quote_ident};
use crate::state::{self, ColState, Conflict, Cursor, RowState, RowWriter, State, Version};
use crate::value::{self, Value};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

mod fresh;
mod keys;
use fresh::FreshInserts;
use keys::{delete_away_from_birth_place, delete_by_birth, replaced_delete};

/// A write transaction on the user's database lasts about this long at most,
/// so the application that owns it is never blocked for long.
const WRITE_TIME: Duration = Duration::from_millis(100);
/// Changes decided and recorded together: fewer, larger state commits.
const CHUNK_MAX_CHANGES: usize = 20_000;
/// Outcomes handed to the recording thread at a time: one message per
/// outcome would cost as much as recording it.
const RECORD_BATCH: usize = 256;
/// Why a remote row waits when a row made here holds its key.
const KEY_TAKEN: &str = "a row with this key was added here since the last capture";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("writing the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a parked change does not decode: {0}")]
    BadParked(String),
    #[error("the batch being applied when syncd stopped does not decode: {0}")]
    BadInflight(String),
    /// The other half of a chunk's write-and-record stopped (its own error
    /// is the one reported).
    #[error("the chunk was neither written nor recorded in full")]
    Unfinished,
}

/// Counts of one apply.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    pub applied: u64,
    pub conflicts: u64,
    pub parked: u64,
    /// Rows made here that yielded their key to a peer's row and moved.
    pub moved: u64,
    /// A row was forgotten so that capture republishes it: capture again
    /// even though the application wrote nothing.
    pub needs_capture: bool,
}

impl std::ops::AddAssign for ApplyStats {
    fn add_assign(&mut self, o: ApplyStats) {
        self.applied += o.applied;
        self.conflicts += o.conflicts;
        self.parked += o.parked;
        self.moved += o.moved;
        self.needs_capture |= o.needs_capture;
    }
}

/// A parked change, as kept in the state: enough of its batch to decide it
/// again later exactly as it would have been decided then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParkedChange {
    pub author_id: String,
    pub author_name: String,
    pub reason: String,
    pub retried_every_cycle: bool,
    pub clock: u64,
    pub seen: Vec<Seen>,
    pub table: TableChanges,
}

/// Peer ids and names for the merge, a copy taken per batch.
pub struct Peers {
    pub ids: Vec<String>,
    /// `ids` as the numbers births carry, parsed once per batch.
    pub numbers: Vec<Option<u128>>,
    pub names: HashMap<String, String>,
    pub self_idx: u32,
}

impl PeerBook for Peers {
    fn peer_id(&self, idx: u32) -> &str {
        self.ids.get(idx as usize).map(String::as_str).unwrap_or("")
    }
    fn peer_name(&self, idx: u32) -> &str {
        self.names.get(self.peer_id(idx)).map(String::as_str).unwrap_or("")
    }
    fn self_index(&self) -> u32 {
        self.self_idx
    }
    fn index_of(&self, peer: u128) -> Option<u32> {
        self.numbers.iter().position(|n| *n == Some(peer)).map(|i| i as u32)
    }
}

/// Everything apply needs about this peer's side.
pub struct Applier<'a> {
    pub user: &'a Connection,
    pub state: &'a mut State,
    /// The local tables, by name, as discovered this cycle.
    pub tables: &'a BTreeMap<String, Table>,
    pub policy_for: &'a dyn Fn(&str) -> Policy,
    pub peer_names: &'a HashMap<String, String>,
    pub self_peer: u32,
    /// The last statement built: consecutive changes of a batch hit the
    /// same table and columns.
    pub last_sql: std::cell::RefCell<Option<(SqlKey, rusqlite::Statement<'a>)>>,
    /// The statements that insert fresh rows (see `fresh`), by their SQL.
    pub fresh_statements: std::cell::RefCell<HashMap<String, BorrowingStatement<'a>>>,
    /// The application's UNIQUE indexes and foreign keys.
    pub constraints: &'a Constraints,
    /// A second connection to the state: a thread records a chunk's
    /// outcomes through it while the user's database is being written.
    pub recorder: std::cell::RefCell<&'a mut State>,
    /// Rows (table, key) the chunk being written changes further on: a
    /// UNIQUE value one of them holds may be on its way out.
    pub changed_later: std::cell::RefCell<HashMap<i64, std::collections::HashSet<Vec<u8>>>>,
    /// UNIQUE values moved out of the way while rows hand them around,
    /// by (table, key): the row is still as captured, with these values.
    pub set_aside: std::cell::RefCell<HashMap<(i64, Vec<u8>), SetAside>>,
    /// Rows (table, key) whose change in the chunk being written was parked.
    pub parked_in_chunk: std::cell::RefCell<std::collections::HashSet<(i64, Vec<u8>)>>,
    /// The changes being carried out are a ring of UNIQUE values that could
    /// not be broken (see `keys::through_rings`).
    pub ring_unbroken: std::cell::Cell<bool>,
}

/// A row's values set aside (column index, value as captured).
pub type SetAside = Vec<(usize, Value)>;

/// What the recording thread receives.
enum ToRecord<'s, 'b> {
    Outcomes(Vec<Outcome>),
    /// Fresh rows inserted (see `fresh`), all of them `Step::Fresh`, with
    /// their states: worked out by the writing thread, which has less to
    /// do than this one.
    Fresh(&'s [Step<'b>], fresh::FreshStates),
    /// The user's database committed every write of the chunk.
    UserCommitted,
}

/// What carrying out a chunk hands on to be recorded, in order.
#[allow(clippy::large_enum_variant)] // an outcome is moved once, into the recorder's next message
enum Delivered<'s, 'b> {
    Outcome(Outcome),
    Fresh(&'s [Step<'b>]),
}

/// A change of a chunk, ready to be carried out.
enum Step<'b> {
    /// Boxed: most of a catch-up's changes are fresh rows, a tenth its size.
    Planned(Box<Planned<'b>>),
    /// A row new to this peer, inserted without planning (see `fresh`):
    /// its table (index into the batch's). Its key here is worked out
    /// again where it is recorded, rather than kept for each row.
    Fresh { table: usize, change: &'b RowChange },
}

impl<'b> Step<'b> {
    fn planned(&self) -> Option<&Planned<'b>> {
        match self {
            Step::Planned(p) => Some(p),
            Step::Fresh { .. } => None,
        }
    }
}

/// What a built statement depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlKey {
    kind: u8,
    table: String,
    columns: Vec<usize>,
}

/// Where a batch being applied came from.
pub enum Origin {
    /// A batch from the hub: its cursor advances when it is done, and the
    /// clock (`hlc`, having seen the batch's) is kept with it.
    Batch { seq: u64, hlc: u64 },
    /// A parked change retried: it leaves the parked list when it is done.
    Parked { id: i64 },
}

/// A table of a batch, with what planning its changes needs worked out
/// once for all of them.
struct BatchTable<'b, 't> {
    changes: &'b TableChanges,
    tbl: i64,
    /// The table here, where the batch's columns are in it, and its policy;
    /// `None` when there is no such table here.
    here: Option<(&'t Table, ColumnMap, Policy)>,
    /// The greatest key the state knows in this table, read before each
    /// chunk is planned: no key above it needs looking up (a new peer
    /// catching up receives rows in key order, all above it).
    greatest_known: Option<Vec<u8>>,
    /// How rows new to this peer are inserted without planning, when the
    /// table allows it.
    fresh: Option<FreshInserts>,
    /// [`key_positions`], worked out once for the batch's changes.
    key_positions: Option<Vec<usize>>,
}

impl BatchTable<'_, '_> {
    /// The change's key here, encoded ([`local_key`]).
    fn local_key(&self, change: &RowChange) -> Option<Vec<u8>> {
        encoded_key(self.key_positions.as_deref()?, change)
    }

    /// [`Self::local_key`] into `out`; false where it has none.
    fn local_key_into(&self, change: &RowChange, out: &mut Vec<u8>) -> bool {
        self.key_positions.as_deref().is_some_and(|positions| encoded_key_into(positions, change, out))
    }

    fn may_know(&self, key: &[u8]) -> bool {
        self.greatest_known.as_deref().is_some_and(|g| key <= g)
    }
}

struct Planned<'b> {
    table: &'b TableChanges,
    /// The change, aimed at the key where its row lives here.
    change: Cow<'b, RowChange>,
    tbl: i64,
    key: Vec<u8>,
    local: Option<RowState>,
    /// Where the row lives here while its author has moved it to `key`:
    /// `local` is its state there.
    from: Option<Vec<u8>>,
    decision: Decision,
    /// The birth of the row arriving, when a delete of it kept by birth
    /// took part in the decision (see `keys::kept_delete_for`).
    kept_delete: Option<Born>,
}

struct Outcome {
    tbl: i64,
    key: Vec<u8>,
    record: Record,
    conflicts: Vec<Conflict>,
    /// The local database changed beyond this row (a row moved or lost a
    /// UNIQUE clash): capture must publish it.
    side_effects: bool,
    moved: bool,
    /// The local row left this key for a fresh one while the remote row
    /// could not take it yet: the key is recorded as free, so capture does
    /// not publish the move as a delete of the remote row's key.
    vacated: bool,
    /// Rows that now live at another key than the one they were born with:
    /// (birth, key), and the state of each such key.
    moves: Vec<(Born, Vec<u8>, Option<RowState>)>,
    /// Keys a moved row left here: recorded as free, published as nothing.
    vacated_elsewhere: Vec<Vec<u8>>,
    /// The delete (birth, clock and peer) that the row put at `key` takes
    /// the tombstone of: kept by birth.
    replaced_delete: Option<(Born, (u64, u128))>,
    /// A row whose delete was kept by birth, back here: the delete is
    /// forgotten once the row is put.
    revived: Option<Born>,
    /// The delete (birth, clock and peer) of a row that is not at this key
    /// here, kept by the row's birth: the row may still arrive, at this key
    /// or at another one.
    keeps_delete: Option<(Born, (u64, u128))>,
}

impl Outcome {
    /// The local row `p` found at its key moved to `new_key` to make room
    /// for an older row: it stays the same row, so its move is recorded by
    /// its birth and its state goes along, for capture to publish it whole
    /// at its new key.
    fn local_row_moved(&mut self, table: &Table, p: &Planned<'_>, peers: &Peers, new_key: Vec<u8>) {
        let born = p.local.as_ref().and_then(|l| merge::birth(table, l)).and_then(|b| b.to_wire(peers));
        if let Some(born) = born {
            self.moves.push((born, new_key, Some(to_publish_whole(table, p.local.as_ref()))));
        }
        self.moved = true;
        self.side_effects = true;
    }

    /// Nothing done yet for this planned change.
    fn of(p: &Planned<'_>) -> Outcome {
        Outcome {
            tbl: p.tbl,
            key: p.key.clone(),
            record: Record::Nothing,
            conflicts: Vec::new(),
            side_effects: false,
            moved: false,
            vacated: false,
            moves: Vec::new(),
            vacated_elsewhere: Vec::new(),
            replaced_delete: None,
            revived: p.kept_delete,
            keeps_delete: None,
        }
    }
}

enum Record {
    Nothing,
    Put(RowState),
    /// Put, and have the next capture publish the row whole.
    Republish(RowState),
    Park {
        table: TableChanges,
        reason: ParkReason,
        detail: String,
    },
    /// Not carried out yet: it needs a UNIQUE value that a row changed
    /// further on in the chunk holds now. Tried again after the chunk.
    Deferred,
}

impl<'a> Applier<'a> {
    /// Runs the statement `build` makes for (kind, table, columns),
    /// preparing it only when the previous change needed a different one:
    /// consecutive changes of a batch almost always share it.
    fn execute_cached(
        &self,
        kind: u8,
        table: &Table,
        columns: &[(usize, Value)],
        build: impl FnOnce() -> String,
        params: impl IntoIterator<Item = impl rusqlite::ToSql>,
    ) -> rusqlite::Result<()> {
        let mut last = self.last_sql.borrow_mut();
        let same = last.as_ref().is_some_and(|(k, _)| {
            k.kind == kind && k.table == table.name && k.columns.iter().copied().eq(columns.iter().map(|(i, _)| *i))
        });
        if !same {
            let key = SqlKey { kind, table: table.name.clone(), columns: columns.iter().map(|(i, _)| *i).collect() };
            *last = Some((key, self.user.prepare(&build())?));
        }
        let stmt = &mut last.as_mut().expect("just set").1;
        stmt.execute(rusqlite::params_from_iter(params))?;
        Ok(())
    }

    fn update_row(&self, table: &Table, key: &[Value], columns: &[(usize, Value)]) -> rusqlite::Result<()> {
        let build = || {
            let sets: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(n, (i, _))| format!("{} = ?{}", quote_ident(&table.columns[*i].name), n + 1))
                .collect();
            format!(
                "UPDATE main.{} SET {} WHERE {}",
                quote_ident(&table.name),
                sets.join(", "),
                table.key_predicate(columns.len() + 1)
            )
        };
        self.execute_cached(1, table, columns, build, columns.iter().map(|(_, v)| v).chain(key.iter()))
    }

    fn insert_row(&self, table: &Table, columns: &[(usize, Value)]) -> rusqlite::Result<()> {
        let build = || {
            let names: Vec<String> = columns.iter().map(|(i, _)| quote_ident(&table.columns[*i].name)).collect();
            let marks: Vec<String> = (1..=columns.len()).map(|n| format!("?{n}")).collect();
            format!("INSERT INTO main.{}({}) VALUES({})", quote_ident(&table.name), names.join(", "), marks.join(", "))
        };
        self.execute_cached(2, table, columns, build, columns.iter().map(|(_, v)| v))
    }

    /// Inserts a remote row. A clash with another row on a UNIQUE index is
    /// a conflict between the two rows (see [`Self::with_unique_clashes`]).
    #[allow(clippy::too_many_arguments)] // the change, its origin and where it goes
    fn insert_new(
        &self,
        table: &Table,
        p: &Planned<'_>,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        columns: &[(usize, Value)],
        key_values: &[Value],
        mut outcome: Outcome,
    ) -> Result<Outcome, ApplyError> {
        if let Some(detail) = self.missing_parent(table, columns)? {
            outcome.record = park_record(p, ParkReason::ParentMissing, detail);
            return Ok(outcome);
        }
        let null = Value::Null;
        let mut image = vec![&null; table.columns.len()];
        for (i, v) in columns {
            image[*i] = v;
        }
        // A row added here at this key since the last capture usually makes
        // the INSERT fail, and is looked for only then.
        let key_taken_fails =
            self.constraints.insert_fails_on_taken_key(table) && !key_values.iter().any(|v| matches!(v, Value::Null));
        if !key_taken_fails && read_row(self.user, table, key_values)?.is_some() {
            outcome.record = park_record(p, ParkReason::LocalEditPending, KEY_TAKEN.into());
            return Ok(outcome);
        }
        let written =
            self.with_unique_clashes(table, p, remote, peers, &image, Some(key_values), &mut outcome, || {
                self.insert_row(table, columns)
            })?;
        if !written {
            return Ok(outcome);
        }
        let mut state = p.decision.new_state.clone().expect("write has a state");
        if columns.len() == table.columns.len() {
            complete_state(table, &image, &mut state);
        } else {
            complete_state(table, &read_row(self.user, table, key_values)?.unwrap_or_default(), &mut state);
        }
        outcome.record = Record::Put(state);
        for note in &p.decision.conflicts {
            outcome.conflicts.push(conflict_from(note, table, p, None, remote, peers));
        }
        Ok(outcome)
    }

    fn peers(&self) -> Peers {
        let ids = self.state.peer_ids();
        let numbers = ids.iter().map(|id| Born::peer_number(id)).collect();
        Peers { ids, numbers, names: self.peer_names.clone(), self_idx: self.self_peer }
    }

    /// Applies one batch from `start` (a change index, after recovery).
    pub fn apply_batch(
        &mut self,
        author_id: &str,
        author_name: &str,
        body: &BatchBody,
        origin: Origin,
        start: usize,
    ) -> Result<ApplyStats, ApplyError> {
        let author = self.state.peer_index(author_id)?;
        // Births name peers this one may not have heard of yet; they need a
        // local index to be compared.
        let born_peers: std::collections::BTreeSet<u128> =
            body.tables.iter().flat_map(|t| &t.changes).filter_map(|c| c.born.map(|b| b.peer)).collect();
        for peer in born_peers {
            self.state.peer_index(&format!("{peer:032x}"))?;
        }
        let peers = self.peers();
        let remote = RemoteBatch { body, author, author_name };
        let mut tables = self.batch_tables(body)?;
        let flat = in_apply_order(body, self.constraints);
        let mut stats = ApplyStats::default();
        let mut done = start.min(flat.len());
        let mut key = Vec::new();
        loop {
            let chunk_start = done;
            self.read_greatest_known(&mut tables)?;
            let mut steps = Vec::with_capacity(CHUNK_MAX_CHANGES.min(flat.len() - done));
            while done < flat.len() && steps.len() < CHUNK_MAX_CHANGES {
                let (t, change) = flat[done];
                steps.push(if tables[t].is_fresh(change, &mut key) {
                    Step::Fresh { table: t, change }
                } else {
                    Step::Planned(Box::new(self.plan(&tables[t], change, &remote, &peers)?))
                });
                done += 1;
            }
            let is_last = done >= flat.len();
            if let Origin::Batch { .. } = origin {
                // On disk before the user's database is written: a power cut
                // that keeps the user's commit keeps this too, and recovery
                // knows the chunk's writes may be there.
                self.state.durable_transaction(|s| s.set_inflight_progress(chunk_start as u64, done as u64))?;
            }
            let finish = |s: &mut State| -> Result<(), ApplyError> {
                match origin {
                    Origin::Batch { seq, hlc } => {
                        if is_last {
                            s.set_cursor(author_id, Cursor { seq, clock: body.clock })?;
                            s.set_meta("hlc", hlc as i64)?;
                            s.end_inflight()?;
                        } else {
                            s.set_inflight_progress(done as u64, done as u64)?;
                        }
                    }
                    Origin::Parked { id } if is_last => s.unpark(id)?,
                    Origin::Parked { .. } => {}
                }
                Ok(())
            };
            stats += self.write_and_record(&steps, &tables, &remote, &peers, author_id, finish)?;
            if is_last {
                // Rows that the application's triggers wrote meanwhile went
                // through this connection, which capture does not watch.
                stats.needs_capture |= stats.applied + stats.moved > 0 && self.triggers_write_synced(&tables);
                return Ok(stats);
            }
        }
    }

    /// True when a trigger on a table of the batch writes a synced table
    /// (see [`crate::triggers`]).
    fn triggers_write_synced(&self, tables: &[BatchTable<'_, '_>]) -> bool {
        let synced = |name: &str| self.tables.keys().any(|t| t.eq_ignore_ascii_case(name));
        tables.iter().any(|t| t.here.is_some() && self.constraints.triggers_write(&t.changes.table, synced))
    }

    /// The tables of a batch, in batch order.
    fn batch_tables<'b>(&mut self, body: &'b BatchBody) -> Result<Vec<BatchTable<'b, 'a>>, ApplyError> {
        let tables: &'a BTreeMap<String, Table> = self.tables;
        body.tables
            .iter()
            .map(|changes| {
                let here = tables
                    .get(&changes.table)
                    .map(|table| (table, ColumnMap::new(table, changes), (self.policy_for)(&table.name)));
                let fresh =
                    here.as_ref().and_then(|(t, map, _)| FreshInserts::for_table(t, changes, map, self.constraints));
                let key_positions = here.as_ref().and_then(|(t, ..)| key_positions(t, changes));
                let tbl = self.state.table_id(&changes.table)?;
                Ok(BatchTable { changes, tbl, here, greatest_known: None, fresh, key_positions })
            })
            .collect()
    }

    fn read_greatest_known(&self, tables: &mut [BatchTable<'_, '_>]) -> Result<(), ApplyError> {
        for t in tables {
            t.greatest_known = self.state.greatest_key(t.tbl)?;
        }
        Ok(())
    }

    fn plan<'b>(
        &self,
        batch_table: &BatchTable<'b, '_>,
        change: &'b RowChange,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<Planned<'b>, ApplyError> {
        let (table_changes, tbl) = (batch_table.changes, batch_table.tbl);
        let Some((table, columns, policy)) = &batch_table.here else {
            return Ok(park_plan(table_changes, change, tbl, ParkReason::SchemaMismatch));
        };
        let Some(key) = batch_table.local_key(change) else {
            return Ok(park_plan(table_changes, change, tbl, ParkReason::SchemaMismatch));
        };
        let local = if batch_table.may_know(&key) { self.state.row(tbl, &key)? } else { None };
        let (change, key, local) = self.follow_move(table, tbl, change, key, local, peers)?;
        if local.is_some() && self.moved_elsewhere(table, tbl, &change, &key, remote, peers)? {
            let decision = Decision { action: Action::Skip, new_state: None, conflicts: Vec::new() };
            let (from, kept_delete) = (None, None);
            return Ok(Planned { table: table_changes, change, tbl, key, local, from, decision, kept_delete });
        }
        // A row its author moved, still at its old key here: merged with
        // its copy there, so that edits made here are not lost in the move.
        // (A key a move left free holds no row either.)
        let holds_no_row = local.as_ref().is_none_or(|l| l.deleted.is_some() && merge::birth(table, l).is_none());
        let elsewhere = if holds_no_row { self.same_row_elsewhere(table, tbl, &change, &key, peers)? } else { None };
        let (local, from) = match elsewhere {
            Some((from, row)) => (Some(row), Some(from)),
            None => (local, None),
        };
        let change_ref: &RowChange = &change;
        let user = self.user;
        // Where the local row is read, worked out only if a policy asks
        // (`lww-column`): most changes never need it.
        let read_at = std::cell::OnceCell::new();
        let mut local_value = |i: usize| {
            let at = read_at.get_or_init(|| match &from {
                Some(from) => value::decode_key(from).unwrap_or_default(),
                None => key_values_local(table, table_changes, change_ref),
            });
            read_column(user, table, at, i)
        };
        let kept_delete = self.kept_delete_for(table, tbl, change_ref, local.as_ref(), remote, peers)?;
        let mut decision = merge::decide(
            table,
            table_changes,
            columns,
            change_ref,
            local.as_ref(),
            remote,
            policy,
            peers,
            &mut local_value,
            kept_delete.map(|(_, d)| d),
        );
        // A delete of a row held out of this key for an older one (its
        // maker deleted it before the older row made it move, so it never
        // arrives here), or deleted here already: the delete is kept for
        // it rather than left waiting.
        if let (Op::Delete, Action::Park(ParkReason::RowMissing), Some(born)) =
            (&change_ref.op, &decision.action, change_ref.born)
            && self.kept_from_its_key(table, tbl, born)?
        {
            decision = Decision { action: Action::KeepDelete, new_state: None, conflicts: Vec::new() };
        }
        // A row moved onto a row made here, which yields the key: its copy
        // at its old key may hold edits made here that its author had not
        // seen, so the row is merged with that copy, as when the key is
        // free (`move_here`), and the copy goes (`vacate_old_place`).
        if let (Op::Row(_), Action::MoveLocalAndInsert { .. }) = (&change_ref.op, &decision.action)
            && let Some((from, copy)) = self.same_row_elsewhere(table, tbl, change_ref, &key, peers)?
            && let Some(merged) = self.merged_with_copy(table, batch_table, change_ref, &from, &copy, remote, peers)?
        {
            decision = merged;
        }
        let kept_delete = kept_delete.map(|(born, _)| born);
        Ok(Planned { table: table_changes, change, tbl, key, local, from, decision, kept_delete })
    }

    /// Writes a chunk to the user's database while a second thread records
    /// its outcomes in the state, then `finish`es the record. The record
    /// commits only once the user's database has: a crash in between
    /// leaves the chunk pending for [`recover_inflight`], exactly as when
    /// the two ran one after the other.
    fn write_and_record<'b>(
        &self,
        steps: &[Step<'b>],
        tables: &[BatchTable<'b, '_>],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        author_id: &str,
        finish: impl FnOnce(&mut State) -> Result<(), ApplyError> + Send,
    ) -> Result<ApplyStats, ApplyError> {
        let mut recorder = self.recorder.borrow_mut();
        let recorder: &mut State = &mut recorder;
        std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::channel::<ToRecord>();
            let version = Version { clock: remote.body.clock, peer: remote.author };
            let recording = std::thread::Builder::new().name("syncd-record".into()).spawn_scoped(scope, move || {
                recorder.transaction(|s| -> Result<ApplyStats, ApplyError> {
                    let mut stats = ApplyStats::default();
                    let mut key = Vec::new();
                    // One writer for the whole chunk, its statement prepared
                    // once: recording reads none of the rows it puts.
                    let committed = s.write_rows(|rows| -> Result<bool, ApplyError> {
                        for message in receiver {
                            match message {
                                ToRecord::Outcomes(outcomes) => {
                                    for o in &outcomes {
                                        record(s, rows, o, remote, author_id, &mut stats)?;
                                    }
                                }
                                ToRecord::Fresh(group, states) => {
                                    for (n, step) in group.iter().enumerate() {
                                        let Step::Fresh { table, change } = step else { continue };
                                        let (table, hash) = (&tables[*table], states.hashes[n]);
                                        if !table.local_key_into(change, &mut key) {
                                            unreachable!("a fresh row has a key here");
                                        }
                                        let names =
                                            &table.fresh.as_ref().expect("a fresh row's table inserts them").names;
                                        rows.put_whole(table.tbl, &key, hash, version, names, states.values_of(n))?;
                                        stats.applied += 1;
                                    }
                                }
                                ToRecord::UserCommitted => return Ok(true),
                            }
                        }
                        Ok(false)
                    })?;
                    if !committed {
                        return Err(ApplyError::Unfinished);
                    }
                    finish(s)?;
                    Ok(stats)
                })
            });
            // As `scope.spawn` would, only named for profilers.
            let recording = recording.expect("a thread starts");
            let send = |message| sender.send(message).map_err(|_| ApplyError::Unfinished);
            let flush = |outcomes: &mut Vec<Outcome>| {
                send(ToRecord::Outcomes(std::mem::replace(outcomes, Vec::with_capacity(RECORD_BATCH))))
            };
            let mut outcomes = Vec::with_capacity(RECORD_BATCH);
            let mut scratch = Vec::new();
            let written = self
                .write_chunk(steps, tables, remote, peers, |delivered| match delivered {
                    Delivered::Outcome(o) => {
                        outcomes.push(o);
                        if outcomes.len() < RECORD_BATCH {
                            return Ok(());
                        }
                        flush(&mut outcomes)
                    }
                    // In order: the outcomes delivered before these first.
                    Delivered::Fresh(group) => {
                        if !outcomes.is_empty() {
                            flush(&mut outcomes)?;
                        }
                        let mut states = fresh::FreshStates::default();
                        for step in group {
                            let Step::Fresh { table, change, .. } = step else {
                                unreachable!("a group holds fresh rows only")
                            };
                            states.push(&tables[*table], change, &mut scratch);
                        }
                        send(ToRecord::Fresh(group, states))
                    }
                })
                .and_then(|()| send(ToRecord::Outcomes(outcomes)))
                .and_then(|()| send(ToRecord::UserCommitted));
            drop(sender);
            let recorded = recording.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match written {
                Ok(()) => recorded,
                Err(ApplyError::Unfinished) => recorded.and(Err(ApplyError::Unfinished)),
                Err(e) => Err(e),
            }
        })
    }

    /// Carries a chunk out on the user's database in write transactions of
    /// at most [`WRITE_TIME`], handing each outcome to `deliver`.
    fn write_chunk<'s, 'b>(
        &self,
        steps: &'s [Step<'b>],
        tables: &[BatchTable<'b, '_>],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        mut deliver: impl FnMut(Delivered<'s, 'b>) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let writes = |p: &&Planned<'_>| {
            matches!(p.decision.action, Action::Write { .. } | Action::Delete | Action::MoveLocalAndInsert { .. })
        };
        let planned = || steps.iter().filter_map(Step::planned);
        let needs_write = steps.iter().any(|s| s.planned().is_none_or(|p| writes(&p)));
        if needs_write {
            self.user.execute_batch("BEGIN IMMEDIATE; PRAGMA defer_foreign_keys = ON;")?;
        }
        {
            let mut later = self.changed_later.borrow_mut();
            later.clear();
            for p in planned().filter(writes).filter(|p| !self.constraints.unique(&p.table.table).is_empty()) {
                later.entry(p.tbl).or_default().insert(p.key.clone());
            }
        }
        let result = (|| -> Result<(), ApplyError> {
            let mut began = Instant::now();
            let mut deferred = Vec::new();
            let mut at = 0;
            while at < steps.len() {
                match &steps[at] {
                    Step::Planned(p) => {
                        match self.carry_out_or_wait(p, remote, peers)? {
                            Some(outcome) => deliver(Delivered::Outcome(outcome))?,
                            None => deferred.push(&**p),
                        }
                        at += 1;
                    }
                    Step::Fresh { table, .. } => {
                        let limit = tables[*table].fresh.as_ref().map_or(1, FreshInserts::group_rows);
                        let same_table = |s: &Step<'_>| matches!(s, Step::Fresh { table: t, .. } if t == table);
                        let run = steps[at..].iter().take(limit).take_while(|s| same_table(s)).count();
                        self.insert_fresh(&steps[at..at + run], tables, remote, peers, &mut deliver)?;
                        at += run;
                    }
                }
                if needs_write && began.elapsed() > WRITE_TIME {
                    // Let the application in; the chunk stays pending in
                    // the state until all of it is recorded.
                    self.user.execute_batch("COMMIT; BEGIN IMMEDIATE; PRAGMA defer_foreign_keys = ON;")?;
                    began = Instant::now();
                }
            }
            self.carry_out_deferred(deferred, remote, peers, &mut |o| deliver(Delivered::Outcome(o)))
        })();
        self.changed_later.borrow_mut().clear();
        self.set_aside.borrow_mut().clear();
        self.parked_in_chunk.borrow_mut().clear();
        if needs_write {
            match result {
                Ok(()) => {
                    if let Err(e) = self.user.execute_batch("COMMIT") {
                        let _ = self.user.execute_batch("ROLLBACK");
                        return Err(e.into());
                    }
                }
                Err(e) => {
                    let _ = self.user.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        } else {
            result?;
        }
        Ok(())
    }

    fn carry_out(&self, p: &Planned<'_>, remote: &RemoteBatch<'_>, peers: &Peers) -> Result<Outcome, ApplyError> {
        let mut outcome = Outcome::of(p);
        let park = |reason: ParkReason, detail: String| park_record(p, reason, detail);
        let table = self.tables.get(&p.table.table);
        let (table, key_values) = match table {
            Some(t) => (t, key_values_local(t, p.table, &p.change)),
            None => {
                if let Action::Park(r) = p.decision.action {
                    outcome.record = park(r, format!("table {} does not exist here", p.table.table));
                }
                return Ok(outcome);
            }
        };
        outcome.replaced_delete = replaced_delete(table, p, peers);
        if let (Some(from), Action::Write { insert: false, .. } | Action::Skip) = (&p.from, &p.decision.action) {
            return self.move_here(table, p, from, remote, peers, outcome);
        }
        let mut local_image: Option<Vec<Value>> = None;
        if let (Op::Row(_), Some(born), Action::Write { .. } | Action::MoveLocalAndInsert { .. }) =
            (&p.change.op, p.change.born, &p.decision.action)
        {
            // A row moved (or republished) here: changes made to it at its
            // old key are to follow it, and its copy there goes.
            self.vacate_old_place(table, p, peers, &mut outcome)?;
            outcome.moves.push((born, p.key.clone(), None));
        }
        match &p.decision.action {
            Action::Skip => {}
            Action::RecordOnly => {
                outcome.record = Record::Put(p.decision.new_state.clone().expect("record has a state"));
                outcome.keeps_delete = delete_away_from_birth_place(table, p, remote, peers);
            }
            Action::KeepAndRepublish => outcome.record = Record::Republish(to_publish_whole(table, p.local.as_ref())),
            Action::KeepDelete => outcome.keeps_delete = p.change.born.and_then(|b| delete_by_birth(b, remote, peers)),
            Action::Park(r) => {
                outcome.record = match r {
                    ParkReason::SchemaMismatch => park(*r, format!("table {}: key columns differ here", table.name)),
                    _ => park_described(p, *r),
                };
            }
            Action::Write { insert: false, columns } => {
                let current = read_row(self.user, table, &key_values)?.map(|row| self.as_captured(p, row));
                let known_hash = p.local.as_ref().map(|l| l.hash);
                match current {
                    Some(values) if Some(row_hash(table, &values)) == known_hash => {
                        let mut after: Vec<&Value> = values.iter().collect();
                        for (i, v) in columns {
                            after[*i] = v;
                        }
                        if let Some(detail) = self.missing_parent(table, columns)? {
                            outcome.record = park(ParkReason::ParentMissing, detail);
                            return Ok(outcome);
                        }
                        let written =
                            self.with_unique_clashes(table, p, remote, peers, &after, None, &mut outcome, || {
                                self.update_row(table, &key_values, columns)
                            })?;
                        if !written {
                            return Ok(outcome);
                        }
                        let mut state = p.decision.new_state.clone().expect("write has a state");
                        complete_state(table, &after, &mut state);
                        outcome.record = Record::Put(state);
                        local_image = Some(values);
                    }
                    _ => {
                        outcome.record = park_described(p, ParkReason::LocalEditPending);
                        return Ok(outcome);
                    }
                }
            }
            Action::MoveLocalAndInsert { columns } => {
                let current = read_row(self.user, table, &key_values)?;
                // A row that moved here this cycle is not captured yet, and
                // it is ours whatever it holds.
                let just_moved = p.local.as_ref().is_some_and(|l| l.hash == 0 && l.cols.len() == table.key.len());
                if !just_moved && current.as_ref().map(|v| row_hash(table, v)) != p.local.as_ref().map(|l| l.hash) {
                    outcome.record = park_described(p, ParkReason::LocalEditPending);
                    return Ok(outcome);
                }
                if let Some(detail) = self.missing_parent(table, columns)? {
                    outcome.record = park(ParkReason::ParentMissing, detail);
                    return Ok(outcome);
                }
                let Some(to) = self.move_to_fresh_key(table, p.tbl, p.table, &key_values[0])? else {
                    let detail = format!(
                        "the row made here with this key cannot move out of the way: the table uses the greatest \
                         integer key ({}); give that row a smaller key",
                        i64::MAX
                    );
                    outcome.record = park(ParkReason::KeyNotFreeYet, detail);
                    return Ok(outcome);
                };
                outcome.local_row_moved(table, p, peers, value::encode_key([to.as_ref()]));
                tracing::info!(table = %table.name, from = %key_values[0].to_json(), to = %to.to_json(),
                    "a peer made a row with the same key first: the row made here moved to a new key");
                let mut outcome = self.insert_new(table, p, remote, peers, columns, &key_values, outcome)?;
                outcome.vacated = matches!(outcome.record, Record::Park { .. });
                return Ok(outcome);
            }
            Action::Write { insert: true, columns } => {
                return self.insert_new(table, p, remote, peers, columns, &key_values, outcome);
            }
            Action::Delete => {
                let current = read_row(self.user, table, &key_values)?;
                let known_hash = p.local.as_ref().map(|l| l.hash);
                match current {
                    Some(values) if Some(row_hash(table, &values)) == known_hash || !table.has_primary_key => {
                        if self.is_referred_to(table, &key_values)? {
                            // Rows here still refer to it (made concurrently
                            // with the delete): it stays, and goes out whole
                            // so the peers that deleted it get it back.
                            outcome.record = Record::Republish(to_publish_whole(table, p.local.as_ref()));
                            let note = ConflictNote {
                                column: None,
                                loser: Loser::Remote(Vec::new()),
                                loser_version: Version { clock: remote.body.clock, peer: remote.author },
                                winner_version: p
                                    .local
                                    .as_ref()
                                    .and_then(|l| merge::birth(table, l))
                                    .map(|b| b.version)
                                    .unwrap_or_default(),
                                reason: "deleted by a peer while rows here refer to it; the row was kept",
                            };
                            outcome.conflicts.push(conflict_from(&note, table, p, Some(&values), remote, peers));
                            return Ok(outcome);
                        }
                        delete_row(self.user, table, &key_values)?;
                        local_image = Some(values);
                    }
                    None => {}
                    Some(_) => {
                        outcome.record = park_described(p, ParkReason::LocalEditPending);
                        return Ok(outcome);
                    }
                }
                outcome.record = Record::Put(p.decision.new_state.clone().expect("delete has a state"));
                outcome.keeps_delete = delete_away_from_birth_place(table, p, remote, peers);
            }
        }
        for note in &p.decision.conflicts {
            outcome.conflicts.push(conflict_from(note, table, p, local_image.as_deref(), remote, peers));
        }
        Ok(outcome)
    }
}

fn record(
    s: &State,
    rows: &mut RowWriter<'_>,
    o: &Outcome,
    remote: &RemoteBatch<'_>,
    author_id: &str,
    stats: &mut ApplyStats,
) -> Result<(), ApplyError> {
    let free = RowState { hash: 0, deleted: Some(Version::default()), cols: Vec::new() };
    if o.vacated {
        rows.put(o.tbl, &o.key, &free)?;
    }
    for key in &o.vacated_elsewhere {
        rows.put(o.tbl, key, &free)?;
    }
    if o.moved {
        stats.moved += 1;
    }
    for (born, key, row) in &o.moves {
        s.record_move(o.tbl, *born, key)?;
        if let Some(row) = row {
            rows.put(o.tbl, key, row)?;
        }
    }
    stats.needs_capture |= o.side_effects;
    if let Some((born, deleted)) = o.keeps_delete {
        s.keep_delete(o.tbl, born, deleted)?;
    }
    match &o.record {
        // Deferred changes are carried out again before they are recorded.
        Record::Nothing | Record::Deferred => {}
        Record::Put(row) => {
            rows.put(o.tbl, &o.key, row)?;
            for (born, _, _) in &o.moves {
                s.forget_key_collision(o.tbl, *born)?;
            }
            if row.deleted.is_none() {
                if let Some((born, deleted)) = o.replaced_delete {
                    s.keep_delete(o.tbl, born, deleted)?;
                }
                if let Some(born) = o.revived {
                    s.forget_kept_delete(o.tbl, born)?;
                }
            }
            stats.applied += 1;
        }
        Record::Republish(row) => {
            rows.put(o.tbl, &o.key, row)?;
            stats.needs_capture = true;
        }
        Record::Park { table, reason, detail } => {
            let parked = ParkedChange {
                author_id: author_id.to_string(),
                author_name: remote.author_name.to_string(),
                reason: detail.clone(),
                retried_every_cycle: reason.retried_every_cycle(),
                clock: remote.body.clock,
                seen: remote.body.seen.clone(),
                table: table.clone(),
            };
            s.park(author_id, 0, &table.table, &syncd_proto::encode(&parked), detail)?;
            stats.parked += 1;
        }
    }
    for c in &o.conflicts {
        s.add_conflict(c)?;
        stats.conflicts += 1;
    }
    Ok(())
}

/// The changes of a batch in the order they are applied. Deletes first,
/// referring tables before the tables they refer to: a parent whose children
/// went in the same batch is free to go, and a value a delete frees (a
/// UNIQUE one) is free for a row written after. Then the other changes,
/// tables that others refer to first: a row made with a key another peer
/// also made has found its place before the rows referring to that key
/// arrive. Recovery after a crash counts changes in this same order.
/// Each change comes with the index of its table in the batch.
fn in_apply_order<'b>(body: &'b BatchBody, constraints: &Constraints) -> Vec<(usize, &'b RowChange)> {
    let mut tables: Vec<(usize, &TableChanges)> = body.tables.iter().enumerate().collect();
    tables.sort_by_key(|(_, t)| constraints.depth(&t.table));
    let is_delete = |c: &&RowChange| matches!(c.op, Op::Delete);
    let deletes = tables.iter().rev().flat_map(|&(n, t)| t.changes.iter().filter(is_delete).map(move |c| (n, c)));
    let others = tables.iter().flat_map(|&(n, t)| t.changes.iter().filter(|c| !is_delete(c)).map(move |c| (n, c)));
    deletes.chain(others).collect()
}

fn park_record(p: &Planned<'_>, reason: ParkReason, detail: String) -> Record {
    Record::Park { table: single_change(p.table, &p.change), reason, detail }
}

/// Parked, with the reason's own words.
fn park_described(p: &Planned<'_>, reason: ParkReason) -> Record {
    park_record(p, reason, reason.describe().into())
}

/// The state of a row kept here that the next capture publishes whole: only
/// the key columns' states stay, with the row's birth.
fn to_publish_whole(table: &Table, local: Option<&RowState>) -> RowState {
    let cols = local.map(|l| state::key_cols(&l.cols, table)).unwrap_or_default();
    RowState { hash: 0, deleted: None, cols }
}

fn park_plan<'b>(t: &'b TableChanges, c: &'b RowChange, tbl: i64, reason: ParkReason) -> Planned<'b> {
    Planned {
        table: t,
        change: Cow::Borrowed(c),
        tbl,
        key: Vec::new(),
        local: None,
        from: None,
        decision: Decision { action: Action::Park(reason), new_state: None, conflicts: Vec::new() },
        kept_delete: None,
    }
}

fn single_change(t: &TableChanges, c: &RowChange) -> TableChanges {
    TableChanges {
        table: t.table.clone(),
        columns: t.columns.clone(),
        key_columns: t.key_columns.clone(),
        has_primary_key: t.has_primary_key,
        changes: vec![c.clone()],
    }
}

/// Where each local key column is among the batch's key columns, or `None`
/// when the local table's key differs (schema drift on a key column).
fn key_positions(table: &Table, t: &TableChanges) -> Option<Vec<usize>> {
    if table.has_primary_key != t.has_primary_key || table.key.len() != t.key_columns.len() {
        return None;
    }
    table.key.iter().map(|&i| t.key_columns.iter().position(|k| *k == table.columns[i].name)).collect()
}

/// The change's key values in the local key order, or `None` when the
/// local table's key differs (schema drift on a key column).
fn local_key_values(table: &Table, t: &TableChanges, c: &RowChange) -> Option<Vec<Value>> {
    key_positions(table, t)?.iter().map(|&p| c.key.get(p).cloned()).collect()
}

fn key_values_local(table: &Table, t: &TableChanges, c: &RowChange) -> Vec<Value> {
    local_key_values(table, t, c).unwrap_or_default()
}

fn local_key(table: &Table, t: &TableChanges, c: &RowChange) -> Option<Vec<u8>> {
    encoded_key(&key_positions(table, t)?, c)
}

/// The change's key, encoded in the local key order given by `positions`.
fn encoded_key(positions: &[usize], c: &RowChange) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(value::NUMBER_KEY_BYTES * positions.len());
    encoded_key_into(positions, c, &mut key).then_some(key)
}

/// [`encoded_key`] into `out` (cleared first); false where it has none.
fn encoded_key_into(positions: &[usize], c: &RowChange, out: &mut Vec<u8>) -> bool {
    out.clear();
    for &p in positions {
        let Some(value) = c.key.get(p) else { return false };
        value::encode_key_value(value.as_ref(), out);
    }
    true
}

/// The row hash capture would compute for these local values.
pub fn row_hash<V: Borrow<Value>>(table: &Table, values: &[V]) -> u64 {
    value::hash_row(table.hash_order.iter().map(|&(i, n)| (n, value::hash_value(values[i].borrow().as_ref()))))
}

/// Sets the row hash and gives every local column a column state, so the
/// next capture sees exactly what was written and echoes nothing.
fn complete_state<V: Borrow<Value>>(table: &Table, values: &[V], state: &mut RowState) {
    if values.len() != table.columns.len() {
        return;
    }
    // The row hash is made of the same value hashes, taken as they go by.
    let cols = &mut state.cols;
    state.hash = value::hash_row(table.hash_order.iter().map(|&(i, name_hash)| {
        let value_hash = value::hash_value(values[i].borrow().as_ref());
        match cols.iter_mut().find(|c| c.name_hash == name_hash) {
            // The key's state is the row's birth (see merge), not its value.
            Some(_) if table.key.contains(&i) => {}
            Some(c) => c.value_hash = value_hash,
            // A column only this peer has: its value is the local default,
            // older than any edit.
            None => cols.push(ColState { name_hash, value_hash, version: Version { clock: 0, peer: 0 } }),
        }
        (name_hash, value_hash)
    }));
}

pub fn read_row(user: &Connection, table: &Table, key: &[Value]) -> rusqlite::Result<Option<Vec<Value>>> {
    let sql = format!(
        "SELECT {} FROM main.{} WHERE {} LIMIT 1",
        table.select_list(),
        quote_ident(&table.name),
        table.key_predicate(1)
    );
    let n = table.columns.len();
    user.prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(key.iter()), |r| {
            (0..n).map(|i| Ok(Value::from_ref(r.get_ref(i)?))).collect()
        })
        .optional()
}

fn read_column(user: &Connection, table: &Table, key: &[Value], col: usize) -> Value {
    let sql = format!(
        "SELECT {} FROM main.{} WHERE {} LIMIT 1",
        quote_ident(&table.columns[col].name),
        quote_ident(&table.name),
        table.key_predicate(1)
    );
    user.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(rusqlite::params_from_iter(key.iter()), |r| Ok(Value::from_ref(r.get_ref(0)?))))
        .unwrap_or(Value::Null)
}

fn delete_row(user: &Connection, table: &Table, key: &[Value]) -> rusqlite::Result<()> {
    let sql = if table.has_primary_key {
        format!("DELETE FROM main.{} WHERE {}", quote_ident(&table.name), table.key_predicate(1))
    } else {
        // A set of rows: every copy of this row goes.
        format!(
            "DELETE FROM main.{0} WHERE rowid IN (SELECT rowid FROM main.{0} WHERE {1})",
            quote_ident(&table.name),
            table.key_predicate(1)
        )
    };
    user.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(key.iter()))?;
    Ok(())
}

fn image_json(pairs: impl Iterator<Item = (String, Value)>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs.map(|(n, v)| (n, v.to_json())).collect();
    serde_json::Value::Object(map).to_string()
}

fn conflict_from(
    note: &ConflictNote,
    table: &Table,
    p: &Planned<'_>,
    local_image: Option<&[Value]>,
    remote: &RemoteBatch<'_>,
    peers: &Peers,
) -> Conflict {
    let local_pairs = |cols: &[usize]| -> Option<String> {
        local_image.map(|img| {
            let idx: Vec<usize> = if cols.is_empty() { (0..table.columns.len()).collect() } else { cols.to_vec() };
            image_json(idx.into_iter().map(|i| (table.columns[i].name.clone(), img[i].clone())))
        })
    };
    let remote_pairs =
        || image_json(p.table.named_values(&p.change.op).into_iter().map(|(n, v)| (n.to_string(), v.clone())));
    let (loser, winner) = match &note.loser {
        Loser::Local { columns, .. } => (local_pairs(columns), Some(remote_pairs())),
        Loser::Remote(values) if values.is_empty() => (None, local_pairs(&[])),
        Loser::Remote(values) => (Some(image_json(values.iter().cloned())), local_pairs(&[])),
        Loser::LocalDelete => (None, Some(remote_pairs())),
    };
    let peer_of = |v: Version| {
        if v.peer == remote.author {
            peers.peer_id(remote.author).to_string()
        } else {
            peers.peer_id(v.peer).to_string()
        }
    };
    Conflict {
        id: 0,
        at_ms: crate::hlc::wall_ms() as i64,
        table: table.name.clone(),
        key: p.change.key.clone(),
        column: note.column.clone(),
        loser,
        winner,
        loser_clock: note.loser_version.clock,
        loser_peer: peer_of(note.loser_version),
        winner_clock: note.winner_version.clock,
        winner_peer: peer_of(note.winner_version),
        reason: note.reason.to_string(),
    }
}

/// The batch an interrupted apply was applying: the state keeps the file as
/// it came from the hub (compressed, and checked again here). A state written
/// by syncd 0.1 before that kept the decoded body instead.
fn inflight_body(inflight: &crate::state::Inflight, database: &str) -> Result<BatchBody, String> {
    let expect = crate::container::Expect {
        kind: crate::container::FileKind::Batch,
        database,
        peer_id: Some(&inflight.peer_id),
        seq: Some(inflight.seq),
    };
    match crate::container::decode(&inflight.body, &expect) {
        Ok((_, body)) => BatchBody::decode(&body).map_err(|e| e.to_string()),
        Err(e) => BatchBody::decode(&inflight.body).map_err(|_| e.to_string()),
    }
}

impl Applier<'_> {
    /// What carrying `p` out did, if its writes reached the user's database
    /// before a crash (planned against the state as it was then).
    fn reached(&self, table: &Table, p: &Planned<'_>, peers: &Peers) -> Result<Option<Outcome>, ApplyError> {
        let key_values = key_values_local(table, p.table, &p.change);
        let now = read_row(self.user, table, &key_values)?;
        let same = |columns: &[(usize, Value)], values: &[Value]| {
            columns.iter().all(|(i, v)| value::hash_value(values[*i].as_ref()) == value::hash_value(v.as_ref()))
        };
        let mut outcome = Outcome::of(p);
        outcome.replaced_delete = replaced_delete(table, p, peers);
        let state = match (&p.decision.action, now) {
            (Action::Write { columns, .. } | Action::MoveLocalAndInsert { columns }, Some(values))
                if same(columns, &values) =>
            {
                // The local row moved to a fresh key in the same
                // transaction: its move is recorded as `carry_out` would
                // have, or the next capture would publish it as a new row,
                // a copy of itself.
                if let Action::MoveLocalAndInsert { .. } = p.decision.action
                    && let Some(to) = self.moved_out_of_the_way(table, p, &key_values[0])?
                {
                    outcome.local_row_moved(table, p, peers, to);
                }
                let mut s = p.decision.new_state.clone().expect("write has a state");
                complete_state(table, &values, &mut s);
                s
            }
            // A row moved here from its old key with nothing of the
            // author's winning.
            (Action::Skip, Some(values)) if p.from.is_some() => {
                let Some(mut s) = p.local.clone() else { return Ok(None) };
                complete_state(table, &values, &mut s);
                s
            }
            (Action::Delete, None) => p.decision.new_state.clone().expect("delete has a state"),
            _ => return Ok(None),
        };
        outcome.record = Record::Put(state);
        // A moved row's old place, emptied by the apply (see
        // `vacate_old_place` and `move_here`): recorded free, or the next
        // capture would publish the row's copy there as deleted.
        if let (Op::Row(_), Some(born)) = (&p.change.op, p.change.born) {
            let old = match &p.from {
                Some(from) => Some(from.clone()),
                None => self.same_row_elsewhere(table, p.tbl, &p.change, &p.key, peers)?.map(|(old, _)| old),
            };
            outcome.moves.push((born, p.key.clone(), None));
            if let Some(old) = old
                && let Ok(old_values) = value::decode_key(&old)
                && read_row(self.user, table, &old_values)?.is_none()
            {
                outcome.vacated_elsewhere.push(old);
            }
        }
        Ok(Some(outcome))
    }
}

/// After a crash between writing the user's database and recording it in
/// the state: records the pending writes that did reach the database.
/// Those that did not are applied again when the batch resumes.
pub fn recover_inflight(ap: &mut Applier<'_>, database: &str, author_name: &str) -> Result<(), ApplyError> {
    let Some(inflight) = ap.state.inflight()? else { return Ok(()) };
    if inflight.pending_end <= inflight.done {
        return Ok(());
    }
    let body = inflight_body(&inflight, database).map_err(ApplyError::BadInflight)?;
    let author = ap.state.peer_index(&inflight.peer_id)?;
    let peers = ap.peers();
    let remote = RemoteBatch { body: &body, author, author_name };
    let mut tables = ap.batch_tables(&body)?;
    ap.read_greatest_known(&mut tables)?;
    let flat = in_apply_order(&body, ap.constraints);
    let range = inflight.done as usize..(inflight.pending_end as usize).min(flat.len());
    let mut reached = Vec::new();
    for &(t, c) in &flat[range] {
        let p = ap.plan(&tables[t], c, &remote, &peers)?;
        let Some(table) = ap.tables.get(&tables[t].changes.table) else { continue };
        if let Some(outcome) = ap.reached(table, &p, &peers)? {
            reached.push(outcome);
        }
    }
    let done = inflight.done;
    ap.state.transaction(|s| -> Result<(), ApplyError> {
        s.write_rows(|rows| -> Result<(), ApplyError> {
            for outcome in &reached {
                record(s, rows, outcome, &remote, &inflight.peer_id, &mut ApplyStats::default())?;
            }
            Ok(())
        })?;
        s.set_inflight_progress(done, done)?;
        Ok(())
    })?;
    tracing::info!(peer = %inflight.peer_id, seq = inflight.seq, recovered = reached.len(), "recovered an interrupted apply");
    Ok(())
}

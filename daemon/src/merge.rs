//! Merge: decides what a remote change does to this peer's copy of a row.
//!
//! Pure decisions from the state's versions, the change, what its author had
//! seen, and the conflict policy. Nothing in this module touches the user's
//! database or the state: [`crate::apply`] carries decisions out.
//!
//! A local version the author had seen is simply superseded. A local version
//! the author had not seen is concurrent: the policy picks the winner, and the
//! same inputs give the same winner on every peer, which is what makes peers
//! converge whatever the order batches arrive in.

use crate::batch::{BatchBody, Born, Op, RowChange, TableChanges};
use crate::config::Policy;
use crate::schema::Table;
use crate::state::{ColState, RowState, Version};
use crate::value::{self, Value};
use std::cmp::Ordering;

/// What the merge needs to know about the batch a change came in.
pub struct RemoteBatch<'a> {
    pub body: &'a BatchBody,
    /// State index of the author.
    pub author: u32,
    pub author_name: &'a str,
}

impl RemoteBatch<'_> {
    /// Whether the batch's author had seen version `v` when it made it.
    pub fn saw(&self, v: Version, peers: &dyn PeerBook) -> bool {
        if v.peer == self.author {
            v.clock <= self.body.clock
        } else {
            self.body.seen_clock(peers.peer_id(v.peer)) >= v.clock
        }
    }
}

/// Names and ids of peers, to order versions and apply peer priorities.
pub trait PeerBook {
    fn peer_id(&self, idx: u32) -> &str;
    fn peer_name(&self, idx: u32) -> &str;
    /// The state index of this peer.
    fn self_index(&self) -> u32;
    /// The state index of a peer known by id.
    fn index_of(&self, peer: u128) -> Option<u32>;
}

/// Which side lost a conflict: its values go to the conflict log.
#[derive(Debug, Clone, PartialEq)]
pub enum Loser {
    /// The local values of these columns (local column indexes); empty with
    /// `whole_row` means the local row image.
    Local { columns: Vec<usize>, whole_row: bool },
    /// The remote values, as `(column name, value)`; empty: a delete.
    Remote(Vec<(String, Value)>),
    /// The local side was a delete.
    LocalDelete,
}

/// A conflict to record: who lost, to whom, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictNote {
    pub column: Option<String>,
    pub loser: Loser,
    pub loser_version: Version,
    pub winner_version: Version,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to write.
    Skip,
    /// Record only in the state (a tombstone for a row this peer never had).
    RecordOnly,
    /// Write these columns (local index, value); `insert` when the row does
    /// not exist here.
    Write {
        insert: bool,
        columns: Vec<(usize, Value)>,
    },
    Delete,
    /// A local edit beats a remote delete: keep the row and forget it in the
    /// state but for its key (and so its birth), so the next capture
    /// publishes it whole with a newer version and the peers that deleted it
    /// bring it back.
    KeepAndRepublish,
    /// Two rows were made with this integer key on two machines, and the
    /// local one, made here, yields the key: it moves to a fresh key (rows
    /// referring to it follow) and the remote row is inserted in its place.
    /// The next capture publishes the move.
    MoveLocalAndInsert {
        columns: Vec<(usize, Value)>,
    },
    /// The delete of a row held out of this key for an older one (in the
    /// conflict log until it moves, see [`KEY_COLLISION`], or its insert
    /// parked until the older row goes), or deleted here already while
    /// another row took its key: kept by the row's birth
    /// ([`crate::state::State::keep_delete`], the later of two deletes
    /// stays), it decides if the row comes. Nothing is written. Set by the
    /// applier, which knows what the conflict log and the parked list hold,
    /// and for a delete older than the tombstone of no known row at its key
    /// or of a row whose maker made its key again.
    KeepDelete,
    /// Cannot be applied now; kept with the reason and retried.
    Park(ParkReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// An update for a row this peer does not have yet (its insert comes in
    /// another peer's batch).
    RowMissing,
    /// The table or a key column does not exist here.
    SchemaMismatch,
    /// The row was edited here after the last capture; retried after the
    /// next capture so that the edit gets a version and takes part.
    LocalEditPending,
    /// The database refused the write (NOT NULL, UNIQUE, CHECK, trigger).
    Refused,
    /// The row refers, through a foreign key, to a row not here yet.
    ParentMissing,
    /// A row for a key that another row holds here until it moves or goes
    /// (its author had seen it go, or it is the younger of two rows made
    /// with the key); the news of that is on its way.
    KeyNotFreeYet,
}

impl ParkReason {
    pub fn retried_every_cycle(self) -> bool {
        matches!(
            self,
            ParkReason::RowMissing
                | ParkReason::LocalEditPending
                | ParkReason::ParentMissing
                | ParkReason::KeyNotFreeYet
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            ParkReason::RowMissing => "row not here yet",
            ParkReason::SchemaMismatch => "table or key column missing here",
            ParkReason::LocalEditPending => "row edited here since the last capture",
            ParkReason::Refused => "refused by the database",
            ParkReason::ParentMissing => "refers to a row not here yet",
            ParkReason::KeyNotFreeYet => "another row holds this key until it moves or goes; waits for that",
        }
    }
}

/// The decision for one change, and the row state to record once it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub new_state: Option<RowState>,
    pub conflicts: Vec<ConflictNote>,
}

impl Decision {
    fn of(action: Action) -> Decision {
        Decision { action, new_state: None, conflicts: Vec::new() }
    }
}

/// The remote change loses as a whole row: nothing is written and its
/// image is kept in the conflict log.
fn remote_row_loses(image: Vec<(String, Value)>, loser: Version, winner: Version, reason: &'static str) -> Decision {
    Decision {
        action: Action::Skip,
        new_state: None,
        conflicts: vec![ConflictNote {
            column: None,
            loser: Loser::Remote(image),
            loser_version: loser,
            winner_version: winner,
            reason,
        }],
    }
}

/// The newest local column version the remote author had not seen: what a
/// whole-row decision (a delete, `lww-column`) is concurrent with.
fn newest_unseen(row: &RowState, seen: &dyn Fn(Version) -> bool, peers: &dyn PeerBook) -> Option<Version> {
    row.cols.iter().map(|c| c.version).filter(|v| !seen(*v)).max_by(|a, b| compare_versions(*a, *b, peers))
}

/// Orders two versions: clock, then peer id. Every peer orders them alike.
pub fn compare_versions(a: Version, b: Version, peers: &dyn PeerBook) -> Ordering {
    a.clock.cmp(&b.clock).then_with(|| peers.peer_id(a.peer).cmp(peers.peer_id(b.peer)))
}

/// Where the columns of a batch's table are here: per batch column, its
/// local index and name hash, or `None` when the column does not exist
/// here. Changes name their columns by batch index, so this is worked out
/// once per table of a batch, not once per change.
pub struct ColumnMap(Vec<Option<(usize, u64)>>);

impl ColumnMap {
    pub fn new(table: &Table, changes: &TableChanges) -> ColumnMap {
        ColumnMap(
            changes.columns.iter().map(|name| table.column_index(name).map(|i| (i, value::hash_name(name)))).collect(),
        )
    }

    /// True when every local column is among the batch's.
    pub fn covers(&self, table: &Table) -> bool {
        let mut here: Vec<usize> = self.0.iter().flatten().map(|(i, _)| *i).collect();
        here.sort_unstable();
        here.dedup();
        here.len() == table.columns.len()
    }

    /// The name hashes of the batch's columns that exist here, in the
    /// batch's order: the columns [`Self::mapped_row`] yields.
    pub fn names_here(&self) -> Vec<u64> {
        self.0.iter().flatten().map(|&(_, name_hash)| name_hash).collect()
    }

    /// [`Self::mapped`] of a whole row's values, uncollected.
    pub fn mapped_row<'v>(&self, values: &'v [Value]) -> impl Iterator<Item = (usize, u64, &'v Value)> + use<'_, 'v> {
        self.0.iter().zip(values).filter_map(|(m, v)| m.map(|(i, h)| (i, h, v)))
    }

    /// The change's columns that exist here: (local index, name hash, value).
    pub fn mapped<'v>(&self, op: &'v Op) -> Vec<(usize, u64, &'v Value)> {
        let here = |(i, h): (usize, u64), v| (i, h, v);
        match op {
            Op::Row(values) | Op::Insert(values) => self.mapped_row(values).collect(),
            Op::Columns(cols) => cols
                .iter()
                .filter_map(|(j, v)| self.0.get(*j as usize).copied().flatten().map(|m| here(m, v)))
                .collect(),
            Op::Delete => Vec::new(),
        }
    }
}

/// Decides one change against the local row state.
///
/// `local_value` reads the current local value of a column (by local index),
/// needed only by `lww-column` to compare timestamps.
#[allow(clippy::too_many_arguments)] // each input is a distinct fact the decision needs
pub fn decide(
    table: &Table,
    changes: &TableChanges,
    columns: &ColumnMap,
    change: &RowChange,
    local: Option<&RowState>,
    remote: &RemoteBatch<'_>,
    policy: &Policy,
    peers: &dyn PeerBook,
    local_value: &mut dyn FnMut(usize) -> Value,
    kept_delete: Option<Version>,
) -> Decision {
    let op = &change.op;
    let version = Version { clock: remote.body.clock, peer: remote.author };
    let seen = |v: Version| remote.saw(v, peers);
    let wins = |theirs: Version, ours: Version| -> bool { remote_wins(policy, theirs, ours, remote, peers) };

    let mapped = columns.mapped(op);
    let remote_image = || -> Vec<(String, Value)> {
        changes.named_values(op).into_iter().map(|(n, v)| (n.to_string(), v.clone())).collect()
    };

    // The birth of the remote row: an insert's own version, or the one a
    // whole row carries (it moved or was republished).
    let remote_born = match op {
        Op::Insert(_) => born_now(table, &mapped, version),
        Op::Row(_) => born_here(change, peers),
        _ => None,
    };
    // The row was deleted here, and another row has taken its key (and its
    // tombstone) since: the delete decides all the same, as its tombstone
    // would have.
    let tombstone;
    let local = match (kept_delete, remote_born, op) {
        // A delete carries the birth of a row its author had: it came after
        // the row's insert, which it supersedes.
        (Some(_), Some(_), Op::Insert(_)) => return Decision::of(Action::Skip),
        (Some(d), Some(born), Op::Row(_)) => {
            if !seen(d) && !wins(version, d) {
                return remote_row_loses(
                    remote_image(),
                    version,
                    d,
                    "edited by a peer, deleted here concurrently; the delete won",
                );
            }
            match local {
                Some(row) if row.deleted.is_none() || birth(table, row).is_some_and(|b| b.is_known()) => local,
                _ => {
                    tombstone = tombstone_of(table, born, d);
                    Some(&tombstone)
                }
            }
        }
        // An edit of that row is decided against its delete, as it would
        // have been against its tombstone: it loses, or it wins and its
        // author publishes the row again whole.
        (Some(d), None, Op::Columns(_)) => match born_here(change, peers) {
            Some(born) => {
                tombstone = tombstone_of(table, born, d);
                Some(&tombstone)
            }
            None => local,
        },
        _ => local,
    };
    match (op, local) {
        (Op::Insert(_) | Op::Row(_), Some(row)) if saw_our_row_go(table, row, remote_born, &seen, peers) => {
            Decision::of(Action::Park(ParkReason::KeyNotFreeYet))
        }
        (Op::Insert(_) | Op::Row(_), Some(row)) if is_key_collision(table, &mapped, row, remote_born, &seen) => {
            let theirs = remote_born.expect("a collision has a remote birth");
            decide_key_collision(table, &mapped, row, theirs, version, peers, remote_image)
        }
        // A delete of a row that has left this key for good: it is gone
        // here already, but a peer whose edit beat an earlier delete may
        // still send it whole, and this delete may beat that: kept by birth.
        (Op::Delete, Some(row))
            if born_elsewhere(table, row, change.born, peers) && gone_from_key(table, row, change, peers) =>
        {
            Decision::of(Action::KeepDelete)
        }
        // An edit or delete of the row its author had at this key, which is
        // not ours: it waits for that row to arrive, or to move here.
        (Op::Columns(_) | Op::Delete, Some(row)) if born_elsewhere(table, row, change.born, peers) => {
            Decision::of(Action::Park(ParkReason::RowMissing))
        }
        // A delete that comes before its row keeps the row's birth: the row
        // is then known when it arrives, and told apart from another row
        // made with its key.
        (Op::Delete, None) => Decision {
            action: Action::RecordOnly,
            new_state: Some(match born_here(change, peers).filter(|_| table.integer_primary_key) {
                Some(born) => tombstone_of(table, born, version),
                None => RowState { hash: 0, deleted: Some(version), cols: Vec::new() },
            }),
            conflicts: Vec::new(),
        },
        // The insert of a row whose delete is here: the delete's author had
        // the row (the delete carries its birth), so it supersedes it.
        (Op::Insert(_), Some(row))
            if row.deleted.is_some()
                && remote_born.is_some_and(|r| r.is_known())
                && birth(table, row) == remote_born =>
        {
            Decision::of(Action::Skip)
        }
        // A delete that finds a tombstone of no known row (a place a move
        // left free): the tombstone takes the deleted row's birth, or where
        // it is newer, the delete is kept by birth. Either way the delete
        // still decides when its row arrives, whatever row takes the key
        // meanwhile.
        (Op::Delete, Some(row))
            if row.deleted.is_some()
                && table.integer_primary_key
                && born_here(change, peers).is_some()
                && birth(table, row).is_none_or(|b| !b.is_known()) =>
        {
            let born = born_here(change, peers).expect("checked");
            if compare_versions(version, row.deleted.expect("checked"), peers) == Ordering::Greater {
                Decision {
                    action: Action::RecordOnly,
                    new_state: Some(tombstone_of(table, born, version)),
                    conflicts: Vec::new(),
                }
            } else {
                Decision::of(Action::KeepDelete)
            }
        }
        (Op::Delete, Some(row)) if row.deleted.is_some() => {
            let d = row.deleted.expect("checked");
            if compare_versions(version, d, peers) == Ordering::Greater {
                Decision {
                    action: Action::RecordOnly,
                    new_state: Some(RowState { hash: 0, deleted: Some(version), cols: row.cols.clone() }),
                    conflicts: Vec::new(),
                }
            } else {
                Decision::of(Action::Skip)
            }
        }

        (Op::Delete, Some(row)) => {
            let newest_unseen = newest_unseen(row, &seen, peers);
            let tombstone = RowState { hash: 0, deleted: Some(version), cols: key_cols(table, row) };
            match newest_unseen {
                None => Decision { action: Action::Delete, new_state: Some(tombstone), conflicts: Vec::new() },
                Some(local_v) if wins(version, local_v) => Decision {
                    action: Action::Delete,
                    new_state: Some(tombstone),
                    conflicts: vec![ConflictNote {
                        column: None,
                        loser: Loser::Local { columns: Vec::new(), whole_row: true },
                        loser_version: local_v,
                        winner_version: version,
                        reason: "edited here, deleted concurrently by a peer; the delete won",
                    }],
                },
                Some(local_v) => Decision {
                    action: Action::KeepAndRepublish,
                    new_state: None,
                    conflicts: vec![ConflictNote {
                        column: None,
                        loser: Loser::Remote(Vec::new()),
                        loser_version: version,
                        winner_version: local_v,
                        reason: "deleted by a peer, edited here concurrently; the edit won",
                    }],
                },
            }
        }
        (Op::Columns(_), None) => Decision::of(Action::Park(ParkReason::RowMissing)),
        (Op::Insert(_), None) => insert(table, &mapped, version, Vec::new()),
        // A row republished or moved here: it keeps its birth.
        (Op::Row(_), None) => with_birth(insert(table, &mapped, version, Vec::new()), table, born_here(change, peers)),
        // A new or moved row where a deleted one was, made by an author
        // that knew of the delete: the delete was about the other row.
        (Op::Insert(_) | Op::Row(_), Some(row))
            if row.deleted.is_some()
                && table.integer_primary_key
                && remote_born.is_some_and(|r| r.is_known())
                && birth(table, row).is_some_and(|b| b.is_known() && Some(b) != remote_born) =>
        {
            with_birth(insert(table, &mapped, version, Vec::new()), table, remote_born)
        }
        (_, Some(row)) if row.deleted.is_some() => {
            let d = row.deleted.expect("checked");
            let is_after_delete = seen(d);
            if is_after_delete || wins(version, d) {
                let conflicts = if is_after_delete {
                    Vec::new()
                } else {
                    vec![ConflictNote {
                        column: None,
                        loser: Loser::LocalDelete,
                        loser_version: d,
                        winner_version: version,
                        reason: "deleted here, edited concurrently by a peer; the edit won",
                    }]
                };
                match op {
                    // The same row back: it keeps its birth.
                    Op::Row(_) => {
                        let born = born_here(change, peers).or(birth(table, row));
                        with_birth(insert(table, &mapped, version, conflicts), table, born)
                    }
                    Op::Insert(_) => insert(table, &mapped, version, conflicts),
                    // The editing peer republishes the whole row when it
                    // sees our delete lose; until then there is no row here.
                    _ if is_after_delete => Decision::of(Action::Park(ParkReason::RowMissing)),
                    _ => Decision { action: Action::Skip, new_state: None, conflicts },
                }
            } else {
                remote_row_loses(
                    remote_image(),
                    version,
                    d,
                    "edited by a peer, deleted here concurrently; the delete won",
                )
            }
        }
        (_, Some(row)) => {
            // The key is the row's identity: an existing row's key columns
            // are never written, and keep the version of the row's insert.
            let mapped: Vec<(usize, u64, &Value)> =
                mapped.into_iter().filter(|(i, _, _)| !table.key.contains(i)).collect();
            let decision = match policy {
                Policy::LwwColumn(ts) => {
                    decide_whole_row(table, ts, &mapped, row, version, &seen, peers, local_value, remote_image)
                }
                _ => decide_columns(table, &mapped, row, version, &seen, &wins),
            };
            match op {
                Op::Insert(_) => adopt_older_birth(decision, table, row, remote_born, peers),
                _ => decision,
            }
        }
    }
}

/// Who a row is, whatever key it has now: the version of its insert and
/// the key it was made with ([`Table::birth_key`]). A batch gives all its rows one clock,
/// so the key tells them apart; the key's column state keeps both, through
/// tombstones and moves (see capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Birth {
    pub version: Version,
    pub key_hash: u64,
}

impl Birth {
    /// Older first: the order that decides who keeps a key, on every peer.
    fn cmp(&self, other: &Birth, peers: &dyn PeerBook) -> Ordering {
        compare_versions(self.version, other.version, peers).then(self.key_hash.cmp(&other.key_hash))
    }

    pub fn is_known(&self) -> bool {
        self.version.clock != 0
    }

    pub fn to_wire(self, peers: &dyn PeerBook) -> Option<Born> {
        Born::of(self.version.clock, peers.peer_id(self.version.peer), self.key_hash)
    }
}

/// The birth of a row the state knows, from its key's column state.
pub fn birth(table: &Table, row: &RowState) -> Option<Birth> {
    let key = table.key.first()?;
    row.col(value::hash_name(&table.columns[*key].name)).map(|c| Birth { version: c.version, key_hash: c.value_hash })
}

/// The tombstone of the row born `born`, deleted by `deleted`.
fn tombstone_of(table: &Table, born: Birth, deleted: Version) -> RowState {
    let cols = table
        .key
        .first()
        .map(|&k| ColState {
            name_hash: value::hash_name(&table.columns[k].name),
            value_hash: born.key_hash,
            version: born.version,
        })
        .into_iter()
        .collect();
    RowState { hash: 0, deleted: Some(deleted), cols }
}

/// The delete of a row that a state about to replace `local` (a
/// tombstone) by `new_state` (another row) would forget: the deleted row's
/// birth and the delete's version. Kept by birth, it still decides when
/// that row arrives (see [`decide`]'s `kept_delete`).
pub fn delete_replaced(
    table: &Table,
    local: Option<&RowState>,
    new_state: Option<&RowState>,
) -> Option<(Birth, Version)> {
    let (local, new_state) = (local?, new_state?);
    let deleted = local.deleted.filter(|d| d.clock != 0)?;
    let gone = birth(table, local).filter(|b| b.is_known())?;
    let is_another_row = new_state.deleted.is_none() && birth(table, new_state) != Some(gone);
    (table.integer_primary_key && is_another_row).then_some((gone, deleted))
}

/// The birth a change carries, in local terms.
fn born_here(change: &RowChange, peers: &dyn PeerBook) -> Option<Birth> {
    let born = change.born?;
    Some(Birth { version: Version { clock: born.clock, peer: peers.index_of(born.peer)? }, key_hash: born.key })
}

/// The birth of a row inserted by `change` at its key.
fn born_now(table: &Table, mapped: &[(usize, u64, &Value)], version: Version) -> Option<Birth> {
    let key = table.key.first()?;
    let (_, _, v) = mapped.iter().find(|(i, _, _)| i == key)?;
    Some(Birth { version, key_hash: table.birth_key(v.as_ref()) })
}

/// Gives the key column of a decision's new state the birth `born`.
fn with_birth(mut decision: Decision, table: &Table, born: Option<Birth>) -> Decision {
    let (Some(born), Some(state), Some(key)) = (born, decision.new_state.as_mut(), table.key.first()) else {
        return decision;
    };
    let name_hash = value::hash_name(&table.columns[*key].name);
    if let Some(c) = state.cols.iter_mut().find(|c| c.name_hash == name_hash) {
        c.version = born.version;
        c.value_hash = born.key_hash;
    }
    decision
}

/// One row inserted on two peers alike (equal values): both keep the older
/// birth, so later changes of that key are judged alike everywhere.
fn adopt_older_birth(
    decision: Decision,
    table: &Table,
    row: &RowState,
    theirs: Option<Birth>,
    peers: &dyn PeerBook,
) -> Decision {
    let (Some(ours), Some(theirs)) = (birth(table, row), theirs) else { return decision };
    if !ours.is_known() || theirs.cmp(&ours, peers) != Ordering::Less {
        return decision;
    }
    if decision.new_state.is_some() {
        return with_birth(decision, table, Some(theirs));
    }
    if matches!(decision.action, Action::Skip) {
        let recorded =
            Decision { action: Action::RecordOnly, new_state: Some(row.clone()), conflicts: decision.conflicts };
        return with_birth(recorded, table, Some(theirs));
    }
    decision
}

fn key_cols(table: &Table, row: &RowState) -> Vec<ColState> {
    crate::state::key_cols(&row.cols, table)
}

/// True when the row `change` is about, which is not `row`, has left this
/// key for good: this peer made it, or its maker made `row` after it (a
/// peer's changes arrive in order, so the old row's delete or move came
/// first). A change about a row that moved goes where it lives now before
/// it is decided.
fn gone_from_key(table: &Table, row: &RowState, change: &RowChange, peers: &dyn PeerBook) -> bool {
    let Some(theirs) = change.born else { return false };
    let made_here = peers.index_of(theirs.peer) == Some(peers.self_index());
    let remade_by_its_maker = birth(table, row)
        .and_then(|b| b.to_wire(peers))
        .is_some_and(|ours| ours.peer == theirs.peer && ours.clock > theirs.clock);
    made_here || remade_by_its_maker
}

/// The change is about another row than ours that had this integer key:
/// both births are known and differ.
pub fn born_elsewhere(table: &Table, row: &RowState, theirs: Option<Born>, peers: &dyn PeerBook) -> bool {
    let (Some(theirs), Some(ours)) = (theirs, birth(table, row)) else { return false };
    table.integer_primary_key && ours.is_known() && ours.to_wire(peers) != Some(theirs)
}

/// A row arrives (inserted, moved or republished) where a row with another
/// birth has the same integer key, and the two differ: two rows made on two
/// machines, not one row. (Equal values are one row reached twice, say a
/// database copied to both machines before syncd ran: merged as usual.)
fn is_key_collision(
    table: &Table,
    mapped: &[(usize, u64, &Value)],
    row: &RowState,
    theirs: Option<Birth>,
    seen: &dyn Fn(Version) -> bool,
) -> bool {
    if !table.integer_primary_key {
        return false;
    }
    // Births, not "had the author seen our row": an author that parked our
    // insert behind its own row has seen it and still made another row.
    let (Some(ours), Some(theirs)) = (birth(table, row), theirs) else { return false };
    if ours == theirs || !ours.is_known() || !theirs.is_known() {
        return false;
    }
    // A deleted row was another row all the same (its values are gone),
    // unless the author knew that row: then it made its row after some
    // delete freed the key.
    if row.deleted.is_some() {
        return !seen(ours.version);
    }
    // Values not known here (a row moved here and not captured since) may
    // differ: only known equal values make one row.
    mapped
        .iter()
        .filter(|(i, _, _)| !table.key.contains(i))
        .any(|(_, name_hash, v)| row.col(*name_hash).is_none_or(|c| c.value_hash != value::hash_value(v.as_ref())))
}

/// A younger row arrives at the integer key of a live row here whose
/// insert its author had seen: so at the author our row was gone from the
/// key (deleted or moved), or waited for it behind the author's row, which
/// then moves when it meets ours. Either way news is on its way: the
/// younger row waits for the key. Taking the key before the delete or move
/// arrives would lose our row to its concurrent edits; treating it as a
/// collision would keep it out for good when the key comes free, since its
/// author saw it free and never moves it, even where edits made here that
/// the author had not seen lose to the delete. (An older row is a
/// collision all the same: its author may have seen ours only waiting for
/// the key.)
fn saw_our_row_go(
    table: &Table,
    row: &RowState,
    theirs: Option<Birth>,
    seen: &dyn Fn(Version) -> bool,
    peers: &dyn PeerBook,
) -> bool {
    let (Some(ours), Some(theirs)) = (birth(table, row), theirs) else { return false };
    table.integer_primary_key
        && row.deleted.is_none()
        && ours.is_known()
        && theirs.is_known()
        && ours.cmp(&theirs, peers) == Ordering::Less
        && seen(ours.version)
}

/// The reason of a conflict entry that keeps a row younger than another
/// made with its key, until the row's move arrives: it starts with
/// [`KEY_COLLISION`] and its loser version is the row's birth.
macro_rules! key_collision_reason {
    ($rest:literal) => {
        concat!("the same key was made", $rest)
    };
}
pub const KEY_COLLISION: &str = key_collision_reason!("");

/// The older row keeps the key on every peer. The author of the younger
/// one moves its row to a fresh key and publishes the move. Another peer
/// that has the older row keeps the younger in the conflict log until the
/// move arrives; one that has the younger row lets the older wait for it.
fn decide_key_collision(
    table: &Table,
    mapped: &[(usize, u64, &Value)],
    row: &RowState,
    theirs: Birth,
    version: Version,
    peers: &dyn PeerBook,
    remote_image: impl Fn() -> Vec<(String, Value)>,
) -> Decision {
    let ours = birth(table, row).expect("a collision has a birth");
    let ours_is_older = ours.cmp(&theirs, peers) == Ordering::Less;
    let take_key = || with_birth(insert(table, mapped, version, Vec::new()), table, Some(theirs));
    if row.deleted.is_some() {
        // The row that had the key is gone: the older of the two still
        // decides, so that every peer agrees on who moves.
        return if ours_is_older {
            remote_row_loses(
                remote_image(),
                theirs.version,
                ours.version,
                key_collision_reason!(" by two peers (here since deleted); the younger row moves to a new key"),
            )
        } else {
            take_key()
        };
    }
    if ours_is_older {
        return remote_row_loses(
            remote_image(),
            theirs.version,
            ours.version,
            key_collision_reason!(" here and by a peer; the peer moves its row to a new key"),
        );
    }
    if ours.version.peer == peers.self_index() {
        let mut decision = take_key();
        let Action::Write { columns, .. } = decision.action else { unreachable!("insert writes") };
        decision.action = Action::MoveLocalAndInsert { columns };
        return decision;
    }
    // Neither row is ours. The younger one's author moves it when it meets
    // the older; if it had met it already (the older lost this key to a
    // third, older row there), the older one moves instead. Either way a
    // move is coming: the older row waits for it, and nothing is replaced.
    Decision::of(Action::Park(ParkReason::KeyNotFreeYet))
}

fn insert(table: &Table, mapped: &[(usize, u64, &Value)], version: Version, conflicts: Vec<ConflictNote>) -> Decision {
    Decision {
        action: Action::Write { insert: true, columns: mapped.iter().map(|(i, _, v)| (*i, (*v).clone())).collect() },
        new_state: Some(inserted_state(table, mapped, version)),
        conflicts,
    }
}

/// The state of a row inserted with these columns, each at `version`; the
/// row hash is left to the one who writes it (see `apply`).
pub fn inserted_state(table: &Table, mapped: &[(usize, u64, &Value)], version: Version) -> RowState {
    let cols = mapped
        .iter()
        .map(|(i, name_hash, v)| {
            let value_hash =
                if table.key.contains(i) { table.birth_key(v.as_ref()) } else { value::hash_value(v.as_ref()) };
            ColState { name_hash: *name_hash, value_hash, version }
        })
        .collect();
    RowState { hash: 0, deleted: None, cols }
}

fn decide_columns(
    table: &Table,
    mapped: &[(usize, u64, &Value)],
    row: &RowState,
    version: Version,
    seen: &dyn Fn(Version) -> bool,
    wins: &dyn Fn(Version, Version) -> bool,
) -> Decision {
    let mut new_state = row.clone();
    let mut writes = Vec::new();
    let mut conflicts = Vec::new();
    for (i, name_hash, v) in mapped {
        let apply = match row.col(*name_hash) {
            None => true,
            Some(c) if c.version == version => false,
            Some(c) if seen(c.version) => true,
            // The same value made twice is no conflict; both keep one version.
            Some(c) if c.value_hash == value::hash_value(v.as_ref()) => wins(version, c.version),
            Some(c) => {
                let remote_won = wins(version, c.version);
                let column = Some(table.columns[*i].name.clone());
                conflicts.push(if remote_won {
                    ConflictNote {
                        column,
                        loser: Loser::Local { columns: vec![*i], whole_row: false },
                        loser_version: c.version,
                        winner_version: version,
                        reason: "the same column edited here and by a peer",
                    }
                } else {
                    ConflictNote {
                        column,
                        loser: Loser::Remote(vec![(table.columns[*i].name.clone(), (*v).clone())]),
                        loser_version: version,
                        winner_version: c.version,
                        reason: "the same column edited here and by a peer",
                    }
                });
                remote_won
            }
        };
        if apply {
            new_state.set_col(ColState { name_hash: *name_hash, value_hash: value::hash_value(v.as_ref()), version });
            writes.push((*i, (*v).clone()));
        }
    }
    if writes.is_empty() {
        return Decision { action: Action::Skip, new_state: None, conflicts };
    }
    Decision { action: Action::Write { insert: false, columns: writes }, new_state: Some(new_state), conflicts }
}

#[allow(clippy::too_many_arguments)]
fn decide_whole_row(
    table: &Table,
    ts_column: &str,
    mapped: &[(usize, u64, &Value)],
    row: &RowState,
    version: Version,
    seen: &dyn Fn(Version) -> bool,
    peers: &dyn PeerBook,
    local_value: &mut dyn FnMut(usize) -> Value,
    remote_image: impl Fn() -> Vec<(String, Value)>,
) -> Decision {
    let newest_unseen = newest_unseen(row, seen, peers);
    let all_remote = |state: &RowState| {
        let mut s = state.clone();
        for (_, name_hash, v) in mapped {
            s.set_col(ColState { name_hash: *name_hash, value_hash: value::hash_value(v.as_ref()), version });
        }
        s
    };
    let write = Action::Write { insert: false, columns: mapped.iter().map(|(i, _, v)| (*i, (*v).clone())).collect() };
    let Some(local_v) = newest_unseen else {
        if row.cols.iter().all(|c| c.version == version) {
            return Decision::of(Action::Skip);
        }
        return Decision { action: write, new_state: Some(all_remote(row)), conflicts: Vec::new() };
    };
    let remote_ts = mapped
        .iter()
        .find(|(i, _, _)| table.columns[*i].name == ts_column)
        .map(|(_, _, v)| (*v).clone())
        .unwrap_or(Value::Null);
    let local_ts = table.column_index(ts_column).map(&mut *local_value).unwrap_or(Value::Null);
    let remote_won = match sqlite_compare(&remote_ts, &local_ts) {
        Ordering::Equal => compare_versions(version, local_v, peers) == Ordering::Greater,
        o => o == Ordering::Greater,
    };
    if remote_won {
        Decision {
            action: write,
            new_state: Some(all_remote(row)),
            conflicts: vec![ConflictNote {
                column: None,
                loser: Loser::Local { columns: Vec::new(), whole_row: true },
                loser_version: local_v,
                winner_version: version,
                reason: "the row edited here and by a peer; the newer timestamp won",
            }],
        }
    } else {
        remote_row_loses(remote_image(), version, local_v, "the row edited here and by a peer; the newer timestamp won")
    }
}

/// True when the remote version beats a concurrent local one under `policy`.
fn remote_wins(
    policy: &Policy,
    theirs: Version,
    ours: Version,
    remote: &RemoteBatch<'_>,
    peers: &dyn PeerBook,
) -> bool {
    if let Policy::PeerPriority(order) = policy {
        let rank = |name: &str| order.iter().position(|n| n == name).unwrap_or(order.len());
        let their_name = if theirs.peer == remote.author { remote.author_name } else { peers.peer_name(theirs.peer) };
        let (a, b) = (rank(their_name), rank(peers.peer_name(ours.peer)));
        if a != b {
            return a < b;
        }
    }
    compare_versions(theirs, ours, peers) == Ordering::Greater
}

/// SQLite's ordering of two values (NULL < numbers < text < blob).
pub fn sqlite_compare(a: &Value, b: &Value) -> Ordering {
    let ka = value::encode_key([a.as_ref()]);
    let kb = value::encode_key([b.as_ref()]);
    ka.cmp(&kb)
}

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

use crate::batch::{BatchBody, Op, TableChanges};
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

/// Names and ids of peers, to order versions and apply peer priorities.
pub trait PeerBook {
    fn peer_id(&self, idx: u32) -> &str;
    fn peer_name(&self, idx: u32) -> &str;
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
    /// state, so the next capture publishes it whole with a newer version and
    /// the peers that deleted it bring it back.
    KeepAndRepublish,
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
}

impl ParkReason {
    pub fn retried_every_cycle(self) -> bool {
        matches!(self, ParkReason::RowMissing | ParkReason::LocalEditPending)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ParkReason::RowMissing => "row not here yet",
            ParkReason::SchemaMismatch => "table or key column missing here",
            ParkReason::LocalEditPending => "row edited here since the last capture",
            ParkReason::Refused => "refused by the database",
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

/// Decides one change against the local row state.
///
/// `local_value` reads the current local value of a column (by local index),
/// needed only by `lww-column` to compare timestamps.
#[allow(clippy::too_many_arguments)] // each input is a distinct fact the decision needs
pub fn decide(
    table: &Table,
    changes: &TableChanges,
    op: &Op,
    local: Option<&RowState>,
    remote: &RemoteBatch<'_>,
    policy: &Policy,
    peers: &dyn PeerBook,
    local_value: &mut dyn FnMut(usize) -> Value,
) -> Decision {
    let version = Version { clock: remote.body.clock, peer: remote.author };
    let seen = |v: Version| -> bool {
        if v.peer == remote.author {
            v.clock <= remote.body.clock
        } else {
            remote.body.seen_clock(peers.peer_id(v.peer)) >= v.clock
        }
    };
    let wins = |theirs: Version, ours: Version| -> bool { remote_wins(policy, theirs, ours, remote, peers) };

    // Remote columns that exist here: (local index, name hash, value).
    let mapped: Vec<(usize, u64, &Value)> = changes
        .named_values(op)
        .into_iter()
        .filter_map(|(name, v)| table.column_index(name).map(|i| (i, value::hash_name(name), v)))
        .collect();
    let remote_image = || -> Vec<(String, Value)> {
        changes.named_values(op).into_iter().map(|(n, v)| (n.to_string(), v.clone())).collect()
    };

    match (op, local) {
        (Op::Delete, None) => Decision {
            action: Action::RecordOnly,
            new_state: Some(RowState { hash: 0, deleted: Some(version), cols: Vec::new() }),
            conflicts: Vec::new(),
        },
        (Op::Delete, Some(row)) if row.deleted.is_some() => {
            let d = row.deleted.expect("checked");
            if compare_versions(version, d, peers) == Ordering::Greater {
                Decision {
                    action: Action::RecordOnly,
                    new_state: Some(RowState { hash: 0, deleted: Some(version), cols: Vec::new() }),
                    conflicts: Vec::new(),
                }
            } else {
                Decision::of(Action::Skip)
            }
        }
        (Op::Delete, Some(row)) => {
            let newest_unseen = newest_unseen(row, &seen, peers);
            let tombstone = RowState { hash: 0, deleted: Some(version), cols: Vec::new() };
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
        (Op::Row(_), None) => insert(table, &mapped, version, Vec::new()),
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
                    Op::Row(_) => insert(table, &mapped, version, conflicts),
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
        (_, Some(row)) => match policy {
            Policy::LwwColumn(ts) => {
                decide_whole_row(table, ts, &mapped, row, version, &seen, peers, local_value, remote_image)
            }
            _ => decide_columns(table, &mapped, row, version, &seen, &wins),
        },
    }
}

fn insert(table: &Table, mapped: &[(usize, u64, &Value)], version: Version, conflicts: Vec<ConflictNote>) -> Decision {
    let cols = mapped
        .iter()
        .map(|(_, name_hash, v)| ColState { name_hash: *name_hash, value_hash: value::hash_value(v.as_ref()), version })
        .collect();
    let _ = table;
    Decision {
        action: Action::Write { insert: true, columns: mapped.iter().map(|(i, _, v)| (*i, (*v).clone())).collect() },
        new_state: Some(RowState { hash: 0, deleted: None, cols }),
        conflicts,
    }
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

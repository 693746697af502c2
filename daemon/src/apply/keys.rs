//! Apply's part in keys made on two machines and in the application's own
//! constraints (DESIGN §4): moving a row made here off a key an older row
//! takes, bringing a moved row's copy along, sending changes after a row
//! that moved, UNIQUE clashes between two rows, and the references
//! (declared or configured) that must never dangle or be left behind.

use super::{Applier, ApplyError, BatchTable, KEY_TAKEN, Outcome, ParkReason, ParkedChange, Peers, Planned, Record};
use super::{
    complete_state, conflict_from, delete_row, image_json, key_values_local, local_key, park_described, park_record,
    read_row, row_hash,
};
use crate::batch::{Born, Op, RowChange, TableChanges};
use crate::constraints;
use crate::merge::{self, Action, Decision, PeerBook, RemoteBatch};
use crate::schema::{Table, quote_ident};
use crate::state::{Conflict, RowState, Version};
use crate::value::{self, Value};
use rusqlite::{ErrorCode, OptionalExtension};
use std::borrow::Cow;

impl Applier<'_> {
    /// Runs `write`, unless another row holds a value of a UNIQUE index that
    /// `after` (the row as written) needs. Such two rows are in conflict:
    /// the one whose value is older stays, on every peer alike, and the
    /// other is kept in the conflict log. A local row that loses is deleted
    /// (capture publishes that) after the rows referring to it are pointed
    /// at the winner, the same thing by that index. When the other row is
    /// changed further on in the chunk, the change waits for that instead
    /// ([`Record::Deferred`]). An insert (`inserting_at` its key) that fails
    /// because a row added here since the last capture has its key waits
    /// for the next capture. False: nothing was written and `outcome` says
    /// why.
    #[allow(clippy::too_many_arguments)] // the change, its origin and where it goes
    pub(super) fn with_unique_clashes(
        &self,
        table: &Table,
        p: &Planned<'_>,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        after: &[&Value],
        inserting_at: Option<&[Value]>,
        outcome: &mut Outcome,
        write: impl Fn() -> rusqlite::Result<()>,
    ) -> Result<bool, ApplyError> {
        let theirs = Version { clock: remote.body.clock, peer: remote.author };
        for attempt in 0..=self.constraints.unique(&table.name).len() {
            // Looked for before writing: an index declared `ON CONFLICT
            // REPLACE` would otherwise delete the other row silently, and
            // which row survives would depend on the order batches arrive.
            let Some((columns, local)) = self.unique_clash(table, after)? else {
                return match write() {
                    Ok(()) => Ok(true),
                    Err(rusqlite::Error::SqliteFailure(e, msg)) if e.code == ErrorCode::ConstraintViolation => {
                        outcome.record = match inserting_at {
                            Some(key) if read_row(self.user, table, key)?.is_some() => {
                                park_record(p, ParkReason::LocalEditPending, KEY_TAKEN.into())
                            }
                            _ => park_record(p, ParkReason::Refused, msg.unwrap_or_else(|| e.to_string())),
                        };
                        Ok(false)
                    }
                    Err(e) => Err(e.into()),
                };
            };
            let local_key: Vec<Value> = table.key.iter().map(|&k| local[k].clone()).collect();
            let tbl = p.tbl;
            let local_place = value::encode_key(local_key.iter().map(Value::as_ref));
            if attempt == 0 && self.changed_later.borrow().get(&tbl).is_some_and(|keys| keys.contains(&local_place)) {
                // The value may be handed from that row to this one (its
                // author changed both between two captures).
                outcome.record = Record::Deferred;
                return Ok(false);
            }
            if self.parked_in_chunk.borrow().contains(&(tbl, local_place.clone()))
                || self.waits_parked(table, &local_place)?
            {
                // A change to that row waits (parked): the value may be on
                // its way out with it.
                outcome.record = park_record(
                    p,
                    ParkReason::KeyNotFreeYet,
                    format!("UNIQUE({}): held by a row whose change waits here", columns.join(", ")),
                );
                return Ok(false);
            }
            let state = self.state.row(tbl, &local_place)?;
            let Some(ours) =
                state.as_ref().filter(|s| s.deleted.is_none()).map(|s| unique_version(table, s, &columns, peers))
            else {
                outcome.record = park_record(
                    p,
                    ParkReason::LocalEditPending,
                    format!("clashes on UNIQUE({}) with a row added here since the last capture", columns.join(", ")),
                );
                return Ok(false);
            };
            let reason =
                format!("UNIQUE({}): the same value here and at a peer; the older row stays", columns.join(", "));
            let remote_image =
                image_json(table.columns.iter().map(|c| c.name.clone()).zip(after.iter().map(|v| (*v).clone())));
            let local_image = image_json(table.columns.iter().map(|c| c.name.clone()).zip(local.iter().cloned()));
            if merge::compare_versions(ours, theirs, peers) == std::cmp::Ordering::Less {
                outcome.conflicts.push(clash_conflict(
                    table,
                    p.change.key.clone(),
                    (remote_image, theirs),
                    (local_image, ours),
                    peers,
                    &reason,
                ));
                outcome.record = Record::Nothing;
                if inserting_at.is_none() && p.from.is_none() && !self.ring_unbroken.get() {
                    // The row this change was for loses: where the change
                    // arrived before the older value, that value's arrival
                    // deleted it (below). Not for a ring that could not be
                    // broken: its author holds both rows.
                    self.remove_clash_loser(table, &key_values_local(table, p.table, &p.change), &local_key[0])?;
                    outcome.side_effects = true;
                }
                return Ok(false);
            }
            self.remove_clash_loser(table, &local_key, after[table.key[0]])?;
            outcome.conflicts.push(clash_conflict(
                table,
                local_key,
                (local_image, ours),
                (remote_image, theirs),
                peers,
                &reason,
            ));
            outcome.side_effects = true;
        }
        outcome.record =
            park_record(p, ParkReason::Refused, "clashes on more UNIQUE indexes than the table has".into());
        Ok(false)
    }

    /// Deletes the row at key `loser`, which lost a UNIQUE clash, after
    /// pointing the rows that refer to it at the winner's key: they meant
    /// the same thing by that index.
    fn remove_clash_loser(&self, table: &Table, loser: &[Value], winner_key: &Value) -> rusqlite::Result<()> {
        if table.key.len() == 1 {
            let key_column = &table.columns[table.key[0]].name;
            constraints::repoint_children(self.user, self.constraints, &table.name, key_column, &loser[0], winner_key)?;
        }
        delete_row(self.user, table, loser)
    }

    /// Carries `p` out, unless it waits for a UNIQUE value that a row
    /// changed further on in the chunk holds (`None`, see
    /// [`Self::with_unique_clashes`]): its key then stays in `changed_later`,
    /// so that rows waiting for it wait on. A change parked is remembered:
    /// rows needing a value its row holds wait for it too.
    pub(super) fn carry_out_or_wait(
        &self,
        p: &Planned<'_>,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<Option<Outcome>, ApplyError> {
        if let Some(keys) = self.changed_later.borrow_mut().get_mut(&p.tbl) {
            keys.remove(&p.key);
        }
        let outcome = self.carry_out(p, remote, peers)?;
        match outcome.record {
            Record::Deferred => {
                self.changed_later.borrow_mut().entry(p.tbl).or_default().insert(p.key.clone());
                return Ok(None);
            }
            Record::Park { .. } => {
                self.parked_in_chunk.borrow_mut().insert((outcome.tbl, outcome.key.clone()));
            }
            _ => {}
        }
        Ok(Some(outcome))
    }

    /// Carries out the changes of a chunk that waited for another row's
    /// UNIQUE value ([`Record::Deferred`]), handing each outcome to
    /// `deliver`. They are retried while that makes progress. What is left
    /// waits in rings (an application swapped two positions between two
    /// captures): see [`Self::through_rings`]. Failing that, each is an
    /// ordinary clash.
    pub(super) fn carry_out_deferred(
        &self,
        mut waiting: Vec<&Planned<'_>>,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        deliver: &mut impl FnMut(Outcome) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        while !waiting.is_empty() {
            let (done, still) = self.retry_waiting(&waiting, remote, peers)?;
            for outcome in done {
                deliver(outcome)?;
            }
            if still.len() < waiting.len() {
                waiting = still;
                continue;
            }
            let outcomes = match self.through_rings(&still, remote, peers)? {
                Some(outcomes) => outcomes,
                None => {
                    self.changed_later.borrow_mut().clear();
                    self.ring_unbroken.set(true);
                    let outcomes: Result<Vec<_>, _> = still.iter().map(|p| self.carry_out(p, remote, peers)).collect();
                    self.ring_unbroken.set(false);
                    outcomes?
                }
            };
            for outcome in outcomes {
                deliver(outcome)?;
            }
            break;
        }
        Ok(())
    }

    /// Tries each waiting change once: the outcomes of those carried out,
    /// and the changes still waiting.
    fn retry_waiting<'p, 'b>(
        &self,
        waiting: &[&'p Planned<'b>],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<(Vec<Outcome>, Vec<&'p Planned<'b>>), ApplyError> {
        let (mut done, mut still) = (Vec::new(), Vec::new());
        for &p in waiting {
            match self.carry_out_or_wait(p, remote, peers)? {
                Some(outcome) => done.push(outcome),
                None => still.push(p),
            }
        }
        Ok((done, still))
    }

    /// Whether a change to the row at `key` waits in the parked list.
    fn waits_parked(&self, table: &Table, key: &[u8]) -> Result<bool, ApplyError> {
        self.any_parked(table, |change, c| local_key(table, &change.table, c).as_deref() == Some(key))
    }

    /// Whether a change of `table` waiting in the parked list (one that
    /// still decodes) is one that `is` picks, given its parked batch.
    fn any_parked(&self, table: &Table, is: impl Fn(&ParkedChange, &RowChange) -> bool) -> Result<bool, ApplyError> {
        for parked in self.state.parked()?.into_iter().filter(|p| p.table == table.name) {
            let Ok(change) = syncd_proto::decode::<ParkedChange>(&parked.change) else { continue };
            if change.table.changes.iter().any(|c| is(&change, c)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the row born `born` is kept from its key here: held out for
    /// an older row (in the conflict log until it moves, or its insert
    /// parked until the older row goes), or deleted already while another
    /// row took the key (its delete kept by birth).
    pub(super) fn kept_from_its_key(&self, table: &Table, tbl: i64, born: Born) -> Result<bool, ApplyError> {
        if self.state.holds_out_for_its_key(tbl, born)? || self.state.kept_delete(tbl, born)?.is_some() {
            return Ok(true);
        }
        // Its insert, parked until the older row goes.
        self.any_parked(table, |change, c| match (&c.op, c.key.as_slice()) {
            (Op::Insert(_), [made_at]) => {
                Born::of(change.clock, &change.author_id, table.birth_key(made_at.as_ref())) == Some(born)
            }
            _ => false,
        })
    }

    /// Changes that each wait for a value another one of them holds: one
    /// row's values are set aside (NULL, else a placeholder of the same
    /// type), the others take theirs, then it takes its own, as on the
    /// machine that made them. All in a savepoint: unless every change is
    /// written, nothing of it stays and `None` says so.
    fn through_rings(
        &self,
        ring: &[&Planned<'_>],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<Option<Vec<Outcome>>, ApplyError> {
        self.user.execute_batch("SAVEPOINT syncd_ring")?;
        let result = (|| -> Result<Option<Vec<Outcome>>, ApplyError> {
            let mut outcomes = Vec::new();
            let mut pending = ring.to_vec();
            let mut set_aside = 0;
            while !pending.is_empty() {
                let (done, still) = self.retry_waiting(&pending, remote, peers)?;
                if done.iter().any(|o| !matches!(o.record, Record::Put(_))) {
                    return Ok(None);
                }
                if done.is_empty() {
                    // Another ring, or this one still closed: a row that
                    // was set aside already is not set aside again.
                    if set_aside == ring.len() || !self.set_aside(still[0])? {
                        return Ok(None);
                    }
                    set_aside += 1;
                }
                outcomes.extend(done);
                pending = still;
            }
            Ok(Some(outcomes))
        })();
        match &result {
            Ok(Some(_)) => self.user.execute_batch("RELEASE syncd_ring")?,
            _ => self.user.execute_batch("ROLLBACK TO syncd_ring; RELEASE syncd_ring")?,
        }
        self.set_aside.borrow_mut().clear();
        result
    }

    /// Frees the UNIQUE values `p` changes on its row: each is set to NULL,
    /// or where the table refuses that, to a value of the same type no row
    /// holds. False when the table refuses both.
    fn set_aside(&self, p: &Planned<'_>) -> Result<bool, ApplyError> {
        let (Some(table), Action::Write { insert: false, columns }) =
            (self.tables.get(&p.table.table), &p.decision.action)
        else {
            return Ok(false);
        };
        let unique = self.constraints.unique(&table.name);
        let key_values = key_values_local(table, p.table, &p.change);
        let Some(current) = read_row(self.user, table, &key_values)? else { return Ok(false) };
        for (i, _) in columns {
            let name = &table.columns[*i].name;
            if !unique.iter().any(|u| u.columns.contains(name)) {
                continue;
            }
            let placeholder = match &current[*i] {
                Value::Null => continue,
                Value::Integer(_) => Value::Integer(i64::MIN + rand::random::<u32>() as i64),
                Value::Real(_) => Value::Real(-rand::random::<f64>() * 1e300),
                Value::Text(_) => Value::Text(format!("syncd: set aside {:032x}", rand::random::<u128>())),
                Value::Blob(_) => Value::Blob(rand::random::<[u8; 16]>().to_vec()),
            };
            let written = [Value::Null, placeholder].into_iter().find_map(|v| {
                match self.update_row(table, &key_values, &[(*i, v)]) {
                    Ok(()) => Some(Ok(())),
                    Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => None,
                    Err(e) => Some(Err(e)),
                }
            });
            match written {
                Some(result) => result?,
                None => return Ok(false),
            }
            self.set_aside.borrow_mut().entry((p.tbl, p.key.clone())).or_default().push((*i, current[*i].clone()));
        }
        Ok(true)
    }

    /// A row as its last capture saw it: with the values set aside put back.
    pub(super) fn as_captured(&self, p: &Planned<'_>, mut row: Vec<Value>) -> Vec<Value> {
        let set_aside = self.set_aside.borrow();
        if set_aside.is_empty() {
            return row;
        }
        if let Some(values) = set_aside.get(&(p.tbl, p.key.clone())) {
            for (i, v) in values {
                row[*i] = v.clone();
            }
        }
        row
    }

    /// Where the row born `born` was last known to live here: where it
    /// moved to, else the key it was made with.
    fn last_place(&self, tbl: i64, born: Born) -> Result<Vec<u8>, ApplyError> {
        Ok(self.state.moved_to(tbl, born)?.unwrap_or_else(|| birth_place(born)))
    }

    /// Where the row that `change` (a whole row with its birth) brings to
    /// `key` lives here now, if elsewhere: its key there and its state.
    pub(super) fn same_row_elsewhere(
        &self,
        table: &Table,
        tbl: i64,
        change: &RowChange,
        key: &[u8],
        peers: &Peers,
    ) -> Result<Option<(Vec<u8>, RowState)>, ApplyError> {
        let (Op::Row(_), Some(born), true) = (&change.op, change.born, table.integer_primary_key) else {
            return Ok(None);
        };
        let old = self.last_place(tbl, born)?;
        if old == key {
            return Ok(None);
        }
        let Some(row) = self.state.row(tbl, &old)?.filter(|r| r.deleted.is_none()) else { return Ok(None) };
        if merge::birth(table, &row).and_then(|b| b.to_wire(peers)) != Some(born) {
            return Ok(None);
        }
        Ok(Some((old, row)))
    }

    /// The row that `change` moves onto a row made here, merged with its
    /// copy at `from` (state `copy`): every value of the copy, with the
    /// author's where they win, inserted once the row made here has moved
    /// away. `None` where the copy is not as last captured (an edit here
    /// not captured yet): the move is then carried out as it came.
    #[allow(clippy::too_many_arguments)] // the change, where its copy is, and its origin
    pub(super) fn merged_with_copy(
        &self,
        table: &Table,
        batch_table: &BatchTable<'_, '_>,
        change: &RowChange,
        from: &[u8],
        copy: &RowState,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<Option<Decision>, ApplyError> {
        let Some((_, columns, policy)) = &batch_table.here else { return Ok(None) };
        let Ok(at) = value::decode_key(from) else { return Ok(None) };
        let Some(values) = read_row(self.user, table, &at)? else { return Ok(None) };
        if row_hash(table, &values) != copy.hash {
            return Ok(None);
        }
        let mut value_of_copy = |i: usize| values[i].clone();
        let merged = merge::decide(
            table,
            batch_table.changes,
            columns,
            change,
            Some(copy),
            remote,
            policy,
            peers,
            &mut value_of_copy,
            None,
        );
        let (winning, state) = match merged.action {
            Action::Write { insert: false, columns } => (columns, merged.new_state),
            Action::Skip => (Vec::new(), Some(copy.clone())),
            _ => return Ok(None),
        };
        let mut row = values.clone();
        for (i, v) in winning {
            row[i] = v;
        }
        row[table.key[0]] = key_values_local(table, batch_table.changes, change)[0].clone();
        Ok(Some(Decision {
            action: Action::MoveLocalAndInsert { columns: row.into_iter().enumerate().collect() },
            new_state: state,
            conflicts: merged.conflicts,
        }))
    }

    /// Removes the copy of a row that moved from where it was here, quietly:
    /// its author published the move, not a delete. A copy edited here since
    /// the last capture stays; the edit follows the row to its new key.
    pub(super) fn vacate_old_place(
        &self,
        table: &Table,
        p: &Planned<'_>,
        peers: &Peers,
        outcome: &mut Outcome,
    ) -> Result<(), ApplyError> {
        let Some((old, row)) = self.same_row_elsewhere(table, p.tbl, &p.change, &p.key, peers)? else {
            return Ok(());
        };
        let Ok(key_values) = value::decode_key(&old) else { return Ok(()) };
        if read_row(self.user, table, &key_values)?.map(|v| row_hash(table, &v)) != Some(row.hash) {
            return Ok(());
        }
        delete_row(self.user, table, &key_values)?;
        outcome.vacated_elsewhere.push(old);
        Ok(())
    }

    /// Moves the copy of a row here from where it was to the key its author
    /// moved it to, keeping the edits made here that the author had not
    /// seen and lost to none of its values (the merge decided which).
    pub(super) fn move_here(
        &self,
        table: &Table,
        p: &Planned<'_>,
        from: &[u8],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        mut outcome: Outcome,
    ) -> Result<Outcome, ApplyError> {
        // Nothing of the author's may win (its values are all older than
        // the edits here): the row still moves.
        let (columns, state) = match &p.decision.action {
            Action::Write { insert: false, columns } => (columns.as_slice(), p.decision.new_state.clone()),
            _ => (&[][..], p.local.clone()),
        };
        let (Some(mut state), Ok(old_key), Some(born)) = (state, value::decode_key(from), p.change.born) else {
            return Ok(outcome);
        };
        let values = match read_row(self.user, table, &old_key)? {
            Some(values) if Some(row_hash(table, &values)) == p.local.as_ref().map(|l| l.hash) => values,
            _ => {
                outcome.record = park_described(p, ParkReason::LocalEditPending);
                return Ok(outcome);
            }
        };
        if let Some(detail) = self.missing_parent(table, columns)? {
            outcome.record = park_record(p, ParkReason::ParentMissing, detail);
            return Ok(outcome);
        }
        // Clashes are looked for as the row is before the key changes, so
        // that it does not clash with itself.
        let mut unmoved: Vec<&Value> = values.iter().collect();
        for (i, v) in columns {
            unmoved[*i] = v;
        }
        let new_key = key_values_local(table, p.table, &p.change);
        let key_column = table.key[0];
        let mut writes: Vec<(usize, Value)> = columns.to_vec();
        writes.push((key_column, new_key[0].clone()));
        let written = self.with_unique_clashes(table, p, remote, peers, &unmoved, None, &mut outcome, || {
            self.update_row(table, &old_key, &writes)
        })?;
        if !written {
            return Ok(outcome);
        }
        let mut after = unmoved;
        after[key_column] = &new_key[0];
        complete_state(table, &after, &mut state);
        outcome.record = Record::Put(state);
        outcome.moves.push((born, p.key.clone(), None));
        outcome.vacated_elsewhere.push(from.to_vec());
        for note in &p.decision.conflicts {
            outcome.conflicts.push(conflict_from(note, table, p, Some(&values), remote, peers));
        }
        Ok(outcome)
    }

    /// The other row holding a value of a UNIQUE index that `after` needs:
    /// the index's columns and that row.
    fn unique_clash(&self, table: &Table, after: &[&Value]) -> rusqlite::Result<Option<(Vec<String>, Vec<Value>)>> {
        for index in self.constraints.unique(&table.name) {
            let values: Option<Vec<&Value>> =
                index.columns.iter().map(|c| table.column_index(c).map(|i| after[i])).collect();
            let Some(values) = values else { continue };
            if values.iter().any(|v| matches!(v, Value::Null)) {
                continue;
            }
            let key: Vec<&Value> = table.key.iter().map(|&k| after[k]).collect();
            let sql = format!(
                "SELECT {} FROM main.{} WHERE {} AND NOT ({}) LIMIT 1",
                table.select_list(),
                quote_ident(&table.name),
                constraints::equal_predicate(&index.columns),
                table.key_predicate(index.columns.len() + 1)
            );
            let n = table.columns.len();
            let row = self
                .user
                .prepare_cached(&sql)?
                .query_row(rusqlite::params_from_iter(values.into_iter().chain(key)), |r| {
                    (0..n).map(|i| Ok(Value::from_ref(r.get_ref(i)?))).collect::<rusqlite::Result<Vec<Value>>>()
                })
                .optional()?;
            if let Some(row) = row {
                return Ok(Some((index.columns.clone(), row)));
            }
        }
        Ok(None)
    }

    /// True when a row of any table refers to this row through a declared
    /// foreign key on its key.
    pub(super) fn is_referred_to(&self, table: &Table, key: &[Value]) -> rusqlite::Result<bool> {
        let key_names = table.key_names();
        for fk in self.constraints.referring_to(&table.name) {
            if !fk.declared || fk.parent_columns != key_names {
                continue;
            }
            let sql = format!(
                "SELECT EXISTS(SELECT 1 FROM main.{} WHERE {})",
                quote_ident(&fk.child),
                constraints::equal_predicate(&fk.child_columns)
            );
            if self.user.prepare_cached(&sql)?.query_row(rusqlite::params_from_iter(key.iter()), |r| r.get(0))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Why a write of these columns would leave a foreign key dangling.
    pub(super) fn missing_parent(&self, table: &Table, columns: &[(usize, Value)]) -> rusqlite::Result<Option<String>> {
        if self.constraints.declared_by(&table.name).next().is_none() {
            return Ok(None);
        }
        let value_of = |name: &str| {
            let i = table.column_index(name)?;
            columns.iter().find(|(c, _)| *c == i).map(|(_, v)| v.clone())
        };
        constraints::missing_parent(self.user, self.constraints, &table.name, &value_of)
    }

    /// Moves the local row at integer key `from` to a key no peer's batch
    /// in hand uses and the state does not know, with the rows that refer
    /// to it. Returns the new key, or `None` when no integer key is left
    /// above those (one of them is the greatest SQLite allows).
    pub(super) fn move_to_fresh_key(
        &self,
        table: &Table,
        tbl: i64,
        batch: &TableChanges,
        from: &Value,
    ) -> Result<Option<Value>, ApplyError> {
        let key_column = &table.columns[table.key[0]].name;
        let max_here: i64 = self.user.query_row(
            &format!("SELECT coalesce(max({}), 0) FROM main.{}", quote_ident(key_column), quote_ident(&table.name)),
            [],
            |r| r.get(0),
        )?;
        let Some(to) = max_here.max(self.fresh_key_floor(tbl, batch)?).checked_add(1).map(Value::Integer) else {
            return Ok(None);
        };
        constraints::repoint_children(self.user, self.constraints, &table.name, key_column, from, &to)?;
        self.user.execute(
            &format!(
                "UPDATE main.{} SET {} = ?1 WHERE {}",
                quote_ident(&table.name),
                quote_ident(key_column),
                table.key_predicate(2)
            ),
            rusqlite::params![to, from],
        )?;
        Ok(Some(to))
    }

    /// The greatest key a row moved out of another's way must go above:
    /// every key of the batch in hand, and every key the state knows.
    fn fresh_key_floor(&self, tbl: i64, batch: &TableChanges) -> Result<i64, ApplyError> {
        // A key the database has no row at may still be a delete's in the
        // state (one that came before the row it deletes): the moved row's
        // state there would put that delete out of mind, and the row it
        // deletes would come back when it arrives.
        let known = self.state.greatest_key(tbl)?.and_then(|k| value::decode_key(&k).ok());
        let max_known = match known.as_deref() {
            Some([Value::Integer(i), ..]) => *i,
            _ => 0,
        };
        let max_batch = batch
            .changes
            .iter()
            .filter_map(|c| match c.key.first() {
                Some(Value::Integer(i)) => Some(*i),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok(max_known.max(max_batch))
    }

    /// Where [`Self::move_to_fresh_key`] put the local row that `p` found at
    /// integer key `from`, when a crash came before the state recorded the
    /// move: the row above the fresh-key floor that, put back at `from`, is
    /// the row the state knew there.
    pub(super) fn moved_out_of_the_way(
        &self,
        table: &Table,
        p: &Planned<'_>,
        from: &Value,
    ) -> Result<Option<Vec<u8>>, ApplyError> {
        let Some(local) = &p.local else { return Ok(None) };
        let key = table.key[0];
        let key_column = quote_ident(&table.columns[key].name);
        let sql = format!(
            "SELECT {} FROM main.{} WHERE {key_column} > ?1 ORDER BY {key_column}",
            table.select_list(),
            quote_ident(&table.name),
        );
        let floor = self.fresh_key_floor(p.tbl, p.table)?;
        let mut stmt = self.user.prepare(&sql)?;
        let mut rows = stmt.query([floor])?;
        while let Some(r) = rows.next()? {
            let mut values: Vec<Value> =
                (0..table.columns.len()).map(|i| r.get_ref(i).map(Value::from_ref)).collect::<Result<_, _>>()?;
            let at = std::mem::replace(&mut values[key], from.clone());
            if row_hash(table, &values) == local.hash {
                return Ok(Some(value::encode_key([at.as_ref()])));
            }
        }
        Ok(None)
    }

    /// True for an insert whose row has arrived at another key since (it
    /// waited here for the key while its author moved it; see [`merge`]).
    pub(super) fn moved_elsewhere(
        &self,
        table: &Table,
        tbl: i64,
        change: &RowChange,
        key: &[u8],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<bool, ApplyError> {
        let (Op::Insert(_), true, [made_at]) = (&change.op, table.integer_primary_key, change.key.as_slice()) else {
            return Ok(false);
        };
        let Some(born) = Born::of(remote.body.clock, peers.peer_id(remote.author), table.birth_key(made_at.as_ref()))
        else {
            return Ok(false);
        };
        Ok(self.state.moved_to(tbl, born)?.is_some_and(|now| now != key))
    }

    /// The delete kept by birth ([`crate::state::State::keep_delete`]) of
    /// the row that `change` brings whole (inserted, moved or published
    /// again) or edits, when the state at its key is not that row's, or
    /// for a row moved here, its tombstone where it was: its birth and the
    /// delete's version.
    pub(super) fn kept_delete_for(
        &self,
        table: &Table,
        tbl: i64,
        change: &RowChange,
        local: Option<&RowState>,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<Option<(Born, Version)>, ApplyError> {
        if !table.integer_primary_key {
            return Ok(None);
        }
        let born = match (&change.op, change.key.as_slice()) {
            (Op::Row(_) | Op::Columns(_), _) => change.born,
            // A row's own insert finds a delete kept where a tombstone of
            // it was here (the delete came first), or where the delete came
            // first from a peer that had the row at another key.
            (Op::Insert(_), [made_at]) => {
                Born::of(remote.body.clock, peers.peer_id(remote.author), table.birth_key(made_at.as_ref()))
            }
            _ => None,
        };
        let Some(born) = born else { return Ok(None) };
        if local.and_then(|l| merge::birth(table, l)).and_then(|b| b.to_wire(peers)) == Some(born) {
            return Ok(None);
        }
        if let Some((clock, peer)) = self.state.kept_delete(tbl, born)? {
            let Some(peer) = peers.index_of(peer) else { return Ok(None) };
            return Ok(Some((born, Version { clock, peer })));
        }
        // A row moved here whose tombstone is where it was: deleted here
        // (or by a peer whose delete came first) before its move arrived.
        if let Op::Row(_) = change.op {
            let was = self.last_place(tbl, born)?;
            if let Some(row) = self.state.row(tbl, &was)?
                && let Some(deleted) = row.deleted
                && merge::birth(table, &row).and_then(|b| b.to_wire(peers)) == Some(born)
            {
                return Ok(Some((born, deleted)));
            }
        }
        Ok(None)
    }

    /// A change about a row that moved off this key (two rows were made
    /// with it; see [`merge`]) goes to where that row lives now.
    #[allow(clippy::type_complexity)]
    pub(super) fn follow_move<'b>(
        &self,
        table: &Table,
        tbl: i64,
        change: &'b RowChange,
        key: Vec<u8>,
        local: Option<RowState>,
        peers: &Peers,
    ) -> Result<(Cow<'b, RowChange>, Vec<u8>, Option<RowState>), ApplyError> {
        let unchanged = |key, local| Ok((Cow::Borrowed(change), key, local));
        let Some(born) = change.born else { return unchanged(key, local) };
        let moved = match &change.op {
            Op::Insert(_) => return unchanged(key, local),
            // A whole row is itself where its row lives now (moved there),
            // unless the row has moved on here since: its maker only ever
            // moves it to a greater key, so one at a lesser key is from
            // before (an earlier move, or a peer that had not seen the
            // later one publishing it again).
            Op::Row(_) => match self.state.moved_to(tbl, born)? {
                Some(moved) if table.integer_primary_key && key_number(&moved) > key_number(&key) => moved,
                _ => return unchanged(key, local),
            },
            // An edit or delete follows its row unless the row is here:
            // another row, or none (a key a move left free), is not it.
            _ => {
                let is_its_row = local.as_ref().is_some_and(|row| {
                    merge::birth(table, row).is_some_and(|b| b.is_known())
                        && !merge::born_elsewhere(table, row, Some(born), peers)
                });
                if is_its_row {
                    return unchanged(key, local);
                }
                let Some(moved) = self.state.moved_to(tbl, born)?.filter(|m| *m != key) else {
                    return unchanged(key, local);
                };
                moved
            }
        };
        let Ok(key_values) = value::decode_key(&moved) else { return unchanged(key, local) };
        let local = self.state.row(tbl, &moved)?;
        Ok((Cow::Owned(RowChange { key: key_values, op: change.op.clone(), born: change.born }), moved, local))
    }
}

/// The newest version among a row's columns of a UNIQUE index: when its
/// value there came to be.
fn unique_version(table: &Table, row: &RowState, columns: &[String], peers: &Peers) -> Version {
    let newest = columns
        .iter()
        .filter_map(|c| row.col(value::hash_name(c)))
        .map(|c| c.version)
        .max_by(|a, b| merge::compare_versions(*a, *b, peers));
    let birth = table.key_name_hashes().first().and_then(|h| row.col(*h)).map(|c| c.version);
    newest.or(birth).unwrap_or_default()
}

/// A UNIQUE clash for the conflict log: `(image, version)` of each side.
fn clash_conflict(
    table: &Table,
    key: Vec<Value>,
    loser: (String, Version),
    winner: (String, Version),
    peers: &Peers,
    reason: &str,
) -> Conflict {
    Conflict {
        id: 0,
        at_ms: crate::hlc::wall_ms() as i64,
        table: table.name.clone(),
        key,
        column: None,
        loser: Some(loser.0),
        winner: Some(winner.0),
        loser_clock: loser.1.clock,
        loser_peer: peers.peer_id(loser.1.peer).to_string(),
        winner_clock: winner.1.clock,
        winner_peer: peers.peer_id(winner.1.peer).to_string(),
        reason: reason.to_string(),
    }
}

/// The delete whose tombstone the row that `p` puts at its key replaces,
/// as the state keeps it by birth: (birth, (clock, peer id)).
pub(super) fn replaced_delete(table: &Table, p: &Planned<'_>, peers: &Peers) -> Option<(Born, (u64, u128))> {
    let (gone, deleted) = merge::delete_replaced(table, p.local.as_ref(), p.decision.new_state.as_ref())?;
    Some((gone.to_wire(peers)?, (deleted.clock, Born::peer_number(peers.peer_id(deleted.peer))?)))
}

/// An encoded integer key's number (`None` for any other key).
fn key_number(key: &[u8]) -> Option<i64> {
    match value::decode_key(key).ok()?.as_slice() {
        [Value::Integer(i)] => Some(*i),
        _ => None,
    }
}

/// The key a row was made with, as the state keeps keys: an integer key's
/// birth carries it.
fn birth_place(born: Born) -> Vec<u8> {
    value::encode_key([rusqlite::types::ValueRef::Integer(born.key as i64)])
}

/// A delete that `p` records away from its row's birth place (the row had
/// moved where the delete was made, or here), kept by the row's birth as
/// well: a copy of the row arriving later at another key (its insert, or a
/// move this peer has not had yet) is then judged against it.
pub(super) fn delete_away_from_birth_place(
    table: &Table,
    p: &Planned<'_>,
    remote: &RemoteBatch<'_>,
    peers: &Peers,
) -> Option<(Born, (u64, u128))> {
    let (Op::Delete, Some(born), true) = (&p.change.op, p.change.born, table.integer_primary_key) else {
        return None;
    };
    (birth_place(born) != p.key).then(|| delete_by_birth(born, remote, peers)).flatten()
}

/// The batch author's delete of the row born `born`, as the state keeps it
/// by birth: (birth, (clock, peer id)).
pub(super) fn delete_by_birth(born: Born, remote: &RemoteBatch<'_>, peers: &Peers) -> Option<(Born, (u64, u128))> {
    Some((born, (remote.body.clock, Born::peer_number(peers.peer_id(remote.author))?)))
}

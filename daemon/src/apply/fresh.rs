//! Rows new to this peer: a remote insert at a key above any the state
//! knows, in a table where nothing but its key can refuse a row. Planning
//! would find no local row, no kept delete, no move, and decide to insert
//! it with its author's version, so these skip planning. They go into the
//! database [`GROUP_ROWS`] to a statement, and their states are worked out
//! from the batch alone ([`FreshStates`]). A group that SQLite refuses (a
//! row made here with one of those keys since the last capture, a CHECK, a
//! trigger) is planned and carried out row by row like any other change,
//! which decides each row exactly as before.

use super::{Applier, ApplyError, BatchTable, Delivered, Peers, Step};
use crate::batch::{Op, RowChange, TableChanges};
use crate::borrowing_statement::BorrowingStatement;
use crate::constraints::Constraints;
use crate::merge::{ColumnMap, RemoteBatch};
use crate::schema::{Table, quote_ident};
use crate::value::{self, Value};
use rusqlite::ErrorCode;
use rusqlite::types::ValueRef;

/// Rows per INSERT statement: one statement per row costs SQLite more than
/// the row itself.
const GROUP_ROWS: usize = 64;
/// SQLite's default limit on a statement's parameters.
const MAX_PARAMETERS: usize = 32_766;

/// How the rows of one table of a batch are inserted without planning.
pub(super) struct FreshInserts {
    /// Positions in the batch's columns of the values bound, in the
    /// statements' column order.
    binds: Vec<usize>,
    one: String,
    group: String,
    group_rows: usize,
    /// The column-name hashes a fresh row's state lists, in order: the
    /// same for every row of the table.
    pub(super) names: Vec<u64>,
}

impl FreshInserts {
    /// `None` when a row of this table can be refused for more than its
    /// key, or the batch lacks a local column (its state would need the
    /// local default read back).
    pub(super) fn for_table(
        table: &Table,
        changes: &TableChanges,
        map: &ColumnMap,
        constraints: &Constraints,
    ) -> Option<FreshInserts> {
        let refusable = !constraints.unique(&table.name).is_empty()
            || constraints.declared_by(&table.name).next().is_some()
            || !constraints.insert_fails_on_taken_key(table);
        if refusable || !map.covers(table) {
            return None;
        }
        let (binds, names): (Vec<usize>, Vec<String>) = changes
            .columns
            .iter()
            .enumerate()
            .filter_map(|(at, name)| table.column_index(name).map(|i| (at, quote_ident(&table.columns[i].name))))
            .unzip();
        let row = format!("({})", vec!["?"; binds.len()].join(", "));
        let insert = format!("INSERT INTO main.{}({}) VALUES ", quote_ident(&table.name), names.join(", "));
        let group_rows = GROUP_ROWS.min(MAX_PARAMETERS / binds.len().max(1)).max(1);
        Some(FreshInserts {
            one: format!("{insert}{row}"),
            group: format!("{insert}{}", vec![row.as_str(); group_rows].join(", ")),
            group_rows,
            binds,
            names: map.names_here(),
        })
    }

    pub(super) fn group_rows(&self) -> usize {
        self.group_rows
    }
}

impl BatchTable<'_, '_> {
    /// True when `change` is a fresh row (see the module); `key` is
    /// scratch space for its key here.
    pub(super) fn is_fresh(&self, change: &RowChange, key: &mut Vec<u8>) -> bool {
        let (Some(_), Op::Insert(values)) = (&self.fresh, &change.op) else {
            return false;
        };
        // A row short of values is left to planning, which parks it.
        if values.len() != self.changes.columns.len() || change.key.iter().any(|v| matches!(v, Value::Null)) {
            return false;
        }
        self.local_key_into(change, key) && !self.may_know(key)
    }
}

impl Applier<'_> {
    /// Inserts a group of fresh rows of one table, in one statement when it
    /// is a full group; a row SQLite refuses goes the way of any change.
    pub(super) fn insert_fresh<'s, 'b>(
        &self,
        group: &'s [Step<'b>],
        tables: &[BatchTable<'b, '_>],
        remote: &RemoteBatch<'_>,
        peers: &Peers,
        deliver: &mut impl FnMut(Delivered<'s, 'b>) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let Some(Step::Fresh { table, .. }) = group.first() else { return Ok(()) };
        let batch_table = &tables[*table];
        let fresh = batch_table.fresh.as_ref().expect("a fresh row's table inserts fresh rows");
        if group.len() == fresh.group_rows {
            if self.insert_values(&fresh.group, fresh, group)? {
                return deliver(Delivered::Fresh(group));
            }
            // The row refused is not known: each goes the usual way.
            for step in group {
                deliver(self.planned_and_carried_out(batch_table, step, remote, peers)?)?;
            }
            return Ok(());
        }
        for (n, step) in group.iter().enumerate() {
            let one = &group[n..=n];
            if self.insert_values(&fresh.one, fresh, one)? {
                deliver(Delivered::Fresh(one))?;
            } else {
                deliver(self.planned_and_carried_out(batch_table, step, remote, peers)?)?;
            }
        }
        Ok(())
    }

    /// A fresh row SQLite refused, decided and carried out as any change:
    /// it finds what refused it (a row made here, a CHECK) and waits.
    fn planned_and_carried_out<'s, 'b>(
        &self,
        batch_table: &BatchTable<'b, '_>,
        step: &Step<'b>,
        remote: &RemoteBatch<'_>,
        peers: &Peers,
    ) -> Result<Delivered<'s, 'b>, ApplyError> {
        let Step::Fresh { change, .. } = step else { unreachable!("a group holds fresh rows only") };
        let p = self.plan(batch_table, change, remote, peers)?;
        Ok(Delivered::Outcome(self.carry_out(&p, remote, peers)?))
    }

    /// Runs `sql` with the values of `rows`: false when SQLite refuses one
    /// of them, and then none is written.
    fn insert_values(&self, sql: &str, fresh: &FreshInserts, rows: &[Step<'_>]) -> Result<bool, ApplyError> {
        let mut statements = self.fresh_statements.borrow_mut();
        if !statements.contains_key(sql) {
            statements.insert(sql.to_owned(), BorrowingStatement::prepare(self.user, sql)?);
        }
        let stmt = statements.get_mut(sql).expect("just prepared");
        let values = rows.iter().flat_map(|step| {
            let values = match step {
                Step::Fresh { change, .. } => change.op.whole_row().unwrap_or_default(),
                Step::Planned(_) => &[],
            };
            fresh.binds.iter().map(|&at| values.get(at).map_or(ValueRef::Null, Value::as_ref))
        });
        match stmt.execute(values) {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The states of a group of fresh rows once inserted: what planning and
/// carrying them out record ([`crate::merge::inserted_state`], then
/// `complete_state`; a test holds them equal), with each value hashed once
/// instead of twice. Every row has the batch's version and its table's
/// layout ([`FreshInserts::names`]), so only the hashes differ: two
/// allocations for the group, not three per row.
#[derive(Default)]
pub(super) struct FreshStates {
    /// Each row's hash.
    pub(super) hashes: Vec<u64>,
    /// Each row's value hashes, one per name of the layout, row after row.
    value_hashes: Vec<u64>,
}

impl FreshStates {
    /// Adds the state of fresh `change` of `batch_table`.
    pub(super) fn push(&mut self, batch_table: &BatchTable<'_, '_>, change: &RowChange, scratch: &mut Vec<u64>) {
        let (table, map, _) = batch_table.here.as_ref().expect("a fresh row's table is here");
        let Op::Insert(values) = &change.op else { unreachable!("a fresh row is an insert") };
        // Each local column's value hash, for the row's hash.
        scratch.clear();
        scratch.resize(table.columns.len(), 0);
        for (i, _, v) in map.mapped_row(values) {
            let hash = value::hash_value(v.as_ref());
            scratch[i] = hash;
            self.value_hashes.push(if table.key.contains(&i) { table.birth_key(v.as_ref()) } else { hash });
        }
        self.hashes.push(value::hash_row(table.hash_order.iter().map(|&(i, name_hash)| (name_hash, scratch[i]))));
    }

    /// The value hashes of the `n`th row.
    pub(super) fn values_of(&self, n: usize) -> &[u64] {
        let width = self.value_hashes.len() / self.hashes.len().max(1);
        &self.value_hashes[n * width..(n + 1) * width]
    }
}

#[cfg(test)]
mod tests {
    use super::super::complete_state;
    use super::*;
    use crate::merge;
    use crate::schema::{self, Exclusions};
    use crate::state::Version;
    use proptest::prelude::*;

    proptest! {
        #[test]
        /// Recorded through [`crate::state::RowWriter::put_whole`], a fresh
        /// row's state reads back as the state planning makes.
        fn a_fresh_rows_state_is_the_one_planning_and_carrying_it_out_record(
            key in any::<i64>(),
            values in proptest::collection::vec(crate::value::tests::arb_long_value(), 3),
            integer_key in any::<bool>(),
        ) {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            let key_type = if integer_key { "INTEGER" } else { "TEXT" };
            conn.execute_batch(&format!("CREATE TABLE t(b, id {key_type} PRIMARY KEY, a, c)")).unwrap();
            let table = schema::discover(&conn, &Exclusions::default()).unwrap().remove(0);
            // The batch names its columns in another order than the table.
            let changes = TableChanges {
                table: "t".into(),
                columns: vec!["a".into(), "id".into(), "b".into(), "c".into()],
                key_columns: vec!["id".into()],
                has_primary_key: true,
                changes: Vec::new(),
            };
            let key = Value::Integer(key);
            let row = vec![values[0].clone(), key.clone(), values[1].clone(), values[2].clone()];
            let change = RowChange { key: vec![key], op: Op::Insert(row), born: None };
            let map = ColumnMap::new(&table, &changes);
            let version = Version { clock: 7, peer: 3 };

            let mapped = map.mapped(&change.op);
            let mut expected = merge::inserted_state(&table, &mapped, version);
            let mut image = vec![&Value::Null; table.columns.len()];
            for (i, _, v) in &mapped {
                image[*i] = v;
            }
            complete_state(&table, &image, &mut expected);

            let names = map.names_here();
            let batch_table = BatchTable {
                changes: &changes,
                tbl: 1,
                here: Some((&table, map, crate::config::Policy::Lww)),
                greatest_known: None,
                fresh: None,
                key_positions: None,
            };
            // The second of two rows, to check where each row's hashes are.
            let other = RowChange { key: vec![Value::Integer(0)], op: Op::Insert(vec![Value::Null; 4]), born: None };
            let mut states = FreshStates::default();
            states.push(&batch_table, &other, &mut Vec::new());
            states.push(&batch_table, &change, &mut Vec::new());
            let dir = tempfile::tempdir().unwrap();
            let state = crate::state::State::open(&dir.path().join("state.db")).unwrap();
            state
                .write_rows(|rows| rows.put_whole(1, b"k", states.hashes[1], version, &names, states.values_of(1)))
                .unwrap();
            prop_assert_eq!(state.row(1, b"k").unwrap(), Some(expected));
        }
    }
}

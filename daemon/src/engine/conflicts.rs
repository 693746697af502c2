//! Bringing a conflict's losing version back (`syncctl conflicts restore`):
//! it is written to the local database as an ordinary edit, so the next
//! capture gives it a new version and it wins everywhere.

use super::{Engine, EngineError};
use crate::schema::quote_ident;
use crate::value::Value;

impl Engine {
    /// Restores the losing side of conflict `id`; `None` when this database
    /// has no such conflict.
    pub fn restore_conflict(&mut self, id: i64) -> Result<Option<String>, EngineError> {
        let Some(conflict) = self.state.conflicts()?.into_iter().find(|c| c.id == id) else { return Ok(None) };
        let tables = self.discover()?;
        let Some(table) = tables.get(&conflict.table) else {
            return Err(EngineError::Snapshot(format!("table {} no longer exists here", conflict.table)));
        };
        let key_names = table.key_names();
        let predicate = table.key_predicate(1);
        let name = quote_ident(&table.name);
        match &conflict.loser {
            None => {
                self.user.execute(
                    &format!("DELETE FROM main.{name} WHERE {predicate}"),
                    rusqlite::params_from_iter(conflict.key.iter()),
                )?;
            }
            Some(json) => {
                let image: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                    .map_err(|e| EngineError::Snapshot(format!("conflict {id} holds an unreadable row: {e}")))?;
                let values: Vec<(String, Value)> = image
                    .iter()
                    .filter(|(c, _)| table.column_index(c).is_some())
                    .map(|(c, v)| (c.clone(), Value::from_json(v)))
                    .collect();
                let exists: bool = self.user.query_row(
                    &format!("SELECT EXISTS(SELECT 1 FROM main.{name} WHERE {predicate})"),
                    rusqlite::params_from_iter(conflict.key.iter()),
                    |r| r.get(0),
                )?;
                // A whole row that lost its integer key to another row (made
                // on two machines, or a UNIQUE clash) comes back as a new row
                // under a fresh key: the winner keeps its own.
                let new_row = exists && conflict.column.is_none() && table.integer_primary_key;
                if exists && !new_row {
                    let sets: Vec<String> = values
                        .iter()
                        .enumerate()
                        .map(|(i, (c, _))| format!("{} = ?{}", quote_ident(c), conflict.key.len() + i + 1))
                        .collect();
                    self.user.execute(
                        &format!("UPDATE main.{name} SET {} WHERE {predicate}", sets.join(", ")),
                        rusqlite::params_from_iter(conflict.key.iter().chain(values.iter().map(|(_, v)| v))),
                    )?;
                } else {
                    let mut cols: Vec<(String, Value)> = if new_row {
                        Vec::new()
                    } else {
                        key_names.iter().cloned().zip(conflict.key.iter().cloned()).collect()
                    };
                    cols.extend(values.into_iter().filter(|(c, _)| !key_names.contains(c)));
                    let names: Vec<String> = cols.iter().map(|(c, _)| quote_ident(c)).collect();
                    let marks: Vec<String> = (1..=cols.len()).map(|n| format!("?{n}")).collect();
                    self.user.execute(
                        &format!("INSERT INTO main.{name}({}) VALUES({})", names.join(", "), marks.join(", ")),
                        rusqlite::params_from_iter(cols.iter().map(|(_, v)| v)),
                    )?;
                }
            }
        }
        // Our own write does not move data_version for our connection.
        self.data_version = None;
        let report = self.run_cycle()?;
        Ok(Some(format!(
            "conflict {id}: the losing version of {} ({}) is back as a new local change ({} published)",
            conflict.table,
            crate::value::key_text(&conflict.key),
            report.published
        )))
    }
}

//! The application's own constraints, as declared in its schema: the UNIQUE
//! indexes besides the key, and the foreign keys between tables, plus the
//! references the configuration names that the schema does not declare.
//!
//! Apply respects them without changing them: a row that moves to a fresh
//! key takes the rows referring to it along, a clash on a UNIQUE index is a
//! conflict between two rows, and a row whose parent is not here yet waits.
//! This module only reads pragmas; it never writes the user's database.

use crate::config::Reference;
use crate::schema::quote_ident;
use crate::value::Value;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};

/// A UNIQUE index (or constraint) other than the primary key, on plain
/// columns. Expression and partial indexes are left to SQLite: a clash on
/// one is refused and parked like any other refused write.
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueIndex {
    pub columns: Vec<String>,
}

/// `child(child_columns) REFERENCES parent(parent_columns)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub child: String,
    pub child_columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// Declared in the schema, so SQLite enforces it. A configured
    /// reference is only followed when a row moves: the application never
    /// promised it holds, so a row is not held back or kept for it.
    pub declared: bool,
}

/// The constraints of every table of the database, read once per apply.
#[derive(Debug, Default)]
pub struct Constraints {
    unique: BTreeMap<String, Vec<UniqueIndex>>,
    foreign_keys: Vec<ForeignKey>,
    /// Tables whose definition has an `ON CONFLICT` clause: an INSERT
    /// there may replace or skip a row holding its key instead of failing.
    conflict_clauses: BTreeSet<String>,
    /// Per table (lowercase), the tables (lowercase) its triggers write.
    trigger_targets: BTreeMap<String, BTreeSet<String>>,
}

impl Constraints {
    pub fn read(conn: &Connection, configured: &[Reference]) -> rusqlite::Result<Constraints> {
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Constraints { trigger_targets: crate::triggers::read(conn)?, ..Constraints::default() };
        for table in &tables {
            out.unique.insert(table.clone(), unique_indexes(conn, table)?);
            out.foreign_keys.extend(foreign_keys(conn, table)?);
            if declares_conflict_clause(conn, table)? {
                out.conflict_clauses.insert(table.clone());
            }
        }
        for r in configured {
            let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
                conn.query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n > 0)
            };
            if !has(&r.child, &r.child_column)? || !has(&r.parent, &r.parent_column)? {
                tracing::warn!(child = %format!("{}.{}", r.child, r.child_column),
                    parent = %format!("{}.{}", r.parent, r.parent_column),
                    "a configured reference names a column this database does not have; check `references`");
                continue;
            }
            out.foreign_keys.push(ForeignKey {
                child: r.child.clone(),
                child_columns: vec![r.child_column.clone()],
                parent: r.parent.clone(),
                parent_columns: vec![r.parent_column.clone()],
                declared: false,
            });
        }
        Ok(out)
    }

    /// True when a trigger on `table` writes a table `synced` names.
    pub fn triggers_write(&self, table: &str, synced: impl Fn(&str) -> bool) -> bool {
        self.trigger_targets.get(&table.to_lowercase()).is_some_and(|targets| targets.iter().any(|t| synced(t)))
    }

    pub fn unique(&self, table: &str) -> &[UniqueIndex] {
        self.unique.get(table).map(Vec::as_slice).unwrap_or_default()
    }

    /// True when an INSERT into `table` fails on a row already holding its
    /// key, whatever the key's values: the table has a primary key and no
    /// conflict clause that would resolve the clash instead. (NULL keys
    /// are the caller's to rule out: SQLite lets a non-integer primary key
    /// hold several.)
    pub fn insert_fails_on_taken_key(&self, table: &crate::schema::Table) -> bool {
        table.has_primary_key && !self.conflict_clauses.contains(&table.name)
    }

    /// References, declared or configured, whose parent is `table`.
    pub fn referring_to<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a ForeignKey> + 'a {
        self.foreign_keys.iter().filter(move |fk| fk.parent == table)
    }

    /// Declared foreign keys whose child is `table`.
    pub fn declared_by<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a ForeignKey> + 'a {
        self.foreign_keys.iter().filter(move |fk| fk.child == table && fk.declared)
    }

    /// How deep `table` sits below the tables it refers to: parents first
    /// when sorted by it, so a batch inserts a parent before its children.
    pub fn depth(&self, table: &str) -> usize {
        let mut depth = 0;
        let mut level = vec![table.to_string()];
        // Bounded: a cycle of references must not loop forever.
        while depth < self.foreign_keys.len() {
            let next: Vec<String> = self
                .foreign_keys
                .iter()
                .filter(|fk| level.contains(&fk.child) && fk.parent != fk.child)
                .map(|fk| fk.parent.clone())
                .collect();
            if next.is_empty() {
                break;
            }
            level = next;
            depth += 1;
        }
        depth
    }
}

/// Whether the table's definition has an `ON CONFLICT` clause anywhere,
/// read from its text: a column named "conflict" only makes this answer
/// yes needlessly.
fn declares_conflict_clause(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let sql: Option<String> = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .query_row([table], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(sql.is_some_and(|s| s.to_ascii_uppercase().contains("CONFLICT")))
}

fn unique_indexes(conn: &Connection, table: &str) -> rusqlite::Result<Vec<UniqueIndex>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND origin != 'pk' AND partial = 0")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for index in names {
        let columns: Vec<Option<String>> = conn
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
            .query_map([&index], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if let Some(columns) = columns.into_iter().collect::<Option<Vec<String>>>() {
            out.push(UniqueIndex { columns });
        }
    }
    Ok(out)
}

fn foreign_keys(conn: &Connection, table: &str) -> rusqlite::Result<Vec<ForeignKey>> {
    let mut rows: Vec<(i64, String, String, Option<String>)> = conn
        .prepare("SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut out: Vec<ForeignKey> = Vec::new();
    let mut last_id = None;
    for (id, parent, from, to) in rows.drain(..) {
        if last_id != Some(id) {
            out.push(ForeignKey {
                child: table.to_string(),
                child_columns: Vec::new(),
                parent,
                parent_columns: Vec::new(),
                declared: true,
            });
            last_id = Some(id);
        }
        let fk = out.last_mut().expect("just pushed");
        fk.child_columns.push(from);
        fk.parent_columns.extend(to);
    }
    for fk in &mut out {
        if fk.parent_columns.is_empty() {
            // `REFERENCES parent` alone means the parent's primary key.
            fk.parent_columns = primary_key(conn, &fk.parent)?;
        }
    }
    Ok(out)
}

fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// `"a" = ?1 AND "b" = ?2`: `=`, not `IS`, because a NULL refers to nothing
/// and never clashes.
pub fn equal_predicate(columns: &[String]) -> String {
    let parts: Vec<String> =
        columns.iter().enumerate().map(|(n, c)| format!("{} = ?{}", quote_ident(c), n + 1)).collect();
    parts.join(" AND ")
}

/// Points the rows referring to `parent` row `from` at `to` instead: the
/// last step before the parent row changes its key.
pub fn repoint_children(
    conn: &Connection,
    constraints: &Constraints,
    parent: &str,
    key_column: &str,
    from: &Value,
    to: &Value,
) -> rusqlite::Result<usize> {
    let mut moved = 0;
    for fk in constraints.referring_to(parent) {
        if fk.parent_columns.len() != 1 || fk.parent_columns[0] != key_column {
            continue;
        }
        let column = quote_ident(&fk.child_columns[0]);
        moved += conn.execute(
            &format!("UPDATE main.{} SET {column} = ?1 WHERE {column} = ?2", quote_ident(&fk.child)),
            rusqlite::params![to, from],
        )?;
    }
    Ok(moved)
}

/// The first foreign key of `child` that `values` (column name → value)
/// would leave dangling: its parent and the values referred to.
pub fn missing_parent(
    conn: &Connection,
    constraints: &Constraints,
    child: &str,
    values: &dyn Fn(&str) -> Option<Value>,
) -> rusqlite::Result<Option<String>> {
    for fk in constraints.declared_by(child) {
        let refs: Option<Vec<Value>> = fk.child_columns.iter().map(|c| values(c)).collect();
        let Some(refs) = refs else { continue };
        if refs.iter().any(|v| matches!(v, Value::Null)) {
            continue; // a NULL reference refers to nothing
        }
        let found = conn
            .prepare_cached(&format!(
                "SELECT 1 FROM main.{} WHERE {} LIMIT 1",
                quote_ident(&fk.parent),
                equal_predicate(&fk.parent_columns)
            ))?
            .query_row(rusqlite::params_from_iter(refs.iter()), |_| Ok(()))
            .optional()?;
        if found.is_none() {
            let shown: Vec<String> = refs.iter().map(|v| v.to_json().to_string()).collect();
            return Ok(Some(format!("refers to {}({}) which is not here yet", fk.parent, shown.join(", "))));
        }
    }
    Ok(None)
}

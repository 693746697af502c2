//! Discovering the tables of the user's database at every cycle.
//!
//! syncd never keeps a list of tables by hand: whatever the application
//! created is synced, minus the excluded tables and columns. This module only
//! reads `sqlite_schema` and pragmas; it never writes the user's database.

use rusqlite::Connection;
use std::collections::BTreeSet;

/// Quotes an identifier that came from the user's database: double quotes,
/// inner quotes doubled. Every table and column name in SQL goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One column that syncd carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// One synced table as it is on this machine now.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    /// Synced columns (excluded and generated columns left out), in the
    /// table's own order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the row key: the primary key in declared
    /// order, or, for a table without one, every column sorted by name (the
    /// row is its own identity).
    pub key: Vec<usize>,
    /// False for a table without a primary key, synced as a set of rows.
    pub has_primary_key: bool,
    /// Columns of `columns` sorted by name, with their name hashes: the order
    /// in which row hashes are computed on every peer.
    pub hash_order: Vec<(usize, u64)>,
    /// Names of integer primary key columns that alias the rowid.
    pub integer_primary_key: bool,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// What a key column's state keeps of the key a row was made with (part
    /// of its birth, see [`crate::merge::Birth`]): an integer key itself, so
    /// that a peer can find the row where it was made; else a hash.
    pub fn birth_key(&self, key: rusqlite::types::ValueRef<'_>) -> u64 {
        match key {
            rusqlite::types::ValueRef::Integer(i) if self.integer_primary_key => i as u64,
            other => crate::value::hash_value(other),
        }
    }

    /// Name hashes of the key columns: their column states carry the
    /// version of the row's insert.
    pub fn key_name_hashes(&self) -> Vec<u64> {
        self.key.iter().map(|&k| crate::value::hash_name(&self.columns[k].name)).collect()
    }

    pub fn key_names(&self) -> Vec<String> {
        self.key.iter().map(|&i| self.columns[i].name.clone()).collect()
    }

    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// `"a" IS ?1 AND "b" IS ?2` over the key columns, parameters from `first`.
    pub fn key_predicate(&self, first: usize) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} IS ?{}", quote_ident(&self.columns[i].name), first + n))
            .collect();
        parts.join(" AND ")
    }

    /// `"a" COLLATE BINARY, "b" COLLATE BINARY`: the scan order that matches
    /// the key encoding of [`crate::value::encode_key`].
    pub fn key_order(&self) -> String {
        let parts: Vec<String> =
            self.key.iter().map(|&i| format!("{} COLLATE BINARY", quote_ident(&self.columns[i].name))).collect();
        parts.join(", ")
    }

    pub fn select_list(&self) -> String {
        let parts: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        parts.join(", ")
    }
}

/// What to leave out of syncing, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    pub tables: BTreeSet<String>,
    /// `(table, column)` pairs.
    pub columns: BTreeSet<(String, String)>,
}

impl Exclusions {
    pub fn new(tables: &[String], columns: &[String]) -> Exclusions {
        Exclusions {
            tables: tables.iter().cloned().collect(),
            columns: columns
                .iter()
                .filter_map(|c| c.split_once('.'))
                .map(|(t, c)| (t.to_string(), c.to_string()))
                .collect(),
        }
    }

    pub fn excludes_column(&self, table: &str, column: &str) -> bool {
        self.columns.contains(&(table.to_string(), column.to_string()))
    }
}

/// The tables to sync, sorted by name.
pub fn discover(conn: &Connection, exclusions: &Exclusions) -> rusqlite::Result<Vec<Table>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        if exclusions.tables.contains(&name) {
            continue;
        }
        if let Some(table) = describe(conn, &name, exclusions)? {
            tables.push(table);
        }
    }
    Ok(tables)
}

fn describe(conn: &Connection, name: &str, exclusions: &Exclusions) -> rusqlite::Result<Option<Table>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk, hidden FROM pragma_table_xinfo(?1)",
    )?;
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, usize)> = Vec::new();
    let mut integer_pk = false;
    let mut rows = stmt.query([name])?;
    while let Some(r) = rows.next()? {
        let col: String = r.get(0)?;
        let decl: String = r.get::<_, Option<String>>(1)?.unwrap_or_default();
        let hidden: i64 = r.get(5)?;
        if hidden != 0 {
            continue; // generated or virtual-table hidden columns are derived, not data
        }
        let pk_pos: i64 = r.get(4)?;
        if exclusions.excludes_column(name, &col) && pk_pos == 0 {
            continue;
        }
        if pk_pos > 0 {
            pk.push((pk_pos, columns.len()));
            integer_pk = decl.eq_ignore_ascii_case("INTEGER");
        }
        columns.push(Column { name: col, not_null: r.get(2)?, has_default: r.get(3)? });
    }
    if columns.is_empty() {
        return Ok(None);
    }
    pk.sort();
    let has_primary_key = !pk.is_empty();
    let mut hash_order: Vec<(usize, u64)> =
        (0..columns.len()).map(|i| (i, crate::value::hash_name(&columns[i].name))).collect();
    hash_order.sort_by(|a, b| columns[a.0].name.cmp(&columns[b.0].name));
    let key = if has_primary_key {
        pk.iter().map(|&(_, i)| i).collect()
    } else {
        hash_order.iter().map(|&(i, _)| i).collect()
    };
    Ok(Some(Table {
        name: name.to_string(),
        integer_primary_key: integer_pk && pk.len() == 1,
        columns,
        key,
        has_primary_key,
        hash_order,
    }))
}

/// A number that changes whenever the schema of the user's database changes;
/// parked changes are retried when it does.
pub fn fingerprint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
}

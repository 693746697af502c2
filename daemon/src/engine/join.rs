//! Joining from a snapshot (DESIGN §5): a new peer, or one whose cursor
//! fell behind the batches cleanup removed, starts from a snapshot and then
//! applies the batches after the cursors the snapshot records.
//!
//! Snapshot rows are recorded with the oldest possible version, so every
//! batch made after the snapshot supersedes them. A peer's own changes are
//! captured (and so kept) before anything is imported. Where a row of a new
//! peer clashes with the snapshot, the hub wins and the local row goes to
//! the conflict log, unless the user asked to prefer local rows.

use super::{Engine, EngineError};
use crate::schema::{Table, quote_ident};
use crate::snapshot::{self, SnapshotEntry};
use crate::state::{ColState, Conflict, Cursor, RowState, Version};
use crate::value::{self, Value};
use rusqlite::Connection;
use std::collections::BTreeMap;
use tracing::info;

/// The version given to rows taken from a snapshot: older than any edit.
const BASELINE: Version = Version { clock: 0, peer: 0 };

/// What a snapshot records about the batches it includes.
struct Covered {
    author: String,
    covers_seq: u64,
    author_clock: u64,
    cursors: BTreeMap<String, Cursor>,
}

impl Engine {
    /// True when this peer has never applied nor captured anything.
    fn is_fresh(&self) -> Result<bool, EngineError> {
        Ok(self.state.cursors()?.is_empty() && !self.state.has_any_rows()?)
    }

    /// Joins from the newest snapshot of another peer when this peer is
    /// new, or from a snapshot of `behind` (a peer whose next batch was
    /// cleaned up) that covers `missing_seq`. Returns true if it joined.
    pub(super) fn join_if_needed(&mut self, behind: Option<(&str, u64)>) -> Result<bool, EngineError> {
        let candidates: Vec<SnapshotEntry> = match behind {
            None if self.is_fresh()? => snapshot::list(self.hub.as_ref(), &self.config.name)?
                .into_iter()
                .filter(|s| s.peer_id != self.identity.peer_id)
                .collect(),
            None => return Ok(false),
            Some((peer, _)) => snapshot::list(self.hub.as_ref(), &self.config.name)?
                .into_iter()
                .filter(|s| s.peer_id == peer)
                .collect(),
        };
        if candidates.is_empty() {
            return Ok(false);
        }
        let work = self.work_dir("join");
        std::fs::create_dir_all(&work).map_err(snapshot::SnapshotError::from)?;
        for entry in candidates {
            let plain = work.join("join.db");
            let header = match snapshot::download(self.hub.as_ref(), &entry, &self.config.name, &work, &plain) {
                Ok(h) => h,
                Err(e) => {
                    self.skip_file(entry.path.clone(), e.to_string());
                    continue;
                }
            };
            let covered = covered_by(&header);
            if let Some((_, missing)) = behind
                && covered.covers_seq < missing
            {
                continue;
            }
            self.import_snapshot(&plain, &covered, behind.is_none())?;
            let _ = std::fs::remove_dir_all(&work);
            info!(snapshot = %entry.path, "joined from a snapshot");
            return Ok(true);
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(false)
    }

    fn import_snapshot(&mut self, plain: &std::path::Path, covered: &Covered, fresh: bool) -> Result<(), EngineError> {
        // A returning peer's local edits get their versions first, so
        // nothing local is lost; a new peer's rows meet the hub's first.
        let tables = self.discover()?;
        if !fresh {
            self.capture(&tables)?;
        }
        let prefer_local = self.prefer_local_on_join;
        let source = Connection::open(plain)?;
        let snapshot_tables: BTreeMap<String, Table> =
            crate::schema::discover(&source, &self.exclusions)?.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut conflicts = Vec::new();
        let mut records: Vec<(i64, Vec<u8>, RowState)> = Vec::new();
        self.user.execute_batch("BEGIN IMMEDIATE; PRAGMA defer_foreign_keys = ON;")?;
        let result = (|| -> Result<(), EngineError> {
            for (name, table) in &tables {
                let Some(theirs) = snapshot_tables.get(name) else { continue };
                // Columns both sides have, by name.
                let shared: Vec<(usize, usize)> = table
                    .columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| theirs.column_index(&c.name).map(|j| (i, j)))
                    .collect();
                if table.key.iter().any(|k| !shared.iter().any(|(i, _)| i == k)) {
                    continue;
                }
                let tbl = self.state.table_id(name)?;
                let cols: Vec<String> = shared.iter().map(|(_, j)| quote_ident(&theirs.columns[*j].name)).collect();
                let mut stmt =
                    source.prepare(&format!("SELECT {} FROM main.{}", cols.join(", "), quote_ident(name)))?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let mut image = vec![Value::Null; table.columns.len()];
                    for (n, (i, _)) in shared.iter().enumerate() {
                        image[*i] = Value::from_ref(r.get_ref(n)?);
                    }
                    let key_values: Vec<Value> = table.key.iter().map(|&k| image[k].clone()).collect();
                    let key = value::encode_key(key_values.iter().map(Value::as_ref));
                    let known = self.state.row(tbl, &key)?;
                    let is_newer_here = known.as_ref().is_some_and(|k| {
                        k.deleted.is_some_and(|d| d.clock > covered.author_clock)
                            || k.cols.iter().any(|c| c.version.clock > covered.author_clock)
                    });
                    if is_newer_here {
                        continue;
                    }
                    let local = crate::apply::read_row(&self.user, table, &key_values)?;
                    let snapshot_hash = crate::apply::row_hash(table, &image);
                    let baseline = baseline_state(table, &image, snapshot_hash);
                    match local {
                        Some(mine) if crate::apply::row_hash(table, &mine) == snapshot_hash => {}
                        Some(mine) if prefer_local => {
                            // Recorded as the snapshot's row: the next capture
                            // publishes the local row as a newer edit.
                            let _ = mine;
                        }
                        Some(mine) => {
                            if fresh {
                                conflicts.push(join_conflict(table, &key_values, &mine, &image));
                            }
                            overwrite(&self.user, table, &key_values, &image, &shared)?;
                        }
                        None => insert(&self.user, table, &image, &shared)?,
                    }
                    records.push((tbl, key, baseline));
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.user.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.user.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        let author = covered.author.clone();
        self.state.transaction(|s| -> Result<(), EngineError> {
            for (tbl, key, row) in &records {
                s.put_row(*tbl, key, row)?;
            }
            for c in &conflicts {
                s.add_conflict(c)?;
            }
            let current = s.cursors()?;
            let set = |peer: &str, c: Cursor| -> rusqlite::Result<()> {
                if current.get(peer).is_none_or(|old| old.seq < c.seq) {
                    s.set_cursor(peer, c)?;
                }
                Ok(())
            };
            set(&author, Cursor { seq: covered.covers_seq, clock: covered.author_clock })?;
            for (peer, c) in &covered.cursors {
                if *peer != self.identity.peer_id {
                    set(peer, *c)?;
                }
            }
            Ok(())
        })?;
        self.hlc.observe(covered.author_clock);
        self.data_version = None;
        Ok(())
    }
}

fn covered_by(header: &crate::container::Header) -> Covered {
    let meta = &header.meta;
    let seqs: BTreeMap<String, u64> =
        meta.get("cursors").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default();
    let clocks: BTreeMap<String, u64> =
        meta.get("clocks").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default();
    Covered {
        author: header.peer_id.clone(),
        covers_seq: meta.get("covers_seq").and_then(|v| v.as_u64()).unwrap_or(0),
        author_clock: meta.get("clock").and_then(|v| v.as_u64()).unwrap_or(0),
        cursors: seqs
            .into_iter()
            .map(|(p, seq)| {
                let clock = clocks.get(&p).copied().unwrap_or(0);
                (p, Cursor { seq, clock })
            })
            .collect(),
    }
}

fn baseline_state(table: &Table, image: &[Value], hash: u64) -> RowState {
    RowState {
        hash,
        deleted: None,
        cols: table
            .hash_order
            .iter()
            .map(|&(i, name_hash)| ColState {
                name_hash,
                value_hash: value::hash_value(image[i].as_ref()),
                version: BASELINE,
            })
            .collect(),
    }
}

fn join_conflict(table: &Table, key: &[Value], mine: &[Value], theirs: &[Value]) -> Conflict {
    let json = |img: &[Value]| {
        let map: serde_json::Map<String, serde_json::Value> =
            table.columns.iter().zip(img).map(|(c, v)| (c.name.clone(), v.to_json())).collect();
        serde_json::Value::Object(map).to_string()
    };
    Conflict {
        id: 0,
        at_ms: crate::hlc::wall_ms() as i64,
        table: table.name.clone(),
        key: key.to_vec(),
        column: None,
        loser: Some(json(mine)),
        winner: Some(json(theirs)),
        loser_clock: 0,
        loser_peer: String::new(),
        winner_clock: 0,
        winner_peer: String::new(),
        reason:
            "joined from a snapshot: the hub's row won over this machine's (pass --prefer local to keep local rows)"
                .into(),
    }
}

fn overwrite(
    user: &Connection,
    table: &Table,
    key: &[Value],
    image: &[Value],
    shared: &[(usize, usize)],
) -> rusqlite::Result<()> {
    let sets: Vec<String> = shared
        .iter()
        .enumerate()
        .map(|(n, (i, _))| format!("{} = ?{}", quote_ident(&table.columns[*i].name), key.len() + n + 1))
        .collect();
    user.execute(
        &format!("UPDATE main.{} SET {} WHERE {}", quote_ident(&table.name), sets.join(", "), table.key_predicate(1)),
        rusqlite::params_from_iter(key.iter().chain(shared.iter().map(|(i, _)| &image[*i]))),
    )?;
    Ok(())
}

fn insert(user: &Connection, table: &Table, image: &[Value], shared: &[(usize, usize)]) -> rusqlite::Result<()> {
    let names: Vec<String> = shared.iter().map(|(i, _)| quote_ident(&table.columns[*i].name)).collect();
    let marks: Vec<String> = (1..=shared.len()).map(|n| format!("?{n}")).collect();
    user.execute(
        &format!("INSERT INTO main.{}({}) VALUES({})", quote_ident(&table.name), names.join(", "), marks.join(", ")),
        rusqlite::params_from_iter(shared.iter().map(|(i, _)| &image[*i])),
    )?;
    Ok(())
}

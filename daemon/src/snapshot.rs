//! Snapshots: compressed, self-checking, consistent copies of this peer's
//! database in the hub (DESIGN §5), and restoring from them.
//!
//! A snapshot is taken with SQLite's online backup API into a file in the
//! state directory while the application keeps writing; excluded tables and
//! columns are removed from that copy with `secure_delete` on, so their
//! bytes are overwritten, not merely unlinked; the copy is compressed into
//! the container and uploaded. `zstd -d x.snap -o x.db` gives a plain SQLite
//! file. The user's database is only ever read here, except by
//! [`restore_into`], which writes it through SQLite's backup API in one
//! transaction, so the application's open connections stay valid.

use crate::container::{self, Expect, FileKind, Header};
use crate::hub::names::{self, NameKind};
use crate::hub::{Hub, HubEntry, HubError};
use crate::schema::{Exclusions, quote_ident};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Container(#[from] container::ContainerError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no snapshot named {0} in the hub: see `syncctl list`")]
    NotFound(String),
}

/// A snapshot as listed in the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    /// Hub path, what `syncctl restore` takes.
    pub path: String,
    pub peer_id: String,
    pub peer_name: String,
    pub created_ms: i64,
    pub size: u64,
}

pub fn snapshots_dir(database: &str, peer_id: &str) -> String {
    format!("{database}/{peer_id}/snapshots")
}

/// The zstd level of snapshots: level 1 runs about twice as fast as 3 on
/// SQLite files, for files under a tenth larger (on the benchmark's
/// database, a few percent smaller even).
const SNAPSHOT_LEVEL: i32 = 1;

/// Copies the live database to `dest` with the online backup API, in steps,
/// so the application's writers are never blocked for long. The copy is
/// durable once this returns.
pub fn copy_database(src: &Connection, dest: &Path) -> Result<(), SnapshotError> {
    copy(src, dest, true)
}

fn copy(src: &Connection, dest: &Path, durable: bool) -> Result<(), SnapshotError> {
    let _ = std::fs::remove_file(dest);
    let mut out = Connection::open(dest)?;
    if !durable {
        // A scratch copy that a crash leaves half-written is removed and
        // taken again, never used: neither a journal nor an fsync protects
        // anything, and without them the copy takes half the time.
        out.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")?;
    }
    {
        let backup = rusqlite::backup::Backup::new(src, &mut out)?;
        backup.run_to_completion(4096, Duration::from_millis(0), None)?;
    }
    out.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// Removes excluded tables and columns from a copy, overwriting their bytes.
pub fn strip_excluded(copy: &Path, exclusions: &Exclusions) -> Result<(), SnapshotError> {
    if exclusions.tables.is_empty() && exclusions.columns.is_empty() {
        return Ok(());
    }
    let conn = Connection::open(copy)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    for table in &exclusions.tables {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS main.{}", quote_ident(table)))?;
    }
    for (table, column) in &exclusions.columns {
        let exists: i64 =
            conn.query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |r| {
                r.get(0)
            })?;
        if exists > 0 {
            // Triggers of the application must not react to our scrubbing.
            conn.execute_batch(&format!("UPDATE main.{} SET {} = NULL", quote_ident(table), quote_ident(column)))
                .or_else(|_| {
                    conn.execute_batch(&format!(
                        "ALTER TABLE main.{} DROP COLUMN {}",
                        quote_ident(table),
                        quote_ident(column)
                    ))
                })?;
        }
    }
    // secure_delete (set above) overwrites every freed cell and page with
    // zeros, so nothing of the removed data survives in free pages; a VACUUM
    // would cost a full rewrite of the copy for no further gain.
    Ok(())
}

/// Takes a snapshot of `user` and uploads it; returns its hub path.
pub fn take(
    user: &Connection,
    hub: &dyn Hub,
    work_dir: &Path,
    header: Header,
    exclusions: &Exclusions,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotEntry, SnapshotError> {
    std::fs::create_dir_all(work_dir)?;
    let plain = work_dir.join(".snapshot.db");
    let packed = work_dir.join(".snapshot.snap");
    copy(user, &plain, false)?;
    strip_excluded(&plain, exclusions)?;
    let name = names::snapshot_name(&header.database, &header.peer_name, header.created_ms);
    let path = format!("{}/{}", snapshots_dir(&header.database, &header.peer_id), name);
    let written = container::encode_file(&header, &plain, &packed, SNAPSHOT_LEVEL, progress)?;
    let size = std::fs::metadata(&packed)?.len();
    hub.put_file(&path, &packed)?;
    let _ = std::fs::remove_file(&plain);
    let _ = std::fs::remove_file(&packed);
    Ok(SnapshotEntry {
        path,
        peer_id: written.peer_id,
        peer_name: written.peer_name,
        created_ms: written.created_ms,
        size,
    })
}

/// Every snapshot of `database` in the hub, newest first.
pub fn list(hub: &dyn Hub, database: &str) -> Result<Vec<SnapshotEntry>, SnapshotError> {
    let mut out = Vec::new();
    for peer in hub.list_dirs(database)? {
        if !crate::identity::is_peer_id(&peer) {
            continue;
        }
        let dir = snapshots_dir(database, &peer);
        for HubEntry { name, size, .. } in hub.list(&dir, None)? {
            if let NameKind::Snapshot { database: db, peer_name, created_ms } = names::classify(&name)
                && db == database
            {
                out.push(SnapshotEntry {
                    path: format!("{dir}/{name}"),
                    peer_id: peer.clone(),
                    peer_name,
                    created_ms,
                    size,
                });
            }
        }
    }
    out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// Finds a snapshot by hub path or by file name.
pub fn find(hub: &dyn Hub, database: &str, id: &str) -> Result<SnapshotEntry, SnapshotError> {
    list(hub, database)?
        .into_iter()
        .find(|s| s.path == id || s.path.rsplit('/').next() == Some(id))
        .ok_or_else(|| SnapshotError::NotFound(id.to_string()))
}

/// Downloads and verifies a snapshot into a plain SQLite file at `dest`.
pub fn download(
    hub: &dyn Hub,
    entry: &SnapshotEntry,
    database: &str,
    work_dir: &Path,
    dest: &Path,
) -> Result<Header, SnapshotError> {
    std::fs::create_dir_all(work_dir)?;
    let packed = work_dir.join(".download.snap");
    hub.get_to_file(&entry.path, &packed)?;
    let expect = Expect { kind: FileKind::Snapshot, database, peer_id: Some(&entry.peer_id), seq: None };
    let header = container::decode_file(&packed, dest, &expect);
    let _ = std::fs::remove_file(&packed);
    Ok(header?)
}

/// Keeps a copy of the database as it is before a restore or forced pull.
pub fn save_before_copy(user: &Connection, dir: &Path, database: &str) -> Result<PathBuf, SnapshotError> {
    std::fs::create_dir_all(dir)?;
    let stamp = names::snapshot_name(database, "before", crate::hlc::wall_ms() as i64);
    let path = dir.join(stamp.replace(".snap", ".db"));
    copy_database(user, &path)?;
    Ok(path)
}

/// Replaces the content of the live database with `source`, keeping the
/// local excluded tables and columns, in one write transaction.
pub fn restore_into(user: &mut Connection, source: &Path, exclusions: &Exclusions) -> Result<(), SnapshotError> {
    // Carry the local secrets into the restored copy first.
    let src = Connection::open(source)?;
    src.execute_batch("PRAGMA foreign_keys = OFF")?;
    let live = user.path().map(PathBuf::from).unwrap_or_default();
    src.execute("ATTACH DATABASE ?1 AS live", [live.display().to_string()])?;
    for table in &exclusions.tables {
        let exists: i64 = src.query_row(
            "SELECT count(*) FROM live.sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        if exists == 0 {
            continue;
        }
        let sql: String =
            src.query_row("SELECT sql FROM live.sqlite_schema WHERE type = 'table' AND name = ?1", [table], |r| {
                r.get(0)
            })?;
        src.execute_batch(&format!("DROP TABLE IF EXISTS main.{}", quote_ident(table)))?;
        src.execute_batch(&sql)?;
        src.execute_batch(&format!("INSERT INTO main.{0} SELECT * FROM live.{0}", quote_ident(table)))?;
    }
    for (table, column) in &exclusions.columns {
        let pk: Vec<String> = {
            let mut stmt = src.prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?;
            stmt.query_map([table], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        if pk.is_empty() {
            continue;
        }
        let join: Vec<String> =
            pk.iter().map(|c| format!("l.{0} IS main.{1}.{0}", quote_ident(c), quote_ident(table))).collect();
        let _ = src.execute_batch(&format!(
            "UPDATE main.{t} SET {c} = (SELECT l.{c} FROM live.{t} AS l WHERE {j})",
            t = quote_ident(table),
            c = quote_ident(column),
            j = join.join(" AND ")
        ));
    }
    src.execute_batch("DETACH DATABASE live")?;
    drop(src);
    let src = Connection::open(source)?;
    let backup = rusqlite::backup::Backup::new(&src, user)?;
    backup.run_to_completion(i32::MAX, Duration::from_millis(0), None)?;
    Ok(())
}

//! Snapshots, restore, forced pull and push, and cleanup of one database
//! (DESIGN §5), as operations of its [`Engine`]. They run on the database's
//! worker like a sync cycle, so nothing else touches the database meanwhile.

use super::{Engine, EngineError};
use crate::batch::{BatchBody, Op, TableChanges};
use crate::container::{self, Expect, FileKind, Header};
use crate::heartbeat;
use crate::hub::names::{self, NameKind};
use crate::hub::{Hub, HubEntry, HubError};
use crate::identity::Identity;
use crate::outbox;
use crate::retention::{self, PeerFact, Rules, SnapshotFact};
use crate::schema::{self, Table, quote_ident};
use crate::snapshot::{self, SnapshotEntry, SnapshotError};
use crate::value::Value;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

const DAY_MS: i64 = 86_400_000;

impl From<SnapshotError> for EngineError {
    fn from(e: SnapshotError) -> Self {
        match e {
            // Kept typed: an unreachable hub is not a failure to report but
            // a state to wait out.
            SnapshotError::Hub(h) => EngineError::Hub(h),
            other => EngineError::Snapshot(other.to_string()),
        }
    }
}

/// What cleanup removed (or would remove).
#[derive(Debug, Clone, Default)]
pub struct CleanupOutcome {
    pub removed_snapshots: Vec<String>,
    pub removed_batches: u64,
    pub kept_snapshots: u64,
}

impl Engine {
    pub(super) fn work_dir(&self, what: &str) -> PathBuf {
        self.state_path.with_file_name(format!("{}.{what}", self.config.name))
    }

    fn rules(&self) -> Rules {
        Rules {
            keep_last: self.config.keep_last,
            keep_within_ms: self.config.keep_within_days as i64 * DAY_MS,
            forget_after_ms: self.config.forget_peers_after_days as i64 * DAY_MS,
        }
    }

    /// Takes a snapshot now: first a cycle, so that it covers every change
    /// captured so far, then the copy.
    pub fn backup(&mut self) -> Result<SnapshotEntry, EngineError> {
        self.run_cycle()?;
        let covers_seq = self.state.meta::<i64>("last_seq")?.unwrap_or(0) as u64;
        let all = self.state.cursors()?;
        let cursors: BTreeMap<String, u64> = all.iter().map(|(p, c)| (p.clone(), c.seq)).collect();
        let clocks: BTreeMap<String, u64> = all.iter().map(|(p, c)| (p.clone(), c.clock)).collect();
        let header = Header {
            kind: FileKind::Snapshot,
            database: self.config.name.clone(),
            peer_id: self.identity.peer_id.clone(),
            peer_name: self.identity.name.clone(),
            seq: 0,
            created_ms: crate::hlc::wall_ms() as i64,
            body_len: 0,
            body_sha256: String::new(),
            meta: serde_json::json!({
                "covers_seq": covers_seq,
                "clock": self.hlc.last(),
                "cursors": cursors,
                "clocks": clocks,
            }),
        };
        let entry = snapshot::take(
            &self.user,
            self.hub.as_ref(),
            &self.work_dir("snapshot"),
            header,
            &self.exclusions,
            &mut |_| {},
        )?;
        self.state.record_snapshot(&entry.path, entry.created_ms, covers_seq)?;
        self.state.set_meta("changes_since_snapshot", 0)?;
        self.state.set_meta("last_snapshot_ms", entry.created_ms)?;
        info!(snapshot = %entry.path, bytes = entry.size, "snapshot taken");
        Ok(entry)
    }

    /// Takes a snapshot or runs cleanup when their time has come; called
    /// after each cycle by the daemon.
    pub fn maintenance_if_due(&mut self, captured: u64) -> Result<(), EngineError> {
        let now = crate::hlc::wall_ms() as i64;
        let changes = self.state.meta::<i64>("changes_since_snapshot")?.unwrap_or(0) + captured as i64;
        if captured > 0 {
            self.state.set_meta("changes_since_snapshot", changes)?;
        }
        let last = match self.state.meta::<i64>("last_snapshot_ms")? {
            Some(t) => t,
            None => {
                self.state.set_meta("last_snapshot_ms", now)?;
                now
            }
        };
        let hours_due = now - last >= self.config.snapshot_hours as i64 * 3_600_000 && changes > 0;
        if changes as u64 >= self.config.snapshot_every || hours_due {
            self.backup()?;
        }
        let last_cleanup = self.state.meta::<i64>("last_cleanup_ms")?.unwrap_or(0);
        if now - last_cleanup >= DAY_MS {
            self.state.set_meta("last_cleanup_ms", now)?;
            self.cleanup(false)?;
        }
        Ok(())
    }

    /// Every snapshot of this database in the hub, newest first, with
    /// whether the retention rules keep it.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotEntry, bool)>, EngineError> {
        let all = snapshot::list(self.hub.as_ref(), &self.config.name)?;
        let now = crate::hlc::wall_ms() as i64;
        let mut kept = std::collections::BTreeSet::new();
        let mut by_peer: BTreeMap<&str, Vec<SnapshotFact>> = BTreeMap::new();
        for s in &all {
            by_peer.entry(&s.peer_id).or_default().push(SnapshotFact {
                path: s.path.clone(),
                created_ms: s.created_ms,
                covers_seq: 0,
            });
        }
        for facts in by_peer.values() {
            kept.extend(retention::kept_snapshots(facts, &self.rules(), now));
        }
        Ok(all.into_iter().map(|s| (s.clone(), kept.contains(&s.path))).collect())
    }

    /// Replaces the local database with a snapshot, or with the snapshot
    /// plus every change batch up to `at_ms`; keeps the local excluded data
    /// and a "before" copy. The restored rows then sync like local edits.
    pub fn restore(&mut self, id: &str, at_ms: Option<i64>) -> Result<String, EngineError> {
        let entry = snapshot::find(self.hub.as_ref(), &self.config.name, id)?;
        if let Some(at) = at_ms
            && entry.created_ms > at
        {
            return Err(EngineError::Snapshot(format!(
                "{} was taken after {}: pick a snapshot from before that time (`syncctl list`)",
                entry.path,
                heartbeat::rfc3339(at)
            )));
        }
        let work = self.work_dir("restore");
        std::fs::create_dir_all(&work).map_err(SnapshotError::from)?;
        let plain = work.join("restored.db");
        let header = snapshot::download(self.hub.as_ref(), &entry, &self.config.name, &work, &plain)?;
        let mut replayed = 0;
        if let Some(at) = at_ms {
            replayed = replay_until(self.hub.as_ref(), &self.config.name, &header, &plain, at, &self.exclusions)?;
        }
        let before = snapshot::save_before_copy(&self.user, &self.work_dir("before"), &self.config.name)?;
        snapshot::restore_into(&mut self.user, &plain, &self.exclusions)?;
        let _ = std::fs::remove_dir_all(&work);
        self.data_version = None;
        self.run_cycle()?;
        Ok(format!(
            "restored {} from {}{}; the previous content is kept in {}",
            self.config.name,
            entry.path,
            if at_ms.is_some() { format!(" plus {replayed} changes up to the given time") } else { String::new() },
            before.display()
        ))
    }

    /// Makes every peer equal to this database: every local row is
    /// published again with a newer version than anything in the hub.
    pub fn push_force(&mut self) -> Result<String, EngineError> {
        self.run_cycle()?;
        let rows = self.state.mark_all_rows_changed()?;
        self.data_version = None;
        let report = self.run_cycle()?;
        Ok(format!(
            "{}: {rows} rows published again as the newest version ({} changes)",
            self.config.name, report.captured
        ))
    }

    /// Makes this database equal to the hub's merged state: rebuilt from
    /// every peer's batches (this peer's published ones included); local
    /// changes not yet published are dropped, after a "before" copy.
    pub fn pull_force(&mut self) -> Result<String, EngineError> {
        let before = snapshot::save_before_copy(&self.user, &self.work_dir("before"), &self.config.name)?;
        let applied = self.rebuild_from_hub()?;
        Ok(format!(
            "{} now equals the hub ({applied} changes applied); the previous content is kept in {}",
            self.config.name,
            before.display()
        ))
    }

    /// Rebuilds the database and its state from the hub's batches alone.
    fn rebuild_from_hub(&mut self) -> Result<u64, EngineError> {
        let work = self.work_dir("rebuild");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("state")).map_err(SnapshotError::from)?;
        let db_path = work.join("rebuild.db");
        snapshot::copy_database(&self.user, &db_path)?;
        {
            let copy = Connection::open(&db_path)?;
            for t in schema::discover(&copy, &self.exclusions)? {
                copy.execute_batch(&format!("DELETE FROM main.{}", quote_ident(&t.name)))?;
            }
        }
        let mut config = self.config.clone();
        config.path = db_path.clone();
        let identity = Identity {
            peer_id: rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect(),
            name: format!("{}-rebuild", self.identity.name),
            host: self.identity.host.clone(),
        };
        let hub: Arc<dyn Hub> = Arc::new(ReadOnlyHub(self.hub.clone()));
        let temp_state = work.join("state").join(format!("{}.state.sqlite", config.name));
        let applied = {
            let mut temp = Engine::open_at(&config, &identity, hub, temp_state.clone(), self.heartbeat_every_ms)?;
            let report = temp.run_cycle()?;
            report.applied.applied
        };
        snapshot::restore_into(&mut self.user, &db_path, &self.exclusions)?;
        self.state.adopt(&temp_state)?;
        // Every connection to the state reopens: the ids of peers, tables
        // and column layouts they remember are the old state's.
        self.recorder = None;
        (self.state, self.checkpointer) = super::open_state(&self.state_path)?;
        self.state_writes_checkpointed = 0;
        self.state.peer_index(&self.identity.peer_id)?;
        self.data_version = None;
        let _ = std::fs::remove_dir_all(&work);
        self.run_cycle()?;
        Ok(applied)
    }

    /// Removes this peer's snapshots and change batches that retention no
    /// longer needs. Only this peer's own folder is ever touched.
    pub fn cleanup(&mut self, dry_run: bool) -> Result<CleanupOutcome, EngineError> {
        let now = crate::hlc::wall_ms() as i64;
        let rules = self.rules();
        let own = self.state.own_snapshots()?;
        let listed: Vec<String> = snapshot::list(self.hub.as_ref(), &self.config.name)?
            .into_iter()
            .filter(|s| s.peer_id == self.identity.peer_id)
            .map(|s| s.path)
            .collect();
        let facts: Vec<SnapshotFact> = own.into_iter().filter(|s| listed.contains(&s.path)).collect();
        let kept_paths = retention::kept_snapshots(&facts, &rules, now);
        let kept: Vec<&SnapshotFact> = facts.iter().filter(|s| kept_paths.contains(&s.path)).collect();
        let mut peers = Vec::new();
        for hb in self.read_heartbeats()? {
            if hb.peer_id != self.identity.peer_id {
                let applied_seq = hb.cursors.get(&self.identity.peer_id).copied().unwrap_or(0);
                peers.push(PeerFact { last_seen_ms: hb.time_ms, applied_seq });
            }
        }
        let up_to = retention::removable_batches_up_to(&kept, &peers, &rules, now);
        let mut outcome = CleanupOutcome { kept_snapshots: kept.len() as u64, ..Default::default() };
        for s in facts.iter().filter(|s| !kept_paths.contains(&s.path)) {
            if !dry_run {
                self.hub.delete(&s.path)?;
                self.state.forget_snapshot(&s.path)?;
            }
            outcome.removed_snapshots.push(s.path.clone());
        }
        let dir = outbox::changes_dir(&self.config.name, &self.identity.peer_id);
        for HubEntry { name, .. } in self.hub.list(&dir, None)? {
            if let NameKind::Batch(seq) = names::classify(&name)
                && seq <= up_to
            {
                if !dry_run {
                    self.hub.delete(&format!("{dir}/{name}"))?;
                }
                outcome.removed_batches += 1;
            }
        }
        info!(dry_run, snapshots = outcome.removed_snapshots.len(), batches = outcome.removed_batches, "cleanup");
        Ok(outcome)
    }
}

/// A hub that reads through and drops writes: a rebuild reads every peer's
/// batches but must not publish anything or leave a heartbeat.
struct ReadOnlyHub(Arc<dyn Hub>);

impl Hub for ReadOnlyHub {
    fn url(&self) -> &str {
        self.0.url()
    }
    fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<HubEntry>, HubError> {
        self.0.list(dir, after)
    }
    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, HubError> {
        self.0.list_dirs(dir)
    }
    fn get(&self, path: &str) -> Result<Vec<u8>, HubError> {
        self.0.get(path)
    }
    fn get_to_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        self.0.get_to_file(path, local)
    }
    fn put_atomic(&self, _: &str, _: &[u8]) -> Result<(), HubError> {
        Ok(())
    }
    fn put_new(&self, _: &str, _: &[u8]) -> Result<(), HubError> {
        Ok(())
    }
    fn put_file(&self, _: &str, _: &Path) -> Result<(), HubError> {
        Ok(())
    }
    fn delete(&self, _: &str) -> Result<(), HubError> {
        Ok(())
    }
}

/// Replays, on a restored snapshot file, every change batch made after the
/// snapshot and up to `at_ms`, in version order. Returns how many changes.
fn replay_until(
    hub: &dyn Hub,
    database: &str,
    snapshot: &Header,
    plain: &Path,
    at_ms: i64,
    exclusions: &schema::Exclusions,
) -> Result<u64, EngineError> {
    let included: BTreeMap<String, u64> =
        snapshot.meta.get("cursors").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default();
    let own_covered = snapshot.meta.get("covers_seq").and_then(|v| v.as_u64()).unwrap_or(0);
    let mut batches: Vec<(u64, String, BatchBody)> = Vec::new();
    for peer in hub.list_dirs(database)? {
        if !crate::identity::is_peer_id(&peer) {
            continue;
        }
        let after = if peer == snapshot.peer_id { own_covered } else { included.get(&peer).copied().unwrap_or(0) };
        let dir = outbox::changes_dir(database, &peer);
        for entry in hub.list(&dir, (after > 0).then(|| names::batch_name(after)).as_deref())? {
            let NameKind::Batch(seq) = names::classify(&entry.name) else { continue };
            let bytes = hub.get(&format!("{dir}/{}", entry.name))?;
            let expect = Expect { kind: FileKind::Batch, database, peer_id: Some(&peer), seq: Some(seq) };
            let (header, body) =
                container::decode(&bytes, &expect).map_err(|e| EngineError::Snapshot(e.to_string()))?;
            if header.created_ms > at_ms {
                break;
            }
            let body = BatchBody::decode(&body).map_err(|e| EngineError::Snapshot(e.to_string()))?;
            batches.push((body.clock, peer.clone(), body));
        }
    }
    // Version order: the order every peer's merge would settle on.
    batches.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let conn = Connection::open(plain)?;
    conn.execute_batch("PRAGMA foreign_keys = OFF; BEGIN")?;
    let tables: BTreeMap<String, Table> =
        schema::discover(&conn, exclusions)?.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut count = 0;
    for (_, _, body) in &batches {
        for t in &body.tables {
            let Some(table) = tables.get(&t.table) else { continue };
            for change in &t.changes {
                replay_change(&conn, table, t, &change.key, &change.op)?;
                count += 1;
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(count)
}

fn replay_change(conn: &Connection, table: &Table, t: &TableChanges, key: &[Value], op: &Op) -> rusqlite::Result<()> {
    let key_pred: Vec<String> =
        t.key_columns.iter().enumerate().map(|(n, c)| format!("{} IS ?{}", quote_ident(c), n + 1)).collect();
    let key_pred = key_pred.join(" AND ");
    let name = quote_ident(&table.name);
    let values: Vec<(&str, &Value)> =
        t.named_values(op).into_iter().filter(|(n, _)| table.column_index(n).is_some()).collect();
    match op {
        Op::Delete => {
            conn.execute(&format!("DELETE FROM main.{name} WHERE {key_pred}"), rusqlite::params_from_iter(key))?;
        }
        Op::Row(_) | Op::Insert(_) => {
            conn.execute(&format!("DELETE FROM main.{name} WHERE {key_pred}"), rusqlite::params_from_iter(key))?;
            let cols: Vec<String> = values.iter().map(|(n, _)| quote_ident(n)).collect();
            let marks: Vec<String> = (1..=values.len()).map(|n| format!("?{n}")).collect();
            conn.execute(
                &format!("INSERT INTO main.{name}({}) VALUES({})", cols.join(", "), marks.join(", ")),
                rusqlite::params_from_iter(values.iter().map(|(_, v)| *v)),
            )?;
        }
        Op::Columns(_) => {
            if values.is_empty() {
                return Ok(());
            }
            let sets: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, (n, _))| format!("{} = ?{}", quote_ident(n), key.len() + i + 1))
                .collect();
            conn.execute(
                &format!("UPDATE main.{name} SET {} WHERE {key_pred}", sets.join(", ")),
                rusqlite::params_from_iter(key.iter().chain(values.iter().map(|(_, v)| *v))),
            )?;
        }
    }
    Ok(())
}

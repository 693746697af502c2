//! Answers to control-socket requests. Each handler only sends jobs to the
//! database workers and shapes their answers into `syncd_proto` responses.

use crate::heartbeat::{self, Heartbeat};
use crate::hlc;
use crate::service::Daemon;
use crate::service::control::RequestHandler;
use crate::service::worker::{Snapshot, Worker};
use std::sync::Arc;
use std::time::Duration;
use syncd_proto::{
    ConflictInfo, DatabaseStatus, ErrorKind, HubStatus, PeerInfo, Request, Response, SkippedFile, StatusReport,
    SyncReport, SyncState,
};

/// Heartbeats older than this in the status cache are read again.
const HEARTBEAT_CACHE_MS: i64 = 2_000;

pub struct Handler {
    pub daemon: Arc<Daemon>,
}

impl RequestHandler for Handler {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => self.status().await,
            Request::Peers => {
                let (workers, active_secs) = self.workers(None).await.unwrap_or_default();
                Response::Peers(peers(&workers, active_secs).await)
            }
            Request::Sync { database, yes, prefer_local } => self.sync(database, yes, prefer_local).await,
            Request::Conflicts { database } => self.conflicts(database).await,
            Request::Enable { database } => self.set_auto_sync(database, true).await,
            Request::Disable { database } => self.set_auto_sync(database, false).await,
            other => crate::service::snapshot_handlers::handle(self, other).await,
        }
    }
}

/// The "no such database" answer, naming the ones there are.
pub fn unknown_database(name: &str, known: &[String]) -> Response {
    Response::Error {
        kind: ErrorKind::UnknownDatabase,
        message: format!("no database named {name:?} in the configuration (configured: {})", known.join(", ")),
    }
}

impl Handler {
    /// The workers of `database` (all when `None`) and the active window.
    pub async fn workers(&self, database: Option<&str>) -> Result<(Vec<Worker>, u64), Response> {
        let running = self.daemon.running.read().await;
        let active_secs = running.config.active_secs;
        match database {
            None => Ok((running.workers.values().cloned().collect(), active_secs)),
            Some(name) => match running.workers.get(name) {
                Some(w) => Ok((vec![w.clone()], active_secs)),
                None => Err(unknown_database(name, &running.workers.keys().cloned().collect::<Vec<_>>())),
            },
        }
    }

    async fn status(&self) -> Response {
        let (url, active_secs, workers) = {
            let running = self.daemon.running.read().await;
            (
                running.config.hub.url.clone(),
                running.config.active_secs,
                running.workers.values().cloned().collect::<Vec<_>>(),
            )
        };
        let peers = peers(&workers, active_secs).await;
        let snapshots: Vec<Snapshot> = workers.iter().map(snapshot_of).collect();
        let unreachable_since = snapshots.iter().filter_map(|s| s.health.hub_unreachable_since_ms).min();
        let hub_error = snapshots.iter().find_map(|s| s.health.hub_error.clone());
        let mut warnings = Vec::new();
        for p in &peers {
            if let Some(skew) = p.clock_skew_ms.filter(|s| s.abs() > 60_000) {
                warnings.push(format!(
                    "the clock of peer {} differs from this one by {} s: fix its time (syncd still converges)",
                    p.name,
                    skew / 1000
                ));
            }
        }
        let databases = snapshots
            .iter()
            .map(|s| DatabaseStatus {
                name: s.name.clone(),
                path: s.path.clone(),
                state: match (s.pending_local > 0, s.health.pending_remote > 0) {
                    (false, false) => SyncState::InSync,
                    (true, false) => SyncState::Ahead,
                    (false, true) => SyncState::Behind,
                    (true, true) => SyncState::Diverged,
                },
                pending_local: s.pending_local,
                pending_remote: s.health.pending_remote,
                last_sync: s.health.last_sync_ms.map(heartbeat::rfc3339),
                last_error: s.health.last_error.clone(),
                conflicts: s.conflicts,
                parked: s.parked,
                auto_sync: s.auto_sync,
                skipped_files: s
                    .health
                    .skipped
                    .iter()
                    .map(|(path, reason)| SkippedFile { path: path.clone(), reason: reason.clone() })
                    .collect(),
            })
            .collect();
        Response::Status(StatusReport {
            hub: HubStatus {
                url,
                reachable: unreachable_since.is_none(),
                unreachable_since: unreachable_since.map(heartbeat::rfc3339),
                last_error: hub_error,
            },
            databases,
            peers,
            warnings,
        })
    }

    async fn sync(&self, database: Option<String>, yes: bool, prefer_local: bool) -> Response {
        let (workers, active_secs) = match self.workers(database.as_deref()).await {
            Ok(w) => w,
            Err(r) => return r,
        };
        if prefer_local && !yes {
            let active = active_peer_names(&workers, active_secs).await;
            if !active.is_empty() {
                return Response::NeedsConfirmation {
                    message: format!(
                        "other peers are active ({}): preferring local rows may overwrite their edits; pass --yes to go ahead",
                        active.join(", ")
                    ),
                    active_peers: active,
                };
            }
        }
        let mut reports = Vec::new();
        for w in workers {
            let name = w.name.clone();
            let outcome = w
                .run(move |e| {
                    e.prefer_local_on_join = prefer_local;
                    let r = e.run_cycle();
                    e.prefer_local_on_join = false;
                    let unreachable =
                        e.health.hub_error.clone().filter(|_| e.health.hub_unreachable_since_ms.is_some());
                    (r, unreachable)
                })
                .await;
            match outcome {
                Some((Ok(r), unreachable)) => reports.push(SyncReport {
                    database: name,
                    captured: r.captured,
                    published: r.published,
                    applied: r.applied.applied,
                    conflicts: r.applied.conflicts,
                    parked: r.applied.parked,
                    message: unreachable.map(|e| format!("hub unreachable, changes kept in the outbox: {e}")),
                }),
                Some((Err(e), _)) => {
                    return Response::Error { kind: ErrorKind::Failed, message: format!("{name}: {e}") };
                }
                None => return stopped(&name),
            }
        }
        Response::Synced(reports)
    }

    async fn conflicts(&self, database: Option<String>) -> Response {
        let (workers, _) = match self.workers(database.as_deref()).await {
            Ok(w) => w,
            Err(r) => return r,
        };
        let mut all = Vec::new();
        for w in workers {
            let name = w.name.clone();
            let Some(found) = w
                .run(move |e| {
                    let names = e.peer_names();
                    e.state().conflicts().map(|cs| (cs, names))
                })
                .await
            else {
                return stopped(&name);
            };
            match found {
                Ok((conflicts, names)) => {
                    let peer = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
                    all.extend(conflicts.into_iter().map(|c| ConflictInfo {
                        database: name.clone(),
                        id: c.id,
                        table: c.table,
                        key: crate::value::key_text(&c.key),
                        column: c.column,
                        local_value: c.loser,
                        winner_value: c.winner,
                        loser_version: format!("{}@{}", c.loser_clock, c.loser_peer),
                        winner_version: format!("{}@{}", c.winner_clock, c.winner_peer),
                        loser_peer: peer(&c.loser_peer),
                        winner_peer: peer(&c.winner_peer),
                        reason: c.reason,
                        at: Some(heartbeat::rfc3339(c.at_ms)),
                    }));
                }
                Err(e) => return Response::Error { kind: ErrorKind::Failed, message: format!("{name}: {e}") },
            }
        }
        Response::Conflicts(all)
    }

    async fn set_auto_sync(&self, database: Option<String>, on: bool) -> Response {
        let (workers, _) = match self.workers(database.as_deref()).await {
            Ok(w) => w,
            Err(r) => return r,
        };
        let mut names = Vec::new();
        for w in workers {
            let name = w.name.clone();
            match w.run(move |e| e.set_auto_sync(on)).await {
                Some(Ok(())) => names.push(name),
                Some(Err(e)) => return Response::Error { kind: ErrorKind::Failed, message: format!("{name}: {e}") },
                None => return stopped(&name),
            }
            if on {
                w.request_cycle();
            }
        }
        Response::Done {
            message: format!("automatic sync {} for {}", if on { "enabled" } else { "disabled" }, names.join(", ")),
        }
    }
}

pub fn stopped(name: &str) -> Response {
    Response::Error {
        kind: ErrorKind::Busy,
        message: format!("database {name} is restarting (configuration reload); try again"),
    }
}

pub fn snapshot_of(w: &Worker) -> Snapshot {
    w.snapshot.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
}

/// Every peer's heartbeat, read again when the cache is older than a few
/// seconds (bounded, so a slow hub does not hang `status`).
pub async fn peers(workers: &[Worker], active_secs: u64) -> Vec<PeerInfo> {
    let now = hlc::wall_ms() as i64;
    let mut out = Vec::new();
    for w in workers {
        let snap = snapshot_of(w);
        let heartbeats: Vec<Heartbeat> = if now - snap.heartbeats_read_ms > HEARTBEAT_CACHE_MS {
            match tokio::time::timeout(Duration::from_secs(3), w.run(|e| e.read_heartbeats().ok())).await {
                Ok(Some(Some(hbs))) => hbs,
                _ => snap.heartbeats.clone(),
            }
        } else {
            snap.heartbeats.clone()
        };
        for hb in heartbeats {
            let age_ms = now - hb.time_ms;
            out.push(PeerInfo {
                database: hb.database.clone(),
                is_self: hb.peer_id == snap.self_peer_id,
                peer_id: hb.peer_id,
                name: hb.name,
                host: hb.host,
                last_seen: Some(hb.time),
                active: age_ms < active_secs as i64 * 1000,
                version: hb.version,
                clock_skew_ms: hb.clock_skew_ms,
            });
        }
    }
    out
}

/// Names of the other peers that are active now.
pub async fn active_peer_names(workers: &[Worker], active_secs: u64) -> Vec<String> {
    let mut names: Vec<String> =
        peers(workers, active_secs).await.into_iter().filter(|p| p.active && !p.is_self).map(|p| p.name).collect();
    names.sort();
    names.dedup();
    names
}

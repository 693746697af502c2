//! Answers to the snapshot requests: backup, list, restore, forced pull and
//! push, cleanup, and bringing a conflict's losing row back. Each runs on
//! the database's worker, so that database's sync pauses meanwhile.

use crate::engine::Engine;
use crate::heartbeat;
use crate::service::handlers::{Handler, active_peer_names, stopped};
use crate::service::worker::Worker;
use syncd_proto::{CleanupReport, ErrorKind, Request, Response, SnapshotInfo};

pub async fn handle(handler: &Handler, request: Request) -> Response {
    match request {
        Request::Backup { database } => {
            let workers = match handler.workers(database.as_deref()).await {
                Ok((w, _)) => w,
                Err(r) => return r,
            };
            let mut made = Vec::new();
            for w in workers {
                match run(&w, |e| e.backup().map_err(|e| e.to_string())).await {
                    Ok(entry) => made.push(format!("{} ({:.1} MB)", entry.path, entry.size as f64 / 1e6)),
                    Err(r) => return r,
                }
            }
            Response::Done { message: format!("snapshot taken: {}", made.join(", ")) }
        }
        Request::List { database } => {
            let workers = match handler.workers(database.as_deref()).await {
                Ok((w, _)) => w,
                Err(r) => return r,
            };
            let mut all = Vec::new();
            for w in workers {
                let name = w.name.clone();
                match run(&w, |e| e.list_snapshots().map_err(|e| e.to_string())).await {
                    Ok(list) => all.extend(list.into_iter().map(|(s, kept)| SnapshotInfo {
                        id: s.path,
                        database: name.clone(),
                        peer_id: s.peer_id,
                        peer_name: s.peer_name,
                        created: heartbeat::rfc3339(s.created_ms),
                        size: s.size,
                        kept,
                    })),
                    Err(r) => return r,
                }
            }
            Response::Snapshots(all)
        }
        Request::Restore { snapshot, at, yes } => {
            let at_ms = match at.as_deref().map(parse_time) {
                Some(Ok(ms)) => Some(ms),
                Some(Err(r)) => return *r,
                None => None,
            };
            // The snapshot id starts with its database's name.
            let database = snapshot.split('/').next().unwrap_or_default().to_string();
            let database = if database.ends_with(".snap") {
                database.split('_').next().unwrap_or_default().to_string()
            } else {
                database
            };
            destructive(handler, Some(database), yes, "restore", move |e| e.restore(&snapshot, at_ms)).await
        }
        Request::Pull { database, force, yes } => {
            if !force {
                return needs_force("pull");
            }
            destructive(handler, database, yes, "pull --force", |e| e.pull_force()).await
        }
        Request::Push { database, force, yes } => {
            if !force {
                return needs_force("push");
            }
            destructive(handler, database, yes, "push --force", |e| e.push_force()).await
        }
        Request::Cleanup { database, dry_run } => {
            let workers = match handler.workers(database.as_deref()).await {
                Ok((w, _)) => w,
                Err(r) => return r,
            };
            let mut reports = Vec::new();
            for w in workers {
                let name = w.name.clone();
                match run(&w, move |e| e.cleanup(dry_run).map_err(|e| e.to_string())).await {
                    Ok(o) => reports.push(CleanupReport {
                        database: name,
                        dry_run,
                        removed_snapshots: o.removed_snapshots,
                        removed_batches: o.removed_batches,
                        kept_snapshots: o.kept_snapshots,
                    }),
                    Err(r) => return r,
                }
            }
            Response::Cleanup(reports)
        }
        Request::ConflictRestore { database, id } => {
            let workers = match handler.workers(database.as_deref()).await {
                Ok((w, _)) => w,
                Err(r) => return r,
            };
            for w in workers {
                match run(&w, move |e| e.restore_conflict(id).map_err(|e| e.to_string())).await {
                    Ok(Some(message)) => return Response::Done { message },
                    Ok(None) => continue,
                    Err(r) => return r,
                }
            }
            Response::Error {
                kind: ErrorKind::BadRequest,
                message: format!("no conflict {id}: see `syncctl conflicts`"),
            }
        }
        other => Response::Error { kind: ErrorKind::BadRequest, message: format!("unexpected request {other:?}") },
    }
}

/// Runs `f` on the worker, mapping its failure to an error response.
async fn run<T: Send + 'static>(
    w: &Worker,
    f: impl FnOnce(&mut Engine) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let name = w.name.clone();
    match w.run(f).await {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Response::Error { kind: ErrorKind::Failed, message: format!("{name}: {e}") }),
        None => Err(stopped(&name)),
    }
}

/// A request that overwrites data: asks for confirmation when other peers
/// are active, unless `yes`.
async fn destructive(
    handler: &Handler,
    database: Option<String>,
    yes: bool,
    what: &str,
    f: impl Fn(&mut Engine) -> Result<String, crate::engine::EngineError> + Send + Sync + Clone + 'static,
) -> Response {
    let (workers, active_secs) = match handler.workers(database.as_deref()).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !yes {
        let active = active_peer_names(&workers, active_secs).await;
        if !active.is_empty() {
            return Response::NeedsConfirmation {
                message: format!("{what} changes data that other active peers will receive; pass --yes to go ahead"),
                active_peers: active,
            };
        }
    }
    let mut messages = Vec::new();
    for w in workers {
        let f = f.clone();
        match run(&w, move |e| f(e).map_err(|e| e.to_string())).await {
            Ok(m) => messages.push(m),
            Err(r) => return r,
        }
    }
    Response::Done { message: messages.join("\n") }
}

fn needs_force(what: &str) -> Response {
    Response::Error {
        kind: ErrorKind::BadRequest,
        message: format!("`{what}` replaces data: say `syncctl {what} --force` to confirm that is what you want"),
    }
}

fn parse_time(s: &str) -> Result<i64, Box<Response>> {
    heartbeat::parse_rfc3339(s).ok_or_else(|| {
        Box::new(Response::Error {
            kind: ErrorKind::BadRequest,
            message: format!("{s:?} is not a time: use RFC 3339, for example 2026-11-26T14:30:00Z"),
        })
    })
}

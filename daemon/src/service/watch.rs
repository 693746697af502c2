//! File watchers: the database file and its `-wal`, and (for a folder hub)
//! the database's folder in the hub. Events only *request* a cycle, after a
//! quiet time (debounce), so a burst of writes makes one cycle. Polling in
//! `service/timers.rs` covers the events that never come.

use crate::config::{Config, DatabaseConfig};
use crate::service::worker::Worker;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the watchers alive; dropping it stops them.
pub struct Watchers {
    _watchers: Vec<RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watchers {
    pub fn start(db: &DatabaseConfig, config: &Config, worker: Worker, debounce: Duration) -> notify::Result<Watchers> {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let mut watchers = Vec::new();

        // The database's folder, filtered to its own files: SQLite replaces
        // and truncates the -wal, which a watch on the file alone can miss.
        let db_path = std::fs::canonicalize(&db.path).unwrap_or_else(|_| db.path.clone());
        let dir = db_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let file_name = db_path.file_name().map(OsString::from).unwrap_or_default();
        let names: Vec<OsString> = ["", "-wal", "-journal"]
            .iter()
            .map(|suffix| {
                let mut n = file_name.clone();
                n.push(suffix);
                n
            })
            .collect();
        let db_tx = tx.clone();
        let mut w = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && is_change(&event)
                && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|x| x == n)))
            {
                let _ = db_tx.send(());
            }
        })?;
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        watchers.push(w);

        if let Some(root) = config.hub.url.strip_prefix("file://") {
            let folder = Path::new(root).join(&db.name);
            let _ = std::fs::create_dir_all(&folder);
            let own = OsString::from(&worker.snapshot.lock().map(|s| s.self_peer_id.clone()).unwrap_or_default());
            let hub_tx = tx.clone();
            let mut w = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && is_change(&event)
                {
                    // Our own writes (batches, heartbeats) are not news.
                    let foreign = event.paths.iter().any(|p| {
                        !p.components().any(|c| c.as_os_str() == own)
                            && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    });
                    if foreign {
                        let _ = hub_tx.send(());
                    }
                }
            })?;
            w.watch(&folder, RecursiveMode::Recursive)?;
            watchers.push(w);
        }
        let task = tokio::spawn(debounce_loop(rx, worker, debounce));
        Ok(Watchers { _watchers: watchers, task })
    }
}

/// Only a change is news: reads (ours included: listing the hub, reading
/// the database) raise access events, and acting on those would loop.
fn is_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any | ModifyKind::Other)
            | EventKind::Any
    )
}

async fn debounce_loop(mut rx: mpsc::UnboundedReceiver<()>, worker: Worker, quiet: Duration) {
    while rx.recv().await.is_some() {
        // Wait until events stop for `quiet`, but never longer than 10x it,
        // so a database written continuously still syncs.
        let deadline = tokio::time::Instant::now() + quiet * 10;
        loop {
            match tokio::time::timeout(quiet, rx.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                Ok(None) => return,
                _ => break,
            }
        }
        worker.request_cycle();
    }
}

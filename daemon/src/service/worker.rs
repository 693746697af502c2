//! One worker thread per database: it owns the database's [`Engine`] (and so
//! its SQLite connections) and runs the jobs sent to it one at a time, which
//! makes "one sync cycle at a time per database" true by construction.
//!
//! The async side (watchers, timers, control socket) never touches SQLite:
//! it sends jobs and awaits their answers.

use crate::engine::Engine;
use crate::heartbeat::Heartbeat;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A unit of work run on the database's thread.
pub type Job = Box<dyn FnOnce(&mut Engine) + Send>;

enum Message {
    Job(Job),
    /// Finish: sent by [`Worker::stop`], so the thread ends even while
    /// timers or watchers still hold a handle.
    Stop,
}

/// What the control socket shows about a database without waiting for its
/// worker, refreshed after every job.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub name: String,
    pub path: String,
    pub health: crate::engine::Health,
    pub pending_local: u64,
    pub conflicts: u64,
    pub parked: u64,
    pub auto_sync: bool,
    /// Heartbeats of every peer of this database, with the time they were read.
    pub heartbeats: Vec<Heartbeat>,
    pub heartbeats_read_ms: i64,
    pub self_peer_id: String,
}

/// The handle the async side keeps for one database.
#[derive(Clone)]
pub struct Worker {
    pub name: String,
    jobs: mpsc::UnboundedSender<Message>,
    cycle_queued: Arc<AtomicBool>,
    pub snapshot: Arc<Mutex<Snapshot>>,
}

impl Worker {
    /// Starts the thread that owns `engine`.
    pub fn spawn(mut engine: Engine) -> (Worker, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let shared = snapshot.clone();
        let name = engine.config.name.clone();
        refresh_snapshot(&mut engine, &shared);
        let handle = std::thread::Builder::new()
            .name(format!("db-{name}"))
            .spawn(move || {
                while let Some(Message::Job(job)) = rx.blocking_recv() {
                    job(&mut engine);
                    refresh_snapshot(&mut engine, &shared);
                }
            })
            .expect("spawning a thread only fails when the system is out of resources");
        (Worker { name, jobs: tx, cycle_queued: Arc::new(AtomicBool::new(false)), snapshot }, handle)
    }

    /// Runs `f` on the database's thread and returns its answer; `None` if
    /// the worker has stopped.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Engine) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Message::Job(Box::new(move |e| {
                let _ = tx.send(f(e));
            })))
            .ok()?;
        rx.await.ok()
    }

    /// Queues a sync cycle unless one is already queued: a burst of file
    /// events makes one cycle, not one per event.
    pub fn request_cycle(&self) {
        if self.cycle_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let queued = self.cycle_queued.clone();
        let _ = self.jobs.send(Message::Job(Box::new(move |e| {
            queued.store(false, Ordering::Release);
            if e.auto_sync()
                && let Ok(report) = e.run_cycle()
                && let Err(err) = e.maintenance_if_due(report.captured)
            {
                tracing::warn!(db = %e.config.name, error = %err, "automatic snapshot or cleanup failed");
            }
        })));
    }

    /// Stops the thread after the jobs already queued.
    pub fn stop(self) {
        let _ = self.jobs.send(Message::Stop);
    }
}

fn refresh_snapshot(engine: &mut Engine, shared: &Mutex<Snapshot>) {
    let pending_local = engine.pending_local().1;
    let conflicts = engine.state().conflict_count().unwrap_or(0);
    let parked = engine.state().parked_count().unwrap_or(0);
    let auto_sync = engine.auto_sync();
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.name = engine.config.name.clone();
    s.path = engine.config.path.display().to_string();
    s.health = engine.health.clone();
    s.pending_local = pending_local;
    s.conflicts = conflicts;
    s.parked = parked;
    s.auto_sync = auto_sync;
    s.self_peer_id = engine.identity.peer_id.clone();
    if let Some((at, hbs)) = engine.take_heartbeats() {
        s.heartbeats = hbs;
        s.heartbeats_read_ms = at;
    }
}

//! The long-running daemon (DESIGN §6): one tokio process for all configured
//! databases.
//!
//! Each database has a [`worker::Worker`] thread that owns its engine. The
//! async side only decides *when* to sync: file events on the database and
//! its `-wal` (debounced), events and polling on the hub, the heartbeat
//! timer, requests on the control socket, and signals (SIGTERM/SIGINT: one
//! last cycle, then exit; SIGHUP: reload the configuration).

pub mod control;
pub mod handlers;
pub mod lock;
pub mod snapshot_handlers;
pub mod watch;
pub mod worker;

use crate::config::Config;
use crate::once::{self, RunError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{RwLock, watch as tokio_watch};
use tracing::{info, warn};
use worker::Worker;

/// The databases the daemon runs now, by name; replaced on reload.
pub struct Running {
    pub config: Config,
    pub workers: BTreeMap<String, Worker>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _watchers: Vec<watch::Watchers>,
}

impl Running {
    fn empty(config: Config) -> Running {
        Running { config, workers: BTreeMap::new(), tasks: Vec::new(), threads: Vec::new(), _watchers: Vec::new() }
    }
}

/// State shared with the control handlers.
pub struct Daemon {
    pub running: RwLock<Running>,
    pub config_path: PathBuf,
}

/// Runs the daemon until SIGTERM or SIGINT, on its own tokio runtime.
pub fn run_blocking(config_path: PathBuf, config: Config) -> Result<(), RunError> {
    let _lock = lock::StateLock::acquire(&config.state_dir())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("syncd-io")
        .build()
        .map_err(|e| RunError::failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(config_path, config))
}

async fn run(config_path: PathBuf, config: Config) -> Result<(), RunError> {
    // Before anything can be seen from outside (the socket): a SIGHUP or
    // SIGTERM that arrives early must not find the default action (exit).
    let signals = Signals::install();
    let socket_path = config.socket.clone().unwrap_or_else(control::default_socket_path);
    let socket = control::ControlSocket::bind(&socket_path).map_err(|e| RunError::usage(e.to_string()))?;
    let running = start(config).await?;
    let daemon = Arc::new(Daemon { running: RwLock::new(running), config_path });
    let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
    let server = tokio::spawn(socket.serve(Arc::new(handlers::Handler { daemon: daemon.clone() }), shutdown_rx));
    notify_ready();
    info!(socket = %socket_path.display(), "syncd is running");
    signals.wait(&daemon).await;
    info!("shutting down: one last sync of every database");
    let _ = shutdown_tx.send(true);
    let running = {
        let mut guard = daemon.running.write().await;
        let empty = Running::empty(guard.config.clone());
        std::mem::replace(&mut *guard, empty)
    };
    stop(running, true).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// Opens every database and starts its worker, watchers and timers.
async fn start(config: Config) -> Result<Running, RunError> {
    let opened = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || once::open_engines(&config))
            .await
            .map_err(|e| RunError::failed(e.to_string()))??
    };
    let (_identity, engines) = opened;
    let mut running = Running::empty(config.clone());
    for engine in engines {
        let db = engine.config.clone();
        let (worker, thread) = Worker::spawn(engine);
        // Sync at start.
        worker.request_cycle();
        running.tasks.push(tokio::spawn(timers(worker.clone(), config.hub.poll_secs, config.heartbeat_secs)));
        match watch::Watchers::start(&db, &config, worker.clone(), Duration::from_millis(config.debounce_ms)) {
            Ok(w) => running._watchers.push(w),
            Err(e) => warn!(db = %db.name, error = %e, "cannot watch files; relying on polling"),
        }
        running.workers.insert(db.name.clone(), worker);
        running.threads.push(thread);
    }
    Ok(running)
}

/// Stops timers and watchers, runs a last cycle when asked, and waits for
/// every worker to finish its current job.
async fn stop(running: Running, last_cycle: bool) {
    for t in &running.tasks {
        t.abort();
    }
    drop(running._watchers);
    for worker in running.workers.values() {
        if last_cycle {
            let _ = worker.run(|e| e.run_cycle().map(|_| ())).await;
        }
    }
    for (_, worker) in running.workers {
        worker.stop();
    }
    let threads = running.threads;
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// Polls the hub (network shares and cloud folders miss events; S3 has
/// none) and keeps the heartbeat fresh.
async fn timers(worker: Worker, poll_secs: u64, heartbeat_secs: u64) {
    let period = Duration::from_secs(poll_secs.min(heartbeat_secs).max(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        worker.request_cycle();
    }
}

/// Reloads the configuration: databases added, removed or changed are
/// started, stopped or restarted; the others keep running untouched.
pub async fn reload(daemon: &Daemon) -> Result<(), RunError> {
    let config = Config::load(&daemon.config_path).map_err(|e| RunError::usage(e.to_string()))?;
    let mut running = daemon.running.write().await;
    if config == running.config {
        info!("configuration unchanged");
        return Ok(());
    }
    let old = std::mem::replace(&mut *running, Running::empty(config.clone()));
    let previous = old.config.clone();
    stop(old, false).await;
    match start(config).await {
        Ok(new) => {
            info!(databases = new.workers.len(), "configuration reloaded");
            *running = new;
            Ok(())
        }
        Err(e) => {
            // The new configuration does not start (a database file that
            // is missing, say): keep syncing with the previous one.
            *running = start(previous).await?;
            Err(e)
        }
    }
}

/// The signals the daemon acts on, installed once at start.
struct Signals {
    #[cfg(unix)]
    streams: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let streams =
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
                (Ok(t), Ok(i), Ok(h)) => Some([t, i, h]),
                _ => {
                    warn!("cannot install signal handlers; stop syncd with SIGKILL");
                    None
                }
            };
        Signals { streams }
    }

    #[cfg(not(unix))]
    fn install() -> Signals {
        Signals {}
    }

    /// Returns on SIGTERM or SIGINT; reloads the configuration on SIGHUP.
    #[cfg(unix)]
    async fn wait(self, daemon: &Daemon) {
        let Some([mut term, mut int, mut hup]) = self.streams else {
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the configuration");
                    if let Err(e) = reload(daemon).await {
                        warn!(error = %e, "reload failed; keeping the previous configuration");
                    }
                }
            }
        }
    }

    #[cfg(not(unix))]
    async fn wait(self, _daemon: &Daemon) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(unix)]
fn notify_ready() {
    // Only under systemd (NOTIFY_SOCKET set); a no-op elsewhere.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

#[cfg(not(unix))]
fn notify_ready() {}

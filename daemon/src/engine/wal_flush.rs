//! Writes WAL files out to disk while they grow, on a thread of its own,
//! so that the fsync of each commit finds little left to write (the idea
//! of RocksDB's `wal_bytes_per_sync`).
//!
//! A commit's fsync waits for everything written to the file since the
//! last one. A catch-up commits the user's database and the state once per
//! batch: about 1.4 MB of each file per 20,000-row batch, a couple of
//! milliseconds that the applying thread sits idle, ten times per 100,000
//! rows. A capture that changes 1% of a large table's rows rewrites most
//! of the state's pages and commits them at once. Flushing the files every
//! few milliseconds meanwhile takes most of that off the working threads
//! (`cargo bench -p syncd --bench engine`: apply and capture each about 8%
//! faster). Only an optimization: a file that cannot be opened or flushed
//! is left to the commits, which make it durable as before.
//!
//! Linux only, where it was measured: Rust's `sync_data` is a full flush of
//! the drive's cache on macOS (`F_FULLFSYNC`), far dearer than the fsync
//! SQLite does there, and Windows refuses to flush a file opened for
//! reading only.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the files are flushed: short enough that a batch's commit
/// finds a few milliseconds of writes at most.
const EVERY: Duration = Duration::from_millis(3);

/// Flushes the WAL files of some databases until dropped.
pub(super) struct WalFlush {
    /// Dropped to stop the thread.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WalFlush {
    /// Starts flushing the WAL files (`<database>-wal`) of `databases`. A
    /// WAL that does not exist yet is looked for again at each round.
    pub(super) fn start(databases: &[&Path]) -> WalFlush {
        if !cfg!(target_os = "linux") {
            return WalFlush { stop: None, thread: None };
        }
        let mut wals: Vec<(PathBuf, Option<File>)> = databases.iter().map(|d| (wal_of(d), None)).collect();
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("syncd-wal-flush".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    for (path, file) in &mut wals {
                        if file.is_none() {
                            *file = File::open(&*path).ok();
                        }
                        if let Some(f) = file {
                            let _ = f.sync_data();
                        }
                    }
                }
            })
            .ok();
        WalFlush { stop: Some(stop), thread }
    }
}

impl Drop for WalFlush {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wal_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_named_after_its_database() {
        assert_eq!(wal_of(Path::new("/data/app.db")), Path::new("/data/app.db-wal"));
    }

    #[test]
    fn stopping_ends_the_thread_at_once_and_a_missing_wal_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let flush = WalFlush::start(&[&db, &dir.path().join("never.db")]);
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        std::thread::sleep(EVERY * 3);
        let started = std::time::Instant::now();
        drop(flush);
        assert!(started.elapsed() < Duration::from_millis(500), "the thread stops within a round");
        assert_eq!(conn.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 1);
    }
}

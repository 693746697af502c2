//! Copies the state's WAL into its file on a thread of its own, so that no
//! commit on the state waits for it: asked after each cycle that wrote to
//! the state, and every 200,000 rows a long catch-up applies.

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub struct Checkpointer {
    shared: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Progress {
    /// Checkpoints asked for, and how many of them are done: a request made
    /// while one is still waiting is covered by that one.
    asked: u64,
    done: u64,
    stop: bool,
}

impl Checkpointer {
    pub fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        let shared = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("syncd-checkpoint".into())
            .spawn(move || run(&conn, &worker))
            .expect("a thread starts");
        Ok(Checkpointer { shared, thread: Some(thread) })
    }

    /// Asks for a checkpoint of what the WAL holds now, without waiting.
    pub fn ask(&self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).asked += 1;
        wake.notify_all();
    }

    /// Waits until every checkpoint asked for is done.
    pub fn wait(&self) {
        let (lock, wake) = &*self.shared;
        let mut p = lock.lock().unwrap_or_else(|p| p.into_inner());
        while p.done < p.asked {
            p = wake.wait(p).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn run(conn: &Connection, shared: &(Mutex<Progress>, Condvar)) {
    let (lock, wake) = shared;
    loop {
        let target = {
            let mut p = lock.lock().unwrap_or_else(|p| p.into_inner());
            while p.done == p.asked && !p.stop {
                p = wake.wait(p).unwrap_or_else(|p| p.into_inner());
            }
            if p.stop {
                return;
            }
            p.asked
        };
        // PASSIVE never waits for readers or writers; what it cannot copy
        // now is left to the next one.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "copying the state's WAL into its file");
        }
        lock.lock().unwrap_or_else(|p| p.into_inner()).done = target;
        wake.notify_all();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

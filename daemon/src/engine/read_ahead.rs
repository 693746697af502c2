//! Reads a peer's batches one ahead of the one being applied, on a thread
//! of its own, and frees the applied ones on that same thread.
//!
//! Freeing a decoded batch takes milliseconds that the next batch need not
//! wait for. Doing it on the thread that reads the batches, rather than on
//! one started for each, lets the allocator hand a batch's memory straight
//! to the next: memory freed on another thread had to be handed back
//! across threads, and each new thread's batch was faulted in afresh.

use super::{Fetched, fetch_batch};
use crate::hub::{Hub, HubError};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

enum Request {
    Read { path: String, seq: u64 },
    Free(Box<dyn Send>),
}

type Read = (u64, Result<Fetched, HubError>);

pub(super) struct ReadAhead {
    /// `None` when the thread could not start: batches are then read, and
    /// freed, in turn.
    worker: Option<(Sender<Request>, Receiver<Read>)>,
    /// The batch asked for and not taken yet.
    asked: Option<u64>,
    hub: Arc<dyn Hub>,
    database: String,
    peer: String,
}

impl ReadAhead {
    pub(super) fn start(hub: Arc<dyn Hub>, database: &str, peer: &str) -> ReadAhead {
        let (requests, incoming) = channel::<Request>();
        let (outgoing, reads) = channel::<Read>();
        let (thread_hub, thread_database, thread_peer) = (hub.clone(), database.to_string(), peer.to_string());
        let started = std::thread::Builder::new().name("syncd-fetch".into()).spawn(move || {
            for request in incoming {
                match request {
                    Request::Read { path, seq } => {
                        let read = fetch_batch(&*thread_hub, &path, &thread_database, &thread_peer, seq);
                        if outgoing.send((seq, read)).is_err() {
                            return;
                        }
                    }
                    Request::Free(value) => drop(value),
                }
            }
        });
        ReadAhead {
            worker: started.ok().map(|_| (requests, reads)),
            asked: None,
            hub,
            database: database.to_string(),
            peer: peer.to_string(),
        }
    }

    /// Starts reading batch `seq` at `path`, unless one is being read.
    pub(super) fn ask(&mut self, path: String, seq: u64) {
        if self.asked.is_some() {
            return;
        }
        if let Some((requests, _)) = &self.worker
            && requests.send(Request::Read { path, seq }).is_ok()
        {
            self.asked = Some(seq);
        }
    }

    /// Batch `seq` at `path`: the one read ahead, or read now.
    pub(super) fn take(&mut self, path: &str, seq: u64) -> Result<Fetched, HubError> {
        if let (Some(asked), Some((_, reads))) = (self.asked.take(), &self.worker) {
            // A batch read ahead and not the one wanted (the listing
            // changed) is dropped here; it is read again in its turn.
            if let Ok((read, fetched)) = reads.recv()
                && read == asked
                && asked == seq
            {
                return fetched;
            }
        }
        fetch_batch(&*self.hub, path, &self.database, &self.peer, seq)
    }

    /// Frees `value` on the reading thread.
    pub(super) fn free<T: Send + 'static>(&self, value: T) {
        if let Some((requests, _)) = &self.worker {
            // Should the thread be gone, the value comes back and is
            // freed here.
            let _ = requests.send(Request::Free(Box::new(value)));
        }
    }
}

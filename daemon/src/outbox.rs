//! The outbox: captured change batches wait in the state until they are in
//! the hub, so a crash or an offline hub loses nothing.
//!
//! [`BatchWriter`] groups captured changes into batches, gives each its
//! sequence number and clock, wraps it in the container and stores it in the
//! state, inside the caller's state transaction. [`publish_pending`] later
//! copies them to the hub in order; it never changes a batch's bytes, so a
//! retry after a crash writes exactly what the first attempt wrote.

use crate::batch::{BODY_VERSION, BatchBody, RowChange, Seen, TableChanges};
use crate::container::{self, FileKind, Header};
use crate::hlc::Hlc;
use crate::hub::{Hub, HubError, names};
use crate::state::{Cursor, State};
use std::collections::BTreeMap;

/// Changes per batch: bounds the memory of capture and of a peer applying it.
pub const MAX_BATCH_CHANGES: usize = 20_000;

/// Who is publishing, for batch headers.
#[derive(Debug, Clone)]
pub struct Author {
    pub database: String,
    pub peer_id: String,
    pub peer_name: String,
}

/// Collects captured changes into batches stored in the outbox.
pub struct BatchWriter<'a> {
    author: &'a Author,
    seen: Vec<Seen>,
    current: Option<BatchBody>,
    next_seq: u64,
    /// Batches written so far, and changes in them.
    pub batches: u64,
    pub changes: u64,
}

impl<'a> BatchWriter<'a> {
    /// `cursors` is what this peer has applied of the others: the batches
    /// say so, which is how peers tell concurrent edits from later ones.
    pub fn new(author: &'a Author, state: &State, cursors: &BTreeMap<String, Cursor>) -> crate::state::Result<Self> {
        let last_seq: i64 = state.meta("last_seq")?.unwrap_or(0);
        let seen = cursors
            .iter()
            .filter(|(p, _)| **p != author.peer_id)
            .map(|(p, c)| Seen { peer_id: p.clone(), seq: c.seq, clock: c.clock })
            .collect();
        Ok(BatchWriter { author, seen, current: None, next_seq: last_seq as u64 + 1, batches: 0, changes: 0 })
    }

    /// The clock value of the batch the next change goes into; a new batch
    /// gets a new tick so that every batch's changes have their own version.
    pub fn clock(&mut self, hlc: &mut Hlc) -> u64 {
        if self.current.is_none() {
            self.current =
                Some(BatchBody { body_version: BODY_VERSION, clock: hlc.tick(), seen: Vec::new(), tables: Vec::new() });
        }
        self.current.as_ref().expect("just set").clock
    }

    /// Adds one change (whose version is [`BatchWriter::clock`]) to `table`.
    pub fn push(&mut self, state: &State, table: &TableChanges, change: RowChange) -> Result<(), WriteError> {
        let body = self.current.as_mut().expect("clock() opens the batch before push()");
        match body.tables.last_mut() {
            Some(t) if t.table == table.table && t.columns == table.columns => t.changes.push(change),
            _ => {
                let mut t = table.clone();
                t.changes = vec![change];
                body.tables.push(t);
            }
        }
        if body.change_count() >= MAX_BATCH_CHANGES {
            self.flush(state)?;
        }
        Ok(())
    }

    /// True when the next change would start a new batch (and a new clock).
    pub fn is_between_batches(&self) -> bool {
        self.current.is_none()
    }

    /// Stores the open batch in the outbox.
    pub fn flush(&mut self, state: &State) -> Result<(), WriteError> {
        let Some(mut body) = self.current.take() else { return Ok(()) };
        let seq = self.next_seq;
        let mut seen = self.seen.clone();
        seen.push(Seen { peer_id: self.author.peer_id.clone(), seq, clock: body.clock });
        body.seen = seen;
        let count = body.change_count() as u64;
        let bytes = syncd_proto::encode(&body);
        let header = Header {
            kind: FileKind::Batch,
            database: self.author.database.clone(),
            peer_id: self.author.peer_id.clone(),
            peer_name: self.author.peer_name.clone(),
            seq,
            created_ms: crate::hlc::wall_ms() as i64,
            body_len: 0,
            body_sha256: String::new(),
            meta: serde_json::Value::Null,
        };
        let file = container::encode(&header, &bytes, 3);
        state.push_outbox(seq, count, &file)?;
        state.set_meta("last_seq", seq as i64)?;
        self.next_seq += 1;
        self.batches += 1;
        self.changes += count;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("state database: {0}")]
    State(#[from] rusqlite::Error),
}

/// Where this peer's batches go in the hub.
pub fn changes_dir(database: &str, peer_id: &str) -> String {
    format!("{database}/{peer_id}/changes")
}

/// Copies every batch of the outbox to the hub, oldest first, removing each
/// from the outbox once it is there. Returns how many were published. On an
/// unreachable hub the rest stay queued for the next cycle.
pub fn publish_pending(state: &State, hub: &dyn Hub, author: &Author) -> Result<u64, PublishError> {
    let mut published = 0;
    while let Some((seq, file)) = state.first_outbox()? {
        let path = format!("{}/{}", changes_dir(&author.database, &author.peer_id), names::batch_name(seq));
        match hub.put_new(&path, &file) {
            Ok(()) => {}
            Err(HubError::AlreadyExists(_)) => {
                // A crash after the upload but before the outbox was
                // trimmed: the same bytes are already there. Different bytes
                // mean another machine publishes under our peer id.
                let existing = hub.get(&path)?;
                if existing != file {
                    return Err(PublishError::DuplicatePeer { path });
                }
            }
            Err(e) => return Err(e.into()),
        }
        state.remove_outbox(seq)?;
        published += 1;
        tracing::debug!(seq, "published change batch");
    }
    Ok(published)
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("state database: {0}")]
    State(#[from] rusqlite::Error),
    #[error(
        "{path} already exists with other content: another machine uses this peer id (a copied state \
         directory?). Stop syncd on one of them, delete its state directory's peer_id file and start it again"
    )]
    DuplicatePeer { path: String },
}

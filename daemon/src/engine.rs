//! The sync cycle of one database: capture, publish, merge, heartbeat
//! (DESIGN §4), always in that order.
//!
//! An [`Engine`] owns the connections of one database (the user's file and
//! its state) and is driven by one thread at a time: `syncd once` calls
//! [`Engine::run_cycle`] directly, the daemon from the database's worker.
//! Nothing here is async; the hub is a blocking interface.

use crate::apply::{self, Applier, ApplyError, ApplyStats, Origin, ParkedChange};
use crate::batch::BatchBody;
use crate::capture::{self, CaptureError};
use crate::config::{Config, DatabaseConfig, Policy};
use crate::constraints::Constraints;
use crate::container::{self, Expect, FileKind};
use crate::heartbeat::{self, Heartbeat};
use crate::hlc::{self, Hlc};
use crate::hub::names::{self, NameKind};
use crate::hub::{Hub, HubError};
use crate::identity::{self, Identity};
use crate::outbox::{self, Author, BatchWriter, PublishError};
use crate::schema::{self, Exclusions, Table};
use crate::state::{Checkpointer, Cursor, State};
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, info, info_span, warn};

mod backup;
mod conflicts;
mod join;
mod read_ahead;
mod wal_flush;
pub use backup::CleanupOutcome;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("database {name}: {path}: {reason}")]
    Open { name: String, path: PathBuf, reason: String },
    #[error("state database: {0}")]
    State(#[from] rusqlite::Error),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("{0}")]
    Snapshot(String),
}

/// What one cycle did.
#[derive(Debug, Default, Clone)]
pub struct CycleReport {
    pub captured: u64,
    pub published: u64,
    pub applied: ApplyStats,
    /// Files skipped this cycle, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Batches in the hub not applied yet (waiting for a missing or damaged
    /// earlier batch).
    pub pending_remote: u64,
}

/// Clock differences below this are normal (file-sync delays, rounding).
const CLOCK_SKEW_WARN_MS: i64 = 60_000;

/// Rows a catch-up applies between two checkpoints of the state: its WAL
/// then stays within some tens of megabytes.
const CHECKPOINT_EVERY_ROWS: u64 = 200_000;

/// The page cache (`PRAGMA cache_size`, negative: KiB) of the connections
/// that write a chunk: syncd's to the user's database and the recorder's to
/// the state. Small, so that the pages a chunk fills go out to the WAL as
/// the chunk is written, while the other thread works, instead of all at
/// its commit, which the other waits for: about 9% off applying a catch-up
/// (`cargo bench -p syncd --bench engine apply`). Appends leave a page
/// once full, so few are written twice.
const WRITING_CACHE_KIB: i64 = -256;

/// The live sync state of one database, what `syncctl status` shows.
#[derive(Debug, Default, Clone)]
pub struct Health {
    pub last_sync_ms: Option<i64>,
    pub last_error: Option<String>,
    pub hub_unreachable_since_ms: Option<i64>,
    pub hub_error: Option<String>,
    pub pending_remote: u64,
    /// Every file currently skipped, with its reason; reported once in the log.
    pub skipped: BTreeMap<String, String>,
}

/// A change batch read from the hub, or why it cannot be applied.
enum Fetched {
    /// Gone since it was listed.
    Missing,
    /// Damaged or unreadable: skipped, and reported with this reason.
    Unusable(String),
    Batch {
        header: Box<container::Header>,
        /// The file as read: what the state keeps while it is applied.
        file: Vec<u8>,
        body: BatchBody,
    },
}

fn fetch_batch(hub: &dyn Hub, path: &str, database: &str, peer: &str, seq: u64) -> Result<Fetched, HubError> {
    let bytes = match hub.get(path) {
        Ok(b) => b,
        Err(HubError::NotFound(_)) => return Ok(Fetched::Missing),
        Err(e) => return Err(e),
    };
    let expect = Expect { kind: FileKind::Batch, database, peer_id: Some(peer), seq: Some(seq) };
    // The body is decoded while its hash is checked; a body that fails the
    // check is never used.
    let (header, body) = match container::decode_with(&bytes, &expect, BatchBody::decode) {
        Ok(x) => x,
        Err(e) => return Ok(Fetched::Unusable(e.to_string())),
    };
    Ok(match body {
        Ok(body) => Fetched::Batch { header: Box::new(header), file: bytes, body },
        Err(e) => Fetched::Unusable(e.to_string()),
    })
}

/// Opens the state with its checkpointer. Commits on the state never copy
/// its WAL into the file themselves: the checkpointer does, after each
/// cycle and during a long catch-up, while the engine goes on. A capture that
/// changed 1% of a million rows otherwise spent a sixth of its time
/// copying the pages it had just written.
fn open_state(path: &std::path::Path) -> Result<(State, Checkpointer), EngineError> {
    let state = State::open(path)?;
    state.leave_checkpoints_to_a_checkpointer()?;
    Ok((state, Checkpointer::start(path)?))
}

/// One synced database on this peer.
pub struct Engine {
    pub config: DatabaseConfig,
    pub identity: Identity,
    hub: Arc<dyn Hub>,
    user: Connection,
    state: State,
    /// A second connection to the state, opened at the first apply: apply
    /// records through it while writing the user's database.
    recorder: Option<State>,
    /// Copies the state's WAL into its file, on a thread of its own: no
    /// commit on the state waits for that (see [`open_state`]).
    checkpointer: Checkpointer,
    /// The state connection's row changes when the checkpointer was last
    /// asked after a cycle.
    state_writes_checkpointed: u64,
    state_path: PathBuf,
    hlc: Hlc,
    exclusions: Exclusions,
    author: Author,
    /// `PRAGMA data_version` at the last capture: unchanged means no other
    /// connection committed, so capture can be skipped for free.
    data_version: Option<i64>,
    schema_version: Option<i64>,
    /// The application's constraints, and the `PRAGMA schema_version` they
    /// were read at: read again only when the schema changes.
    constraints: Option<(i64, Constraints)>,
    peer_names: HashMap<String, String>,
    cycles: u64,
    instance: String,
    heartbeat_every_ms: i64,
    last_heartbeat: Option<(i64, BTreeMap<String, u64>)>,
    fresh_heartbeats: Option<(i64, Vec<Heartbeat>)>,
    /// The last batch each peer says it published (from heartbeats): an
    /// empty listing after our cursor with a higher last batch means the
    /// batches we need were cleaned up.
    peer_last_seq: Option<HashMap<String, u64>>,
    /// `syncctl sync --prefer local`: on joining, local rows win clashes.
    pub prefer_local_on_join: bool,
    pub health: Health,
}

impl Engine {
    pub fn open(
        config: &Config,
        db: &DatabaseConfig,
        identity: &Identity,
        hub: Arc<dyn Hub>,
    ) -> Result<Engine, EngineError> {
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|e| EngineError::Open {
            name: db.name.clone(),
            path: state_dir.clone(),
            reason: format!("cannot create the state directory: {e}"),
        })?;
        let state_path = state_dir.join(format!("{}.state.sqlite", db.name));
        Engine::open_at(db, identity, hub, state_path, config.heartbeat_secs as i64 * 1000)
    }

    /// Opens with an explicit state file (a rebuild uses a temporary one).
    fn open_at(
        db: &DatabaseConfig,
        identity: &Identity,
        hub: Arc<dyn Hub>,
        state_path: PathBuf,
        heartbeat_every_ms: i64,
    ) -> Result<Engine, EngineError> {
        let open_err = |reason: String| EngineError::Open { name: db.name.clone(), path: db.path.clone(), reason };
        if !db.path.exists() {
            return Err(open_err(
                "the database file does not exist: check `path` in the configuration (syncd syncs an existing SQLite file)".into(),
            ));
        }
        let user =
            Connection::open_with_flags(&db.path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| open_err(e.to_string()))?;
        user.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| open_err(e.to_string()))?;
        user.pragma_update(None, "cache_size", WRITING_CACHE_KIB).map_err(|e| open_err(e.to_string()))?;
        user.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| open_err(format!("not a readable SQLite database ({e})")))?;
        let (mut state, checkpointer) = open_state(&state_path)?;
        state.peer_index(&identity.peer_id)?;
        let hlc = Hlc::new(state.meta::<i64>("hlc")?.unwrap_or(0) as u64);
        let mut peer_names = HashMap::new();
        peer_names.insert(identity.peer_id.clone(), identity.name.clone());
        Ok(Engine {
            author: Author {
                database: db.name.clone(),
                peer_id: identity.peer_id.clone(),
                peer_name: identity.name.clone(),
            },
            exclusions: Exclusions::new(&db.exclude_tables, &db.exclude_columns),
            config: db.clone(),
            identity: identity.clone(),
            hub,
            user,
            state,
            recorder: None,
            checkpointer,
            state_writes_checkpointed: 0,
            state_path,
            hlc,
            data_version: None,
            schema_version: None,
            constraints: None,
            peer_names,
            cycles: 0,
            heartbeat_every_ms,
            last_heartbeat: None,
            fresh_heartbeats: None,
            prefer_local_on_join: false,
            peer_last_seq: None,
            instance: rand::random::<[u8; 8]>().iter().map(|b| format!("{b:02x}")).collect(),
            health: Health::default(),
        })
    }

    /// Waits until the state's WAL is copied into its file: for a benchmark
    /// that times something else next.
    pub fn wait_for_checkpoint(&self) {
        self.checkpointer.ask();
        self.checkpointer.wait();
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn hub(&self) -> &Arc<dyn Hub> {
        &self.hub
    }

    /// One full cycle: capture, publish, merge every peer, heartbeat.
    pub fn run_cycle(&mut self) -> Result<CycleReport, EngineError> {
        self.cycles += 1;
        let span = info_span!("cycle", db = %self.config.name, cycle = self.cycles);
        let _guard = span.enter();
        let result = self.cycle_inner();
        // Only a cycle that wrote to the state has anything to copy: an idle
        // daemon's cycles wake nothing.
        let written = self.state.connection().total_changes();
        if written != self.state_writes_checkpointed {
            self.state_writes_checkpointed = written;
            self.checkpointer.ask();
        }
        match &result {
            Ok(r) => {
                self.health.last_sync_ms = Some(hlc::wall_ms() as i64);
                self.health.last_error = None;
                self.health.pending_remote = r.pending_remote;
                if r.captured + r.published + r.applied.applied + r.applied.parked > 0 {
                    info!(
                        captured = r.captured,
                        published = r.published,
                        applied = r.applied.applied,
                        conflicts = r.applied.conflicts,
                        parked = r.applied.parked,
                        "sync cycle"
                    );
                }
            }
            Err(e) => {
                self.health.last_error = Some(e.to_string());
                warn!(error = %e, "sync cycle failed");
            }
        }
        result
    }

    fn cycle_inner(&mut self) -> Result<CycleReport, EngineError> {
        let mut report = CycleReport::default();
        let tables = self.discover()?;
        self.recover(&tables)?;
        // A new peer starts from a snapshot before its own rows are
        // captured, so the hub wins clashes (DESIGN §5).
        match self.join_if_needed(None) {
            Ok(_) => {}
            Err(EngineError::Hub(e)) if e.is_transient() => self.hub_down(&e),
            Err(e) => return Err(e),
        }
        report.captured = self.capture(&tables)?;
        match self.publish().and_then(|n| {
            report.published = n;
            self.merge_all(&tables, &mut report)
        }) {
            Ok(()) => self.hub_ok(),
            Err(EngineError::Hub(e)) if e.is_transient() => {
                self.hub_down(&e);
                return Ok(report);
            }
            Err(EngineError::Publish(PublishError::Hub(e))) if e.is_transient() => {
                self.hub_down(&e);
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
        self.retry_parked(&tables, &mut report)?;
        if report.applied.needs_capture {
            // Rows that won against a remote delete go out whole right away.
            self.data_version = None;
            report.captured += self.capture(&tables)?;
            match self.publish() {
                Ok(n) => report.published += n,
                Err(EngineError::Publish(PublishError::Hub(e))) if e.is_transient() => self.hub_down(&e),
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = self.heartbeat_if_due() {
            if e.is_transient() {
                self.hub_down(&e);
            } else {
                return Err(e.into());
            }
        }
        Ok(report)
    }

    fn hub_ok(&mut self) {
        if self.health.hub_unreachable_since_ms.take().is_some() {
            info!(hub = %self.hub.url(), "hub reachable again");
        }
        self.health.hub_error = None;
    }

    fn hub_down(&mut self, e: &HubError) {
        if self.health.hub_unreachable_since_ms.is_none() {
            warn!(error = %e, "hub unreachable; changes stay in the outbox until it returns");
            self.health.hub_unreachable_since_ms = Some(hlc::wall_ms() as i64);
        }
        self.health.hub_error = Some(e.to_string());
    }

    fn discover(&mut self) -> Result<BTreeMap<String, Table>, EngineError> {
        let tables = schema::discover(&self.user, &self.exclusions)?;
        Ok(tables.into_iter().map(|t| (t.name.clone(), t)).collect())
    }

    fn applier<'a>(
        &'a mut self,
        tables: &'a BTreeMap<String, Table>,
        policy_for: &'a dyn Fn(&str) -> Policy,
    ) -> Result<Applier<'a>, EngineError> {
        let self_peer = self.state.peer_index(&self.identity.peer_id).unwrap_or(0);
        let schema_version = schema::fingerprint(&self.user)?;
        if self.constraints.as_ref().is_none_or(|(v, _)| *v != schema_version) {
            self.constraints = Some((schema_version, Constraints::read(&self.user, &self.config.references())?));
        }
        let constraints = &self.constraints.as_ref().expect("just read").1;
        if self.recorder.is_none() {
            let recorder = State::open(&self.state_path)?;
            // Only applied changes are recorded through it: a commit lost
            // to a power cut is redone from the batch.
            recorder.set_durable(false)?;
            recorder.leave_checkpoints_to_a_checkpointer()?;
            recorder.connection().pragma_update(None, "cache_size", WRITING_CACHE_KIB)?;
            self.recorder = Some(recorder);
        }
        Ok(Applier {
            user: &self.user,
            state: &mut self.state,
            tables,
            policy_for,
            peer_names: &self.peer_names,
            self_peer,
            last_sql: Default::default(),
            fresh_statements: Default::default(),
            constraints,
            recorder: std::cell::RefCell::new(self.recorder.as_mut().expect("just opened")),
            changed_later: Default::default(),
            set_aside: Default::default(),
            ring_unbroken: Default::default(),
            parked_in_chunk: Default::default(),
        })
    }

    fn recover(&mut self, tables: &BTreeMap<String, Table>) -> Result<(), EngineError> {
        let Some(inflight) = self.state.inflight()? else { return Ok(()) };
        let name = self.peer_names.get(&inflight.peer_id).cloned().unwrap_or_default();
        let config = self.config.clone();
        let policy_for = |t: &str| config.policy_for(t);
        let mut ap = self.applier(tables, &policy_for)?;
        apply::recover_inflight(&mut ap, &config.name, &name)?;
        Ok(())
    }

    /// Captures local changes into the outbox; returns how many.
    fn capture(&mut self, tables: &BTreeMap<String, Table>) -> Result<u64, EngineError> {
        let data_version: i64 = self.user.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.data_version == Some(data_version) {
            return Ok(0);
        }
        let tables: Vec<Table> = tables.values().cloned().collect();
        let reader = State::open_reader(&self.state_path)?;
        let cursors = self.state.cursors()?;
        let self_peer = self.state.peer_index(&self.identity.peer_id)?;
        let config = self.config.clone();
        let policy_for = move |t: &str| config.policy_for(t);
        self.user.execute_batch("BEGIN")?;
        // Changing 1% of a large table's rows rewrites most of the state's
        // pages: its commit finds them mostly on disk.
        let _flush = wal_flush::WalFlush::start(&[&self.state_path]);
        let author = self.author.clone();
        let hlc_before = self.hlc.clone();
        let result = self.state.transaction(|state| -> Result<u64, CaptureError> {
            let mut writer = BatchWriter::new(&author, state, &cursors)?;
            let stats = capture::capture_tables(
                &self.user,
                state,
                reader,
                &tables,
                &policy_for,
                self_peer,
                &mut self.hlc,
                &mut writer,
            )?;
            writer.flush(state)?;
            state.set_meta("hlc", self.hlc.last() as i64)?;
            Ok(stats.total())
        });
        let _ = self.user.execute_batch("COMMIT");
        match result {
            Ok(n) => {
                self.data_version = Some(data_version);
                if n > 0 {
                    debug!(changes = n, "captured");
                }
                Ok(n)
            }
            Err(e) => {
                self.hlc = hlc_before;
                Err(e.into())
            }
        }
    }

    fn publish(&mut self) -> Result<u64, EngineError> {
        Ok(outbox::publish_pending(&self.state, self.hub.as_ref(), &self.author)?)
    }

    /// The other peers' folders in the hub.
    fn peer_folders(&mut self, report: &mut CycleReport) -> Result<Vec<String>, EngineError> {
        let mut peers = Vec::new();
        for dir in self.hub.list_dirs(&self.config.name)? {
            if dir == self.identity.peer_id {
                continue;
            }
            if identity::is_peer_id(&dir) {
                peers.push(dir);
            } else {
                self.skip(
                    report,
                    format!("{}/{dir}", self.config.name),
                    "not a peer folder (expected a 32-hex-digit peer id)".into(),
                );
            }
        }
        Ok(peers)
    }

    fn merge_all(&mut self, tables: &BTreeMap<String, Table>, report: &mut CycleReport) -> Result<(), EngineError> {
        if self.peer_last_seq.is_none() {
            self.read_heartbeats()?;
        }
        let mut still_skipped = std::collections::BTreeSet::new();
        self.merge_peers(tables, report, &mut still_skipped)?;
        // Files that are no longer a problem (repaired, removed) are
        // reported again if they ever break again.
        let db = self.config.name.clone();
        self.health.skipped.retain(|path, _| {
            !path.starts_with(&format!("{db}/")) || still_skipped.contains(path) || !path.contains("/changes/")
        });
        Ok(())
    }

    fn merge_peers(
        &mut self,
        tables: &BTreeMap<String, Table>,
        report: &mut CycleReport,
        still_skipped: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), EngineError> {
        let mut rejoined = false;
        loop {
            let cursors = self.state.cursors()?;
            let mut behind = None;
            for peer in self.peer_folders(report)? {
                let cursor = cursors.get(&peer).copied().unwrap_or_default();
                if let Some(missing) = self.merge_peer(&peer, cursor, tables, report, still_skipped)? {
                    behind.get_or_insert((peer, missing));
                }
            }
            // A batch this peer needs was cleaned up: start again from a
            // snapshot that covers it (once per cycle).
            match behind {
                Some((peer, missing)) if !rejoined => {
                    rejoined = true;
                    if !self.join_if_needed(Some((&peer, missing)))? {
                        return Ok(());
                    }
                    still_skipped.clear();
                }
                _ => return Ok(()),
            }
        }
    }

    fn merge_peer(
        &mut self,
        peer: &str,
        cursor: Cursor,
        tables: &BTreeMap<String, Table>,
        report: &mut CycleReport,
        still_skipped: &mut std::collections::BTreeSet<String>,
    ) -> Result<Option<u64>, EngineError> {
        let dir = outbox::changes_dir(&self.config.name, peer);
        let mut gap = None;
        let after = (cursor.seq > 0).then(|| names::batch_name(cursor.seq));
        let entries = self.hub.list(&dir, after.as_deref())?;
        let announced = self.peer_last_seq.as_ref().and_then(|m| m.get(peer)).copied().unwrap_or(0);
        if entries.is_empty() && announced > cursor.seq {
            return Ok(Some(cursor.seq + 1));
        }
        let mut expected = cursor.seq + 1;
        let mut blocked = false;
        // The next batch is read and decoded while this one applies.
        let mut reader = read_ahead::ReadAhead::start(self.hub.clone(), &self.config.name, peer);
        // The commits of the catch-up find their WALs mostly on disk.
        let _flush = (!entries.is_empty()).then(|| wal_flush::WalFlush::start(&[&self.config.path, &self.state_path]));
        let mut unchecked_rows = 0;
        let mut entries = entries.into_iter().peekable();
        while let Some(entry) = entries.next() {
            let path = format!("{dir}/{}", entry.name);
            let seq = match names::classify(&entry.name) {
                NameKind::Batch(seq) => seq,
                NameKind::Temporary => continue,
                NameKind::CloudConflictCopy(why) => {
                    still_skipped.insert(path.clone());
                    self.skip(report, path, format!("a copy made by a file-sync client ({why}); delete it"));
                    continue;
                }
                _ => {
                    still_skipped.insert(path.clone());
                    self.skip(report, path, "not a change batch name".into());
                    continue;
                }
            };
            if blocked {
                report.pending_remote += 1;
                continue;
            }
            if seq != expected {
                // Batch `expected` has not arrived yet (file-sync services
                // deliver out of order) or was cleaned up: wait for it.
                if expected == cursor.seq + 1 {
                    gap = Some(expected);
                }
                blocked = true;
                report.pending_remote += 1;
                let missing = format!("{dir}/{}", names::batch_name(expected));
                still_skipped.insert(missing.clone());
                self.skip(report, missing, format!("missing; batch {seq} waits for it"));
                continue;
            }
            let fetched = reader.take(&path, seq)?;
            let (header, file, body) = match fetched {
                Fetched::Missing => {
                    blocked = true;
                    continue;
                }
                Fetched::Unusable(why) => {
                    blocked = true;
                    report.pending_remote += 1;
                    still_skipped.insert(path.clone());
                    self.skip(report, path, why);
                    continue;
                }
                Fetched::Batch { header, file, body } => (header, file, body),
            };
            if let Some(next) = entries.peek()
                && names::classify(&next.name) == NameKind::Batch(seq + 1)
            {
                reader.ask(format!("{dir}/{}", next.name), seq + 1);
            }
            self.peer_names.insert(peer.to_string(), header.peer_name.clone());
            let span = info_span!("apply", peer = %header.peer_name, seq);
            let _g = span.enter();
            let config = self.config.clone();
            let policy_for = move |t: &str| config.policy_for(t);
            self.hlc.observe(body.clock);
            let origin = Origin::Batch { seq, hlc: self.hlc.last() };
            // The batch goes in without a sync: the first chunk's progress,
            // committed durably before the user's database is written
            // (`apply_batch`), syncs both. Durable again afterwards, however
            // the apply ends: the outbox must be.
            self.state.set_durable(false)?;
            let stats =
                self.state.transaction(|s| s.begin_inflight(peer, seq, &file)).map_err(EngineError::from).and_then(
                    |()| {
                        let mut ap = self.applier(tables, &policy_for)?;
                        Ok(ap.apply_batch(peer, &header.peer_name, &body, origin, 0)?)
                    },
                );
            self.state.set_durable(true)?;
            let stats = stats?;
            // A long catch-up is copied into the file as it goes; a short
            // one once, after the cycle, which copies each page once.
            unchecked_rows += stats.applied;
            if unchecked_rows >= CHECKPOINT_EVERY_ROWS {
                self.checkpointer.ask();
                unchecked_rows = 0;
            }
            report.applied += stats;
            expected += 1;
            reader.free((body, file));
        }
        Ok(gap)
    }

    /// Reports a hub file that cannot be used (once in the log).
    fn skip_file(&mut self, path: String, reason: String) {
        if self.health.skipped.get(&path) != Some(&reason) {
            warn!(file = %path, %reason, "skipping hub file");
            self.health.skipped.insert(path, reason);
        }
    }

    fn skip(&mut self, report: &mut CycleReport, path: String, reason: String) {
        if self.health.skipped.get(&path) != Some(&reason) {
            warn!(file = %path, %reason, "skipping hub file");
            self.health.skipped.insert(path.clone(), reason.clone());
        }
        report.skipped.push((path, reason));
    }

    /// Retries parked changes: those waiting for a row or a capture every
    /// cycle, the others when the local schema changed.
    fn retry_parked(&mut self, tables: &BTreeMap<String, Table>, report: &mut CycleReport) -> Result<(), EngineError> {
        let schema_version = schema::fingerprint(&self.user)?;
        let schema_changed = self.schema_version.is_some_and(|v| v != schema_version);
        self.schema_version = Some(schema_version);
        let parked = self.state.parked()?;
        if parked.is_empty() {
            return Ok(());
        }
        let config = self.config.clone();
        let policy_for = move |t: &str| config.policy_for(t);
        for p in parked {
            let change: ParkedChange = match syncd_proto::decode(&p.change) {
                Ok(c) => c,
                Err(e) => {
                    warn!(id = p.id, error = %e, "a parked change does not decode; it stays parked");
                    continue;
                }
            };
            if !(change.retried_every_cycle || schema_changed) {
                continue;
            }
            let body = BatchBody {
                body_version: crate::batch::BODY_VERSION,
                clock: change.clock,
                seen: change.seen.clone(),
                tables: vec![change.table.clone()],
            };
            let mut ap = self.applier(tables, &policy_for)?;
            let stats =
                ap.apply_batch(&change.author_id, &change.author_name, &body, Origin::Parked { id: p.id }, 0)?;
            // A change parked again is not progress.
            report.applied.applied += stats.applied;
            report.applied.conflicts += stats.conflicts;
            report.applied.moved += stats.moved;
            report.applied.needs_capture |= stats.needs_capture;
        }
        Ok(())
    }

    /// Writes the heartbeat when the timer is due or the cursors moved, and
    /// then reads the other peers' heartbeats too.
    fn heartbeat_if_due(&mut self) -> Result<(), HubError> {
        let mut cursors: BTreeMap<String, u64> =
            self.state.cursors().unwrap_or_default().into_iter().map(|(p, c)| (p, c.seq)).collect();
        // Our own last batch counts too: peers use it to notice a gap.
        cursors.insert(String::new(), self.state.meta::<i64>("last_seq").ok().flatten().unwrap_or(0) as u64);
        let now = hlc::wall_ms() as i64;
        let due = match &self.last_heartbeat {
            None => true,
            Some((at, seen)) => now - at >= self.heartbeat_every_ms || *seen != cursors,
        };
        if due {
            self.write_heartbeat()?;
            self.read_heartbeats()?;
        }
        Ok(())
    }

    /// Reads every peer's heartbeat (this one's included) from the hub.
    pub fn read_heartbeats(&mut self) -> Result<Vec<Heartbeat>, HubError> {
        let mut all = Vec::new();
        for dir in self.hub.list_dirs(&self.config.name)? {
            if !identity::is_peer_id(&dir) {
                continue;
            }
            if let Some(mut hb) = heartbeat::read(self.hub.as_ref(), &self.config.name, &dir)?
                && hb.peer_id == dir
            {
                // The hub's own time for the file (the local filesystem, or
                // the S3 server) against the time the peer wrote in it.
                let stamped = self
                    .hub
                    .list(&format!("{}/{dir}", self.config.name), None)?
                    .into_iter()
                    .find(|e| e.name == heartbeat::FILE_NAME)
                    .and_then(|e| e.modified)
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64);
                hb.clock_skew_ms = stamped.map(|t| hb.time_ms - t).filter(|s| s.abs() > CLOCK_SKEW_WARN_MS);
                self.peer_names.insert(hb.peer_id.clone(), hb.name.clone());
                all.push(hb);
            }
        }
        self.peer_last_seq = Some(all.iter().map(|h| (h.peer_id.clone(), h.last_seq)).collect());
        self.fresh_heartbeats = Some((hlc::wall_ms() as i64, all.clone()));
        Ok(all)
    }

    /// Names of the peers met so far, by peer id.
    pub fn peer_names(&self) -> HashMap<String, String> {
        self.peer_names.clone()
    }

    /// Heartbeats read since the last call, for the daemon's status cache.
    pub fn take_heartbeats(&mut self) -> Option<(i64, Vec<Heartbeat>)> {
        self.fresh_heartbeats.take()
    }

    /// False after `syncctl disable`: the daemon stops syncing this database
    /// on its own (kept in the state, so it survives a restart).
    pub fn auto_sync(&self) -> bool {
        self.state.meta::<bool>("auto_sync").ok().flatten().unwrap_or(self.config.auto_sync)
    }

    pub fn set_auto_sync(&mut self, on: bool) -> Result<(), EngineError> {
        Ok(self.state.set_meta("auto_sync", on)?)
    }

    /// Writes this peer's `peer.json` with its current cursors.
    pub fn write_heartbeat(&mut self) -> Result<(), HubError> {
        let cursors = self.state.cursors().unwrap_or_default();
        let now = hlc::wall_ms() as i64;
        let mut seen: BTreeMap<String, u64> = cursors.iter().map(|(p, c)| (p.clone(), c.seq)).collect();
        seen.insert(String::new(), self.state.meta::<i64>("last_seq").ok().flatten().unwrap_or(0) as u64);
        self.last_heartbeat = Some((now, seen));
        let hb = Heartbeat {
            peer_id: self.identity.peer_id.clone(),
            name: self.identity.name.clone(),
            host: self.identity.host.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            time: heartbeat::rfc3339(now),
            time_ms: now,
            database: self.config.name.clone(),
            last_seq: self.state.meta::<i64>("last_seq").ok().flatten().unwrap_or(0) as u64,
            cursors: cursors.into_iter().map(|(p, c)| (p, c.seq)).collect(),
            instance: self.instance.clone(),
            clock_skew_ms: None,
        };
        heartbeat::write(self.hub.as_ref(), &hb)
    }

    /// (batches, changes) captured here and not yet in the hub.
    pub fn pending_local(&self) -> (u64, u64) {
        self.state.outbox_size().unwrap_or((0, 0))
    }
}

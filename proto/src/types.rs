//! Request and response types.
//!
//! Two contracts hold here. The bincode form is the wire format: changing a
//! type (adding a field or a variant included) needs a new
//! [`PROTOCOL_VERSION`]. The JSON form is what `syncctl … --json` prints:
//! field names and enum spellings change only with care. Only serde
//! attributes that bincode can decode are allowed (no `flatten`, no
//! `untagged`, no `skip_serializing_if`). Times are RFC 3339 UTC strings so
//! that this crate needs no time library.

use crate::{PROTOCOL_VERSION, VERSION};
use serde::{Deserialize, Serialize};

/// What `syncctl` sends: who it is, the protocol it speaks, one request.
/// The first two fields are the [`crate::MessageHeader`] of every protocol
/// version: they never move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMessage {
    pub protocol: u32,
    pub client_version: String,
    pub request: Request,
}

impl ClientMessage {
    /// A request in this build's protocol.
    pub fn new(request: Request) -> ClientMessage {
        ClientMessage { protocol: PROTOCOL_VERSION, client_version: VERSION.into(), request }
    }
}

/// What the daemon answers. The first two fields are the
/// [`crate::MessageHeader`] of every protocol version: they never move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub protocol: u32,
    pub daemon_version: String,
    pub response: Response,
}

impl ServerMessage {
    /// An answer in this build's protocol.
    pub fn new(response: Response) -> ServerMessage {
        ServerMessage { protocol: PROTOCOL_VERSION, daemon_version: VERSION.into(), response }
    }
}

/// One thing `syncctl` asks. `database: None` means every configured
/// database; `yes` confirms a destructive request while other peers are
/// active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The state of every database, the hub and the peers.
    Status,
    /// Run a sync cycle now. `prefer_local`: on conflicts while joining,
    /// keep the local rows instead of the hub's.
    Sync { database: Option<String>, yes: bool, prefer_local: bool },
    /// The peers seen through their heartbeats.
    Peers,
    /// The conflict log.
    Conflicts { database: Option<String> },
    /// Bring back the losing version of conflict `id` as a new local change.
    ConflictRestore { database: Option<String>, id: i64 },
    /// Resume automatic sync; kept across restarts.
    Enable { database: Option<String> },
    /// Stop automatic sync; kept across restarts.
    Disable { database: Option<String> },
    /// Take a snapshot now.
    Backup { database: Option<String> },
    /// The snapshots in the hub.
    List { database: Option<String> },
    /// Replace the local database with a snapshot ([`SnapshotInfo::id`]),
    /// or with the state at time `at` (RFC 3339).
    Restore { snapshot: String, at: Option<String>, yes: bool },
    /// Make the local database equal to the hub's merged state.
    Pull { database: Option<String>, force: bool, yes: bool },
    /// Make every peer equal to the local database.
    Push { database: Option<String>, force: bool, yes: bool },
    /// Apply the retention rules now; `dry_run` only reports.
    Cleanup { database: Option<String>, dry_run: bool },
}

/// The daemon's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answers [`Request::Status`].
    Status(StatusReport),
    /// Answers [`Request::Sync`]: one report per database.
    Synced(Vec<SyncReport>),
    /// Answers [`Request::Peers`].
    Peers(Vec<PeerInfo>),
    /// Answers [`Request::Conflicts`].
    Conflicts(Vec<ConflictInfo>),
    /// Answers [`Request::List`], newest first.
    Snapshots(Vec<SnapshotInfo>),
    /// Answers [`Request::Cleanup`]: one report per database.
    Cleanup(Vec<CleanupReport>),
    /// A request that has nothing to report but that it was done.
    Done { message: String },
    /// A destructive request while other peers are active: nothing was
    /// done; resend it with `yes` to go ahead.
    NeedsConfirmation { message: String, active_peers: Vec<String> },
    /// The request failed; `message` says what to do.
    Error { kind: ErrorKind, message: String },
}

impl Response {
    /// An error answer.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error { kind, message: message.into() }
    }

    /// The answer to a request in protocol `client_protocol` from
    /// `syncctl` version `client_version`, when that is not ours.
    pub fn version_mismatch(client_protocol: u32, client_version: &str) -> Response {
        Response::error(
            ErrorKind::VersionMismatch,
            version_mismatch_message(client_protocol, client_version, PROTOCOL_VERSION, VERSION),
        )
    }
}

/// The one sentence both sides use when their protocols differ.
pub fn version_mismatch_message(
    client_protocol: u32,
    client_version: &str,
    daemon_protocol: u32,
    daemon_version: &str,
) -> String {
    format!(
        "syncctl {client_version} speaks protocol {client_protocol}, the daemon (syncd {daemon_version}) protocol \
         {daemon_protocol}: use the syncctl that came with this syncd"
    )
}

/// Why a request failed, for scripts (`syncctl --json` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The client speaks another protocol version.
    VersionMismatch,
    /// The request was malformed or is not supported.
    BadRequest,
    /// The request names a database that is not configured.
    UnknownDatabase,
    /// The request was understood but could not be carried out.
    Failed,
    /// The database is doing something that excludes this request.
    Busy,
}

impl ErrorKind {
    /// The JSON spelling, e.g. `"version_mismatch"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::VersionMismatch => "version_mismatch",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UnknownDatabase => "unknown_database",
            ErrorKind::Failed => "failed",
            ErrorKind::Busy => "busy",
        }
    }
}

/// Everything `syncctl status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub hub: HubStatus,
    pub databases: Vec<DatabaseStatus>,
    /// The peers of every database, this one included.
    pub peers: Vec<PeerInfo>,
    /// Things a person should look at (clock skew, a peer far behind…).
    pub warnings: Vec<String>,
}

/// Whether the hub can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubStatus {
    pub url: String,
    pub reachable: bool,
    /// RFC 3339; `None` while reachable.
    pub unreachable_since: Option<String>,
    pub last_error: Option<String>,
}

/// One configured database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    pub name: String,
    pub path: String,
    pub state: SyncState,
    /// Local changes not yet published to the hub.
    pub pending_local: u64,
    /// Change batches in the hub not yet applied here.
    pub pending_remote: u64,
    /// RFC 3339 time of the last completed cycle.
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    /// Entries in the conflict log.
    pub conflicts: u64,
    /// Changes that could not be applied yet and wait for a retry.
    pub parked: u64,
    /// `false` after `syncctl disable`.
    pub auto_sync: bool,
    /// Hub files that were skipped as unreadable, and why.
    pub skipped_files: Vec<SkippedFile>,
}

/// Where a database stands against the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Nothing to publish, nothing to apply.
    InSync,
    /// Local changes wait to be published.
    Ahead,
    /// Change batches in the hub wait to be applied.
    Behind,
    /// Both.
    Diverged,
}

impl SyncState {
    /// The JSON spelling, e.g. `"in_sync"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::InSync => "in_sync",
            SyncState::Ahead => "ahead",
            SyncState::Behind => "behind",
            SyncState::Diverged => "diverged",
        }
    }
}

/// A hub file the daemon skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// One peer of one database, as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub database: String,
    pub peer_id: String,
    pub name: String,
    pub host: String,
    /// RFC 3339 time of its last heartbeat.
    pub last_seen: Option<String>,
    /// Whether its heartbeat is younger than the active window.
    pub active: bool,
    /// Its syncd version.
    pub version: String,
    /// Whether this is the peer answering.
    pub is_self: bool,
    /// How far its clock seems to be from ours, when known.
    pub clock_skew_ms: Option<i64>,
}

/// What one sync cycle of one database did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub database: String,
    pub captured: u64,
    pub published: u64,
    pub applied: u64,
    pub conflicts: u64,
    pub parked: u64,
    pub message: Option<String>,
}

/// One entry of the conflict log: the version that lost, and the one that
/// won.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub database: String,
    /// What `syncctl conflicts restore` takes.
    pub id: i64,
    pub table: String,
    /// The row's primary key, readable by a person.
    pub key: String,
    /// The column, for a column-level conflict.
    pub column: Option<String>,
    /// JSON text of the losing values (`None`: the losing side was a delete).
    pub local_value: Option<String>,
    /// JSON text of the winning values (`None`: the winner was a delete).
    pub winner_value: Option<String>,
    pub loser_version: String,
    pub winner_version: String,
    pub loser_peer: String,
    pub winner_peer: String,
    /// Why the winner won (the conflict policy).
    pub reason: String,
    /// RFC 3339 time the conflict was decided.
    pub at: Option<String>,
}

/// One snapshot in the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its path relative to the hub root; what `syncctl restore` takes.
    pub id: String,
    pub database: String,
    pub peer_id: String,
    pub peer_name: String,
    /// RFC 3339.
    pub created: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Whether retention keeps it.
    pub kept: bool,
}

/// What `syncctl cleanup` removed (or would remove) in one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub database: String,
    pub dry_run: bool,
    pub removed_snapshots: Vec<String>,
    pub removed_batches: u64,
    pub kept_snapshots: u64,
}

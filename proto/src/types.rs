//! Request and response types. Their JSON form (`syncctl --json`) is a
//! documented contract: field names change only with care.

use serde::{Deserialize, Serialize};

/// What syncctl sends: the protocol version it speaks and one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    pub protocol: u32,
    pub client_version: String,
    pub request: Request,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub protocol: u32,
    pub daemon_version: String,
    pub response: Response,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Status,
    Sync { database: Option<String>, yes: bool, prefer_local: bool },
    Peers,
    Conflicts { database: Option<String> },
    ConflictRestore { database: Option<String>, id: i64 },
    Enable { database: Option<String> },
    Disable { database: Option<String> },
    Backup { database: Option<String> },
    List { database: Option<String> },
    Restore { snapshot: String, at: Option<String>, yes: bool },
    Pull { database: Option<String>, force: bool, yes: bool },
    Push { database: Option<String>, force: bool, yes: bool },
    Cleanup { database: Option<String>, dry_run: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Synced(Vec<SyncReport>),
    Peers(Vec<PeerInfo>),
    Conflicts(Vec<ConflictInfo>),
    Snapshots(Vec<SnapshotInfo>),
    Cleanup(Vec<CleanupReport>),
    Done {
        message: String,
    },
    /// A destructive request while other peers are active: resend with
    /// `yes` to go ahead.
    NeedsConfirmation {
        message: String,
        active_peers: Vec<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    VersionMismatch,
    BadRequest,
    UnknownDatabase,
    Failed,
    Busy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub hub: HubStatus,
    pub databases: Vec<DatabaseStatus>,
    pub peers: Vec<PeerInfo>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubStatus {
    pub url: String,
    pub reachable: bool,
    pub unreachable_since: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    pub name: String,
    pub path: String,
    pub state: SyncState,
    pub pending_local: u64,
    pub pending_remote: u64,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    pub conflicts: u64,
    pub parked: u64,
    pub auto_sync: bool,
    pub skipped_files: Vec<SkippedFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    InSync,
    Ahead,
    Behind,
    Diverged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub database: String,
    pub peer_id: String,
    pub name: String,
    pub host: String,
    pub last_seen: Option<String>,
    pub active: bool,
    pub version: String,
    pub is_self: bool,
    pub clock_skew_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    pub database: String,
    pub captured: u64,
    pub published: u64,
    pub applied: u64,
    pub conflicts: u64,
    pub parked: u64,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub database: String,
    pub id: i64,
    pub table: String,
    pub key: String,
    pub column: Option<String>,
    /// JSON object of the losing values (null: the losing side was a delete).
    pub local_value: Option<String>,
    pub winner_value: Option<String>,
    pub loser_version: String,
    pub winner_version: String,
    pub loser_peer: String,
    pub winner_peer: String,
    pub reason: String,
    pub at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The hub path; what `syncctl restore` takes.
    pub id: String,
    pub database: String,
    pub peer_id: String,
    pub peer_name: String,
    pub created: String,
    pub size: u64,
    pub kept: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub database: String,
    pub dry_run: bool,
    pub removed_snapshots: Vec<String>,
    pub removed_batches: u64,
    pub kept_snapshots: u64,
}

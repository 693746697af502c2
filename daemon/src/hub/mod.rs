//! The hub: the shared storage where peers meet (DESIGN §3).
//!
//! A [`Hub`] is a small blocking interface over a folder or an S3 bucket. Every
//! path is relative to the hub root and uses `/` separators, for example
//! `main/<peer-id>/changes/00000000000000000001.chg`. Every peer writes only
//! below its own folder, so no file is ever written by two machines.
//!
//! Invariants: the hub is written only through [`Hub::put_atomic`],
//! [`Hub::put_new`] and [`Hub::put_file`]; readers never see a partly written
//! file under its final name; names starting with a dot are temporary and are
//! never listed.

pub mod folder;
pub mod names;
pub mod s3;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// One file found by [`Hub::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEntry {
    /// The file name, without its folder.
    pub name: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// What can go wrong talking to a hub. Callers decide from the kind: a
/// missing file is skipped, an unreachable hub makes the cycle keep its
/// changes in the outbox and retry later.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0} does not exist in the hub")]
    NotFound(String),
    #[error("{0} already exists in the hub")]
    AlreadyExists(String),
    #[error("the hub {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("hub I/O error on {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("invalid hub URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl HubError {
    /// True when retrying later may succeed (network down, share offline).
    pub fn is_transient(&self) -> bool {
        matches!(self, HubError::Unreachable { .. })
    }
}

/// Shared storage for change batches, snapshots and heartbeats.
///
/// Implementations must be safe to call from several threads at once.
pub trait Hub: Send + Sync {
    /// The URL the hub was opened with, with any secret removed.
    fn url(&self) -> &str;

    /// Files directly inside `dir`, sorted by name ascending, skipping
    /// temporary names (a leading dot) and sub-folders. With `after`, only
    /// names strictly greater than it: this is what makes polling cost
    /// O(new files). A missing folder is an empty list.
    fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<HubEntry>, HubError>;

    /// Names of the sub-folders directly inside `dir`, sorted. A missing
    /// folder is an empty list.
    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, HubError>;

    /// The whole content of one file.
    fn get(&self, path: &str) -> Result<Vec<u8>, HubError>;

    /// Copies one (possibly large) file to a local path, streaming.
    fn get_to_file(&self, path: &str, local: &Path) -> Result<(), HubError>;

    /// Writes `bytes` under `path` atomically, replacing any existing file
    /// (heartbeats).
    fn put_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), HubError>;

    /// Writes `bytes` under `path` atomically; fails with
    /// [`HubError::AlreadyExists`] if a file is already there (change batches
    /// are immutable).
    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<(), HubError>;

    /// Uploads a local file atomically under `path` (snapshots; multipart
    /// where the backend has it).
    fn put_file(&self, path: &str, local: &Path) -> Result<(), HubError>;

    /// Removes one file; a missing file is not an error.
    fn delete(&self, path: &str) -> Result<(), HubError>;
}

/// Credentials and endpoint for the S3 hub, from the configuration; each
/// missing value falls back to the usual AWS environment variable.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
}

/// Opens the hub named by `url`: `file:///path` or `s3://bucket/prefix`.
pub fn open(url: &str, s3: &S3Options) -> Result<Arc<dyn Hub>, HubError> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(Arc::new(folder::FolderHub::open(url, Path::new(path))?))
    } else if url.starts_with("s3://") {
        Ok(Arc::new(s3::S3Hub::open(url, s3)?))
    } else {
        Err(HubError::InvalidUrl { url: url.to_string(), reason: "expected file:///path or s3://bucket/prefix".into() })
    }
}

//! Finding the daemon and exchanging a request for its response.
//!
//! The socket is `--socket`, else the top-level `socket` key of the
//! configuration file (`--config`, else `$SYNCD_CONFIG`), else the default
//! path the daemon also uses. Only that one key is read: the daemon
//! validates its configuration; `syncctl` must work even with a
//! configuration written for a newer daemon.

use crate::commands::Failure;
use crate::{EXIT_FAILED, EXIT_NOT_RUNNING};
use std::path::{Path, PathBuf};
use syncd_proto::client::ClientError;
use syncd_proto::{Request, Response};

/// A configuration file that cannot give the socket path (exit code 2).
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The socket to talk to: `--socket` > `--config` > `$SYNCD_CONFIG` > the
/// default path.
pub fn resolve_socket(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    if let Some(socket) = socket {
        return Ok(socket);
    }
    let from_env = || std::env::var_os("SYNCD_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    let config = match config {
        Some(path) => Some((path, "--config")),
        None => from_env().map(|path| (path, "SYNCD_CONFIG")),
    };
    if let Some((path, named_by)) = config
        && let Some(socket) = socket_from_config(&path, named_by)?
    {
        return Ok(socket);
    }
    Ok(syncd_proto::default_socket_path())
}

/// The `socket` key of a configuration file, if it has one; `named_by`
/// says where the file's path came from, for the error message.
fn socket_from_config(path: &Path, named_by: &str) -> Result<Option<PathBuf>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the configuration {} (from {named_by}): {e}; fix the path, or pass --socket PATH",
            path.display()
        ))
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError(format!("{}: {}", path.display(), e.message().trim_end())))?;
    match table.get("socket") {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(PathBuf::from(s))),
        Some(other) => Err(ConfigError(format!(
            "{}: `socket` must be a path in quotes, not a {}",
            path.display(),
            other.type_str()
        ))),
    }
}

/// Sends one request and returns the daemon's response, whatever it is.
/// Only the failure to get one is a [`Failure`] here.
pub fn exchange(socket: &Path, request: Request) -> Result<Response, Failure> {
    syncd_proto::client::request(socket, request).map_err(|e| match e {
        ClientError::NotRunning { .. } => Failure {
            exit: EXIT_NOT_RUNNING,
            kind: "not_running".into(),
            message: not_running(socket),
            active_peers: Vec::new(),
        },
        ClientError::VersionMismatch { .. } => Failure::failed("version_mismatch", e.to_string()),
        ClientError::Connect { .. } | ClientError::Protocol(_) => Failure::failed("connection", e.to_string()),
    })
}

/// The hint for a daemon that is not running.
fn not_running(socket: &Path) -> String {
    // A file left by a daemon that died, as opposed to no file at all.
    let what = if socket.exists() { "nothing answers at" } else { "no socket at" };
    format!(
        "syncd is not running ({what} {}): start it with `systemctl --user start syncd` or `syncd --config FILE`",
        socket.display()
    )
}

impl Failure {
    /// The request failed: exit code 1.
    pub fn failed(kind: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure { exit: EXIT_FAILED, kind: kind.into(), message: message.into(), active_peers: Vec::new() }
    }
}

//! Connecting to the daemon and exchanging one request for one response.

use interprocess::local_socket::{GenericFilePath, Stream, prelude::*};
use std::path::{Path, PathBuf};
use syncd_proto::{ClientMessage, PROTOCOL_VERSION, Request, Response, ServerMessage};

/// Why a request got no answer.
pub enum ClientError {
    /// Nothing listens on the socket: exit code 3.
    NotRunning(String),
    /// The connection broke or the answer was malformed: exit code 1.
    Broken(String),
}

/// The socket path: `--socket`, else the `socket` key of `--config`, else
/// the default location.
pub fn resolve_socket(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return Ok(s);
    }
    if let Some(path) = config {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
        let value: toml::Table =
            text.parse().map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
        if let Some(s) = value.get("socket").and_then(|v| v.as_str()) {
            return Ok(PathBuf::from(s));
        }
    }
    Ok(default_socket_path())
}

fn default_socket_path() -> PathBuf {
    #[cfg(unix)]
    {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(dir).join("syncd").join("syncd.sock");
        }
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        std::env::temp_dir().join(format!("syncd-{uid}")).join("syncd.sock")
    }
    #[cfg(not(unix))]
    {
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
        PathBuf::from(format!(r"\\.\pipe\syncd-{user}"))
    }
}

fn connect(socket: &Path) -> Result<Stream, ClientError> {
    let not_running = || {
        ClientError::NotRunning(format!(
            "syncd is not running (no daemon answers on {}): start it with `systemctl --user start syncd` \
             or `syncd --config FILE`",
            socket.display()
        ))
    };
    #[cfg(unix)]
    let name = socket.to_path_buf().to_fs_name::<GenericFilePath>().map_err(|e| ClientError::Broken(e.to_string()))?;
    #[cfg(not(unix))]
    let name = {
        use interprocess::local_socket::GenericNamespaced;
        let _ = GenericFilePath;
        let s = socket.to_string_lossy();
        let pipe = s.strip_prefix(r"\\.\pipe\").map(str::to_string).unwrap_or_else(|| {
            socket.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "syncd".into())
        });
        pipe.to_ns_name::<GenericNamespaced>().map_err(|e| ClientError::Broken(e.to_string()))?
    };
    Stream::connect(name).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => not_running(),
        _ => ClientError::Broken(format!("cannot connect to {}: {e}", socket.display())),
    })
}

/// Sends one request and waits for its response.
pub fn request(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let mut stream = connect(socket)?;
    let message =
        ClientMessage { protocol: PROTOCOL_VERSION, client_version: env!("CARGO_PKG_VERSION").into(), request };
    let broken = |e: syncd_proto::ProtoError| ClientError::Broken(format!("talking to syncd: {e}"));
    syncd_proto::write_frame(&mut stream, &syncd_proto::encode(&message)).map_err(broken)?;
    let frame = syncd_proto::read_frame(&mut stream).map_err(broken)?;
    let answer: ServerMessage = syncd_proto::decode(&frame).map_err(broken)?;
    Ok(answer.response)
}

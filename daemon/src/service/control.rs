//! The control socket: a Unix socket (mode 0600) or a Windows named pipe
//! that `syncctl` talks to. DESIGN §6.
//!
//! Each connection carries length-prefixed frames of `syncd_proto` messages.
//! A malformed, oversized or truncated frame gets one error answer if
//! possible and closes that connection; nothing else is affected. This
//! module never acts on a request itself: it hands decoded requests to a
//! [`RequestHandler`].

use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, Name};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncd_proto::{
    ClientMessage, ErrorKind, PROTOCOL_VERSION, ProtoError, Request, Response, ServerMessage, frame_async,
};
use tracing::{debug, warn};

/// Answers requests; implemented by the daemon (and by tests).
pub trait RequestHandler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl std::future::Future<Output = Response> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another syncd is already running and answering on {0}: stop it first (`systemctl --user stop syncd`), \
         or give this one its own `socket` and `state_dir`"
    )]
    AlreadyRunning(PathBuf),
    #[error("cannot create the control socket {path}: {reason}")]
    Bind { path: PathBuf, reason: String },
}

/// A bound control socket, not yet serving.
pub struct ControlSocket {
    listener: Listener,
    path: PathBuf,
}

/// Where the socket lives when the configuration does not say.
pub fn default_socket_path() -> PathBuf {
    #[cfg(unix)]
    {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(dir).join("syncd").join("syncd.sock");
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        std::env::temp_dir().join(format!("syncd-{uid}")).join("syncd.sock")
    }
    #[cfg(not(unix))]
    {
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
        PathBuf::from(format!(r"\\.\pipe\syncd-{user}"))
    }
}

/// The interprocess name for a socket path: the file itself on Unix, a
/// named pipe on Windows.
pub fn socket_name(path: &Path) -> std::io::Result<Name<'static>> {
    #[cfg(unix)]
    {
        path.to_path_buf().to_fs_name::<GenericFilePath>()
    }
    #[cfg(not(unix))]
    {
        use interprocess::local_socket::GenericNamespaced;
        let s = path.to_string_lossy();
        let pipe = s.strip_prefix(r"\\.\pipe\").map(str::to_string).unwrap_or_else(|| {
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "syncd".into())
        });
        let _ = GenericFilePath;
        pipe.to_ns_name::<GenericNamespaced>()
    }
}

impl ControlSocket {
    /// Binds the socket. An existing socket file that no daemon answers on is
    /// left over from a crash and is replaced.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let bind_err = |reason: String| ControlError::Bind { path: path.to_path_buf(), reason };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Some(dir) = path.parent()
                && !dir.exists()
            {
                std::fs::create_dir_all(dir).map_err(|e| bind_err(e.to_string()))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlError::AlreadyRunning(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(|e| bind_err(format!("cannot remove the stale socket: {e}")))?;
            }
        }
        let name = socket_name(path).map_err(|e| bind_err(e.to_string()))?;
        #[cfg(unix)]
        // SAFETY: umask only changes this process's file creation mask; the
        // socket is created owner-only instead of being chmod-ed afterwards.
        let old_mask = unsafe { libc::umask(0o177) };
        let listener = ListenerOptions::new().name(name).create_tokio();
        #[cfg(unix)]
        // SAFETY: restores the mask saved above.
        unsafe {
            libc::umask(old_mask);
        }
        let listener = listener.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                ControlError::AlreadyRunning(path.to_path_buf())
            } else {
                bind_err(e.to_string())
            }
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| bind_err(e.to_string()))?;
        }
        Ok(ControlSocket { listener, path: path.to_path_buf() })
    }

    /// Serves connections until `shutdown` becomes true, then removes the
    /// socket file.
    pub async fn serve<H: RequestHandler>(self, handler: Arc<H>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => {
                        let handler = handler.clone();
                        tokio::spawn(async move { serve_connection(conn, handler).await });
                    }
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
        #[cfg(not(unix))]
        let _ = &self.path;
    }
}

async fn serve_connection<H: RequestHandler>(conn: Stream, handler: Arc<H>) {
    let conn = Arc::new(conn);
    let (mut rx, mut tx) = (&*conn, &*conn);
    loop {
        let frame = match frame_async::read_frame(&mut rx).await {
            Ok(f) => f,
            Err(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                warn!(error = %e, "bad frame on the control socket; closing that connection");
                let _ = reply(&mut tx, bad_request(&e.to_string())).await;
                return;
            }
        };
        let message: ClientMessage = match syncd_proto::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "malformed request on the control socket; closing that connection");
                let _ = reply(&mut tx, bad_request(&e.to_string())).await;
                return;
            }
        };
        let response = if message.protocol != PROTOCOL_VERSION {
            Response::Error {
                kind: ErrorKind::VersionMismatch,
                message: format!(
                    "syncctl {} speaks protocol {}, this syncd {}: use the syncctl that came with this syncd",
                    message.client_version, message.protocol, PROTOCOL_VERSION
                ),
            }
        } else {
            debug!(request = ?message.request, "control request");
            handler.handle(message.request).await
        };
        if reply(&mut tx, response).await.is_err() {
            return;
        }
    }
}

fn bad_request(detail: &str) -> Response {
    Response::Error {
        kind: ErrorKind::BadRequest,
        message: format!("malformed request ({detail}); closing the connection"),
    }
}

async fn reply(tx: &mut (impl tokio::io::AsyncWrite + Unpin), response: Response) -> Result<(), ProtoError> {
    let message =
        ServerMessage { protocol: PROTOCOL_VERSION, daemon_version: env!("CARGO_PKG_VERSION").into(), response };
    frame_async::write_frame(tx, &syncd_proto::encode(&message)).await
}

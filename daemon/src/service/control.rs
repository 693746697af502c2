//! The control socket (DESIGN §6): a Unix socket with mode 0600, or a
//! Windows named pipe, that `syncctl` talks to.
//!
//! Each connection carries length-prefixed frames of `syncd_proto`
//! messages, several requests in turn. A request in another protocol
//! version is answered with `VersionMismatch`. A malformed, oversized or
//! truncated frame gets one `BadRequest` answer if the connection still
//! takes it, a warning in the log, and the end of that connection: nothing
//! else, no other connection and no database is affected.
//!
//! This module never acts on a request itself: it hands decoded requests to
//! a [`RequestHandler`] and writes back what it returns. It never removes a
//! socket file that a live daemon answers on, nor a file that is not a
//! socket.

use futures::FutureExt;
use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syncd_proto::{
    ClientMessage, ErrorKind, MAX_FRAME_LEN, PROTOCOL_VERSION, ProtoError, Request, Response, ServerMessage, decode,
    encode, peek_header, read_frame_async, socket_name, write_frame_async,
};
use tokio::io::AsyncWrite;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

/// Answers requests; the daemon implements it over its database workers,
/// and tests with a stub.
pub trait RequestHandler: Send + Sync + 'static {
    /// The answer to one request. Requests from different connections run
    /// concurrently; the handler decides what excludes what.
    fn handle(&self, request: Request) -> impl std::future::Future<Output = Response> + Send;
}

/// Why the control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A daemon already answers on this socket.
    #[error(
        "another syncd is already running and answering on {}: stop it first (`systemctl --user stop syncd`), \
         or give this one its own `socket` and `state_dir`",
        .0.display()
    )]
    AlreadyRunning(PathBuf),
    /// Something other than a socket sits at the socket path; it is not
    /// ours to remove.
    #[error("{} exists and is not a socket: move it away, or set another `socket` in the configuration", .0.display())]
    NotASocket(PathBuf),
    /// The socket's directory could let another user replace the socket.
    #[error(
        "refusing to create the control socket in {}: {reason}; set `socket` in the configuration to a path in a \
         private directory",
        dir.display()
    )]
    UnsafeDirectory { dir: PathBuf, reason: String },
    /// Creating the socket failed.
    #[error("cannot create the control socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: std::io::Error },
}

/// The socket path when the configuration names none:
/// `$XDG_RUNTIME_DIR/syncd/syncd.sock`, else `/tmp/syncd-$UID/syncd.sock`;
/// on Windows the pipe `\\.\pipe\syncd-<user>`. `syncctl` uses the same
/// rule (it lives in `syncd_proto` so the two cannot drift apart).
pub fn default_socket_path() -> PathBuf {
    syncd_proto::default_socket_path()
}

/// A bound control socket. Serve it with [`ControlSocket::serve`]; the
/// socket file is removed when it is dropped.
pub struct ControlSocket {
    listener: Listener,
    path: PathBuf,
    /// Device and inode of the socket file this daemon created, so that
    /// only that file is ever removed.
    #[cfg(unix)]
    file_id: (u64, u64),
}

impl std::fmt::Debug for ControlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSocket").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ControlSocket {
    /// Binds the socket at `path`. Must be called inside a tokio runtime.
    ///
    /// On Unix the parent directory is created with mode 0700 when missing,
    /// and refused when another user could replace files in it; the socket
    /// gets mode 0600 before it accepts anything. An existing socket file
    /// that a daemon answers on is [`ControlError::AlreadyRunning`]; one
    /// that nobody answers on was left by a crash and is replaced.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let bind_error = |source| ControlError::Bind { path: path.to_path_buf(), source };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(bind_error(std::io::Error::other("the control socket needs a tokio runtime")));
        }
        #[cfg(unix)]
        {
            unix::prepare_directory(path)?;
            unix::clear_stale_socket(path)?;
        }
        let listener = create_listener(path).map_err(|e| match e.kind() {
            // Someone bound the path between our check and our bind (on
            // Unix), or owns the pipe's first instance (on Windows).
            std::io::ErrorKind::AddrInUse => ControlError::AlreadyRunning(path.to_path_buf()),
            std::io::ErrorKind::PermissionDenied if cfg!(windows) => ControlError::AlreadyRunning(path.to_path_buf()),
            _ => bind_error(e),
        })?;
        #[cfg(unix)]
        let file_id = {
            // Where the platform could not set the mode before binding,
            // this is the moment: nothing has been accepted yet, and the
            // directory is private.
            let finish = || unix::restrict_to_owner(path).and_then(|()| unix::file_id(path));
            match finish() {
                Ok(id) => id,
                Err(e) => {
                    let _ = std::fs::remove_file(path);
                    return Err(bind_error(e));
                }
            }
        };
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            #[cfg(unix)]
            file_id,
        })
    }

    /// The socket path this was bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until `shutdown` becomes true (or its sender is
    /// dropped), each in its own task. Then it stops accepting, removes the
    /// socket file, and waits for the requests in progress to be answered;
    /// idle connections are closed.
    pub async fn serve<H: RequestHandler>(self, handler: Arc<H>, mut shutdown: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(stream) => {
                        connections.spawn(serve_connection(stream, handler.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors, say: keep serving the
                        // connections there are, and do not spin.
                        warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(finished) = connections.join_next(), if !connections.is_empty() => log_task_end(finished),
            }
        }
        drop(self);
        while let Some(finished) = connections.join_next().await {
            log_task_end(finished);
        }
        debug!("control socket closed");
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // This runs before the listener closes: until the file is gone a
        // starting daemon still finds this one answering, and once it is
        // gone that daemon binds a fresh file that nothing here touches.
        #[cfg(unix)]
        if unix::file_id(&self.path).ok() == Some(self.file_id)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            warn!(socket = %self.path.display(), error = %e, "cannot remove the control socket");
        }
    }
}

/// Creates the listener; on Unix with mode 0600 from the start where the
/// platform allows it (no window where the socket is open to others).
fn create_listener(path: &Path) -> std::io::Result<Listener> {
    // The file is removed by `ControlSocket::drop`, which checks it is
    // still ours; interprocess's own removal would not.
    let options = || -> std::io::Result<ListenerOptions<'static>> {
        Ok(ListenerOptions::new().name(socket_name(path)?).reclaim_name(false))
    };
    #[cfg(unix)]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        match options()?.mode(0o600).create_tokio() {
            // macOS cannot set a socket's mode before bind; `bind` sets it
            // right after, in a private directory.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => options()?.create_tokio(),
            other => other,
        }
    }
    #[cfg(not(unix))]
    options()?.create_tokio()
}

/// Resolves when the daemon asks to stop. A dropped sender means the
/// daemon is going away too; waiting on it again would spin.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn log_task_end(finished: Result<(), tokio::task::JoinError>) {
    if let Err(e) = finished
        && e.is_panic()
    {
        error!(error = %e, "control connection task panicked");
    }
}

/// Serves one connection: read a frame, answer it, until the client hangs
/// up, sends something malformed, or the daemon stops. A request that has
/// been read is always answered before the connection closes.
async fn serve_connection<H: RequestHandler>(stream: Stream, handler: Arc<H>, mut shutdown: watch::Receiver<bool>) {
    // `&Stream` reads and writes; no need to split it.
    let (mut rx, mut tx) = (&stream, &stream);
    loop {
        let frame = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => return,
            frame = read_frame_async(&mut rx) => frame,
        };
        let response = match frame {
            Ok(frame) => match decode::<ClientMessage>(&frame) {
                Ok(message) if message.protocol == PROTOCOL_VERSION => answer(&*handler, message.request).await,
                Ok(message) => version_mismatch(message.protocol, &message.client_version),
                // A later protocol may not decode as ours at all; its
                // header still says what it is.
                Err(e) => match peek_header(&frame) {
                    Some(header) if !header.is_compatible() => version_mismatch(header.protocol, &header.version),
                    _ => return reject(&mut tx, e).await,
                },
            },
            Err(ProtoError::Closed) => return,
            Err(ProtoError::Io(e)) => {
                debug!(error = %e, "control connection broke");
                return;
            }
            Err(e) => return reject(&mut tx, e).await,
        };
        if let Err(e) = send(&mut tx, response).await {
            debug!(error = %e, "control connection broke while answering");
            return;
        }
    }
}

/// Runs the handler. A panic in it is a bug, but it must not leave the
/// client waiting without a word: it gets an error answer.
async fn answer<H: RequestHandler>(handler: &H, request: Request) -> Response {
    debug!(?request, "control request");
    match AssertUnwindSafe(handler.handle(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            error!("a control request handler panicked");
            Response::error(
                ErrorKind::Failed,
                "syncd failed while handling this request (a bug: its log has the details)",
            )
        }
    }
}

fn version_mismatch(protocol: u32, client_version: &str) -> Response {
    warn!(protocol, client_version, "control request in another protocol version; answered with a version mismatch");
    Response::version_mismatch(protocol, client_version)
}

/// Answers a malformed frame once and lets the connection close.
async fn reject(tx: &mut (impl AsyncWrite + Unpin), error: ProtoError) {
    warn!(error = %error, "malformed control frame; closing that connection");
    let response =
        Response::error(ErrorKind::BadRequest, format!("malformed request ({error}); closing this connection"));
    // The client may be gone or not reading: this answer is a courtesy.
    let _ = send(tx, response).await;
}

/// Writes one answer. One too large for a frame becomes an error that says
/// so, rather than a connection closed without a word.
async fn send(tx: &mut (impl AsyncWrite + Unpin), response: Response) -> Result<(), ProtoError> {
    let mut payload = encode(&ServerMessage::new(response));
    if payload.len() > MAX_FRAME_LEN as usize {
        warn!(bytes = payload.len(), "control answer exceeds the frame limit");
        let message = format!(
            "the answer is {} bytes, more than the {MAX_FRAME_LEN}-byte limit: ask about one database at a time",
            payload.len()
        );
        payload = encode(&ServerMessage::new(Response::error(ErrorKind::Failed, message)));
    }
    write_frame_async(tx, &payload).await
}

#[cfg(unix)]
mod unix {
    //! Unix socket files: the private directory, stale files left by a
    //! crash, the owner-only mode.

    use super::ControlError;
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::Path;
    use tracing::info;

    /// Creates the socket's directory with mode 0700, or checks that an
    /// existing one lets no other user replace the socket: owned by us (or
    /// root), and not writable by others unless sticky (like `/tmp`).
    pub fn prepare_directory(path: &Path) -> Result<(), ControlError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let unsafe_dir = |reason: String| ControlError::UnsafeDirectory { dir: dir.to_path_buf(), reason };
        let meta = match std::fs::metadata(dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| ControlError::Bind { path: path.to_path_buf(), source });
            }
            Err(source) => return Err(ControlError::Bind { path: path.to_path_buf(), source }),
        };
        if !meta.is_dir() {
            return Err(unsafe_dir("it is not a directory".into()));
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        if meta.uid() != uid && meta.uid() != 0 {
            return Err(unsafe_dir(format!("it belongs to another user (uid {})", meta.uid())));
        }
        let writable_by_others = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        if writable_by_others && !sticky {
            return Err(unsafe_dir(format!("other users may write to it (mode {:o})", meta.mode() & 0o7777)));
        }
        Ok(())
    }

    /// Removes a socket file that no daemon answers on (a crash left it).
    pub fn clear_stale_socket(path: &Path) -> Result<(), ControlError> {
        let bind_error = |source| ControlError::Bind { path: path.to_path_buf(), source };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(bind_error(e)),
        };
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket(path.to_path_buf()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(ControlError::AlreadyRunning(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                match std::fs::remove_file(path) {
                    Ok(()) => info!(socket = %path.display(), "removed a stale control socket left by a crash"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(bind_error(e)),
                }
                Ok(())
            }
            Err(e) => Err(bind_error(e)),
        }
    }

    pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }

    pub fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok((meta.dev(), meta.ino()))
    }
}

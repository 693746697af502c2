//! The control socket in-process, with a stub handler (the handler is not
//! what is tested here): DESIGN §6 and §7.4. A malformed, oversized,
//! truncated or foreign frame ends that connection with an error answer and
//! nothing else; the socket is owner-only; a crash's leftover is replaced;
//! a second daemon is refused.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syncd::service::control::{ControlError, ControlSocket, RequestHandler};
use syncd_proto::*;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::watch;

/// Answers `Done` naming the request; `Backup` takes a while, `Peers`
/// panics.
struct Stub;

impl RequestHandler for Stub {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Backup { .. } => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Response::Done { message: "slow backup".into() }
            }
            Request::Peers => panic!("stub handler panics on purpose"),
            other => Response::Done { message: format!("{other:?}") },
        }
    }
}

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("syncd.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(socket.serve(Arc::new(Stub), stopped));
        Server { _dir: dir, path, stop, task }
    }

    async fn stop(self) -> PathBuf {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("serve stops").unwrap();
        self.path
    }
}

async fn connect(path: &Path) -> UnixStream {
    UnixStream::connect(path).await.unwrap()
}

async fn ask_on(conn: &mut UnixStream, request: Request) -> ServerMessage {
    write_frame_async(conn, &encode(&ClientMessage::new(request))).await.unwrap();
    read_answer(conn).await.expect("an answer")
}

async fn ask(path: &Path, request: Request) -> Response {
    ask_on(&mut connect(path).await, request).await.response
}

async fn read_answer(conn: &mut UnixStream) -> Result<ServerMessage, ProtoError> {
    let frame = tokio::time::timeout(Duration::from_secs(5), read_frame_async(conn)).await.expect("no hang")?;
    Ok(decode(&frame).unwrap())
}

/// Sends raw bytes; returns the one answer and checks the daemon then
/// closed the connection.
async fn send_garbage(path: &Path, bytes: &[u8], close_write: bool) -> Response {
    let mut conn = connect(path).await;
    let _ = conn.write_all(bytes).await;
    if close_write {
        conn.shutdown().await.unwrap();
    }
    let answer = read_answer(&mut conn).await.expect("an error answer before closing");
    assert!(matches!(read_answer(&mut conn).await, Err(ProtoError::Closed | ProtoError::Io(_))), "connection closed");
    answer.response
}

fn assert_bad_request(response: &Response) {
    assert!(matches!(response, Response::Error { kind: ErrorKind::BadRequest, .. }), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_requests_share_one_connection() {
    let server = Server::start().await;
    let mut conn = connect(&server.path).await;
    for request in [Request::Status, Request::List { database: None }, Request::Status] {
        let answer = ask_on(&mut conn, request.clone()).await;
        assert_eq!(answer.protocol, PROTOCOL_VERSION);
        assert_eq!(answer.response, Response::Done { message: format!("{request:?}") });
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_get_bad_request_and_the_next_connection_still_works() {
    let server = Server::start().await;
    // A small length prefix so the body arrives whole and fails to decode.
    let mut garbage = 64u32.to_be_bytes().to_vec();
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(151).wrapping_add(7)));
    assert_bad_request(&send_garbage(&server.path, &garbage, false).await);
    assert_eq!(ask(&server.path, Request::Status).await, Response::Done { message: "Status".into() });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_the_next_connection_still_works() {
    let server = Server::start().await;
    let mut bytes = vec![0xFF, 0xFF, 0xFF, 0xFF];
    bytes.extend_from_slice(&[b'x'; 100]);
    let response = send_garbage(&server.path, &bytes, false).await;
    assert_bad_request(&response);
    let Response::Error { message, .. } = response else { unreachable!() };
    assert!(message.contains("exceeds"), "{message}");
    assert_eq!(ask(&server.path, Request::Status).await, Response::Done { message: "Status".into() });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_is_refused_and_the_next_connection_still_works() {
    let server = Server::start().await;
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1; 10]);
    let response = send_garbage(&server.path, &bytes, true).await;
    assert_bad_request(&response);
    // Half a length prefix, too.
    assert_bad_request(&send_garbage(&server.path, &[0, 0], true).await);
    assert_eq!(ask(&server.path, Request::Status).await, Response::Done { message: "Status".into() });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_version_is_answered_with_version_mismatch() {
    let server = Server::start().await;
    let mut conn = connect(&server.path).await;
    let old =
        ClientMessage { protocol: PROTOCOL_VERSION + 1, client_version: "9.9.9".into(), request: Request::Status };
    write_frame_async(&mut conn, &encode(&old)).await.unwrap();
    let answer = read_answer(&mut conn).await.unwrap();
    assert_eq!(answer.protocol, PROTOCOL_VERSION);
    let Response::Error { kind: ErrorKind::VersionMismatch, message } = answer.response else { panic!("{answer:?}") };
    assert!(message.contains("syncctl 9.9.9 speaks protocol"), "{message}");
    assert!(message.contains("use the syncctl that came with this syncd"), "{message}");
    // The frame was well formed, so the connection still serves our protocol.
    assert_eq!(ask_on(&mut conn, Request::Status).await.response, Response::Done { message: "Status".into() });

    // A later protocol whose request this build cannot decode at all.
    let mut future = encode(&MessageHeader { protocol: 2, version: "2.0.0".into() });
    future.extend_from_slice(&[42, 1, 2, 3]);
    let mut conn = connect(&server.path).await;
    write_frame_async(&mut conn, &future).await.unwrap();
    let answer = read_answer(&mut conn).await.unwrap();
    assert!(matches!(answer.response, Response::Error { kind: ErrorKind::VersionMismatch, .. }), "{answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_failed_and_the_daemon_keeps_serving() {
    let server = Server::start().await;
    let response = ask(&server.path, Request::Peers).await;
    assert!(matches!(response, Response::Error { kind: ErrorKind::Failed, .. }), "{response:?}");
    assert_eq!(ask(&server.path, Request::Status).await, Response::Done { message: "Status".into() });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_owner_only_in_a_private_directory() {
    let server = Server::start().await;
    let mode = std::fs::metadata(&server.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(server.path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "directory mode {dir_mode:o}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_removes_the_socket_after_answering_the_request_in_progress() {
    let server = Server::start().await;
    let path = server.path.clone();
    let mut idle = connect(&path).await;
    let mut busy = connect(&path).await;
    write_frame_async(&mut busy, &encode(&ClientMessage::new(Request::Backup { database: None }))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped = tokio::spawn(server.stop());
    let answer = read_answer(&mut busy).await.unwrap();
    assert_eq!(answer.response, Response::Done { message: "slow backup".into() });
    let path = stopped.await.unwrap();
    assert!(!path.exists(), "socket file left behind");
    assert!(matches!(read_answer(&mut idle).await, Err(ProtoError::Closed | ProtoError::Io(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_shutdown_sender_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncd.sock");
    let socket = ControlSocket::bind(&path).unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(socket.serve(Arc::new(Stub), stopped));
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve stops").unwrap();
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_from_a_crash_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncd.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the stale file is there");
    let socket = ControlSocket::bind(&path).unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(socket.serve(Arc::new(Stub), stopped));
    assert_eq!(ask(&path, Request::Status).await, Response::Done { message: "Status".into() });
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bind_while_the_first_serves_is_already_running() {
    let server = Server::start().await;
    let err = ControlSocket::bind(&server.path).unwrap_err();
    assert!(matches!(err, ControlError::AlreadyRunning(_)), "{err:?}");
    assert!(err.to_string().contains("already running"), "{err}");
    // The refused attempt did not disturb the first one.
    assert!(server.path.exists());
    assert_eq!(ask(&server.path, Request::Status).await, Response::Done { message: "Status".into() });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncd.sock");
    std::fs::write(&path, "precious").unwrap();
    let err = ControlSocket::bind(&path).unwrap_err();
    assert!(matches!(err, ControlError::NotASocket(_)), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_other_users_can_write_to_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ControlSocket::bind(&shared.join("syncd.sock")).unwrap_err();
    assert!(matches!(err, ControlError::UnsafeDirectory { .. }), "{err:?}");
    // Sticky, like /tmp: others cannot replace our file, so it is fine.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    drop(ControlSocket::bind(&shared.join("syncd.sock")).unwrap());
    assert!(!shared.join("syncd.sock").exists(), "dropping an unserved socket removes its file");
}

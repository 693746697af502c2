//! The blocking client against a throwaway server: it tells "not running"
//! from "broken" and recognises a daemon of another protocol.
#![cfg(unix)]

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use syncd_proto::client::{self, Client, ClientError};
use syncd_proto::*;

/// Serves `answers.len()` requests on one connection, answering each with
/// the raw bytes given, and returns the requests it saw.
fn serve_once(listener: UnixListener, answers: Vec<Vec<u8>>) -> std::thread::JoinHandle<Vec<ClientMessage>> {
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            seen.push(decode(&read_frame(&mut conn).unwrap()).unwrap());
            write_frame(&mut conn, &answer).unwrap();
        }
        seen
    })
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("syncd.sock")
}

#[test]
fn a_request_and_its_response_cross_one_connection_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(socket_in(&dir)).unwrap();
    let done = |m: &str| encode(&ServerMessage::new(Response::Done { message: m.into() }));
    let server = serve_once(listener, vec![done("one"), done("two")]);
    let mut client = Client::connect(&socket_in(&dir)).unwrap();
    assert_eq!(client.request(Request::Status).unwrap(), Response::Done { message: "one".into() });
    assert_eq!(client.request(Request::Peers).unwrap(), Response::Done { message: "two".into() });
    let seen = server.join().unwrap();
    assert_eq!(seen[0], ClientMessage::new(Request::Status));
    assert_eq!(seen[1].request, Request::Peers);
}

#[test]
fn a_missing_socket_means_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let err = client::request(&socket_in(&dir), Request::Status).unwrap_err();
    assert!(err.is_not_running(), "{err}");
}

#[test]
fn a_socket_file_left_by_a_dead_daemon_means_not_running() {
    let dir = tempfile::tempdir().unwrap();
    drop(UnixListener::bind(socket_in(&dir)).unwrap());
    assert!(socket_in(&dir).exists());
    let err = client::request(&socket_in(&dir), Request::Status).unwrap_err();
    assert!(err.is_not_running(), "{err}");
}

#[test]
fn an_answer_in_another_protocol_is_a_version_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(socket_in(&dir)).unwrap();
    let mut future = encode(&MessageHeader { protocol: 7, version: "7.0.0".into() });
    future.extend_from_slice(&[200, 1, 2, 3]);
    let server = serve_once(listener, vec![future]);
    let err = client::request(&socket_in(&dir), Request::Status).unwrap_err();
    server.join().unwrap();
    let ClientError::VersionMismatch { daemon_protocol: 7, .. } = &err else { panic!("{err:?}") };
    let text = err.to_string();
    assert!(text.contains("the daemon (syncd 7.0.0) protocol 7"), "{text}");
    assert!(text.contains("use the syncctl that came with this syncd"), "{text}");
}

#[test]
fn a_garbage_answer_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(socket_in(&dir)).unwrap();
    let server = serve_once(listener, vec![vec![0xFF; 16]]);
    let err = client::request(&socket_in(&dir), Request::Status).unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, ClientError::Protocol(ProtoError::Malformed(_))), "{err:?}");
}

#[test]
fn a_daemon_that_hangs_up_without_answering_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(socket_in(&dir)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let _ = read_frame(&mut conn);
    });
    let err = client::request(&socket_in(&dir), Request::Status).unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, ClientError::Protocol(ProtoError::Closed)), "{err:?}");
}

#[test]
fn the_default_socket_is_per_user() {
    let path = default_socket_path();
    assert!(path.ends_with("syncd.sock"), "{}", path.display());
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => assert_eq!(path, PathBuf::from(dir).join("syncd/syncd.sock")),
        None => assert!(path.to_string_lossy().starts_with("/tmp/syncd-")),
    }
}

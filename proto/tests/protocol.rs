//! The wire contract: every message survives the codec and a frame, bytes
//! from outside never panic the decoder (DESIGN §7.4: bad control frames
//! get a clear error and change nothing), and the JSON spelling that
//! `syncctl --json` prints stays what the README documents.

use proptest::prelude::*;
use syncd_proto::*;

fn all_requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Sync { database: Some("main".into()), yes: true, prefer_local: false },
        Request::Peers,
        Request::Conflicts { database: None },
        Request::ConflictRestore { database: Some("main".into()), id: -3 },
        Request::Enable { database: None },
        Request::Disable { database: Some("x".into()) },
        Request::Backup { database: None },
        Request::List { database: Some("notes".into()) },
        Request::Restore {
            snapshot: "main/abc/snap-1.zst".into(),
            at: Some("2026-01-01T00:00:00Z".into()),
            yes: false,
        },
        Request::Pull { database: None, force: true, yes: true },
        Request::Push { database: Some("main".into()), force: true, yes: false },
        Request::Cleanup { database: None, dry_run: true },
    ]
}

fn peer() -> PeerInfo {
    PeerInfo {
        database: "main".into(),
        peer_id: "0123456789abcdef0123456789abcdef".into(),
        name: "laptop".into(),
        host: "laptop.local".into(),
        last_seen: Some("2026-05-01T10:00:00Z".into()),
        active: true,
        version: "0.1.0".into(),
        is_self: false,
        clock_skew_ms: Some(-120),
    }
}

fn status() -> StatusReport {
    StatusReport {
        hub: HubStatus {
            url: "file:///srv/hub".into(),
            reachable: false,
            unreachable_since: Some("2026-05-01T09:00:00Z".into()),
            last_error: Some("permission denied".into()),
        },
        databases: vec![DatabaseStatus {
            name: "main".into(),
            path: "/home/me/app.db".into(),
            state: SyncState::Diverged,
            pending_local: 3,
            pending_remote: u64::MAX,
            last_sync: None,
            last_error: None,
            conflicts: 1,
            parked: 0,
            auto_sync: true,
            skipped_files: vec![SkippedFile { path: "main/x/batch-1".into(), reason: "checksum".into() }],
        }],
        peers: vec![peer()],
        warnings: vec!["clock of laptop is 2 min off".into()],
    }
}

fn all_responses() -> Vec<Response> {
    vec![
        Response::Status(status()),
        Response::Synced(vec![SyncReport {
            database: "main".into(),
            captured: 1,
            published: 2,
            applied: 3,
            conflicts: 4,
            parked: 5,
            message: Some("joined from a snapshot".into()),
        }]),
        Response::Peers(vec![peer(), PeerInfo { is_self: true, last_seen: None, clock_skew_ms: None, ..peer() }]),
        Response::Conflicts(vec![ConflictInfo {
            database: "main".into(),
            id: 7,
            table: "items".into(),
            key: "id=7".into(),
            column: Some("name".into()),
            local_value: Some(r#"{"name":"from-a"}"#.into()),
            winner_value: None,
            loser_version: "1714557600000-0-a".into(),
            winner_version: "1714557600001-0-b".into(),
            loser_peer: "a".into(),
            winner_peer: "b".into(),
            reason: "lww".into(),
            at: Some("2026-05-01T10:00:00Z".into()),
        }]),
        Response::Snapshots(vec![SnapshotInfo {
            id: "main/abc/snapshots/1.zst".into(),
            database: "main".into(),
            peer_id: "abc".into(),
            peer_name: "laptop".into(),
            created: "2026-05-01T10:00:00Z".into(),
            size: 12_345,
            kept: true,
        }]),
        Response::Cleanup(vec![CleanupReport {
            database: "main".into(),
            dry_run: true,
            removed_snapshots: vec!["main/abc/snapshots/0.zst".into()],
            removed_batches: 12,
            kept_snapshots: 10,
        }]),
        Response::Done { message: "auto sync off for main".into() },
        Response::NeedsConfirmation {
            message: "other peers are active".into(),
            active_peers: vec!["b".into(), "c".into()],
        },
        Response::version_mismatch(9, "9.9.9"),
        Response::error(ErrorKind::BadRequest, "no"),
        Response::error(ErrorKind::UnknownDatabase, "no"),
        Response::error(ErrorKind::Failed, "no"),
        Response::error(ErrorKind::Busy, "no"),
    ]
}

#[test]
fn every_request_round_trips_through_codec_and_frame() {
    for request in all_requests() {
        let message = ClientMessage::new(request);
        let mut wire = Vec::new();
        write_frame(&mut wire, &encode(&message)).unwrap();
        let frame = read_frame(&mut wire.as_slice()).unwrap();
        assert_eq!(decode::<ClientMessage>(&frame).unwrap(), message);
    }
}

#[test]
fn every_response_round_trips_through_codec_and_frame() {
    for response in all_responses() {
        let message = ServerMessage::new(response);
        let mut wire = Vec::new();
        write_frame(&mut wire, &encode(&message)).unwrap();
        let frame = read_frame(&mut wire.as_slice()).unwrap();
        assert_eq!(decode::<ServerMessage>(&frame).unwrap(), message);
    }
}

#[test]
fn several_frames_on_one_stream_come_out_in_order_then_closed() {
    let mut wire = Vec::new();
    for request in all_requests() {
        write_frame(&mut wire, &encode(&ClientMessage::new(request))).unwrap();
    }
    let mut reader = wire.as_slice();
    for request in all_requests() {
        assert_eq!(decode::<ClientMessage>(&read_frame(&mut reader).unwrap()).unwrap().request, request);
    }
    assert!(matches!(read_frame(&mut reader), Err(ProtoError::Closed)));
}

#[test]
fn a_frame_cut_in_its_prefix_or_body_is_truncated_not_closed() {
    let mut wire = Vec::new();
    write_frame(&mut wire, b"hello").unwrap();
    assert!(matches!(read_frame(&mut &wire[..2]), Err(ProtoError::Truncated { expected: 4, got: 2 })));
    assert!(matches!(read_frame(&mut &wire[..6]), Err(ProtoError::Truncated { expected: 5, got: 2 })));
}

#[test]
fn an_oversized_payload_is_refused_and_nothing_is_written() {
    let mut wire = Vec::new();
    let payload = vec![0u8; MAX_FRAME_LEN as usize + 1];
    assert!(matches!(write_frame(&mut wire, &payload), Err(ProtoError::TooLarge { .. })));
    assert!(wire.is_empty());
    // The limit itself is allowed.
    write_frame(&mut wire, &payload[1..]).unwrap();
    assert_eq!(read_frame(&mut wire.as_slice()).unwrap().len(), MAX_FRAME_LEN as usize);
}

#[test]
fn async_frames_match_blocking_frames() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let message = encode(&ClientMessage::new(Request::Status));
        let mut wire = Vec::new();
        write_frame_async(&mut wire, &message).await.unwrap();
        let mut blocking = Vec::new();
        write_frame(&mut blocking, &message).unwrap();
        assert_eq!(wire, blocking);
        let mut reader = wire.as_slice();
        assert_eq!(read_frame_async(&mut reader).await.unwrap(), message);
        assert!(matches!(read_frame_async(&mut reader).await, Err(ProtoError::Closed)));
        assert!(matches!(read_frame_async(&mut &wire[..3]).await, Err(ProtoError::Truncated { .. })));
        let oversized: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3];
        assert!(matches!(read_frame_async(&mut &oversized[..]).await, Err(ProtoError::TooLarge { .. })));
    });
}

#[test]
fn trailing_bytes_after_a_message_are_rejected() {
    let mut bytes = encode(&ClientMessage::new(Request::Status));
    bytes.push(0);
    assert!(matches!(decode::<ClientMessage>(&bytes), Err(ProtoError::Trailing(1))));
}

#[test]
fn a_string_that_claims_more_bytes_than_any_limit_is_malformed() {
    // protocol 1, then a client_version whose varint length is u64::MAX.
    let mut bytes = vec![1u8, 0xFD];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(decode::<ClientMessage>(&bytes), Err(ProtoError::Malformed(_))));
    assert_eq!(peek_header(&bytes), None);
}

#[test]
fn the_header_of_a_message_from_another_protocol_is_readable_when_its_body_is_not() {
    // A later protocol: the same header, then a request variant (index 13)
    // that this build's `Request` does not have.
    let mut bytes = encode(&MessageHeader { protocol: 2, version: "2.0.0".into() });
    bytes.extend_from_slice(&[13, 5]);
    assert!(matches!(decode::<ClientMessage>(&bytes), Err(ProtoError::Malformed(_))));
    let header = peek_header(&bytes).unwrap();
    assert_eq!(header, MessageHeader { protocol: 2, version: "2.0.0".into() });
    assert!(!header.is_compatible());
    assert!(peek_header(&encode(&ClientMessage::new(Request::Peers))).unwrap().is_compatible());
    assert!(peek_header(&encode(&ServerMessage::new(Response::Done { message: "x".into() }))).unwrap().is_compatible());
}

#[test]
fn version_mismatch_says_which_protocols_and_what_to_do() {
    let Response::Error { kind, message } = Response::version_mismatch(2, "2.0.0") else { panic!() };
    assert_eq!(kind, ErrorKind::VersionMismatch);
    assert!(message.contains("syncctl 2.0.0 speaks protocol 2"), "{message}");
    assert!(message.contains(&format!("protocol {PROTOCOL_VERSION}")), "{message}");
    assert!(message.contains("use the syncctl that came with this syncd"), "{message}");
}

#[test]
fn json_spelling_is_the_documented_one() {
    let json = serde_json::to_value(status()).unwrap();
    for key in ["hub", "databases", "peers", "warnings"] {
        assert!(json.get(key).is_some(), "status lacks {key}");
    }
    for key in ["url", "reachable", "unreachable_since", "last_error"] {
        assert!(json["hub"].get(key).is_some(), "hub lacks {key}");
    }
    for key in [
        "name",
        "path",
        "state",
        "pending_local",
        "pending_remote",
        "last_sync",
        "last_error",
        "conflicts",
        "parked",
        "auto_sync",
        "skipped_files",
    ] {
        assert!(json["databases"][0].get(key).is_some(), "databases[] lacks {key}");
    }
    for key in ["database", "peer_id", "name", "host", "last_seen", "active", "version", "is_self", "clock_skew_ms"] {
        assert!(json["peers"][0].get(key).is_some(), "peers[] lacks {key}");
    }
    assert_eq!(json["databases"][0]["state"], "diverged");
    assert_eq!(json["databases"][0]["last_sync"], serde_json::Value::Null);
    for state in [SyncState::InSync, SyncState::Ahead, SyncState::Behind, SyncState::Diverged] {
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
    }
    assert_eq!(serde_json::to_value(SyncState::InSync).unwrap(), "in_sync");
    for kind in [
        ErrorKind::VersionMismatch,
        ErrorKind::BadRequest,
        ErrorKind::UnknownDatabase,
        ErrorKind::Failed,
        ErrorKind::Busy,
    ] {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
}

fn any_text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn any_db() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any_text())
}

fn any_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Status),
        (any_db(), any::<bool>(), any::<bool>()).prop_map(|(database, yes, prefer_local)| Request::Sync {
            database,
            yes,
            prefer_local
        }),
        Just(Request::Peers),
        any_db().prop_map(|database| Request::Conflicts { database }),
        (any_db(), any::<i64>()).prop_map(|(database, id)| Request::ConflictRestore { database, id }),
        any_db().prop_map(|database| Request::Enable { database }),
        any_db().prop_map(|database| Request::Disable { database }),
        any_db().prop_map(|database| Request::Backup { database }),
        any_db().prop_map(|database| Request::List { database }),
        (any_text(), proptest::option::of(any_text()), any::<bool>())
            .prop_map(|(snapshot, at, yes)| Request::Restore { snapshot, at, yes }),
        (any_db(), any::<bool>(), any::<bool>()).prop_map(|(database, force, yes)| Request::Pull {
            database,
            force,
            yes
        }),
        (any_db(), any::<bool>(), any::<bool>()).prop_map(|(database, force, yes)| Request::Push {
            database,
            force,
            yes
        }),
        (any_db(), any::<bool>()).prop_map(|(database, dry_run)| Request::Cleanup { database, dry_run }),
    ]
}

proptest! {
    /// DESIGN §7.4: random bytes from the socket are an error, never a panic.
    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = decode::<ClientMessage>(&bytes);
        let _ = decode::<ServerMessage>(&bytes);
        let _ = peek_header(&bytes);
        let _ = read_frame(&mut bytes.as_slice());
    }

    /// The same for bytes that do arrive in a well-formed frame and start
    /// with a valid header: the decoder gets past the header and chews on
    /// the body.
    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut bytes = encode(&MessageHeader { protocol: PROTOCOL_VERSION, version: "x".into() });
        bytes.extend_from_slice(&body);
        let mut wire = Vec::new();
        write_frame(&mut wire, &bytes).unwrap();
        let frame = read_frame(&mut wire.as_slice()).unwrap();
        let _ = decode::<ClientMessage>(&frame);
        let _ = decode::<ServerMessage>(&frame);
    }

    /// Any request, with any text in it, survives the codec.
    #[test]
    fn any_request_round_trips(request in any_request(), version in any_text()) {
        let message = ClientMessage { protocol: PROTOCOL_VERSION, client_version: version, request };
        prop_assert_eq!(decode::<ClientMessage>(&encode(&message)).unwrap(), message);
    }

    /// Flipping bytes of a valid message gives an error or another valid
    /// message, never a panic.
    #[test]
    fn corrupted_messages_never_panic(index in any::<prop::sample::Index>(), byte in any::<u8>(), request in any_request()) {
        let mut bytes = encode(&ClientMessage::new(request));
        let i = index.index(bytes.len());
        bytes[i] = byte;
        let _ = decode::<ClientMessage>(&bytes);
    }
}

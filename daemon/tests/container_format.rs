//! The container format of hub files (DESIGN §3, guarantee 4 of §7: bad
//! input gets a clear error and changes nothing). A reader must refuse any
//! short, damaged, misplaced or newer file, never return a body it has not
//! verified, and a person with only zstd must be able to open a snapshot.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sha2::{Digest, Sha256};
use std::path::Path;
use syncd::container::{self, ContainerError, Expect, FORMAT_VERSION, FileKind, Header, MAX_IN_MEMORY_BODY};

const PEER: &str = "0123456789abcdef0123456789abcdef";
const OTHER_PEER: &str = "fedcba9876543210fedcba9876543210";

fn header(kind: FileKind) -> Header {
    Header {
        kind,
        database: "main".into(),
        peer_id: PEER.into(),
        peer_name: "laptop".into(),
        seq: if kind == FileKind::Batch { 42 } else { 0 },
        created_ms: 1_764_000_000_123,
        body_len: 0,
        body_sha256: String::new(),
        meta: serde_json::json!({ "cursors": { OTHER_PEER: 17 } }),
    }
}

fn expect_batch() -> Expect<'static> {
    Expect { kind: FileKind::Batch, database: "main", peer_id: Some(PEER), seq: Some(42) }
}

fn expect_snapshot() -> Expect<'static> {
    Expect { kind: FileKind::Snapshot, database: "main", peer_id: Some(PEER), seq: None }
}

/// Deterministic bytes that compress like a database: repeated structure
/// with varying values.
fn database_like(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(format!("row {} name{} ", state % 100_000, state >> 50).as_bytes());
        out.extend_from_slice(&state.to_le_bytes()[..(state % 8) as usize]);
    }
    out.truncate(len);
    out
}

fn batch_file(body: &[u8]) -> Vec<u8> {
    container::encode(&header(FileKind::Batch), body, container::DEFAULT_LEVEL)
}

/// Rewrites the header of `file` as another writer could, with a valid
/// header checksum and frame hash: how a file that is wrong but well-formed
/// looks.
fn with_header_rewritten(file: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    rewritten(file, edit, |_| {})
}

fn rewritten(file: &[u8], edit: impl FnOnce(&mut serde_json::Value), edit_frame: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let end = container::header_frame_len(file).unwrap();
    let mut frame = file[end..].to_vec();
    edit_frame(&mut frame);
    let mut json: serde_json::Value = serde_json::from_slice(&file[18..end]).unwrap();
    json.as_object_mut().unwrap().remove("header_sha256");
    json["frame_xxh3"] = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&frame)).into();
    edit(&mut json);
    let text = serde_json::to_vec(&json).unwrap();
    let mut content = b"SYNCDHUB".to_vec();
    content.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    content.extend_from_slice(&text[..text.len() - 1]);
    let digest: String = Sha256::digest(&content).iter().map(|b| format!("{b:02x}")).collect();
    content.extend_from_slice(format!(",\"header_sha256\":\"{digest}\"}}").as_bytes());
    let mut out = 0x184D_2A5B_u32.to_le_bytes().to_vec();
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    out.extend_from_slice(&content);
    out.extend_from_slice(&frame);
    out
}

/// Sets the content size recorded in a zstd frame header (RFC 8878).
fn set_frame_content_size(frame: &mut [u8], size: u64) {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let at = 5 + usize::from(!single_segment);
    match descriptor >> 6 {
        1 => frame[at..at + 2].copy_from_slice(&((size - 256) as u16).to_le_bytes()),
        2 => frame[at..at + 4].copy_from_slice(&(size as u32).to_le_bytes()),
        3 => frame[at..at + 8].copy_from_slice(&size.to_le_bytes()),
        _ => frame[at] = size as u8,
    }
}

#[test]
fn a_batch_round_trips_with_its_header() {
    for body in [Vec::new(), b"x".to_vec(), database_like(100_000, 1)] {
        let file = batch_file(&body);
        let (got, decoded) = container::decode(&file, &expect_batch()).unwrap();
        assert_eq!(decoded, body);
        let mut want = header(FileKind::Batch);
        want.body_len = body.len() as u64;
        want.body_sha256 = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
        assert_eq!(container::read_header(&file).unwrap(), want);
    }
}

#[test]
fn a_file_cut_at_any_length_is_reported_as_incomplete() {
    let body = database_like(3_000, 2);
    let file = batch_file(&body);
    for len in 0..file.len() {
        match container::decode(&file[..len], &expect_batch()) {
            Err(ContainerError::Truncated) => {}
            other => panic!("cut at {len} of {}: {other:?}", file.len()),
        }
    }
}

#[test]
fn every_single_bit_flip_is_an_error() {
    let body = database_like(2_000, 3);
    let file = batch_file(&body);
    let header_len = container::header_frame_len(&file).unwrap();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..file.len() {
        for bit in 0..8 {
            let mut damaged = file.clone();
            damaged[i] ^= 1 << bit;
            match container::decode(&damaged, &expect_batch()) {
                Ok((h, b)) => panic!(
                    "flip of bit {bit} at byte {i} ({} part) was accepted; same body: {}, same header: {}",
                    if i < header_len { "header" } else { "body" },
                    b == body,
                    container::read_header(&file).unwrap() == h,
                ),
                Err(e) => {
                    let kind = format!("{e:?}");
                    let kind = kind.split([' ', '(', '{']).next().unwrap().to_string();
                    *kinds.entry(kind).or_default() += 1;
                }
            }
            if i < header_len {
                assert!(container::read_header(&damaged).is_err(), "header flip {i}/{bit}");
            }
        }
    }
    eprintln!("errors for {} flips: {kinds:?}", file.len() * 8);
}

#[test]
fn a_streamed_snapshot_detects_every_flip_in_its_header_and_frame_edges() {
    // Big enough for zstd to describe its window instead of using a single
    // segment, and written with the padded header of `encode_file`.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db.sqlite");
    let body = database_like(3 << 20, 10);
    std::fs::write(&src, &body).unwrap();
    let packed = dir.path().join("x.snap");
    container::encode_file(&header(FileKind::Snapshot), &src, &packed, 3, &mut |_| {}).unwrap();
    let file = std::fs::read(&packed).unwrap();
    let header_len = container::header_frame_len(&file).unwrap();
    assert!(file[..header_len].ends_with(b" "), "the streamed header is padded");
    assert_eq!(container::decode(&file, &expect_snapshot()).unwrap().1, body);

    let frame_start = header_len..header_len + 32;
    let frame_end = file.len() - 16..file.len();
    for i in (0..header_len).chain(frame_start).chain(frame_end) {
        for bit in 0..8 {
            let mut damaged = file.clone();
            damaged[i] ^= 1 << bit;
            let result = container::decode(&damaged, &expect_snapshot());
            assert!(result.is_err(), "flip of bit {bit} at byte {i} was accepted");
        }
    }
}

#[test]
fn a_newer_format_asks_to_upgrade_syncd() {
    let mut file = batch_file(b"body");
    file[16..18].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = container::decode(&file, &expect_batch()).unwrap_err();
    assert!(
        matches!(err, ContainerError::FutureVersion { found, supported }
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade syncd"), "{err}");
    // Even the header alone, and even when the rest is not understood.
    let err = container::read_header(&file[..18]).unwrap_err();
    assert!(matches!(err, ContainerError::FutureVersion { .. }), "{err:?}");
}

#[test]
fn a_file_from_another_database_peer_sequence_or_kind_is_foreign() {
    let file = batch_file(b"body");
    let cases = [
        (Expect { database: "other", ..expect_batch() }, "database"),
        (Expect { peer_id: Some(OTHER_PEER), ..expect_batch() }, "peer id"),
        (Expect { seq: Some(43), ..expect_batch() }, "sequence number"),
        (Expect { kind: FileKind::Snapshot, ..expect_batch() }, "kind"),
    ];
    for (expect, want) in cases {
        match container::decode(&file, &expect) {
            Err(e @ ContainerError::Foreign { field, .. }) if field == want => {
                assert!(e.to_string().contains(want), "{e}");
            }
            other => panic!("{want}: {other:?}"),
        }
    }
    // Expecting nothing of the peer and the sequence accepts the file.
    let open = Expect { peer_id: None, seq: None, ..expect_batch() };
    assert!(container::decode(&file, &open).is_ok());
}

#[test]
fn a_well_formed_header_that_lies_about_the_body_is_refused() {
    let body = database_like(10_000, 4);
    let file = batch_file(&body);
    // The rewriting helper itself yields a valid file.
    assert!(container::decode(&with_header_rewritten(&file, |_| {}), &expect_batch()).is_ok());

    let shorter = with_header_rewritten(&file, |h| h["body_len"] = 9_999.into());
    assert!(matches!(
        container::decode(&shorter, &expect_batch()),
        Err(ContainerError::Length { expected: 9_999, .. })
    ));
    let longer = with_header_rewritten(&file, |h| h["body_len"] = 10_001.into());
    assert!(matches!(
        container::decode(&longer, &expect_batch()),
        Err(ContainerError::Length { expected: 10_001, found: 10_000 })
    ));
    let other_sha = with_header_rewritten(&file, |h| h["body_sha256"] = "ab".repeat(32).into());
    assert!(matches!(container::decode(&other_sha, &expect_batch()), Err(ContainerError::Checksum)));
    let huge = with_header_rewritten(&file, |h| h["body_len"] = (MAX_IN_MEMORY_BODY + 1).into());
    assert!(matches!(container::decode(&huge, &expect_batch()), Err(ContainerError::TooLarge { .. })));
    let bad_peer = with_header_rewritten(&file, |h| h["peer_id"] = "laptop".into());
    assert!(matches!(container::decode(&bad_peer, &expect_batch()), Err(ContainerError::BadHeader(_))));
    let not_a_header = with_header_rewritten(&file, |h| h["kind"] = "journal".into());
    assert!(matches!(container::decode(&not_a_header, &expect_batch()), Err(ContainerError::BadHeader(_))));
}

#[test]
fn a_small_file_that_expands_past_its_declared_length_is_refused() {
    // 64 MiB of zeros compress to a few KiB: a decompression bomb for a
    // reader that trusted the frame instead of the header.
    let bomb = vec![0u8; 64 << 20];
    let file = batch_file(&bomb);
    assert!(file.len() < 64 << 10, "{}", file.len());
    let lying = with_header_rewritten(&file, |h| h["body_len"] = 1_000.into());
    assert!(matches!(
        container::decode(&lying, &expect_batch()),
        Err(ContainerError::Length { expected: 1_000, found }) if found == 64 << 20
    ));
    // Even when the zstd frame tells the same lie.
    let lying = rewritten(&file, |h| h["body_len"] = 1_000.into(), |f| set_frame_content_size(f, 1_000));
    assert!(container::decode(&lying, &expect_batch()).is_err());
}

#[test]
fn bytes_after_the_body_or_a_foreign_file_are_refused() {
    let mut file = batch_file(b"body");
    file.push(0);
    assert!(container::decode(&file, &expect_batch()).is_err());
    let mut twice = batch_file(b"body");
    twice.extend_from_slice(&zstd::bulk::compress(b"more", 3).unwrap());
    assert!(container::decode(&twice, &expect_batch()).is_err());
    let plain_zstd = zstd::bulk::compress(b"body", 3).unwrap();
    assert!(matches!(container::decode(&plain_zstd, &expect_batch()), Err(ContainerError::NotASyncdFile)));
    assert!(matches!(
        container::decode(b"SQLite format 3\0......", &expect_batch()),
        Err(ContainerError::NotASyncdFile)
    ));
}

#[test]
fn a_person_with_only_zstd_gets_the_body() {
    let body = database_like(200_000, 5);
    let file = container::encode(&header(FileKind::Snapshot), &body, 3);
    assert_eq!(zstd::stream::decode_all(&file[..]).unwrap(), body);
    if let Some(out) = zstd_cli(&file) {
        assert_eq!(out, body);
    }
}

/// `zstd -dcq` of `file`, if the zstd command is installed.
fn zstd_cli(file: &[u8]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.snap");
    std::fs::write(&path, file).unwrap();
    let out = std::process::Command::new("zstd").arg("-dcq").arg(&path).output().ok()?;
    assert!(out.status.success(), "zstd: {}", String::from_utf8_lossy(&out.stderr));
    Some(out.stdout)
}

#[test]
fn a_big_snapshot_streams_through_files_and_opens_with_plain_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db.sqlite");
    let body = database_like(30 << 20, 6);
    std::fs::write(&src, &body).unwrap();
    let packed = dir.path().join("main_laptop_20251124T160000123Z.snap");

    let mut calls = Vec::new();
    let written =
        container::encode_file(&header(FileKind::Snapshot), &src, &packed, 3, &mut |done| calls.push(done)).unwrap();
    assert!(calls.len() > 1, "{calls:?}");
    assert!(calls.windows(2).all(|w| w[0] < w[1]), "progress only grows");
    assert_eq!(calls.last(), Some(&(body.len() as u64)));
    assert_eq!(written.body_len, body.len() as u64);
    assert!(!dir.path().join(format!("{}.tmp", packed.display())).exists());

    // The header is readable from the first few KiB.
    let file = std::fs::read(&packed).unwrap();
    let mut head = std::fs::File::open(&packed).unwrap();
    let mut prefix = vec![0u8; 4096];
    std::io::Read::read_exact(&mut head, &mut prefix).unwrap();
    assert_eq!(container::read_header(&prefix).unwrap(), written);

    let restored = dir.path().join("restored.db");
    let read = container::decode_file(&packed, &restored, &expect_snapshot()).unwrap();
    assert_eq!(read, written);
    assert!(std::fs::read(&restored).unwrap() == body);
    // The same file decodes in memory and with plain zstd.
    assert!(container::decode(&file, &expect_snapshot()).unwrap().1 == body);
    assert!(zstd::stream::decode_all(&file[..]).unwrap() == body);
    if let Some(out) = zstd_cli(&file) {
        assert!(out == body);
    }
}

#[test]
fn a_bad_snapshot_leaves_the_destination_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let body = database_like(1 << 20, 7);
    let good = container::encode(&header(FileKind::Snapshot), &body, 3);
    let dst = dir.path().join("restored.db");
    let tmp = dir.path().join("restored.db.tmp");

    let mut flipped = good.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x10;
    let foreign_db = Expect { database: "other", ..expect_snapshot() };
    let cases: Vec<(&str, Vec<u8>, Expect<'_>)> = vec![
        ("truncated", good[..good.len() - 100].to_vec(), expect_snapshot()),
        ("flipped", flipped, expect_snapshot()),
        ("foreign", good.clone(), foreign_db),
        ("empty", Vec::new(), expect_snapshot()),
    ];
    for (what, file, expect) in cases {
        std::fs::write(&dst, b"the user's database").unwrap();
        let src = dir.path().join("x.snap");
        std::fs::write(&src, &file).unwrap();
        let err = container::decode_file(&src, &dst, &expect).unwrap_err();
        assert_eq!(std::fs::read(&dst).unwrap(), b"the user's database", "{what}: {err}");
        assert!(!tmp.exists(), "{what}: temporary file left behind");
    }
    let err = container::decode_file(&dir.path().join("missing.snap"), &dst, &expect_snapshot());
    assert!(matches!(err, Err(ContainerError::Io(_))));
}

#[test]
fn a_lying_snapshot_does_not_fill_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let file = container::encode(&header(FileKind::Snapshot), &vec![0u8; 64 << 20], 3);
    let src = dir.path().join("x.snap");
    let dst = dir.path().join("out.db");

    let lying = with_header_rewritten(&file, |h| h["body_len"] = 1_000.into());
    std::fs::write(&src, &lying).unwrap();
    let err = container::decode_file(&src, &dst, &expect_snapshot()).unwrap_err();
    assert!(matches!(err, ContainerError::Length { expected: 1_000, .. }), "{err:?}");
    assert!(!dst.exists());

    // The zstd frame tells the same lie: decoding stops within a chunk.
    let lying = rewritten(&file, |h| h["body_len"] = 1_000.into(), |f| set_frame_content_size(f, 1_000));
    std::fs::write(&src, &lying).unwrap();
    let err = container::decode_file(&src, &dst, &expect_snapshot()).unwrap_err();
    match err {
        ContainerError::Length { expected: 1_000, found } => assert!(found <= 8 << 20, "{found}"),
        ContainerError::Checksum => {}
        other => panic!("{other:?}"),
    }
    assert!(!dst.exists());
}

#[test]
fn every_error_message_is_one_line() {
    let errors = [
        ContainerError::Truncated,
        ContainerError::NotASyncdFile,
        ContainerError::FutureVersion { found: 2, supported: 1 },
        ContainerError::BadHeader("invalid JSON".into()),
        ContainerError::Foreign { field: "database", expected: "main".into(), found: "other".into() },
        ContainerError::Checksum,
        ContainerError::Length { expected: 1, found: 2 },
        ContainerError::TooLarge { found: 1 << 40, limit: MAX_IN_MEMORY_BODY },
        ContainerError::Io(std::io::Error::other("disk full")),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(!text.contains('\n') && text.len() > 10, "{text:?}");
    }
}

/// A valid file with some bytes overwritten, possibly cut short.
fn damaged_file() -> impl Strategy<Value = (Vec<u8>, Vec<(usize, u8)>, usize)> {
    let file = batch_file(&database_like(500, 8));
    let len = file.len();
    (Just(file), prop::collection::vec((0..len, any::<u8>()), 0..4), 0..=len)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    // Guarantee 4 of DESIGN §7: bad input gets an error, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = container::read_header(&bytes);
        let _ = container::decode(&bytes, &expect_batch());
    }

    #[test]
    fn random_bytes_after_a_valid_prefix_never_panic(
        rest in prop::collection::vec(any::<u8>(), 0..1024),
        len in any::<u32>(),
    ) {
        let mut bytes = 0x184D_2A5B_u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(len % 2048).to_le_bytes());
        bytes.extend_from_slice(b"SYNCDHUB\x01\x00");
        bytes.extend_from_slice(&rest);
        let _ = container::read_header(&bytes);
        let _ = container::decode(&bytes, &expect_batch());
    }

    #[test]
    fn a_damaged_file_never_yields_other_data((file, edits, cut) in damaged_file()) {
        let original = container::decode(&file, &expect_batch()).unwrap();
        let mut damaged = file.clone();
        for (at, value) in edits {
            damaged[at] = value;
        }
        damaged.truncate(cut);
        let _ = container::read_header(&damaged);
        if let Ok(decoded) = container::decode(&damaged, &expect_batch()) {
            prop_assert_eq!(decoded, original);
        }
    }
}

/// Throughput of `encode_file` against a plain copy. Run with
/// `cargo test --release -p syncd --test container_format -- --ignored --nocapture`;
/// set `SYNCD_BENCH_FILE` to measure a real database instead of a
/// generated one.
#[test]
#[ignore = "a measurement, not a check"]
fn encode_file_throughput_against_a_plain_copy() {
    let dir = tempfile::tempdir().unwrap();
    let src = match std::env::var_os("SYNCD_BENCH_FILE") {
        Some(path) => Path::new(&path).to_path_buf(),
        None => {
            let src = dir.path().join("db.sqlite");
            std::fs::write(&src, database_like(100_000_000, 9)).unwrap();
            src
        }
    };
    let size = std::fs::metadata(&src).unwrap().len() as f64 / 1e6;
    let mb_per_s = |t: std::time::Duration| size / t.as_secs_f64();

    let copy = dir.path().join("copy");
    let started = std::time::Instant::now();
    let status = std::process::Command::new("cp").arg(&src).arg(&copy).status().unwrap();
    assert!(status.success());
    let cp = started.elapsed();

    let packed = dir.path().join("x.snap");
    let started = std::time::Instant::now();
    container::encode_file(&header(FileKind::Snapshot), &src, &packed, 3, &mut |_| {}).unwrap();
    let encode = started.elapsed();
    let packed_size = std::fs::metadata(&packed).unwrap().len() as f64 / 1e6;

    let restored = dir.path().join("restored");
    let started = std::time::Instant::now();
    container::decode_file(&packed, &restored, &expect_snapshot()).unwrap();
    let decode = started.elapsed();

    eprintln!(
        "{size:.0} MB -> {packed_size:.1} MB: encode_file {encode:.2?} ({:.0} MB/s), decode_file {decode:.2?} ({:.0} MB/s), cp {cp:.2?} ({:.0} MB/s)",
        mb_per_s(encode),
        mb_per_s(decode),
        mb_per_s(cp),
    );
}

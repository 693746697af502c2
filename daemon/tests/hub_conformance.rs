//! One conformance suite that every hub implementation must pass (DESIGN
//! §3): the folder hub on a temporary folder, and the S3 hub against a real
//! S3-compatible server when `SYNCD_TEST_S3_ENDPOINT` is set (CI sets it:
//! `eval "$(.ci/s3-server.sh)"` starts moto and prints it).
//!
//! Each `check_*` function takes a `&dyn Hub` and uses its own folder, so
//! they can share one hub.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncd::hub::{Hub, HubError, S3Options};

fn names(hub: &dyn Hub, dir: &str, after: Option<&str>) -> Vec<String> {
    hub.list(dir, after).unwrap().into_iter().map(|e| e.name).collect()
}

fn batch(seq: u64) -> String {
    format!("{seq:020}.chg")
}

fn check_put_atomic_then_get(hub: &dyn Hub) {
    hub.put_atomic("c1/p/peer.json", b"one").unwrap();
    assert_eq!(hub.get("c1/p/peer.json").unwrap(), b"one");
}

fn check_put_atomic_replaces(hub: &dyn Hub) {
    hub.put_atomic("c2/p/peer.json", b"a longer first version").unwrap();
    hub.put_atomic("c2/p/peer.json", b"two").unwrap();
    assert_eq!(hub.get("c2/p/peer.json").unwrap(), b"two");
    assert_eq!(names(hub, "c2/p", None), ["peer.json"], "no temporary file is left visible");
}

fn check_put_new_refuses_to_overwrite(hub: &dyn Hub) {
    let path = format!("c3/p/changes/{}", batch(1));
    hub.put_new(&path, b"first").unwrap();
    let again = hub.put_new(&path, b"other bytes");
    assert!(matches!(again, Err(HubError::AlreadyExists(_))), "{again:?}");
    assert_eq!(hub.get(&path).unwrap(), b"first", "the original is intact");
    assert_eq!(names(hub, "c3/p/changes", None), [batch(1)], "no temporary file is left visible");
    // A new name in the same folder is fine.
    hub.put_new(&format!("c3/p/changes/{}", batch(2)), b"second").unwrap();
}

fn check_list_is_sorted_and_skips_dot_files_and_folders(hub: &dyn Hub) {
    for seq in [3u64, 1, 2, 10] {
        hub.put_atomic(&format!("c4/p/changes/{}", batch(seq)), format!("{seq:02}").as_bytes()).unwrap();
    }
    hub.put_atomic("c4/p/changes/sub/deeper.chg", b"x").unwrap();
    hub.put_atomic("c4/p/changes/.00000000000000000011.chg.1234.tmp", b"half").unwrap();
    // Same leading characters as the folder, but beside it.
    hub.put_atomic("c4/p/changes-old/x.chg", b"x").unwrap();
    hub.put_atomic("c4/p/changesX.chg", b"x").unwrap();
    assert_eq!(names(hub, "c4/p/changes", None), [batch(1), batch(2), batch(3), batch(10)]);
    let entries = hub.list("c4/p/changes", None).unwrap();
    assert!(entries.iter().all(|e| e.size == 2), "{entries:?}");
}

fn check_list_honours_after(hub: &dyn Hub) {
    for seq in [1u64, 2, 3, 10] {
        hub.put_new(&format!("c5/p/changes/{}", batch(seq)), b"x").unwrap();
    }
    assert_eq!(names(hub, "c5/p/changes", Some(&batch(2))), [batch(3), batch(10)]);
    // `after` need not exist.
    assert_eq!(names(hub, "c5/p/changes", Some(&batch(4))), [batch(10)]);
    assert_eq!(names(hub, "c5/p/changes", Some(&batch(0))).len(), 4);
    assert!(names(hub, "c5/p/changes", Some(&batch(10))).is_empty());
}

fn check_list_of_a_missing_folder_is_empty(hub: &dyn Hub) {
    assert!(hub.list("c6/nobody/changes", None).unwrap().is_empty());
    assert!(hub.list("c6/nobody/changes", Some(&batch(1))).unwrap().is_empty());
}

fn check_list_dirs(hub: &dyn Hub) {
    for peer in ["pb", "pa", "pc"] {
        hub.put_atomic(&format!("c7/{peer}/peer.json"), b"{}").unwrap();
    }
    hub.put_atomic("c7/pa/changes/x.chg", b"x").unwrap();
    hub.put_atomic("c7/file-not-folder.json", b"{}").unwrap();
    assert_eq!(hub.list_dirs("c7").unwrap(), ["pa", "pb", "pc"]);
    assert_eq!(hub.list_dirs("c7/pa").unwrap(), ["changes"]);
    assert!(hub.list_dirs("c7/pb").unwrap().is_empty());
    assert!(hub.list_dirs("c7/nothing-here").unwrap().is_empty());
    assert!(hub.list_dirs("").unwrap().contains(&"c7".to_string()));
}

fn check_get_of_a_missing_file_is_not_found(hub: &dyn Hub) {
    let got = hub.get("c8/p/none.chg");
    assert!(matches!(got, Err(HubError::NotFound(_))), "{got:?}");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out");
    let got = hub.get_to_file("c8/p/none.snap", &local);
    assert!(matches!(got, Err(HubError::NotFound(_))), "{got:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing is left locally");
}

fn check_delete_is_idempotent(hub: &dyn Hub) {
    hub.put_atomic("c9/p/x.chg", b"x").unwrap();
    hub.delete("c9/p/x.chg").unwrap();
    hub.delete("c9/p/x.chg").unwrap();
    hub.delete("c9/never/existed.chg").unwrap();
    assert!(matches!(hub.get("c9/p/x.chg"), Err(HubError::NotFound(_))));
    assert!(names(hub, "c9/p", None).is_empty());
    // An immutable name can be written again once deleted (retention).
    hub.put_new("c9/p/x.chg", b"y").unwrap();
}

/// Writes `len` bytes of a pattern that no part boundary can hide.
fn pattern_file(path: &Path, len: u32) -> Vec<u8> {
    let body: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(path, &body).unwrap();
    body
}

fn check_small_files_round_trip_through_local_files(hub: &dyn Hub) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("small");
    let body = pattern_file(&src, 1000);
    hub.put_file("c10/p/snapshots/small.snap", &src).unwrap();
    let back = dir.path().join("back");
    std::fs::write(&back, b"an older copy, replaced").unwrap();
    hub.get_to_file("c10/p/snapshots/small.snap", &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), body);
    assert_eq!(hub.list("c10/p/snapshots", None).unwrap()[0].size, 1000);
}

fn check_large_files_round_trip(hub: &dyn Hub) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    let body = pattern_file(&src, 20 << 20);
    hub.put_file("c11/p/snapshots/big.snap", &src).unwrap();
    assert_eq!(hub.list("c11/p/snapshots", None).unwrap()[0].size, 20 << 20);
    let back = dir.path().join("back");
    hub.get_to_file("c11/p/snapshots/big.snap", &back).unwrap();
    assert!(std::fs::read(&back).unwrap() == body, "the large file differs after the round trip");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "no temporary download is left: {left:?}");
}

/// Runs every check; each uses its own folder.
fn run_suite(hub: &dyn Hub) {
    check_put_atomic_then_get(hub);
    check_put_atomic_replaces(hub);
    check_put_new_refuses_to_overwrite(hub);
    check_list_is_sorted_and_skips_dot_files_and_folders(hub);
    check_list_honours_after(hub);
    check_list_of_a_missing_folder_is_empty(hub);
    check_list_dirs(hub);
    check_get_of_a_missing_file_is_not_found(hub);
    check_delete_is_idempotent(hub);
    check_small_files_round_trip_through_local_files(hub);
    check_large_files_round_trip(hub);
}

// ---- The folder hub ----

fn folder_hub(dir: &Path) -> Arc<dyn Hub> {
    syncd::hub::open(&format!("file://{}", dir.display()), &S3Options::default()).unwrap()
}

#[test]
fn the_folder_hub_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    run_suite(folder_hub(dir.path()).as_ref());
}

#[test]
fn a_temporary_file_left_by_a_crashed_folder_writer_is_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = folder_hub(dir.path());
    hub.put_new(&format!("db/p/changes/{}", batch(1)), b"x").unwrap();
    let changes = dir.path().join("db/p/changes");
    std::fs::write(changes.join(format!(".{}.0123456789abcdef.tmp", batch(2))), b"half").unwrap();
    std::fs::create_dir(changes.join(".hidden-folder")).unwrap();
    assert_eq!(names(hub.as_ref(), "db/p/changes", None), [batch(1)]);
    assert!(hub.list_dirs("db/p/changes").unwrap().is_empty());
}

#[test]
fn a_missing_hub_folder_is_unreachable_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-mounted");
    let err = syncd::hub::open(&format!("file://{}", missing.display()), &S3Options::default()).err().unwrap();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("create the folder"), "{err}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let err = syncd::hub::open(&format!("file://{}", file.display()), &S3Options::default()).err().unwrap();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
}

#[test]
fn a_folder_hub_whose_share_goes_away_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("share");
    std::fs::create_dir(&root).unwrap();
    let hub = folder_hub(&root);
    hub.put_atomic("db/p/peer.json", b"{}").unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    for result in [
        hub.list("db/p", None).map(|_| ()),
        hub.list_dirs("db").map(|_| ()),
        hub.get("db/p/peer.json").map(|_| ()),
        hub.put_atomic("db/p/peer.json", b"{}"),
        hub.put_new("db/p/changes/x.chg", b"{}"),
        hub.delete("db/p/peer.json"),
    ] {
        assert!(matches!(result, Err(HubError::Unreachable { .. })), "{result:?}");
    }
    assert!(!root.exists(), "nothing was created in place of the share");
}

// ---- The S3 hub ----

const SKIPPED: &str = "skipped: set SYNCD_TEST_S3_ENDPOINT=http://127.0.0.1:PORT (eval \"$(.ci/s3-server.sh)\") \
                       to test the S3 hub";

fn s3_endpoint() -> Option<String> {
    std::env::var("SYNCD_TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty()).map(|e| e.trim_end_matches('/').into())
}

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test-secret".into()),
        allow_http: Some(true),
    }
}

/// A bucket name that no other test run uses.
fn fresh_bucket() -> String {
    format!("syncd-test-{:016x}", rand::random::<u64>())
}

/// Sends one plain HTTP/1.1 request to the test server (moto accepts
/// unsigned requests) and returns the whole answer.
fn raw_http(endpoint: &str, method: &str, path: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

fn create_bucket(endpoint: &str, bucket: &str) {
    let reply = raw_http(endpoint, "PUT", &format!("/{bucket}"));
    assert!(reply.starts_with("HTTP/1.1 200"), "creating bucket {bucket}: {reply}");
}

/// An S3 hub on a fresh bucket of the test server, below `prefix`.
fn s3_hub(endpoint: &str, bucket: &str, prefix: &str) -> Arc<dyn Hub> {
    create_bucket(endpoint, bucket);
    syncd::hub::open(&format!("s3://{bucket}/{prefix}"), &s3_options(endpoint)).unwrap()
}

#[test]
fn the_s3_hub_passes_the_conformance_suite() {
    let Some(endpoint) = s3_endpoint() else { return eprintln!("{SKIPPED}") };
    let bucket = fresh_bucket();
    let hub = s3_hub(&endpoint, &bucket, "team/hub");
    run_suite(hub.as_ref());
    assert_eq!(hub.url(), format!("s3://{bucket}/team/hub"));
    // The 20 MiB snapshot went up in parts: its ETag says how many.
    let head = raw_http(&endpoint, "HEAD", &format!("/{bucket}/team/hub/c11/p/snapshots/big.snap"));
    let etag = head.lines().find(|l| l.to_ascii_lowercase().starts_with("etag:")).unwrap_or("");
    assert!(etag.contains("-3"), "expected a 3-part upload: {head}");
}

#[test]
fn the_s3_hub_at_the_bucket_root_passes_the_conformance_suite() {
    let Some(endpoint) = s3_endpoint() else { return eprintln!("{SKIPPED}") };
    let hub = s3_hub(&endpoint, &fresh_bucket(), "");
    run_suite(hub.as_ref());
}

#[test]
fn a_temporary_object_left_by_a_crashed_s3_writer_is_never_listed() {
    let Some(endpoint) = s3_endpoint() else { return eprintln!("{SKIPPED}") };
    let bucket = fresh_bucket();
    let hub = s3_hub(&endpoint, &bucket, "x");
    hub.put_new(&format!("db/p/changes/{}", batch(1)), b"x").unwrap();
    // An unfinished multipart upload is invisible to listings, and a
    // dot-named object (another tool's temporary file) is skipped.
    hub.put_atomic(&format!("db/p/changes/.{}.0123456789abcdef.tmp", batch(2)), b"half").unwrap();
    hub.put_atomic("db/p/changes/.hidden/y.chg", b"y").unwrap();
    assert_eq!(names(hub.as_ref(), "db/p/changes", None), [batch(1)]);
    assert!(hub.list_dirs("db/p/changes").unwrap().is_empty());
}

#[test]
fn a_missing_bucket_is_unreachable_and_says_what_to_do() {
    let Some(endpoint) = s3_endpoint() else { return eprintln!("{SKIPPED}") };
    let hub = syncd::hub::open(&format!("s3://{}/x", fresh_bucket()), &s3_options(&endpoint)).unwrap();
    let err = hub.list("db/p/changes", None).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("create it"), "{err}");
    let err = hub.get("db/p/peer.json").unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
}

#[test]
fn an_unreachable_s3_endpoint_is_reported_within_seconds() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hub = syncd::hub::open("s3://bucket/x", &s3_options(&format!("http://127.0.0.1:{port}"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("snap");
    std::fs::write(&local, b"snapshot").unwrap();
    let started = Instant::now();
    for result in [
        hub.list("db/p/changes", Some(&batch(1))).map(|_| ()),
        hub.list_dirs("db").map(|_| ()),
        hub.get("db/p/peer.json").map(|_| ()),
        hub.get_to_file("db/p/snapshots/s.snap", &dir.path().join("back")),
        hub.put_atomic("db/p/peer.json", b"{}"),
        hub.put_new("db/p/changes/x.chg", b"{}"),
        hub.put_file("db/p/snapshots/s.snap", &local),
        hub.delete("db/p/peer.json"),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&port.to_string()), "the reason names the endpoint: {text}");
        assert!(!text.contains("test-secret"), "no secret in errors: {text}");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8 * 5), "8 operations took {elapsed:?}");
    let one = Instant::now();
    let _ = hub.list("db/p/changes", None);
    assert!(one.elapsed() < Duration::from_secs(5), "one operation took {:?}", one.elapsed());
}

#[test]
fn an_s3_endpoint_that_never_answers_is_reported_as_unreachable() {
    // The kernel accepts connections into the backlog; nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let hub = syncd::hub::open("s3://bucket/x", &s3_options(&format!("http://127.0.0.1:{port}"))).unwrap();
    let started = Instant::now();
    let err = hub.list("db/p/changes", None).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

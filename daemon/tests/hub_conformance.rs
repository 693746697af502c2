//! One conformance suite for every hub implementation (the folder hub, and
//! the S3 hub against a real S3-compatible server when
//! `SYNCD_TEST_S3_ENDPOINT` is set, as `scripts/test.sh` does).

use std::sync::Arc;
use std::time::{Duration, Instant};
use syncd::hub::{Hub, HubError, S3Options};

fn check_put_get_and_replace(hub: &dyn Hub) {
    hub.put_atomic("db/p1/peer.json", b"one").unwrap();
    assert_eq!(hub.get("db/p1/peer.json").unwrap(), b"one");
    hub.put_atomic("db/p1/peer.json", b"two").unwrap();
    assert_eq!(hub.get("db/p1/peer.json").unwrap(), b"two");
}

fn check_put_new_never_overwrites(hub: &dyn Hub) {
    hub.put_new("db/p1/changes/00000000000000000001.chg", b"first").unwrap();
    let again = hub.put_new("db/p1/changes/00000000000000000001.chg", b"other");
    assert!(matches!(again, Err(HubError::AlreadyExists(_))), "{again:?}");
    assert_eq!(hub.get("db/p1/changes/00000000000000000001.chg").unwrap(), b"first");
}

fn check_listing(hub: &dyn Hub) {
    for seq in [3u64, 1, 2, 10] {
        hub.put_atomic(&format!("db/p2/changes/{seq:020}.chg"), format!("b{seq}").as_bytes()).unwrap();
    }
    hub.put_atomic("db/p2/changes/sub/deeper.chg", b"x").unwrap();
    let names: Vec<String> = hub.list("db/p2/changes", None).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "00000000000000000001.chg",
            "00000000000000000002.chg",
            "00000000000000000003.chg",
            "00000000000000000010.chg"
        ]
    );
    let after: Vec<String> =
        hub.list("db/p2/changes", Some("00000000000000000002.chg")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(after, ["00000000000000000003.chg", "00000000000000000010.chg"]);
    let entry = &hub.list("db/p2/changes", None).unwrap()[0];
    assert_eq!(entry.size, 2);
    assert!(hub.list("db/nobody/changes", None).unwrap().is_empty());
    let dirs = hub.list_dirs("db").unwrap();
    assert!(dirs.contains(&"p2".to_string()), "{dirs:?}");
    assert!(hub.list_dirs("nothing-here").unwrap().is_empty());
}

fn check_missing_and_delete(hub: &dyn Hub) {
    assert!(matches!(hub.get("db/p3/none.chg"), Err(HubError::NotFound(_))));
    hub.put_atomic("db/p3/x.chg", b"x").unwrap();
    hub.delete("db/p3/x.chg").unwrap();
    hub.delete("db/p3/x.chg").unwrap();
    assert!(matches!(hub.get("db/p3/x.chg"), Err(HubError::NotFound(_))));
}

fn check_large_files_round_trip(hub: &dyn Hub) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    let body: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&src, &body).unwrap();
    hub.put_file("db/p4/snapshots/big.snap", &src).unwrap();
    let back = dir.path().join("back");
    hub.get_to_file("db/p4/snapshots/big.snap", &back).unwrap();
    assert!(std::fs::read(&back).unwrap() == body, "large file differs after the round trip");
}

fn run_suite(hub: &dyn Hub) {
    check_put_get_and_replace(hub);
    check_put_new_never_overwrites(hub);
    check_listing(hub);
    check_missing_and_delete(hub);
    check_large_files_round_trip(hub);
}

#[test]
fn the_folder_hub_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let hub = syncd::hub::open(&format!("file://{}", dir.path().display()), &S3Options::default()).unwrap();
    run_suite(hub.as_ref());
    // A temporary file left by a crashed writer is never listed.
    std::fs::write(dir.path().join("db/p2/changes/.00000000000000000011.chg.1234.tmp"), b"half").unwrap();
    assert!(hub.list("db/p2/changes", None).unwrap().iter().all(|e| !e.name.starts_with('.')));
}

#[test]
fn a_missing_hub_folder_is_unreachable() {
    let err = syncd::hub::open("file:///nonexistent/syncd/hub", &S3Options::default()).err().unwrap();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("create the folder"), "{err}");
}

/// An S3 hub on a fresh bucket of the test server, or `None` when there is
/// no server.
pub fn s3_hub(prefix: &str) -> Option<Arc<dyn Hub>> {
    let endpoint = std::env::var("SYNCD_TEST_S3_ENDPOINT").ok()?;
    let bucket = format!("t{:016x}", rand_u64());
    create_bucket(&endpoint, &bucket);
    let opts = s3_options(&endpoint);
    Some(syncd::hub::open(&format!("s3://{bucket}/{prefix}"), &opts).unwrap())
}

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: Some(true),
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Creates a bucket with a plain HTTP PUT (moto accepts unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "creating bucket {bucket}: {reply}");
}

#[test]
fn the_s3_hub_passes_the_conformance_suite() {
    let Some(hub) = s3_hub("team") else {
        eprintln!("skipped: set SYNCD_TEST_S3_ENDPOINT (scripts/test.sh does) to test the S3 hub");
        return;
    };
    run_suite(hub.as_ref());
}

#[test]
fn an_unreachable_s3_endpoint_is_reported_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hub = syncd::hub::open("s3://bucket/x", &s3_options(&format!("http://127.0.0.1:{port}"))).unwrap();
    let t = Instant::now();
    let err = hub.list("db/p/changes", None).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    assert!(!err.to_string().contains("test"), "no secret in errors: {err}");
}

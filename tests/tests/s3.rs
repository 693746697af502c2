//! Two real daemons over the S3 hub, against the S3-compatible server that
//! `scripts/test.sh` starts on loopback (`SYNCD_TEST_S3_ENDPOINT`), through a
//! relay this test can cut to simulate an outage.

mod common;
use common::{Peer, wait_for};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn endpoint() -> Option<String> {
    let e = std::env::var("SYNCD_TEST_S3_ENDPOINT").ok();
    if e.is_none() {
        eprintln!("skipped: set SYNCD_TEST_S3_ENDPOINT (scripts/test.sh does) to test the S3 hub");
    }
    e
}

fn create_bucket(endpoint: &str, bucket: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// A TCP relay on a fixed loopback port that can be cut and restored, the
/// way a network outage looks to the daemons (the bucket keeps its objects).
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                conns2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn s3_peer(name: &str, url: &str, relay_port: u16) -> Peer {
    let extra = "";
    let p = Peer::on(url, name, extra);
    // Endpoint and credentials in the configuration (not the environment),
    // pointing at the relay.
    let config = std::fs::read_to_string(p.config_path()).unwrap().replace(
        "poll_secs = 1\n",
        &format!(
            "poll_secs = 1\nendpoint = \"http://127.0.0.1:{relay_port}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n"
        ),
    );
    std::fs::write(p.config_path(), config).unwrap();
    p
}

#[test]
fn two_daemons_converge_over_s3_and_survive_an_outage() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = format!("e2e{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let relay = Relay::start(endpoint.trim_start_matches("http://").to_string());
    let url = format!("s3://{bucket}/team");
    let (mut a, mut b) = (s3_peer("a", &url, relay.port), s3_peer("b", &url, relay.port));
    a.exec("INSERT INTO items(id, name) VALUES (1, 'a1');");
    b.exec("INSERT INTO items(id, name) VALUES (2, 'b2');");
    a.start();
    b.start();
    let both = |a: &Peer, b: &Peer, n: &str| {
        a.query("SELECT count(*) FROM items") == n && b.query("SELECT count(*) FROM items") == n
    };
    assert!(wait_for(Duration::from_secs(30), || both(&a, &b, "2")), "{}", a.log());

    relay.cut();
    a.exec("INSERT INTO items(id, name) VALUES (10, 'during the outage, a');");
    b.exec("INSERT INTO items(id, name) VALUES (11, 'during the outage, b');");
    let offline = |s: &serde_json::Value| {
        s["hub"]["reachable"] == false && s["databases"][0]["pending_local"].as_u64().unwrap_or(0) >= 1
    };
    assert!(
        wait_for(Duration::from_secs(40), || offline(&a.ctl_json(&["status"]))),
        "status never showed the hub unreachable with the change waiting in the outbox: {}",
        a.ctl_json(&["status"])
    );
    let s = a.ctl_json(&["status"]);
    assert!(s["hub"]["unreachable_since"].is_string(), "{s}");
    assert!(!s.to_string().contains("secret_access_key") && !a.log().contains("\"test\""), "no secret shown");

    relay.restore();
    assert!(wait_for(Duration::from_secs(60), || both(&a, &b, "4")), "{}", a.log());
    assert!(wait_for(Duration::from_secs(20), || a.query("SELECT * FROM items ORDER BY id")
        == b.query("SELECT * FROM items ORDER BY id")));
    assert!(wait_for(Duration::from_secs(20), || a.ctl_json(&["status"])["hub"]["reachable"] == true));
}

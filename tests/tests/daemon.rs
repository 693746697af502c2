//! Two real `syncd` daemons on one folder hub, driven by `syncctl` and by a
//! separate process writing the databases (issue 3).

mod common;
use common::{Hub, Peer, wait_for};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn a_committed_row_reaches_the_other_daemon_without_any_command() {
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.start();
    b.start();
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'hello', 1);");
    assert!(
        wait_for(Duration::from_secs(20), || b.query("SELECT name FROM items WHERE id = 1") == "hello"),
        "{}",
        b.log()
    );
    b.exec("UPDATE items SET qty = 2 WHERE id = 1;");
    assert!(wait_for(Duration::from_secs(20), || a.query("SELECT qty FROM items WHERE id = 1") == "2"), "{}", a.log());
    // status --json lists b as an active peer, with the documented fields.
    assert!(wait_for(Duration::from_secs(15), || {
        let s = a.ctl_json(&["status"]);
        s["peers"].as_array().unwrap().iter().any(|p| p["name"] == "b" && p["active"] == true)
    }));
    let s = a.ctl_json(&["status"]);
    assert_eq!(s["hub"]["reachable"], true);
    let db = &s["databases"][0];
    assert_eq!(db["name"], "main");
    for field in [
        "path",
        "state",
        "pending_local",
        "pending_remote",
        "last_sync",
        "last_error",
        "conflicts",
        "parked",
        "auto_sync",
    ] {
        assert!(db.get(field).is_some(), "status lacks databases[].{field}: {s}");
    }
    for field in ["database", "peer_id", "name", "host", "last_seen", "active", "version"] {
        assert!(s["peers"][0].get(field).is_some(), "status lacks peers[].{field}");
    }
}

#[test]
fn sigterm_publishes_pending_changes_and_exits_zero() {
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.start();
    b.start();
    a.exec("INSERT INTO items(id, name) VALUES (2, 'last-words');");
    a.signal("TERM");
    assert_eq!(a.wait_exit(Duration::from_secs(15)), Some(0), "{}", a.log());
    assert!(wait_for(Duration::from_secs(20), || b.query("SELECT name FROM items WHERE id = 2") == "last-words"));
    // syncctl against a stopped daemon: exit 3 with a hint.
    let out = a.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("syncd"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sighup_picks_up_a_newly_added_database() {
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    for p in [&a, &b] {
        let second = p.dir.path().join("second.db");
        rusqlite::Connection::open(&second)
            .unwrap()
            .execute_batch("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);")
            .unwrap();
    }
    a.start();
    b.start();
    let (sa, sb) = (a.dir.path().join("second.db"), b.dir.path().join("second.db"));
    a.write_config(&[("main", &a.db()), ("second", &sa)]);
    b.write_config(&[("main", &b.db()), ("second", &sb)]);
    a.signal("HUP");
    b.signal("HUP");
    assert!(wait_for(Duration::from_secs(20), || a.ctl_json(&["status"])["databases"].as_array().unwrap().len() == 2));
    rusqlite::Connection::open(&sa).unwrap().execute("INSERT INTO notes VALUES (1, 'new db')", []).unwrap();
    let read = || {
        rusqlite::Connection::open(&sb)
            .unwrap()
            .query_row("SELECT body FROM notes WHERE id = 1", [], |r| r.get::<_, String>(0))
            .ok()
    };
    assert!(wait_for(Duration::from_secs(20), || read().as_deref() == Some("new db")), "{}", b.log());
}

#[test]
fn garbage_and_oversized_frames_leave_the_daemon_answering() {
    let hub = Hub::folder();
    let mut a = Peer::new(&hub, "a");
    a.start();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.socket()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
        for payload in [
            vec![0xAB; 4096],
            [&[0xFF, 0xFF, 0xFF, 0xFF][..], &[b'x'; 100][..]].concat(),
            b"\x00\x00\x00\x05hello".to_vec(),
        ] {
            let mut s = std::os::unix::net::UnixStream::connect(a.socket()).unwrap();
            let _ = s.write_all(&payload);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
    }
    let s = a.ctl_json(&["status"]);
    assert_eq!(s["databases"][0]["name"], "main");
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let hub = Hub::folder();
    let mut a = Peer::new(&hub, "a");
    a.start();
    let out = std::process::Command::new(common::syncd()).arg("--config").arg(a.config_path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert_eq!(a.ctl_json(&["status"])["databases"][0]["name"], "main", "the first daemon still answers");
}

#[test]
fn disable_survives_a_restart_and_enable_resumes_syncing() {
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.start();
    b.start();
    a.ctl_json(&["disable", "main"]);
    a.signal("TERM");
    a.wait_exit(Duration::from_secs(15));
    a.start();
    assert_eq!(a.ctl_json(&["status"])["databases"][0]["auto_sync"], false);
    a.exec("INSERT INTO items(id, name) VALUES (5, 'held back');");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.query("SELECT count(*) FROM items WHERE id = 5"), "0", "a disabled database does not sync");
    a.ctl_json(&["enable", "main"]);
    assert!(wait_for(Duration::from_secs(20), || b.query("SELECT name FROM items WHERE id = 5") == "held back"));
}

#[test]
fn syncctl_sync_conflicts_and_peers_answer_in_json() {
    let hub = Hub::folder();
    let (mut a, b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name) VALUES (7, 'orig');");
    a.once();
    b.once();
    a.exec("UPDATE items SET name = 'from-a' WHERE id = 7;");
    b.exec("UPDATE items SET name = 'from-b' WHERE id = 7;");
    a.once();
    b.once();
    a.start();
    let synced = a.ctl_json(&["sync"]);
    assert!(synced.is_array() || synced.is_object(), "{synced}");
    let conflicts = a.ctl_json(&["conflicts"]);
    let list =
        conflicts.as_array().cloned().unwrap_or_else(|| conflicts["conflicts"].as_array().cloned().unwrap_or_default());
    assert_eq!(list.len(), 1, "{conflicts}");
    assert!(list[0]["local_value"].as_str().unwrap().contains("from-a"));
    let peers = a.ctl_json(&["peers"]);
    assert!(peers.to_string().contains("\"b\""), "{peers}");
}

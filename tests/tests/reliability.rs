//! DESIGN §7 with real processes: kill -9 at random moments, a corrupt hub,
//! clocks an hour apart, a busy application, a copied state directory.
//! `SYNCD_KILLS=N` kills more often (default 30).

mod common;
use common::{Hub, Peer, wait_for};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An application writing its own rows as fast as it can, one small
/// transaction each, recording its worst wait for the lock.
struct App {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(i64, Duration)>,
}

impl App {
    fn start(db: std::path::PathBuf, first_id: i64, pause: Duration) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let c = rusqlite::Connection::open(db).unwrap();
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            let (mut id, mut worst) = (first_id, Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.execute("INSERT INTO items(id, name, qty) VALUES (?1, 'app', ?1)", [id]).unwrap();
                if id % 7 == 0 {
                    c.execute("UPDATE items SET qty = qty + 1 WHERE id = ?1", [id - 3]).unwrap();
                }
                worst = worst.max(t.elapsed());
                id += 1;
                std::thread::sleep(pause);
            }
            (id - first_id, worst)
        });
        App { stop, handle }
    }

    fn finish(self) -> (i64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn integrity(p: &Peer) -> String {
    p.query("PRAGMA integrity_check")
}

/// Sequence numbers of a peer's batches in the hub are 1..=N, no gap.
fn batches_are_contiguous(hub: &Hub) -> bool {
    let mut by_peer: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for f in walk(hub.dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if let Some(seq) = name.strip_suffix(".chg").and_then(|s| s.parse::<u64>().ok()) {
            by_peer.entry(f.parent().unwrap().display().to_string()).or_default().push(seq);
        }
    }
    by_peer.values_mut().all(|v| {
        v.sort();
        v.iter().enumerate().all(|(i, s)| *s == i as u64 + 1)
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn kill_nine_at_random_moments_never_corrupts_loses_or_duplicates() {
    let kills: usize = std::env::var("SYNCD_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    // Snapshots every few hundred changes, so kills also land in them.
    let config = std::fs::read_to_string(a.config_path()).unwrap() + "snapshot_every = 300\n";
    std::fs::write(a.config_path(), config).unwrap();
    b.start();
    // Both applications write: a's daemon is killed while capturing,
    // publishing, merging b's rows and taking snapshots.
    let on_a = App::start(a.db(), 1, Duration::from_millis(2));
    let on_b = App::start(b.db(), 10_000_000, Duration::from_millis(5));
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..kills {
        a.start();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 400));
        let mut child = a.daemon.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = std::fs::remove_file(a.socket());
    }
    let (written_a, worst_a) = on_a.finish();
    let (written_b, worst_b) = on_b.finish();
    assert_eq!(integrity(&a), "ok");
    assert_eq!(a.query("SELECT count(*) FROM items WHERE id < 10000000"), written_a.to_string(), "a's rows are intact");
    a.start();
    let all = (written_a + written_b).to_string();
    assert!(
        wait_for(Duration::from_secs(120), || {
            a.query("SELECT count(*) FROM items") == all && b.query("SELECT count(*) FROM items") == all
        }),
        "after {kills} kills: a has {}, b has {} of {all} rows\n{}",
        a.query("SELECT count(*) FROM items"),
        b.query("SELECT count(*) FROM items"),
        a.log()
    );
    assert!(wait_for(Duration::from_secs(60), || a.query("SELECT id, qty FROM items ORDER BY id")
        == b.query("SELECT id, qty FROM items ORDER BY id")));
    assert_eq!(integrity(&b), "ok");
    assert!(batches_are_contiguous(&hub), "a batch sequence has a gap or a duplicate");
    let snapshots = walk(hub.dir.path()).iter().filter(|p| p.extension().is_some_and(|e| e == "snap")).count();
    let worst = worst_a.max(worst_b);
    assert!(worst < Duration::from_secs(1), "an application waited {worst:?} for a lock");
    eprintln!(
        "reliability: {kills} kill -9 survived, {written_a} + {written_b} rows, {snapshots} snapshots, worst application wait {worst:?}"
    );
}

#[test]
fn a_busy_application_never_waits_a_second_and_loses_nothing() {
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.start();
    b.start();
    let on_a = App::start(a.db(), 1, Duration::ZERO);
    let on_b = App::start(b.db(), 1_000_000, Duration::ZERO);
    std::thread::sleep(Duration::from_secs(4));
    let (wa, worst_a) = on_a.finish();
    let (wb, worst_b) = on_b.finish();
    let total = (wa + wb).to_string();
    assert!(wait_for(Duration::from_secs(60), || {
        a.query("SELECT count(*) FROM items") == total && b.query("SELECT count(*) FROM items") == total
    }));
    assert!(wait_for(Duration::from_secs(30), || a.query("SELECT id, qty FROM items ORDER BY id")
        == b.query("SELECT id, qty FROM items ORDER BY id")));
    assert!(worst_a < Duration::from_secs(1) && worst_b < Duration::from_secs(1), "waits {worst_a:?} {worst_b:?}");
    eprintln!("busy application: {wa} + {wb} commits, worst waits {worst_a:?} {worst_b:?}");
}

#[test]
fn a_corrupt_hub_is_skipped_reported_and_survived() {
    let hub = Hub::folder();
    let (mut a, b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    b.exec("INSERT INTO items(id, name) VALUES (1, 'good');");
    b.once();
    let folder = walk(hub.dir.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "chg")).unwrap();
    let changes = folder.parent().unwrap().to_path_buf();
    let good = std::fs::read(&folder).unwrap();
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 5] ^= 0x10;
    let mut future = good.clone();
    future[16] = 0x7F;
    // Batches 2..: damaged in every way; the cloud copy is ignored.
    std::fs::write(changes.join("00000000000000000002.chg"), &good[..good.len() / 3]).unwrap();
    std::fs::write(changes.join("00000000000000000001 (1).chg"), &good).unwrap();
    std::fs::write(changes.join("00000000000000000001-DESKTOP.chg"), &good).unwrap();
    // A folder that is no peer and a vanished peer folder's leftovers.
    std::fs::create_dir_all(hub.dir.path().join("main/not-a-peer")).unwrap();
    a.start();
    assert!(wait_for(Duration::from_secs(20), || a.query("SELECT name FROM items WHERE id = 1") == "good"));
    let skipped = |a: &Peer| a.ctl_json(&["status"])["databases"][0]["skipped_files"].to_string();
    assert!(wait_for(Duration::from_secs(10), || skipped(&a).contains("00000000000000000002.chg")), "{}", skipped(&a));
    let s = skipped(&a);
    assert!(s.contains("(1).chg") && s.contains("DESKTOP") && s.contains("not-a-peer"), "{s}");
    // A whole, valid batch of another database, misplaced in this one.
    let other = Peer::on(&hub.url, "other", "");
    std::fs::write(
        other.config_path(),
        std::fs::read_to_string(other.config_path()).unwrap().replace("name = \"main\"", "name = \"elsewhere\""),
    )
    .unwrap();
    other.exec("INSERT INTO items(id, name) VALUES (99, 'elsewhere');");
    other.once();
    let foreign = walk(&hub.dir.path().join("elsewhere"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "chg"))
        .unwrap();
    let foreign = std::fs::read(foreign).unwrap();
    for (bytes, what) in
        [(Vec::new(), "zero-length"), (flipped, "bit-flipped"), (future, "future-version"), (foreign, "wrong-database")]
    {
        std::fs::write(changes.join("00000000000000000002.chg"), &bytes).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(a.ctl_json(&["status"])["databases"][0]["name"], "main", "daemon down after a {what} batch");
        assert_eq!(a.query("SELECT count(*) FROM items"), "1", "something applied from a {what} batch");
        let reason = match what {
            "future-version" => "upgrade syncd",
            "wrong-database" => "belongs elsewhere",
            _ => "00000000000000000002.chg",
        };
        assert!(wait_for(Duration::from_secs(10), || skipped(&a).contains(reason)), "{what}: {}", skipped(&a));
    }
    // The peer folder vanishes: nothing breaks.
    std::fs::remove_dir_all(changes.parent().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.ctl_json(&["status"])["hub"]["reachable"], true);
    assert_eq!(a.query("SELECT name FROM items WHERE id = 1"), "good");
}

#[test]
fn peers_an_hour_apart_converge_and_status_warns_about_the_skew() {
    let hub = Hub::folder();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.start_with_env(&[("SYNCD_CLOCK_SKEW_MS", "3600000")]);
    b.start_with_env(&[("SYNCD_CLOCK_SKEW_MS", "-3600000")]);
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'from a', 1);");
    assert!(wait_for(Duration::from_secs(20), || b.query("SELECT name FROM items WHERE id = 1") == "from a"));
    // b edits after a: b's change must win although b's clock is 2 h behind.
    b.exec("UPDATE items SET name = 'later, from b' WHERE id = 1;");
    assert!(wait_for(Duration::from_secs(20), || a.query("SELECT name FROM items WHERE id = 1") == "later, from b"));
    a.exec("UPDATE items SET qty = 2 WHERE id = 1;");
    assert!(wait_for(Duration::from_secs(20), || b.query("SELECT qty FROM items WHERE id = 1") == "2"));
    assert!(
        wait_for(Duration::from_secs(20), || {
            b.ctl_json(&["status"])["warnings"].to_string().contains("clock of peer a")
        }),
        "{}",
        b.ctl_json(&["status"])
    );
}

#[test]
fn a_copied_state_directory_is_refused_with_a_clear_message() {
    let hub = Hub::folder();
    let a = Peer::new(&hub, "a");
    a.exec("INSERT INTO items(id, name) VALUES (1, 'x');");
    a.once();
    // A second machine started from a copy of a's state directory.
    let twin = Peer::new(&hub, "twin");
    copy_dir(&a.dir.path().join("state"), &twin.dir.path().join("state"));
    a.exec("INSERT INTO items(id, name) VALUES (2, 'on a');");
    a.once();
    twin.exec("INSERT INTO items(id, name) VALUES (3, 'on the twin');");
    let out = std::process::Command::new(common::syncd())
        .arg("--config")
        .arg(twin.config_path())
        .arg("once")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another machine uses this peer id"), "{err}");
    assert_eq!(a.query("SELECT count(*) FROM items WHERE id = 3"), "0");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() && !e.file_name().to_string_lossy().contains("lock") {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

//! The running daemon's figures, with the real binaries (build them first:
//! `cargo build --release`):
//!
//! - latency from a commit on A to the row being readable on B through a
//!   folder hub, default settings, median and 95th percentile over 60
//!   changes, against a raw SQLite commit of the same row in the same run;
//! - an idle daemon's CPU time and peak RSS over 60 s with three databases.
//!
//! Run: `cargo bench -p syncd-e2e --bench daemon` (`SYNCD_BENCH_IDLE_SECS`
//! shortens the idle measurement).

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

fn peer(root: &Path, name: &str, hub: &Path, dbs: usize) -> (PathBuf, Vec<PathBuf>) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!(
        "peer_name = \"{name}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n[hub]\nurl = \"file://{}\"\n",
        dir.join("state").display(),
        dir.join("sock").display(),
        hub.display()
    );
    let mut paths = Vec::new();
    for i in 0..dbs {
        let db = dir.join(format!("db{i}.db"));
        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);")
            .unwrap();
        text += &format!("[[database]]\nname = \"db{i}\"\npath = \"{}\"\n", db.display());
        paths.push(db);
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    (config, paths)
}

fn start(config: &Path) -> Child {
    let c = Command::new(bin("syncd")).arg("--config").arg(config).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    c
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let (ca, da) = peer(tmp.path(), "a", &hub, 1);
    let (cb, db) = peer(tmp.path(), "b", &hub, 1);
    let mut a = start(&ca);
    let mut b = start(&cb);
    let writer = Connection::open(&da[0]).unwrap();
    let reader = Connection::open(&db[0]).unwrap();
    reader.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut lat = Vec::new();
    let mut commits = Vec::new();
    for i in 0..60 {
        let t = Instant::now();
        writer.execute("INSERT INTO t(id, v) VALUES (?1, 'x')", [i]).unwrap();
        commits.push(t.elapsed());
        loop {
            let seen: i64 = reader.query_row("SELECT count(*) FROM t WHERE id = ?1", [i], |r| r.get(0)).unwrap_or(0);
            if seen == 1 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "row {i} never arrived");
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    lat.sort();
    commits.sort();
    let (median, p95, commit) = (percentile(&lat, 0.5), percentile(&lat, 0.95), percentile(&commits, 0.5));
    let _ = a.kill();
    let _ = b.kill();
    let _ = (a.wait(), b.wait());

    // Idle: three databases, nothing changes.
    let idle_secs: u64 = std::env::var("SYNCD_BENCH_IDLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let hub2 = tmp.path().join("hub2");
    std::fs::create_dir_all(&hub2).unwrap();
    let (cc, _) = peer(tmp.path(), "c", &hub2, 3);
    let mut c = start(&cc);
    std::thread::sleep(Duration::from_secs(2));
    let ticks = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        // utime and stime are fields 14 and 15, 12 and 13 after the name.
        fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let before = ticks(c.id());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu_secs = (ticks(c.id()) - before) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let _ = c.kill();
    let _ = c.wait();
    let cpu_pct = cpu_secs / idle_secs as f64 * 100.0;

    println!("{:<44} {:>12} {:>26} {:>8} {:>10}", "figure", "syncd", "baseline (same run)", "ratio", "target");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<44} {:>10.0}ms {:>22.2}ms {:>7.0}x {:>10}",
        "commit on A to readable on B, median",
        ms(median),
        ms(commit),
        ms(median) / ms(commit),
        "< 1000ms"
    );
    println!(
        "{:<44} {:>10.0}ms {:>22.2}ms {:>7.0}x {:>10}",
        "commit on A to readable on B, p95",
        ms(p95),
        ms(commit),
        ms(p95) / ms(commit),
        "-"
    );
    println!(
        "{:<44} {:>11.3}% {:>26} {:>7.2}x {:>10}",
        "idle CPU, 3 databases",
        cpu_pct,
        "1% target",
        cpu_pct / 1.0,
        "< 1%"
    );
    println!(
        "{:<44} {:>9.1} MB {:>26} {:>7.2}x {:>10}",
        "peak RSS, 3 databases",
        rss_kb / 1024.0,
        "30 MB target",
        rss_kb / 1024.0 / 30.0,
        "< 30 MB"
    );
}

//! The engine's speed, each figure a ratio against a baseline measured in
//! the same run on the same data (machines are shared and noisy):
//!
//! - apply: rows/s applying a 100,000-row remote batch vs raw SQLite upserts
//!   of the same rows;
//! - capture: rows/s of a capture over a 1,000,000-row database vs a plain
//!   `SELECT *` scan of it;
//! - a cycle with no change, in milliseconds;
//! - snapshot: MB/s of taking a snapshot vs `cp` of the same checkpointed
//!   file, and the compressed size ratio.
//!
//! Run: `cargo bench -p syncd --bench engine` (`SYNCD_BENCH_ROWS` scales the
//! capture database).

// The allocator the daemon runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant};
use syncd::config::Config;
use syncd::engine::Engine;
use syncd::identity::Identity;

struct Row {
    figure: &'static str,
    value: String,
    baseline: String,
    ratio: f64,
    target: &'static str,
}

fn config(dir: &Path, hub: &Path, name: &str) -> Config {
    let text = format!(
        "peer_name = \"{name}\"\nstate_dir = \"{}\"\n[hub]\nurl = \"file://{}\"\n[[database]]\nname = \"bench\"\npath = \"{}\"\n",
        dir.join("state").display(),
        hub.display(),
        dir.join("app.db").display()
    );
    Config::parse(&text, Path::new("bench.toml")).unwrap()
}

fn engine(dir: &Path, hub: &Path, name: &str) -> Engine {
    let c = config(dir, hub, name);
    let id = Identity::load_or_create(&c.state_dir(), name.into()).unwrap();
    let h = syncd::hub::open(&c.hub.url, &c.hub_s3_options()).unwrap();
    Engine::open(&c, &c.databases[0], &id, h).unwrap()
}

const SCHEMA: &str = "PRAGMA journal_mode=WAL; CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT);";

fn fill(db: &Path, rows: i64) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c.execute_batch("BEGIN").unwrap();
    {
        let mut s = c.prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5)").unwrap();
        for i in 0..rows {
            s.execute(rusqlite::params![
                i,
                format!("item {i}"),
                i % 1000,
                i as f64 * 0.25,
                "a note of moderate length"
            ])
            .unwrap();
        }
    }
    c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Rounds of each measurement whose median is reported: one round on a
/// shared machine can be off by 2x either way.
const ROUNDS: usize = 7;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn bench_apply(out: &mut Vec<Row>) {
    let rows = 100_000i64;
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let a = tmp.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    fill(&a.join("app.db"), rows);
    engine(&a, &hub, "a").run_cycle().unwrap();
    let src = Connection::open(a.join("app.db")).unwrap();
    let data: Vec<(i64, String, i64, f64, String)> = src
        .prepare("SELECT * FROM items")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (mut applied, mut raw) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // A new peer each round: it receives all of a's rows.
        let b = tmp.path().join(format!("b{round}"));
        std::fs::create_dir_all(&b).unwrap();
        Connection::open(b.join("app.db")).unwrap().execute_batch(SCHEMA).unwrap();
        let mut eb = engine(&b, &hub, &format!("b{round}"));
        let t = Instant::now();
        let r = eb.run_cycle().unwrap();
        applied.push(t.elapsed());
        assert_eq!(r.applied.applied, rows as u64);
        // The state's WAL is copied into its file on a thread of its own:
        // not while the baseline is timed.
        eb.wait_for_checkpoint();
        // Baseline: the same rows upserted with one prepared statement in
        // one transaction.
        let raw_db = tmp.path().join(format!("raw{round}.db"));
        let dst = Connection::open(&raw_db).unwrap();
        dst.execute_batch(SCHEMA).unwrap();
        let t = Instant::now();
        dst.execute_batch("BEGIN").unwrap();
        {
            let mut s = dst
                .prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO UPDATE SET name = excluded.name, qty = excluded.qty, price = excluded.price, note = excluded.note")
                .unwrap();
            for (id, name, qty, price, note) in &data {
                s.execute(rusqlite::params![id, name, qty, price, note]).unwrap();
            }
        }
        dst.execute_batch("COMMIT").unwrap();
        raw.push(t.elapsed());
    }
    let (apply, raw_t) = (median(applied), median(raw));
    out.push(Row {
        figure: "apply 100k-row batch (rows/s)",
        value: format!("{:.0}", rows as f64 / secs(apply)),
        baseline: format!("{:.0} raw upsert", rows as f64 / secs(raw_t)),
        ratio: secs(raw_t) / secs(apply),
        target: ">= 0.5x",
    });
}

/// A peer folder with the large benchmark database (`SYNCD_BENCH_ROWS`
/// rows, default 1,000,000) and an empty folder hub beside it.
fn large_database() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, i64) {
    let rows: i64 = std::env::var("SYNCD_BENCH_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let a = tmp.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    fill(&a.join("app.db"), rows);
    (tmp, hub, a, rows)
}

fn bench_capture(out: &mut Vec<Row>) {
    let (_tmp, hub, a, rows) = large_database();
    let mut e = engine(&a, &hub, "a");
    let t = Instant::now();
    e.run_cycle().unwrap();
    let first = t.elapsed();
    e.wait_for_checkpoint();
    // A steady-state capture: the whole table compared, 1% of rows changed;
    // each round changes the same rows again.
    let scan_conn = Connection::open(a.join("app.db")).unwrap();
    let (mut captures, mut scans) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        scan_conn.execute_batch("UPDATE items SET qty = qty + 1 WHERE id % 100 = 0").unwrap();
        let t = Instant::now();
        let r = e.run_cycle().unwrap();
        captures.push(t.elapsed());
        assert_eq!(r.captured, (rows as u64).div_ceil(100));
        e.wait_for_checkpoint();
        let t = Instant::now();
        let mut n = 0u64;
        {
            let mut s = scan_conn.prepare("SELECT * FROM items").unwrap();
            let mut q = s.query([]).unwrap();
            while let Some(r) = q.next().unwrap() {
                for i in 0..5 {
                    let _ = r.get_ref(i).unwrap();
                }
                n += 1;
            }
        }
        scans.push(t.elapsed());
        assert_eq!(n, rows as u64);
    }
    let (capture, scan) = (median(captures), median(scans));
    out.push(Row {
        figure: "capture, 1% changed (rows/s)",
        value: format!("{:.0}", rows as f64 / secs(capture)),
        baseline: format!("{:.0} SELECT * scan", rows as f64 / secs(scan)),
        ratio: secs(scan) / secs(capture),
        target: ">= 0.4x",
    });
    out.push(Row {
        figure: "first capture, all rows new (rows/s)",
        value: format!("{:.0}", rows as f64 / secs(first)),
        baseline: format!("{:.0} SELECT * scan", rows as f64 / secs(scan)),
        ratio: secs(scan) / secs(first),
        target: "-",
    });
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            e.run_cycle().unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    out.push(Row {
        figure: "cycle with no change (ms, median)",
        value: format!("{:.2}", secs(times[10]) * 1000.0),
        baseline: "5 ms target".into(),
        ratio: 5.0 / (secs(times[10]) * 1000.0),
        target: "< 5 ms",
    });
}

fn bench_snapshot(out: &mut Vec<Row>) {
    let (tmp, hub, a, _rows) = large_database();
    let size = std::fs::metadata(a.join("app.db")).unwrap().len() as f64;
    let mut e = engine(&a, &hub, "a");
    e.run_cycle().unwrap();
    e.wait_for_checkpoint();
    let t = Instant::now();
    let entry = e.backup().unwrap();
    let snap = t.elapsed();
    let t = Instant::now();
    std::fs::copy(a.join("app.db"), tmp.path().join("copy.db")).unwrap();
    let cp = t.elapsed();
    let mb = size / 1e6;
    out.push(Row {
        figure: "snapshot (MB/s of database)",
        value: format!("{:.0}", mb / secs(snap)),
        baseline: format!("{:.0} cp", mb / secs(cp)),
        ratio: secs(cp) / secs(snap),
        target: ">= 0.25x",
    });
    out.push(Row {
        figure: "snapshot compressed size",
        value: format!("{:.1} MB", entry.size as f64 / 1e6),
        baseline: format!("{mb:.1} MB database"),
        ratio: entry.size as f64 / size,
        target: "-",
    });
}

/// Counts the requests an idle cycle makes, against the real S3 server of
/// `SYNCD_TEST_S3_ENDPOINT`.
fn bench_s3_idle_poll(out: &mut Vec<Row>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use syncd::hub::{Hub, HubEntry, HubError};
    let Ok(endpoint) = std::env::var("SYNCD_TEST_S3_ENDPOINT") else {
        eprintln!("s3 idle poll: skipped (set SYNCD_TEST_S3_ENDPOINT, e.g. eval \"$(.ci/s3-server.sh start)\")");
        return;
    };
    struct Counting(Arc<dyn Hub>, AtomicU64, AtomicU64);
    impl Hub for Counting {
        fn url(&self) -> &str {
            self.0.url()
        }
        fn list(&self, d: &str, a: Option<&str>) -> Result<Vec<HubEntry>, HubError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.list(d, a)
        }
        fn list_dirs(&self, d: &str) -> Result<Vec<String>, HubError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.list_dirs(d)
        }
        fn get(&self, p: &str) -> Result<Vec<u8>, HubError> {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.0.get(p)
        }
        fn get_to_file(&self, p: &str, l: &Path) -> Result<(), HubError> {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.0.get_to_file(p, l)
        }
        fn put_atomic(&self, p: &str, b: &[u8]) -> Result<(), HubError> {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.0.put_atomic(p, b)
        }
        fn put_new(&self, p: &str, b: &[u8]) -> Result<(), HubError> {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.0.put_new(p, b)
        }
        fn put_file(&self, p: &str, l: &Path) -> Result<(), HubError> {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.0.put_file(p, l)
        }
        fn delete(&self, p: &str) -> Result<(), HubError> {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.0.delete(p)
        }
    }
    let bucket = format!("bench{}", std::process::id());
    let addr = endpoint.trim_start_matches("http://");
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let _ = s.read_to_string(&mut String::new());
    }
    let opts = syncd::hub::S3Options {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: Some(true),
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut engines = Vec::new();
    let mut counters = Vec::new();
    for name in ["a", "b", "c"] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        fill(&dir.join("app.db"), 10);
        let text = format!(
            "peer_name = \"{name}\"\nstate_dir = \"{}\"\n[hub]\nurl = \"s3://{bucket}/x\"\n[[database]]\nname = \"bench\"\npath = \"{}\"\n",
            dir.join("state").display(),
            dir.join("app.db").display()
        );
        let c = Config::parse(&text, Path::new("bench.toml")).unwrap();
        let id = Identity::load_or_create(&c.state_dir(), name.into()).unwrap();
        let counting =
            Arc::new(Counting(syncd::hub::open(&c.hub.url, &opts).unwrap(), AtomicU64::new(0), AtomicU64::new(0)));
        counters.push(counting.clone());
        engines.push(Engine::open(&c, &c.databases[0], &id, counting).unwrap());
    }
    for _ in 0..2 {
        for e in &mut engines {
            e.run_cycle().unwrap();
        }
    }
    let before: Vec<(u64, u64)> =
        counters.iter().map(|c| (c.1.load(Ordering::Relaxed), c.2.load(Ordering::Relaxed))).collect();
    let polls = 10;
    let t = Instant::now();
    for _ in 0..polls {
        engines[0].run_cycle().unwrap();
    }
    let idle = t.elapsed();
    let lists = counters[0].1.load(Ordering::Relaxed) - before[0].0;
    let others = counters[0].2.load(Ordering::Relaxed) - before[0].1;
    out.push(Row {
        figure: "S3 requests per idle poll (2 peers)",
        value: format!("{:.1} LIST + {:.1} other", lists as f64 / polls as f64, others as f64 / polls as f64),
        baseline: "3 = 1 LIST per peer folder + 1".into(),
        ratio: 3.0 / (lists as f64 / polls as f64),
        target: ">= 1x",
    });
    out.push(Row {
        figure: "S3 idle poll time (ms)",
        value: format!("{:.1}", secs(idle) * 1000.0 / polls as f64),
        baseline: "-".into(),
        ratio: 1.0,
        target: "-",
    });
}

fn main() {
    let mut rows = Vec::new();
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |n: &str| only.as_deref().is_none_or(|o| n.contains(o));
    if want("apply") {
        bench_apply(&mut rows);
    }
    if want("capture") {
        bench_capture(&mut rows);
    }
    if want("snapshot") {
        bench_snapshot(&mut rows);
    }
    if want("s3") {
        bench_s3_idle_poll(&mut rows);
    }
    println!("{:<40} {:>14} {:>28} {:>8} {:>9}", "figure", "syncd", "baseline (same run)", "ratio", "target");
    for r in rows {
        println!("{:<40} {:>14} {:>28} {:>7.2}x {:>9}", r.figure, r.value, r.baseline, r.ratio, r.target);
    }
}

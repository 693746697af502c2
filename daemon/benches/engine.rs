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

fn bench_apply(out: &mut Vec<Row>) {
    let rows = 100_000i64;
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let (a, b, raw) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("raw"));
    for d in [&a, &b, &raw] {
        std::fs::create_dir_all(d).unwrap();
    }
    fill(&a.join("app.db"), rows);
    Connection::open(b.join("app.db")).unwrap().execute_batch(SCHEMA).unwrap();
    Connection::open(raw.join("app.db")).unwrap().execute_batch(SCHEMA).unwrap();
    let mut ea = engine(&a, &hub, "a");
    ea.run_cycle().unwrap();
    let mut eb = engine(&b, &hub, "b");
    let t = Instant::now();
    let r = eb.run_cycle().unwrap();
    let apply = t.elapsed();
    assert_eq!(r.applied.applied, rows as u64);
    // Baseline: the same rows upserted with one prepared statement in one transaction.
    let src = Connection::open(a.join("app.db")).unwrap();
    let data: Vec<(i64, String, i64, f64, String)> = src
        .prepare("SELECT * FROM items")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let dst = Connection::open(raw.join("app.db")).unwrap();
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
    let raw_t = t.elapsed();
    out.push(Row {
        figure: "apply 100k-row batch (rows/s)",
        value: format!("{:.0}", rows as f64 / secs(apply)),
        baseline: format!("{:.0} raw upsert", rows as f64 / secs(raw_t)),
        ratio: secs(raw_t) / secs(apply),
        target: ">= 0.5x",
    });
}

fn bench_capture(out: &mut Vec<Row>) {
    let rows: i64 = std::env::var("SYNCD_BENCH_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let a = tmp.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    fill(&a.join("app.db"), rows);
    let mut e = engine(&a, &hub, "a");
    let t = Instant::now();
    e.run_cycle().unwrap();
    let first = t.elapsed();
    // A steady-state capture: the whole table compared, 1% of rows changed.
    Connection::open(a.join("app.db"))
        .unwrap()
        .execute_batch("UPDATE items SET qty = qty + 1 WHERE id % 100 = 0")
        .unwrap();
    let t = Instant::now();
    let r = e.run_cycle().unwrap();
    let capture = t.elapsed();
    assert_eq!(r.captured, (rows as u64).div_ceil(100));
    let scan_conn = Connection::open(a.join("app.db")).unwrap();
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
    let scan = t.elapsed();
    assert_eq!(n, rows as u64);
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
    println!("{:<40} {:>14} {:>28} {:>8} {:>9}", "figure", "syncd", "baseline (same run)", "ratio", "target");
    for r in rows {
        println!("{:<40} {:>14} {:>28} {:>7.2}x {:>9}", r.figure, r.value, r.baseline, r.ratio, r.target);
    }
}

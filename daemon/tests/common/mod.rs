//! Test harness for the engine: peers with their own temporary folder,
//! configuration, database and state, meeting in one folder hub. The
//! application's writes go through a separate SQLite connection, as another
//! program's would.
#![allow(dead_code)]

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use syncd::config::Config;
use syncd::engine::Engine;
use syncd::identity::Identity;

pub struct Hub {
    pub dir: tempfile::TempDir,
}

impl Hub {
    pub fn new() -> Hub {
        Hub { dir: tempfile::tempdir().unwrap() }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Every file in the hub, recursively.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out.sort();
        out
    }

    /// Change batch files, oldest first by name within each peer.
    pub fn batches(&self) -> Vec<PathBuf> {
        self.files().into_iter().filter(|p| p.extension().is_some_and(|e| e == "chg")).collect()
    }
}

pub struct Peer {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub engine: Option<Engine>,
}

pub const SCHEMA: &str = "
    PRAGMA journal_mode=WAL;
    CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, token TEXT, updated_at TEXT);
    CREATE TABLE tags(item_id INTEGER, tag TEXT);
    CREATE TABLE secrets(k TEXT PRIMARY KEY, v TEXT);
";

impl Peer {
    /// A peer with the standard test schema.
    pub fn new(hub: &Hub, name: &str) -> Peer {
        Peer::with(hub, name, SCHEMA, "")
    }

    /// A peer whose database is created by `schema` and whose `[[database]]`
    /// section gets `extra` lines.
    pub fn with(hub: &Hub, name: &str, schema: &str, extra: &str) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        Connection::open(&db).unwrap().execute_batch(schema).unwrap();
        let text = format!(
            "peer_name = \"{name}\"\nstate_dir = \"{state}\"\n[hub]\nurl = \"{hub}\"\n[[database]]\nname = \"main\"\npath = \"{db}\"\n\
             exclude_tables = [\"secrets\"]\nexclude_columns = [\"items.token\"]\n{extra}\n",
            state = dir.path().join("state").display(),
            hub = hub.url(),
            db = db.display(),
        );
        let config = Config::parse(&text, Path::new("test.toml")).unwrap();
        Peer { name: name.to_string(), dir, config, engine: None }
    }

    /// Gives the peer the id made of 32 `digit`s, before its engine first
    /// starts. A peer merges the others' batches in the order of their ids
    /// (the hub lists folders by name): random ids leave that to chance.
    pub fn pin_peer_id(&self, digit: char) {
        let dir = self.config.state_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("peer_id"), digit.to_string().repeat(32)).unwrap();
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    /// A connection of "the application".
    pub fn app(&self) -> Connection {
        let c = Connection::open(self.db_path()).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c
    }

    pub fn exec(&self, sql: &str) {
        self.app().execute_batch(sql).unwrap();
    }

    pub fn engine(&mut self) -> &mut Engine {
        if self.engine.is_none() {
            let identity = Identity::load_or_create(&self.config.state_dir(), self.name.clone()).unwrap();
            let hub = syncd::hub::open(&self.config.hub.url, &self.config.hub_s3_options()).unwrap();
            self.engine = Some(Engine::open(&self.config, &self.config.databases[0], &identity, hub).unwrap());
        }
        self.engine.as_mut().unwrap()
    }

    /// One full sync cycle, like `syncd once`.
    pub fn sync(&mut self) -> syncd::engine::CycleReport {
        self.engine().run_cycle().unwrap()
    }

    /// Drops the engine as a crash would (no shutdown work).
    pub fn crash(&mut self) {
        self.engine = None;
    }

    /// The state file, the engine closed first (its WAL folded in).
    pub fn state_file(&mut self) -> Vec<u8> {
        self.crash();
        std::fs::read(self.config.state_dir().join("main.state.sqlite")).unwrap()
    }

    /// Leaves the state as a crash does after the user's database committed
    /// the writes of `author`'s batch `seq` (the hub file `batch`) and before
    /// the state recorded them: `before` is the state file from before.
    pub fn crash_after_user_commit(&mut self, before: &[u8], author: &str, seq: u64, batch: &Path) {
        self.crash();
        let state = self.config.state_dir().join("main.state.sqlite");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(state.with_file_name(format!("main.state.sqlite{suffix}")));
        }
        std::fs::write(&state, before).unwrap();
        Connection::open(&state)
            .unwrap()
            .execute(
                "INSERT INTO inflight(peer_id, seq, body, done, pending_end) VALUES(?1, ?2, ?3, 0, 1000000)",
                rusqlite::params![author, seq as i64, std::fs::read(batch).unwrap()],
            )
            .unwrap();
    }

    /// Rows of a query as text lines, for comparing peers.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let c = self.app();
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            let mut parts = Vec::new();
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                parts.push(format!("{v:?}"));
            }
            Ok(parts.join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    pub fn one(&self, sql: &str) -> String {
        self.rows(sql).into_iter().next().unwrap_or_default()
    }

    /// The synced content: items (without the excluded column) and tags.
    pub fn content(&self) -> Vec<String> {
        let mut rows = self.rows("SELECT 'items', id, name, qty, updated_at FROM items ORDER BY id");
        rows.extend(self.rows("SELECT 'tags', item_id, tag FROM tags ORDER BY 2, 3"));
        rows
    }

    pub fn conflicts(&mut self) -> Vec<syncd::state::Conflict> {
        self.engine().state().conflicts().unwrap()
    }
}

/// Syncs every peer in turn, `rounds` times.
pub fn settle(peers: &mut [&mut Peer], rounds: usize) {
    for _ in 0..rounds {
        for p in peers.iter_mut() {
            p.sync();
        }
    }
}

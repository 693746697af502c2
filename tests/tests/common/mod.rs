//! Shared harness for the end-to-end tests: a [`Peer`] with its temporary
//! folder, configuration, database and a handle on the real `syncd`
//! process; `syncctl` is run as a user would run it.
#![allow(dead_code)]

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the built `syncd` and `syncctl`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn syncd() -> PathBuf {
    bin_dir().join(format!("syncd{}", std::env::consts::EXE_SUFFIX))
}

pub fn syncctl() -> PathBuf {
    bin_dir().join(format!("syncctl{}", std::env::consts::EXE_SUFFIX))
}

pub struct Hub {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Hub {
    pub fn folder() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        Hub { dir, url }
    }
}

pub const SCHEMA: &str = "PRAGMA journal_mode=WAL;
    CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, token TEXT, updated_at TEXT);
    CREATE TABLE IF NOT EXISTS tags(item_id INTEGER, tag TEXT);
    CREATE TABLE IF NOT EXISTS secrets(k TEXT PRIMARY KEY, v TEXT);";

pub struct Peer {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub daemon: Option<Child>,
    pub hub_url: String,
    /// Extra top-level configuration lines.
    pub extra: String,
    /// The database file `main` names (`app.db` in the peer's folder unless
    /// the peer was made for another application's database).
    pub db_file: PathBuf,
    /// Extra lines of each `[[database]]` entry.
    pub db_extra: String,
}

impl Peer {
    pub fn new(hub: &Hub, name: &str) -> Peer {
        Peer::on(&hub.url, name, "")
    }

    pub fn on(hub_url: &str, name: &str, extra: &str) -> Peer {
        let dir = tempfile::Builder::new().prefix(&format!("syncd-{name}-")).tempdir().unwrap();
        let p = Peer {
            name: name.into(),
            db_file: dir.path().join("app.db"),
            dir,
            daemon: None,
            hub_url: hub_url.into(),
            extra: extra.into(),
            db_extra: "exclude_tables = [\"secrets\"]\nexclude_columns = [\"items.token\"]\n".into(),
        };
        Connection::open(p.db()).unwrap().execute_batch(SCHEMA).unwrap();
        p.write_config(&[("main", &p.db())]);
        p
    }

    /// A peer for the database of another application, at `db_file` below
    /// the peer's folder: nothing is created (the application makes its
    /// database) and nothing is excluded.
    pub fn for_app(hub: &Hub, name: &str, db_file: &str) -> Peer {
        let dir = tempfile::Builder::new().prefix(&format!("syncd-{name}-")).tempdir().unwrap();
        let p = Peer {
            name: name.into(),
            db_file: dir.path().join(db_file),
            dir,
            daemon: None,
            hub_url: hub.url.clone(),
            extra: String::new(),
            db_extra: String::new(),
        };
        p.write_config(&[("main", &p.db())]);
        p
    }

    pub fn db(&self) -> PathBuf {
        self.db_file.clone()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("syncd.sock")
    }

    /// Writes the configuration with these `(name, path)` databases.
    pub fn write_config(&self, dbs: &[(&str, &Path)]) {
        let mut text = format!(
            "peer_name = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nheartbeat_secs = 2\n{}\n[hub]\nurl = \"{}\"\npoll_secs = 1\n",
            self.name,
            self.dir.path().join("state").display(),
            self.socket().display(),
            self.extra,
            self.hub_url
        );
        for (name, path) in dbs {
            text += &format!("[[database]]\nname = \"{name}\"\npath = \"{}\"\n{}", path.display(), self.db_extra);
        }
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn exec(&self, sql: &str) {
        let c = Connection::open(self.db()).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute_batch(sql).unwrap();
    }

    pub fn query(&self, sql: &str) -> String {
        let c = Connection::open(self.db()).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut parts = Vec::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    parts.push(match v {
                        rusqlite::types::Value::Null => String::new(),
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Real(f) => f.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        rusqlite::types::Value::Blob(b) => format!("{b:?}"),
                    });
                }
                Ok(parts.join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("\n")
    }

    /// `syncd --config … once`.
    pub fn once(&self) -> Output {
        let out = Command::new(syncd()).arg("--config").arg(self.config_path()).arg("once").output().unwrap();
        assert!(out.status.success(), "syncd once on {} failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Starts the daemon and waits for its socket.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap();
        let child = Command::new(syncd())
            .arg("--config")
            .arg(self.config_path())
            .env("SYNCD_LOG", "syncd=debug,info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let sock = self.socket();
        assert!(wait_for(Duration::from_secs(20), || sock.exists()), "{}: no socket; log:\n{}", self.name, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().unwrap().id()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the daemon to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.daemon.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = child.try_wait().unwrap() {
                self.daemon = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs `syncctl --socket S ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(syncctl()).arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }

    /// `syncctl … --json` parsed, asserting success.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ctl(&all);
        assert!(
            out.status.success(),
            "syncctl {args:?}: {}{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

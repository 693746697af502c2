//! The configuration file (TOML): what to sync and where the hub is.
//!
//! Parsed with serde and `deny_unknown_fields`, so a misspelt key is an error
//! rather than a silently ignored setting. Every default lives in this file.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A configuration problem: the message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shown to other peers; default: the host name.
    pub peer_name: Option<String>,
    /// Default: `$XDG_STATE_HOME/syncd` (or `~/.local/state/syncd`).
    pub state_dir: Option<PathBuf>,
    /// Control socket path; default under `$XDG_RUNTIME_DIR`.
    pub socket: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[serde(default = "defaults::heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// A peer is active while its heartbeat is younger than this.
    #[serde(default = "defaults::active_secs")]
    pub active_secs: u64,
    /// Quiet time after a change to the database before a cycle starts.
    #[serde(default = "defaults::debounce_ms")]
    pub debounce_ms: u64,
    pub hub: HubConfig,
    #[serde(default, rename = "database")]
    pub databases: Vec<DatabaseConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// `file:///path` or `s3://bucket/prefix`.
    pub url: String,
    /// Seconds between polls of the hub (cloud folders and network shares do
    /// not always send change events; S3 never does).
    #[serde(default = "defaults::poll_secs")]
    pub poll_secs: u64,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The same name on every peer means the same logical database.
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// `table.column` entries.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// References the application keeps without declaring them as foreign
    /// keys: `child_table.column -> parent_table.column`. A row that moves
    /// to a fresh key takes them along, as it does declared ones.
    #[serde(default)]
    pub references: Vec<String>,
    /// `lww` | `lww-column:<col>` | `peer-priority:<a,b,…>`.
    #[serde(default = "defaults::conflict")]
    pub conflict: String,
    /// Per-table override of `conflict`.
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    /// Take a snapshot after this many captured changes.
    #[serde(default = "defaults::snapshot_every")]
    pub snapshot_every: u64,
    /// Take a snapshot at least this often.
    #[serde(default = "defaults::snapshot_hours")]
    pub snapshot_hours: u64,
    /// Retention: keep the newest N snapshots of each peer …
    #[serde(default = "defaults::keep_last")]
    pub keep_last: usize,
    /// … or anything younger than this many days.
    #[serde(default = "defaults::keep_within_days")]
    pub keep_within_days: u64,
    /// Peers not seen for this many days no longer hold back cleanup.
    #[serde(default = "defaults::forget_peers_after_days")]
    pub forget_peers_after_days: u64,
    /// Start syncing this database at start (`syncctl disable` turns it off).
    #[serde(default = "defaults::yes")]
    pub auto_sync: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub conflict: Option<String>,
}

mod defaults {
    pub fn heartbeat_secs() -> u64 {
        60
    }
    pub fn active_secs() -> u64 {
        300
    }
    pub fn debounce_ms() -> u64 {
        100
    }
    pub fn poll_secs() -> u64 {
        5
    }
    pub fn conflict() -> String {
        "lww".into()
    }
    pub fn snapshot_every() -> u64 {
        100_000
    }
    pub fn snapshot_hours() -> u64 {
        24
    }
    pub fn keep_last() -> usize {
        10
    }
    pub fn keep_within_days() -> u64 {
        7
    }
    pub fn forget_peers_after_days() -> u64 {
        30
    }
    pub fn yes() -> bool {
        true
    }
}

/// A reference between two tables that the schema does not declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub child: String,
    pub child_column: String,
    pub parent: String,
    pub parent_column: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        let wrong = || {
            format!(
                "references entry {s:?} must be child_table.column -> parent_table.column, \
                 for example \"item_attributes.entity_id -> items.id\""
            )
        };
        let (child, parent) = s.split_once("->").ok_or_else(wrong)?;
        let side = |t: &str| -> Option<(String, String)> {
            let (table, column) = t.trim().split_once('.')?;
            (!table.is_empty() && !column.is_empty()).then(|| (table.to_string(), column.to_string()))
        };
        let ((child, child_column), (parent, parent_column)) = side(child).zip(side(parent)).ok_or_else(wrong)?;
        Ok(Reference { child, child_column, parent, parent_column })
    }
}

impl DatabaseConfig {
    /// The configured references, parsed (validated when the file was read).
    pub fn references(&self) -> Vec<Reference> {
        self.references.iter().filter_map(|r| Reference::parse(r).ok()).collect()
    }
}

/// How the winner of two concurrent versions is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Per column, the higher version wins.
    Lww,
    /// The whole row with the higher value of this column wins; the version
    /// breaks ties and decides deletes.
    LwwColumn(String),
    /// The earlier peer name in the list wins; unlisted peers come last and
    /// the version decides between them.
    PeerPriority(Vec<String>),
}

impl Policy {
    pub fn parse(s: &str) -> Result<Policy, String> {
        let s = s.trim();
        if s == "lww" {
            return Ok(Policy::Lww);
        }
        if let Some(col) = s.strip_prefix("lww-column:") {
            if col.trim().is_empty() {
                return Err("lww-column needs a column name: lww-column:updated_at".into());
            }
            return Ok(Policy::LwwColumn(col.trim().to_string()));
        }
        if let Some(list) = s.strip_prefix("peer-priority:") {
            let names: Vec<String> = list.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
            if names.is_empty() {
                return Err("peer-priority needs peer names: peer-priority:desktop,laptop".into());
            }
            return Ok(Policy::PeerPriority(names));
        }
        Err(format!("unknown conflict policy {s:?}: use lww, lww-column:<column> or peer-priority:<peer,peer,…>"))
    }

    /// True when the policy decides whole rows, so updates carry full rows.
    pub fn is_row_level(&self) -> bool {
        matches!(self, Policy::LwwColumn(_))
    }
}

impl DatabaseConfig {
    pub fn policy_for(&self, table: &str) -> Policy {
        let s = self.tables.get(table).and_then(|t| t.conflict.as_deref()).unwrap_or(&self.conflict);
        // Validated at load time.
        Policy::parse(s).unwrap_or(Policy::Lww)
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the configuration {}: {e} (pass --config FILE or set SYNCD_CONFIG)",
                path.display()
            ))
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            let at = e
                .span()
                .map(|s| format!(" at line {}", text[..s.start.min(text.len())].lines().count().max(1)))
                .unwrap_or_default();
            ConfigError(format!("{}{at}: {msg}", path.display()))
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError(format!("{}: {what}", path.display())));
        if !(self.hub.url.starts_with("file://") || self.hub.url.starts_with("s3://")) {
            return bad(format!(
                "[hub] url = {:?} is not a hub URL: use file:///path/to/shared/folder or s3://bucket/prefix",
                self.hub.url
            ));
        }
        if self.databases.is_empty() {
            return bad("no [[database]] section: add one with name and path".into());
        }
        if self.hub.poll_secs == 0 || self.heartbeat_secs == 0 {
            return bad("poll_secs and heartbeat_secs must be at least 1".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for db in &self.databases {
            if db.name.is_empty()
                || !db.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
                || db.name.starts_with('.')
            {
                return bad(format!(
                    "database name {:?} must be letters, digits, '-', '_' or '.' (it names a folder in the hub)",
                    db.name
                ));
            }
            if !names.insert(&db.name) {
                return bad(format!("database name {:?} is used twice", db.name));
            }
            Policy::parse(&db.conflict).map(|_| ()).or_else(|e| bad(format!("database {:?}: {e}", db.name)))?;
            for (table, t) in &db.tables {
                if let Some(c) = &t.conflict {
                    Policy::parse(c)
                        .map(|_| ())
                        .or_else(|e| bad(format!("database {:?} table {table:?}: {e}", db.name)))?;
                }
            }
            for r in &db.references {
                Reference::parse(r).map(|_| ()).or_else(|e| bad(format!("database {:?}: {e}", db.name)))?;
            }
            for c in &db.exclude_columns {
                if !c.contains('.') {
                    return bad(format!(
                        "exclude_columns entry {c:?} must be table.column, for example users.password"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn peer_name(&self) -> String {
        self.peer_name.clone().unwrap_or_else(host_name)
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| home_dir().map(|h| h.join(".local").join("state")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("syncd")
    }

    pub fn hub_s3_options(&self) -> crate::hub::S3Options {
        crate::hub::S3Options {
            endpoint: self.hub.endpoint.clone(),
            region: self.hub.region.clone(),
            access_key_id: self.hub.access_key_id.clone(),
            secret_access_key: self.hub.secret_access_key.clone(),
            allow_http: self.hub.allow_http,
        }
    }

    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }
}

pub fn host_name() -> String {
    hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown-host".into())
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("syncd.toml"))
    }

    const GOOD: &str = "[hub]\nurl = \"file:///tmp/hub\"\n[[database]]\nname = \"main\"\npath = \"/tmp/a.db\"\n";

    #[test]
    fn a_minimal_configuration_gets_the_documented_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.heartbeat_secs, 60);
        assert_eq!(c.active_secs, 300);
        assert_eq!(c.databases[0].conflict, "lww");
        assert_eq!(c.databases[0].keep_last, 10);
        assert_eq!(c.databases[0].keep_within_days, 7);
    }

    #[test]
    fn each_bad_configuration_gets_a_one_line_error_naming_the_problem() {
        let cases = [
            (format!("{GOOD}colour = 1\n"), "colour"),
            (GOOD.replace("file://", "ftp://"), "not a hub URL"),
            (GOOD.replace("name = \"main\"", "name = \"a/b\""), "must be letters"),
            (format!("{GOOD}conflict = \"newest\"\n"), "unknown conflict policy"),
            (format!("{GOOD}exclude_columns = [\"password\"]\n"), "table.column"),
            (format!("{GOOD}references = [\"item_attributes.entity_id\"]\n"), "child_table.column -> parent"),
            (format!("{GOOD}references = [\"a.b -> items\"]\n"), "child_table.column -> parent"),
            ("[hub]\nurl = \"file:///x\"\n".to_string(), "no [[database]]"),
            ("[hub\n".to_string(), "syncd.toml"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }

    #[test]
    fn references_parse() {
        let c = parse(&format!("{GOOD}references = [\" item_attributes.entity_id->items.id \"]\n")).unwrap();
        assert_eq!(
            c.databases[0].references(),
            [Reference {
                child: "item_attributes".into(),
                child_column: "entity_id".into(),
                parent: "items".into(),
                parent_column: "id".into()
            }]
        );
    }

    #[test]
    fn policies_parse() {
        assert_eq!(Policy::parse("lww-column:updated_at").unwrap(), Policy::LwwColumn("updated_at".into()));
        assert_eq!(
            Policy::parse("peer-priority:desk, laptop").unwrap(),
            Policy::PeerPriority(vec!["desk".into(), "laptop".into()])
        );
    }
}

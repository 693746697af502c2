//! `syncd once`: one full cycle for every configured database, then exit.
//! What cron users and the tests run; the daemon runs the same cycle.

use crate::config::Config;
use crate::engine::Engine;
use crate::identity::Identity;
use std::fmt;

/// A failure of a `syncd` command, with the exit code it maps to: 2 for a
/// problem the user must fix in the configuration or environment, 1 for a
/// sync that failed.
#[derive(Debug)]
pub struct RunError {
    pub message: String,
    pub is_usage: bool,
}

impl RunError {
    pub fn usage(message: impl Into<String>) -> RunError {
        RunError { message: message.into(), is_usage: true }
    }
    pub fn failed(message: impl Into<String>) -> RunError {
        RunError { message: message.into(), is_usage: false }
    }
    pub fn exit_code(&self) -> u8 {
        if self.is_usage { 2 } else { 1 }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

/// Opens the identity, the hub and every database engine, as `once` and the
/// daemon both need.
pub fn open_engines(config: &Config) -> Result<(Identity, Vec<Engine>), RunError> {
    let identity = Identity::load_or_create(&config.state_dir(), config.peer_name())
        .map_err(|e| RunError::usage(format!("state directory {}: {e}", config.state_dir().display())))?;
    let hub =
        crate::hub::open(&config.hub.url, &config.hub_s3_options()).map_err(|e| RunError::usage(format!("{e}")))?;
    let mut engines = Vec::new();
    for db in &config.databases {
        engines.push(Engine::open(config, db, &identity, hub.clone()).map_err(|e| RunError::usage(e.to_string()))?);
    }
    Ok((identity, engines))
}

pub fn run(config: &Config) -> Result<(), RunError> {
    let (_identity, mut engines) = open_engines(config)?;
    let mut failures = Vec::new();
    for engine in &mut engines {
        match engine.run_cycle() {
            Ok(report) => {
                if let Some(since) = engine.health.hub_unreachable_since_ms {
                    let _ = since;
                    failures.push(format!(
                        "{}: the hub is unreachable ({}); {} changes wait in the outbox",
                        engine.config.name,
                        engine.health.hub_error.clone().unwrap_or_default(),
                        engine.pending_local().1
                    ));
                }
                let _ = report;
            }
            Err(e) => failures.push(format!("{}: {e}", engine.config.name)),
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(RunError::failed(failures.join("; "))) }
}

//! `syncctl`: the command-line client of the syncd daemon. It only parses
//! the command line, sends one request over the control socket and prints
//! the answer; the daemon does the work.
//!
//! Exit codes: 0 ok, 1 the request failed, 2 usage or configuration error,
//! 3 the daemon is not running.

mod client;
mod commands;
mod output;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Talk to the running syncd daemon.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// The daemon's control socket (default: from --config, else
    /// $XDG_RUNTIME_DIR/syncd/syncd.sock).
    #[arg(long, global = true, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Read the socket path from this syncd configuration file.
    #[arg(long, short, global = true, env = "SYNCD_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Each database: in sync, ahead, behind; peers; last error; conflicts.
    Status,
    /// Sync now (all databases, or DB).
    Sync {
        db: Option<String>,
        /// Go ahead even when other peers are active.
        #[arg(long)]
        yes: bool,
        /// On conflicts while joining, keep local rows (default: the hub wins).
        #[arg(long, value_parser = ["local", "hub"], default_value = "hub")]
        prefer: String,
    },
    /// Peers seen through their heartbeats.
    Peers,
    /// Losing versions kept by conflicts; `conflicts restore ID` brings one back.
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictAction>,
        db: Option<String>,
    },
    /// Resume automatic sync (all databases, or DB).
    Enable { db: Option<String> },
    /// Stop automatic sync (all databases, or DB); survives restarts.
    Disable { db: Option<String> },
    /// Take a snapshot now.
    Backup { db: Option<String> },
    /// Snapshots in the hub, newest first.
    List { db: Option<String> },
    /// Replace the local database with a snapshot (or a point in time).
    Restore {
        /// Snapshot id from `syncctl list`.
        snapshot: String,
        /// Point in time (RFC 3339): the snapshot before it plus the changes up to it.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        yes: bool,
    },
    /// Make the local database equal to the hub's merged state.
    Pull {
        db: Option<String>,
        #[arg(long, required = true)]
        force: bool,
        #[arg(long)]
        yes: bool,
    },
    /// Make every peer equal to the local database.
    Push {
        db: Option<String>,
        #[arg(long, required = true)]
        force: bool,
        #[arg(long)]
        yes: bool,
    },
    /// Remove old snapshots and change batches by the retention rules.
    Cleanup {
        db: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ConflictAction {
    /// Bring a losing row back as a new local change.
    Restore {
        id: i64,
        #[arg(long)]
        db: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = match client::resolve_socket(cli.socket.clone(), cli.config.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("syncctl: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = commands::Context { socket, json: cli.json };
    ExitCode::from(commands::run(&ctx, cli.command))
}

//! `syncctl`: the command-line client of the syncd daemon (DESIGN §6). It
//! parses the command line, sends one request over the control socket,
//! and prints the answer: aligned tables for people, `--json` for scripts.
//! It never touches a database, the hub or the daemon's state itself; the
//! daemon does the work, and answers when it is done.
//!
//! Socket: `--socket PATH`, else the top-level `socket` key of
//! `--config FILE` (or of `$SYNCD_CONFIG`), else the default
//! (`$XDG_RUNTIME_DIR/syncd/syncd.sock`, or `/tmp/syncd-$UID/syncd.sock`).
//!
//! Exit codes: 0 ok; 1 the request failed (or needed a confirmation that
//! was not given); 2 usage or configuration error; 3 the daemon is not
//! running.
//!
//! `--json` prints the answer's payload: `status` the status object,
//! `list` `{"snapshots": [...]}`, `sync`, `peers`, `conflicts` and
//! `cleanup` an array, the other commands `{"message": "..."}`; a failure
//! prints `{"error": {"kind": "...", "message": "..."}}` on stdout too.

mod client;
mod commands;
mod output;

use clap::{Parser, Subcommand};
use commands::{Context, Failure};
use std::path::PathBuf;
use std::process::ExitCode;

/// The request failed, or needed a confirmation that was not given.
pub const EXIT_FAILED: u8 = 1;
/// Usage or configuration error (clap uses 2 for its own usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Nothing answers on the socket.
pub const EXIT_NOT_RUNNING: u8 = 3;

/// Talk to the running syncd daemon.
#[derive(Parser)]
#[command(
    name = "syncctl",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 the request failed, 2 usage or configuration error, 3 syncd is not running."
)]
struct Cli {
    /// The daemon's control socket [default: the `socket` of the
    /// configuration, else $XDG_RUNTIME_DIR/syncd/syncd.sock]
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Read the socket path from this syncd configuration file [env:
    /// SYNCD_CONFIG]
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Each database at a glance: in sync, ahead or behind, last sync,
    /// conflicts, errors; the hub; the peers
    Status(commands::status::Args),
    /// Sync now (every database, or DB)
    Sync(commands::sync::Args),
    /// The peers seen through their heartbeats, and which are active
    Peers(commands::peers::Args),
    /// The conflict log; `conflicts restore ID` brings a losing version back
    Conflicts(commands::conflicts::Args),
    /// Resume automatic sync (every database, or DB)
    Enable(commands::enable::Args),
    /// Stop automatic sync (every database, or DB); kept across restarts
    Disable(commands::disable::Args),
    /// Take a snapshot now
    Backup(commands::backup::Args),
    /// The snapshots in the hub, newest first
    List(commands::list::Args),
    /// Replace the local database with a snapshot, or with a point in time
    Restore(commands::restore::Args),
    /// Make the local database equal to the hub's merged state
    Pull(commands::pull::Args),
    /// Make every peer equal to the local database
    Push(commands::push::Args),
    /// Remove old snapshots and change batches by the retention rules
    Cleanup(commands::cleanup::Args),
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (0 for --help).
    let cli = Cli::parse();
    let outcome = client::resolve_socket(cli.socket, cli.config)
        .map_err(|e| Failure::usage(e.to_string()))
        .and_then(|socket| run(&Context { socket, json: cli.json }, cli.command));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print(cli.json);
            ExitCode::from(failure.exit)
        }
    }
}

fn run(ctx: &Context, command: Command) -> Result<(), Failure> {
    match command {
        Command::Status(args) => commands::status::run(ctx, args),
        Command::Sync(args) => commands::sync::run(ctx, args),
        Command::Peers(args) => commands::peers::run(ctx, args),
        Command::Conflicts(args) => commands::conflicts::run(ctx, args),
        Command::Enable(args) => commands::enable::run(ctx, args),
        Command::Disable(args) => commands::disable::run(ctx, args),
        Command::Backup(args) => commands::backup::run(ctx, args),
        Command::List(args) => commands::list::run(ctx, args),
        Command::Restore(args) => commands::restore::run(ctx, args),
        Command::Pull(args) => commands::pull::run(ctx, args),
        Command::Push(args) => commands::push::run(ctx, args),
        Command::Cleanup(args) => commands::cleanup::run(ctx, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! One module per command (the pueue layout): each defines its arguments,
//! builds its request and prints the answer. What they share lives here:
//! sending with the confirmation dance, and failures with their exit codes.

pub mod backup;
pub mod cleanup;
pub mod conflicts;
pub mod disable;
pub mod enable;
pub mod list;
pub mod peers;
pub mod pull;
pub mod push;
pub mod restore;
pub mod status;
pub mod sync;

use crate::{EXIT_FAILED, EXIT_USAGE, client, output};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use syncd_proto::{Request, Response};

/// What every command needs: where the daemon is and how to print.
pub struct Context {
    pub socket: PathBuf,
    pub json: bool,
}

/// A command that did not succeed: the exit code and what to tell the
/// user. `kind` is the JSON `error.kind`: an [`syncd_proto::ErrorKind`]
/// spelling, or one of syncctl's own (`not_running`, `connection`,
/// `version_mismatch`, `needs_confirmation`, `cancelled`, `usage`,
/// `unexpected_answer`).
#[derive(Debug)]
pub struct Failure {
    pub exit: u8,
    pub kind: String,
    pub message: String,
    /// For `needs_confirmation`: the peers that made it necessary.
    pub active_peers: Vec<String>,
}

impl Failure {
    /// A usage or configuration error: exit code 2.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { exit: EXIT_USAGE, kind: "usage".into(), message: message.into(), active_peers: Vec::new() }
    }

    /// Prints the failure: one line on stderr, and with `--json` the
    /// `{"error": …}` object on stdout so a script reads it where it reads
    /// answers.
    pub fn print(&self, json: bool) {
        if json {
            let mut error = serde_json::json!({ "kind": self.kind, "message": self.message });
            if !self.active_peers.is_empty() {
                error["active_peers"] = serde_json::json!(self.active_peers);
            }
            output::json(&serde_json::json!({ "error": error }));
        }
        eprintln!("syncctl: {}", self.message);
    }
}

/// Sends the request `make(yes)` and returns the answer, `Error` answers
/// turned into failures. A destructive request that needs confirmation
/// asks on a terminal and is sent again with `yes`; without a terminal it
/// fails and says to pass `--yes`.
pub fn send(ctx: &Context, yes: bool, make: impl Fn(bool) -> Request) -> Result<Response, Failure> {
    let mut response = client::exchange(&ctx.socket, make(yes))?;
    if let Response::NeedsConfirmation { message, active_peers } = response {
        if !std::io::stdin().is_terminal() {
            let peers = if active_peers.is_empty() { String::new() } else { format!(" ({})", active_peers.join(", ")) };
            return Err(Failure {
                exit: EXIT_FAILED,
                kind: "needs_confirmation".into(),
                message: format!("{message}: other peers are active{peers}; pass --yes to go ahead"),
                active_peers,
            });
        }
        if !confirm(&message, &active_peers) {
            return Err(Failure::failed("cancelled", "cancelled; nothing was changed"));
        }
        response = client::exchange(&ctx.socket, make(true))?;
    }
    match response {
        Response::Error { kind, message } => Err(Failure::failed(kind.as_str(), message)),
        // Asking again after a yes would loop: the daemon should not.
        Response::NeedsConfirmation { message, .. } => Err(Failure::failed("needs_confirmation", message)),
        other => Ok(other),
    }
}

/// Asks on the terminal; only "y" or "yes" go ahead.
fn confirm(message: &str, active_peers: &[String]) -> bool {
    if active_peers.is_empty() {
        eprint!("{message}. Continue? [y/N] ");
    } else {
        eprint!("Other peers are active: {}. Continue? [y/N] ", active_peers.join(", "));
    }
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok()
        && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// An answer of the wrong kind for the request: a bug on one side.
pub fn unexpected(response: Response) -> Failure {
    Failure::failed("unexpected_answer", format!("unexpected answer from syncd: {response:?}"))
}

/// Prints a `Done` answer: its message, or `{"message": …}`.
pub fn print_done(ctx: &Context, response: Response) -> Result<(), Failure> {
    let Response::Done { message } = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&serde_json::json!({ "message": message }));
    } else {
        println!("{message}");
    }
    Ok(())
}

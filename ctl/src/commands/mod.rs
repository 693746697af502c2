//! One module per command; each builds its request and prints the answer.

mod backup;
mod cleanup;
mod conflicts;
mod force;
mod list;
mod peers;
mod restore;
mod status;
mod sync;
mod toggle;

use crate::Command;
use crate::client::{self, ClientError};
use crate::output;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use syncd_proto::{Request, Response};

pub struct Context {
    pub socket: PathBuf,
    pub json: bool,
}

pub fn run(ctx: &Context, command: Command) -> u8 {
    match command {
        Command::Status => status::run(ctx),
        Command::Sync { db, yes, prefer } => sync::run(ctx, db, yes, prefer == "local"),
        Command::Peers => peers::run(ctx),
        Command::Conflicts { action, db } => conflicts::run(ctx, action, db),
        Command::Enable { db } => toggle::run(ctx, db, true),
        Command::Disable { db } => toggle::run(ctx, db, false),
        Command::Backup { db } => backup::run(ctx, db),
        Command::List { db } => list::run(ctx, db),
        Command::Restore { snapshot, at, yes } => restore::run(ctx, snapshot, at, yes),
        Command::Pull { db, force, yes } => force::run(ctx, db, force, yes, false),
        Command::Push { db, force, yes } => force::run(ctx, db, force, yes, true),
        Command::Cleanup { db, dry_run } => cleanup::run(ctx, db, dry_run),
    }
}

/// Sends a request built by `make(yes)`. A `NeedsConfirmation` answer asks
/// on a terminal and resends with `yes`; elsewhere it fails. Errors are
/// printed here; `Err` carries the exit code.
pub fn send(ctx: &Context, yes: bool, make: impl Fn(bool) -> Request) -> Result<Response, u8> {
    let mut response = exchange(ctx, make(yes))?;
    if let Response::NeedsConfirmation { message, active_peers } = &response {
        let confirmed = !ctx.json
            && std::io::stdin().is_terminal()
            && ask(&format!("Other peers are active: {}. {message}\nContinue? [y/N] ", active_peers.join(", ")));
        if !confirmed {
            fail(ctx, "needs_confirmation", &format!("{message} (other peers active: {})", active_peers.join(", ")));
            return Err(1);
        }
        response = exchange(ctx, make(true))?;
    }
    if let Response::Error { kind, message } = &response {
        let kind = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        fail(ctx, &kind, message);
        return Err(1);
    }
    Ok(response)
}

fn exchange(ctx: &Context, request: Request) -> Result<Response, u8> {
    match client::request(&ctx.socket, request) {
        Ok(r) => Ok(r),
        Err(ClientError::NotRunning(m)) => {
            fail(ctx, "not_running", &m);
            Err(3)
        }
        Err(ClientError::Broken(m)) => {
            fail(ctx, "connection", &m);
            Err(1)
        }
    }
}

fn ask(question: &str) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

fn fail(ctx: &Context, kind: &str, message: &str) {
    if ctx.json {
        output::json(&serde_json::json!({ "error": { "kind": kind, "message": message } }));
    }
    eprintln!("syncctl: {message}");
}

/// Prints an answer the command did not expect (a daemon bug).
pub fn unexpected(response: Response) -> u8 {
    eprintln!("syncctl: unexpected answer from syncd: {response:?}");
    1
}

/// Prints a `Done` message (or its JSON).
pub fn done(ctx: &Context, response: Response) -> u8 {
    match response {
        Response::Done { message } => {
            if ctx.json {
                output::json(&serde_json::json!({ "ok": true, "message": message }));
            } else {
                println!("{message}");
            }
            0
        }
        other => unexpected(other),
    }
}

//! `syncctl status`: each database at a glance (in sync, ahead, behind,
//! last sync, conflicts, last error), the hub, and the peers.

use super::{Context, Failure, send, unexpected};
use crate::output::{self, ago, or_dash};
use syncd_proto::{Request, Response, StatusReport};

/// `syncctl status` takes no arguments.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> Result<(), Failure> {
    let response = send(ctx, false, |_| Request::Status)?;
    let Response::Status(report) = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&report);
    } else {
        print(&report);
    }
    Ok(())
}

fn print(report: &StatusReport) {
    let hub = if report.hub.reachable {
        "reachable".to_string()
    } else {
        format!(
            "UNREACHABLE since {}: {}",
            ago(report.hub.unreachable_since.as_deref()),
            or_dash(report.hub.last_error.as_deref())
        )
    };
    println!("hub  {}  {hub}\n", report.hub.url);
    let rows: Vec<Vec<String>> = report
        .databases
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.state.as_str().replace('_', " "),
                d.pending_local.to_string(),
                d.pending_remote.to_string(),
                ago(d.last_sync.as_deref()),
                d.conflicts.to_string(),
                d.parked.to_string(),
                if d.auto_sync { "on" } else { "off" }.into(),
                output::clip(d.last_error.as_deref().unwrap_or("-"), 60),
            ]
        })
        .collect();
    output::table(
        &["database", "state", "to publish", "to apply", "last sync", "conflicts", "parked", "auto", "last error"],
        &rows,
    );
    for d in &report.databases {
        for skipped in &d.skipped_files {
            println!("{}: skipped hub file {}: {}", d.name, skipped.path, skipped.reason);
        }
    }
    if !report.peers.is_empty() {
        println!();
        super::peers::print(&report.peers);
    }
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
}

//! `syncctl peers`: the peers seen through their heartbeats, and which are
//! active (a heartbeat younger than the active window).

use super::{Context, Failure, send, unexpected};
use crate::output::{self, ago, yes_no};
use syncd_proto::{PeerInfo, Request, Response};

/// `syncctl peers` takes no arguments.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> Result<(), Failure> {
    let response = send(ctx, false, |_| Request::Peers)?;
    let Response::Peers(peers) = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&peers);
    } else if peers.is_empty() {
        println!("no peers seen yet");
    } else {
        print(&peers);
    }
    Ok(())
}

/// The peers table; `status` prints it too.
pub fn print(peers: &[PeerInfo]) {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                if p.is_self { format!("{} (this one)", p.name) } else { p.name.clone() },
                p.database.clone(),
                p.host.clone(),
                ago(p.last_seen.as_deref()),
                yes_no(p.active),
                p.version.clone(),
                p.clock_skew_ms.map_or_else(|| "-".into(), |ms| format!("{:+.1} s", ms as f64 / 1000.0)),
                p.peer_id.chars().take(8).collect(),
            ]
        })
        .collect();
    output::table(&["peer", "database", "host", "last seen", "active", "version", "clock", "id"], &rows);
}

//! `syncctl status`: each database at a glance.

use super::{Context, send, unexpected};
use crate::output::{self, or_dash};
use syncd_proto::{Request, Response};

pub fn run(ctx: &Context) -> u8 {
    let response = match send(ctx, false, |_| Request::Status) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Response::Status(s) = response else { return unexpected(response) };
    if ctx.json {
        output::json(&s);
        return 0;
    }
    let hub = if s.hub.reachable {
        "reachable".to_string()
    } else {
        format!("UNREACHABLE since {}: {}", or_dash(&s.hub.unreachable_since), or_dash(&s.hub.last_error))
    };
    println!("hub  {}  ({hub})\n", s.hub.url);
    output::table(
        &["database", "state", "local", "remote", "last sync", "conflicts", "parked", "auto", "last error"],
        s.databases
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    serde_json::to_value(d.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                    d.pending_local.to_string(),
                    d.pending_remote.to_string(),
                    or_dash(&d.last_sync),
                    d.conflicts.to_string(),
                    d.parked.to_string(),
                    if d.auto_sync { "on" } else { "off" }.into(),
                    or_dash(&d.last_error),
                ]
            })
            .collect(),
    );
    let skipped: Vec<_> = s.databases.iter().flat_map(|d| d.skipped_files.iter()).collect();
    if !skipped.is_empty() {
        println!("\nskipped hub files:");
        for f in skipped {
            println!("  {}: {}", f.path, f.reason);
        }
    }
    println!();
    super::peers::print(&s.peers);
    for w in &s.warnings {
        println!("warning: {w}");
    }
    0
}

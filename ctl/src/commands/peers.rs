//! `syncctl peers`: who else syncs, and who is active.

use super::{Context, send, unexpected};
use crate::output::{self, or_dash};
use syncd_proto::{PeerInfo, Request, Response};

pub fn run(ctx: &Context) -> u8 {
    let response = match send(ctx, false, |_| Request::Peers) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Response::Peers(peers) = response else { return unexpected(response) };
    if ctx.json {
        output::json(&peers);
    } else {
        print(&peers);
    }
    0
}

pub fn print(peers: &[PeerInfo]) {
    output::table(
        &["database", "peer", "host", "last seen", "active", "version", "id"],
        peers
            .iter()
            .map(|p| {
                vec![
                    p.database.clone(),
                    if p.is_self { format!("{} (this one)", p.name) } else { p.name.clone() },
                    p.host.clone(),
                    or_dash(&p.last_seen),
                    if p.active { "yes" } else { "no" }.into(),
                    p.version.clone(),
                    p.peer_id.clone(),
                ]
            })
            .collect(),
    );
}

//! `syncctl list [DB]`: snapshots in the hub, newest first.

use super::{Context, send, unexpected};
use crate::output;
use syncd_proto::{Request, Response};

pub fn run(ctx: &Context, database: Option<String>) -> u8 {
    let response = match send(ctx, false, |_| Request::List { database: database.clone() }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Response::Snapshots(snapshots) = response else { return unexpected(response) };
    if ctx.json {
        output::json(&serde_json::json!({ "snapshots": snapshots }));
        return 0;
    }
    output::table(
        &["created", "database", "peer", "size", "kept", "id"],
        snapshots
            .iter()
            .map(|s| {
                vec![
                    s.created.clone(),
                    s.database.clone(),
                    s.peer_name.clone(),
                    format!("{:.1} MB", s.size as f64 / 1e6),
                    if s.kept { "yes" } else { "no" }.into(),
                    s.id.clone(),
                ]
            })
            .collect(),
    );
    0
}

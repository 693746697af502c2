//! `syncctl list [DB]`: the snapshots in the hub, newest first; the ID
//! column is what `syncctl restore` takes.

use super::{Context, Failure, send, unexpected};
use crate::output::{self, yes_no};
use syncd_proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response = send(ctx, false, |_| Request::List { database: args.db.clone() })?;
    let Response::Snapshots(snapshots) = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&serde_json::json!({ "snapshots": snapshots }));
        return Ok(());
    }
    if snapshots.is_empty() {
        println!("no snapshots");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            vec![
                s.created.clone(),
                s.database.clone(),
                s.peer_name.clone(),
                output::size(s.size),
                yes_no(s.kept),
                s.id.clone(),
            ]
        })
        .collect();
    output::table(&["created", "database", "peer", "size", "kept", "id"], &rows);
    Ok(())
}

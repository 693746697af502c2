//! `syncctl sync [DB] [--yes] [--prefer local|hub]`: a full sync cycle now;
//! the daemon answers when it is done.

use super::{Context, Failure, send, unexpected};
use crate::output::{self, or_dash};
use syncd_proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
    /// Go ahead without asking, even when other peers are active
    #[arg(long)]
    yes: bool,
    /// Which side wins conflicts while joining the hub
    #[arg(long, value_enum, default_value_t = Prefer::Hub)]
    prefer: Prefer,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Prefer {
    /// Keep the local rows
    Local,
    /// Take the hub's rows
    Hub,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let prefer_local = args.prefer == Prefer::Local;
    let response = send(ctx, args.yes, |yes| Request::Sync { database: args.db.clone(), yes, prefer_local })?;
    let Response::Synced(reports) = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&reports);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.database.clone(),
                r.captured.to_string(),
                r.published.to_string(),
                r.applied.to_string(),
                r.conflicts.to_string(),
                r.parked.to_string(),
                or_dash(r.message.as_deref()),
            ]
        })
        .collect();
    output::table(&["database", "captured", "published", "applied", "conflicts", "parked", "note"], &rows);
    Ok(())
}

//! `syncctl backup [DB]`: take a snapshot now; the daemon answers when it
//! is in the hub.

use super::{Context, Failure, print_done, send};
use syncd_proto::Request;

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response = send(ctx, false, |_| Request::Backup { database: args.db.clone() })?;
    print_done(ctx, response)
}

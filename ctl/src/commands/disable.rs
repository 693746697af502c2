//! `syncctl disable [DB]`: stop automatic sync (changes are still captured
//! and wait); the daemon keeps the setting across restarts.

use super::{Context, Failure, print_done, send};
use syncd_proto::Request;

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response = send(ctx, false, |_| Request::Disable { database: args.db.clone() })?;
    print_done(ctx, response)
}

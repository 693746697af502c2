//! `syncctl pull --force [DB] [--yes]`: make the local database equal to
//! the hub's merged state, dropping local changes the hub does not have.
//! `--force` is required because that is destructive; the daemon keeps a
//! "before" snapshot and asks for confirmation while other peers are
//! active.

use super::{Context, Failure, print_done, send};
use syncd_proto::Request;

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
    /// Required: replace local data with the hub's
    #[arg(long, required = true)]
    force: bool,
    /// Go ahead without asking, even when other peers are active
    #[arg(long)]
    yes: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response = send(ctx, args.yes, |yes| Request::Pull { database: args.db.clone(), force: args.force, yes })?;
    print_done(ctx, response)
}

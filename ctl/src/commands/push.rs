//! `syncctl push --force [DB] [--yes]`: make every peer equal to the local
//! database. `--force` is required because that overrides every other
//! peer's changes; the daemon asks for confirmation while other peers are
//! active.

use super::{Context, Failure, print_done, send};
use syncd_proto::Request;

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
    /// Required: override every other peer with the local data
    #[arg(long, required = true)]
    force: bool,
    /// Go ahead without asking, even when other peers are active
    #[arg(long)]
    yes: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response = send(ctx, args.yes, |yes| Request::Push { database: args.db.clone(), force: args.force, yes })?;
    print_done(ctx, response)
}

//! `syncctl cleanup [DB] [--dry-run]`: apply the retention rules now:
//! remove old snapshots, and change batches every peer has applied and a
//! kept snapshot covers.

use super::{Context, Failure, send, unexpected};
use crate::output;
use syncd_proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Only this database
    db: Option<String>,
    /// Only say what would be removed
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response = send(ctx, false, |_| Request::Cleanup { database: args.db.clone(), dry_run: args.dry_run })?;
    let Response::Cleanup(reports) = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&reports);
        return Ok(());
    }
    for r in &reports {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        println!(
            "{}: {verb} {} snapshots and {} change batches; {} snapshots kept",
            r.database,
            r.removed_snapshots.len(),
            r.removed_batches,
            r.kept_snapshots
        );
        for snapshot in &r.removed_snapshots {
            println!("  {snapshot}");
        }
    }
    Ok(())
}

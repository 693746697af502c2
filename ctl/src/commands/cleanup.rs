//! `syncctl cleanup [DB] [--dry-run]`: apply the retention rules now.

use super::{Context, send, unexpected};
use crate::output;
use syncd_proto::{Request, Response};

pub fn run(ctx: &Context, database: Option<String>, dry_run: bool) -> u8 {
    let response = match send(ctx, false, |_| Request::Cleanup { database: database.clone(), dry_run }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Response::Cleanup(reports) = response else { return unexpected(response) };
    if ctx.json {
        output::json(&reports);
        return 0;
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
        for s in &r.removed_snapshots {
            println!("  {s}");
        }
    }
    0
}

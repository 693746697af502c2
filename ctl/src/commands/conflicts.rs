//! `syncctl conflicts [DB]`: the conflict log (every losing version is kept);
//! `syncctl conflicts restore ID [--db DB]`: bring one back as a new local
//! change.

use super::{Context, Failure, print_done, send, unexpected};
use crate::output::{self, ago, clip, or_dash};
use syncd_proto::{Request, Response};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Only this database
    db: Option<String>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Bring the losing version of conflict ID back as a new local change
    Restore {
        /// The conflict's id, from `syncctl conflicts`
        id: i64,
        /// The database the conflict belongs to
        #[arg(long)]
        db: Option<String>,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    if let Some(Action::Restore { id, db }) = args.action {
        let response = send(ctx, false, |_| Request::ConflictRestore { database: db.clone(), id })?;
        return print_done(ctx, response);
    }
    let response = send(ctx, false, |_| Request::Conflicts { database: args.db.clone() })?;
    let Response::Conflicts(conflicts) = response else { return Err(unexpected(response)) };
    if ctx.json {
        output::json(&conflicts);
        return Ok(());
    }
    if conflicts.is_empty() {
        println!("no conflicts");
        return Ok(());
    }
    let deleted = || "(deleted)".to_string();
    let rows: Vec<Vec<String>> = conflicts
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.database.clone(),
                c.table.clone(),
                clip(&c.key, 24),
                or_dash(c.column.as_deref()),
                c.local_value.as_deref().map_or_else(deleted, |v| clip(v, 32)),
                c.winner_value.as_deref().map_or_else(deleted, |v| clip(v, 32)),
                format!("{} over {}", c.winner_peer, c.loser_peer),
                c.reason.clone(),
                ago(c.at.as_deref()),
            ]
        })
        .collect();
    output::table(&["id", "database", "table", "key", "column", "lost", "won", "peers", "reason", "when"], &rows);
    Ok(())
}

//! `syncctl conflicts [DB]` and `syncctl conflicts restore ID`.

use super::{Context, done, send, unexpected};
use crate::ConflictAction;
use crate::output::{self, or_dash};
use syncd_proto::{Request, Response};

pub fn run(ctx: &Context, action: Option<ConflictAction>, database: Option<String>) -> u8 {
    if let Some(ConflictAction::Restore { id, db }) = action {
        let database = db.or(database);
        return match send(ctx, false, |_| Request::ConflictRestore { database: database.clone(), id }) {
            Ok(r) => done(ctx, r),
            Err(code) => code,
        };
    }
    let response = match send(ctx, false, |_| Request::Conflicts { database: database.clone() }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Response::Conflicts(conflicts) = response else { return unexpected(response) };
    if ctx.json {
        output::json(&conflicts);
        return 0;
    }
    output::table(
        &["id", "database", "table", "key", "column", "lost", "won", "loser", "winner", "reason"],
        conflicts
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    c.database.clone(),
                    c.table.clone(),
                    c.key.clone(),
                    or_dash(&c.column),
                    c.local_value.clone().unwrap_or_else(|| "(deleted)".into()),
                    c.winner_value.clone().unwrap_or_else(|| "(deleted)".into()),
                    c.loser_peer.clone(),
                    c.winner_peer.clone(),
                    c.reason.clone(),
                ]
            })
            .collect(),
    );
    0
}

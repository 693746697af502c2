//! `syncctl sync [DB]`: a full cycle now.

use super::{Context, send, unexpected};
use crate::output::{self, or_dash};
use syncd_proto::{Request, Response};

pub fn run(ctx: &Context, database: Option<String>, yes: bool, prefer_local: bool) -> u8 {
    let response = match send(ctx, yes, |yes| Request::Sync { database: database.clone(), yes, prefer_local }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Response::Synced(reports) = response else { return unexpected(response) };
    if ctx.json {
        output::json(&reports);
        return 0;
    }
    output::table(
        &["database", "captured", "published", "applied", "conflicts", "parked", "note"],
        reports
            .iter()
            .map(|r| {
                vec![
                    r.database.clone(),
                    r.captured.to_string(),
                    r.published.to_string(),
                    r.applied.to_string(),
                    r.conflicts.to_string(),
                    r.parked.to_string(),
                    or_dash(&r.message),
                ]
            })
            .collect(),
    );
    0
}

//! `syncctl enable|disable [DB]`: automatic sync on or off (kept across
//! restarts).

use super::{Context, done, send};
use syncd_proto::Request;

pub fn run(ctx: &Context, database: Option<String>, on: bool) -> u8 {
    let request = |_| {
        if on {
            Request::Enable { database: database.clone() }
        } else {
            Request::Disable { database: database.clone() }
        }
    };
    match send(ctx, false, request) {
        Ok(r) => done(ctx, r),
        Err(code) => code,
    }
}

//! `syncctl backup [DB]`: take a snapshot now.

use super::{Context, done, send};
use syncd_proto::Request;

pub fn run(ctx: &Context, database: Option<String>) -> u8 {
    match send(ctx, false, |_| Request::Backup { database: database.clone() }) {
        Ok(r) => done(ctx, r),
        Err(code) => code,
    }
}

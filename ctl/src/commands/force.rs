//! `syncctl pull --force` and `syncctl push --force`.

use super::{Context, done, send};
use syncd_proto::Request;

pub fn run(ctx: &Context, database: Option<String>, force: bool, yes: bool, push: bool) -> u8 {
    let request = |yes| {
        if push {
            Request::Push { database: database.clone(), force, yes }
        } else {
            Request::Pull { database: database.clone(), force, yes }
        }
    };
    match send(ctx, yes, request) {
        Ok(r) => done(ctx, r),
        Err(code) => code,
    }
}

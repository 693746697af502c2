//! `syncctl restore SNAPSHOT [--at TIME]`: replace the local database.

use super::{Context, done, send};
use syncd_proto::Request;

pub fn run(ctx: &Context, snapshot: String, at: Option<String>, yes: bool) -> u8 {
    match send(ctx, yes, |yes| Request::Restore { snapshot: snapshot.clone(), at: at.clone(), yes }) {
        Ok(r) => done(ctx, r),
        Err(code) => code,
    }
}

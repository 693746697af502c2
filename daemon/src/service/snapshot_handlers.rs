//! Answers to the snapshot requests: backup, list, restore, pull, push,
//! cleanup.

use crate::service::handlers::Handler;
use syncd_proto::{ErrorKind, Request, Response};

pub async fn handle(_handler: &Handler, request: Request) -> Response {
    Response::Error { kind: ErrorKind::BadRequest, message: format!("{request:?} is not supported by this daemon yet") }
}

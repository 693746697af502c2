//! Heartbeats: `<hub>/<database>/<peer-id>/peer.json`, rewritten by each peer
//! so the others know who is active and how far it has applied everyone's
//! batches (cleanup needs that).

use crate::hub::{Hub, HubError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FILE_NAME: &str = "peer.json";

/// The content of `peer.json`. Unknown fields are allowed, so that newer
/// versions can add some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub peer_id: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub time_ms: i64,
    pub database: String,
    /// The last batch this peer published.
    pub last_seq: u64,
    /// Per peer id, the last batch of that peer applied here.
    pub cursors: BTreeMap<String, u64>,
    /// Random per daemon start: two processes writing one peer folder show
    /// up as a changing instance with a foreign pid.
    #[serde(default)]
    pub instance: String,
    /// Not written: how far the writer's clock seemed off when read.
    #[serde(skip)]
    pub clock_skew_ms: Option<i64>,
}

pub fn path(database: &str, peer_id: &str) -> String {
    format!("{database}/{peer_id}/{FILE_NAME}")
}

pub fn write(hub: &dyn Hub, hb: &Heartbeat) -> Result<(), HubError> {
    let bytes = serde_json::to_vec_pretty(hb).expect("a heartbeat always serializes");
    hub.put_atomic(&path(&hb.database, &hb.peer_id), &bytes)
}

/// Reads one peer's heartbeat; `Ok(None)` when it has none yet or it does
/// not parse (a partly synced file: it will be whole next time).
pub fn read(hub: &dyn Hub, database: &str, peer_id: &str) -> Result<Option<Heartbeat>, HubError> {
    match hub.get(&path(database, peer_id)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(HubError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// RFC 3339 for a Unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses RFC 3339 to Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

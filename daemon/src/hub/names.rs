//! Names of files in the hub, and the names cloud clients invent.
//!
//! A change batch is exactly 20 ASCII digits + `.chg`; a snapshot is
//! `<db>_<peer name>_<YYYYMMDDTHHMMSSmmmZ>.snap` (sortable, no colons, valid on
//! Windows). Anything else is classified so it can be skipped and reported:
//! OneDrive, Dropbox, Syncthing and Nextcloud make copies such as
//! `x (1).chg`, `x-HOST.chg`, `x.sync-conflict-….chg` and
//! `x (host's conflicted copy ….chg` when they think two machines wrote one
//! file. syncd never writes one file from two machines, so such a copy is
//! never a batch.

/// What a file name in the hub is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameKind {
    Batch(u64),
    Snapshot {
        database: String,
        peer_name: String,
        created_ms: i64,
    },
    Heartbeat,
    /// A file being written (leading dot): ignored silently.
    Temporary,
    /// A copy made by a file-sync client, with what gave it away.
    CloudConflictCopy(String),
    Unknown,
}

pub fn batch_name(seq: u64) -> String {
    format!("{seq:020}.chg")
}

/// Replaces characters that Windows or macOS refuse in file names, and the
/// `_` that separates the parts of a snapshot name.
pub fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
    if s.is_empty() { "peer".into() } else { s }
}

pub fn snapshot_name(database: &str, peer_name: &str, created_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(created_ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{database}_{}_{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z.snap",
        sanitize(peer_name),
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn parse_snapshot(name: &str) -> Option<NameKind> {
    let stem = name.strip_suffix(".snap")?;
    let (rest, stamp) = stem.rsplit_once('_')?;
    let (database, peer_name) = rest.rsplit_once('_')?;
    let b = stamp.as_bytes();
    if b.len() != 19 || b[8] != b'T' || b[18] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r).and_then(|s| s.parse::<u32>().ok());
    let date = time::Date::from_calendar_date(
        num(0..4)? as i32,
        time::Month::try_from(num(4..6)? as u8).ok()?,
        num(6..8)? as u8,
    )
    .ok()?;
    let t = time::Time::from_hms_milli(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8, num(15..18)? as u16)
        .ok()?;
    let created_ms = (time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    Some(NameKind::Snapshot { database: database.to_string(), peer_name: peer_name.to_string(), created_ms })
}

/// Classifies one file name found in the hub.
pub fn classify(name: &str) -> NameKind {
    if name.starts_with('.') {
        return NameKind::Temporary;
    }
    if name == crate::heartbeat::FILE_NAME {
        return NameKind::Heartbeat;
    }
    if let Some(why) = cloud_copy(name) {
        return NameKind::CloudConflictCopy(why);
    }
    if let Some(digits) = name.strip_suffix(".chg") {
        if digits.len() == 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seq) = digits.parse()
        {
            return NameKind::Batch(seq);
        }
        return NameKind::CloudConflictCopy("a renamed copy of a batch".into());
    }
    if let Some(snap) = parse_snapshot(name) {
        return snap;
    }
    NameKind::Unknown
}

fn cloud_copy(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if lower.contains(".sync-conflict-") {
        return Some("Syncthing conflict copy".into());
    }
    if lower.contains("conflicted copy") {
        return Some("Dropbox conflicted copy".into());
    }
    if lower.contains("_conflict-") || lower.contains(" (conflict") {
        return Some("Nextcloud/ownCloud conflict copy".into());
    }
    if name.starts_with("~$") || lower.starts_with(".~lock") {
        return Some("an editor's lock file".into());
    }
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    if let Some(open) = stem.rfind(" (")
        && stem.ends_with(')')
        && stem[open + 2..stem.len() - 1].bytes().all(|b| b.is_ascii_digit())
    {
        return Some("a numbered duplicate such as `x (1)`".into());
    }
    // OneDrive appends `-<MACHINE NAME>` to a batch's 20 digits.
    if name.ends_with(".chg")
        && stem.len() > 21
        && stem.as_bytes()[20] == b'-'
        && stem[..20].bytes().all(|b| b.is_ascii_digit())
    {
        return Some("a OneDrive copy named after a machine".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cloud_clients_invent_are_never_batches() {
        let cases = [
            ("00000000000000000042.chg", Some(42)),
            ("00000000000000000042 (1).chg", None),
            ("00000000000000000042-DESKTOP-7Q2.chg", None),
            ("00000000000000000042.sync-conflict-20240101-120000-ABCDEFG.chg", None),
            ("00000000000000000042 (laptop's conflicted copy 2024-01-01).chg", None),
            ("00000000000000000042_conflict-20240101-120000.chg", None),
            ("42.chg", None),
            ("0000000000000000004a.chg", None),
        ];
        for (name, seq) in cases {
            match (classify(name), seq) {
                (NameKind::Batch(s), Some(e)) => assert_eq!(s, e),
                (NameKind::CloudConflictCopy(_), None) => {}
                (other, _) => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(classify(".00000000000000000001.chg.tmp"), NameKind::Temporary);
        assert_eq!(classify("peer.json"), NameKind::Heartbeat);
    }

    #[test]
    fn snapshot_names_round_trip() {
        let ms = 1_764_000_000_123;
        let name = snapshot_name("main", "my laptop", ms);
        assert_eq!(name, "main_my-laptop_20251124T160000123Z.snap");
        assert_eq!(
            classify(&name),
            NameKind::Snapshot { database: "main".into(), peer_name: "my-laptop".into(), created_ms: ms }
        );
        assert!(matches!(classify("main_a_20251124T160000123Z (1).snap"), NameKind::CloudConflictCopy(_)));
    }
}

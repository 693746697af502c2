//! Names of files in the hub, and the names file-sync clients invent.
//!
//! Its job: make the names syncd writes, and tell them apart from every
//! other name found in a peer's folder. A change batch is exactly 20 ASCII
//! digits + `.chg`; a snapshot is `<db>_<peer name>_<YYYYMMDDTHHMMSSmmmZ>.snap`
//! (sortable, no colons, valid on Windows and macOS); a heartbeat is
//! `peer.json`; a name with a leading dot is a file being written.
//!
//! OneDrive, Dropbox, Google Drive, iCloud, Syncthing, Nextcloud and
//! ownCloud make copies such as `x (1).chg`, `x-HOST.chg`,
//! `x.sync-conflict-….chg` and `x (host's conflicted copy ….chg` when they
//! believe two machines wrote one file. syncd never writes one file from two
//! machines, so such a copy is never data: it must never be classified as a
//! batch or a snapshot, only reported so that a person can delete it.

/// The heartbeat's file name (the same as `crate::heartbeat::FILE_NAME`).
const HEARTBEAT: &str = "peer.json";
/// The last instant whose year has four digits, 9999-12-31T23:59:59.999Z.
const MAX_NAMED_MS: i64 = 253_402_300_799_999;
/// Peer names are cut to this many bytes in file names, which stay far
/// below the 255-byte limit of common file systems.
const MAX_PEER_NAME: usize = 64;

/// What a file name found in the hub is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameKind {
    /// A change batch and its sequence number.
    Batch(u64),
    /// A snapshot, with the parts of its name (the peer name as sanitized
    /// by [`snapshot_name`]).
    Snapshot { database: String, peer_name: String, created_ms: i64 },
    /// A peer's heartbeat, `peer.json`.
    Heartbeat,
    /// A file being written (leading dot, or a sync client's temporary
    /// file): ignored silently.
    Temporary,
    /// A copy or lock file made by a file-sync client or an editor, with
    /// what gave it away: ignored and reported.
    CloudConflictCopy(String),
    /// Anything else: ignored and reported.
    Unknown,
}

/// The name of change batch `seq`: 20 digits, so names sort as numbers.
pub fn batch_name(seq: u64) -> String {
    format!("{seq:020}.chg")
}

/// What `name` is, for a caller that expects a change batch: `Batch(seq)`
/// only for exactly 20 ASCII digits + `.chg`. Same as [`classify`].
pub fn parse_batch_name(name: &str) -> NameKind {
    classify(name)
}

/// The name of a snapshot of `database` taken by `peer_name` at
/// `created_ms` (UTC Unix milliseconds), e.g.
/// `main_my-laptop_20251124T160000123Z.snap`.
///
/// The peer name is sanitized by [`sanitize_peer_name`]. A time outside
/// years 1970..=9999 is clamped to that range so that names keep sorting.
/// `database` is used as is: the configuration only accepts letters,
/// digits, `-`, `_` and `.` (it names a folder in the hub).
pub fn snapshot_name(database: &str, peer_name: &str, created_ms: i64) -> String {
    let ms = created_ms.clamp(0, MAX_NAMED_MS);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a clamped time is within the years 1970..=9999");
    format!(
        "{database}_{}_{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z.snap",
        sanitize_peer_name(peer_name),
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// What `name` is, for a caller that expects a snapshot: `Snapshot {..}`
/// only for a name [`snapshot_name`] can make. Same as [`classify`].
pub fn parse_snapshot_name(name: &str) -> NameKind {
    classify(name)
}

/// A peer name made safe for a file name on Windows, macOS and S3, and
/// unambiguous inside a snapshot name: ASCII letters, digits, `-` and `.`
/// are kept; anything else (`< > : " / \ | ? *`, control characters, `_`
/// which separates the parts of a snapshot name, spaces and parentheses
/// which sync clients use in their copies, and non-ASCII characters, which
/// macOS may store in another Unicode normalization form) becomes `-`.
/// Runs of `-` collapse; the result is never empty.
pub fn sanitize_peer_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_PEER_NAME));
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if out.len() == MAX_PEER_NAME {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() { "peer".into() } else { out.into() }
}

/// Classifies one file name found in a peer's folder in the hub.
pub fn classify(name: &str) -> NameKind {
    if let Some(why) = lock_file(name) {
        return NameKind::CloudConflictCopy(why.into());
    }
    // Our own temporary names start with a dot, as do those of Syncthing
    // (`.syncthing.x.tmp`) and Nextcloud (`.x.~123`); Syncthing on Windows
    // uses `~syncthing~x.tmp`.
    if name.starts_with('.') || name.starts_with("~syncthing~") {
        return NameKind::Temporary;
    }
    if let Some(kind) = exact(name) {
        return kind;
    }
    if let Some(why) = cloud_copy(name) {
        return NameKind::CloudConflictCopy(why);
    }
    NameKind::Unknown
}

/// A name exactly as syncd writes it, and nothing else.
fn exact(name: &str) -> Option<NameKind> {
    if name == HEARTBEAT {
        return Some(NameKind::Heartbeat);
    }
    if let Some(seq) = exact_batch(name) {
        return Some(NameKind::Batch(seq));
    }
    exact_snapshot(name)
}

fn exact_batch(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".chg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // 20 digits can exceed u64::MAX; such a name is not one we wrote.
    digits.parse().ok()
}

fn exact_snapshot(name: &str) -> Option<NameKind> {
    let stem = name.strip_suffix(".snap")?;
    // The peer name never holds `_`; the database name may, so the peer
    // name and the time are split off from the right.
    let (rest, stamp) = stem.rsplit_once('_')?;
    let (database, peer_name) = rest.rsplit_once('_')?;
    if database.is_empty() || peer_name.is_empty() {
        return None;
    }
    let created_ms = parse_stamp(stamp)?;
    Some(NameKind::Snapshot { database: database.to_string(), peer_name: peer_name.to_string(), created_ms })
}

/// `YYYYMMDDTHHMMSSmmmZ` → UTC Unix milliseconds.
fn parse_stamp(stamp: &str) -> Option<i64> {
    let b = stamp.as_bytes();
    let digits_at = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 19 || b[8] != b'T' || b[18] != b'Z' || !digits_at(0..8) || !digits_at(9..18) {
        return None;
    }
    // All ASCII digits, so the slices are on character boundaries and
    // parse without a sign.
    let num = |r: std::ops::Range<usize>| stamp[r].parse::<u16>().ok();
    let date = time::Date::from_calendar_date(
        i32::from(num(0..4)?),
        time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let time = time::Time::from_hms_milli(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
        num(15..18)?,
    )
    .ok()?;
    let nanos = time::PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).ok()
}

/// Lock files editors leave next to a file they opened.
fn lock_file(name: &str) -> Option<&'static str> {
    if name.starts_with("~$") {
        Some("a Microsoft Office lock file (`~$…`)")
    } else if name.starts_with(".~lock.") {
        Some("a LibreOffice lock file (`.~lock.…`)")
    } else {
        None
    }
}

/// Why `name`, which is not exactly a name syncd writes, looks like a copy
/// of one made by a file-sync client.
fn cloud_copy(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let (stem, ext) = match lower.rsplit_once('.') {
        Some((stem, ext)) => (stem, ext),
        None => (lower.as_str(), ""),
    };
    let known_ext = matches!(ext, "chg" | "snap" | "json");
    let why = if lower.contains(".sync-conflict-") {
        "a Syncthing conflict copy (`.sync-conflict-…`)"
    } else if lower.contains("conflicted copy") {
        "a Dropbox or Nextcloud conflicted copy (`(… conflicted copy …)`)"
    } else if lower.contains("_conflict-") {
        "an ownCloud or Nextcloud conflict copy (`_conflict-…`)"
    } else if lower.contains("conflict") {
        "a conflict copy made by a file-sync client"
    } else if is_numbered_duplicate(stem) {
        "a numbered duplicate (`x (1)`) made by a file-sync client"
    } else if known_ext && copy_of_ours(name, ' ').is_some_and(is_digits) {
        "a numbered duplicate (`x 2`) made by iCloud"
    } else if known_ext && copy_of_ours(name, '-').is_some() {
        "a copy named after a machine (`x-HOST`) made by OneDrive"
    } else if ext == "chg" && stem.get(..20).is_some_and(|d| is_digits(d) && d.parse::<u64>().is_ok()) {
        "a renamed copy of a change batch"
    } else if ext == "snap" && copy_of_ours(name, '.').is_some() {
        "a renamed copy of a snapshot"
    } else {
        return None;
    };
    Some(why.into())
}

/// `x (12)`: the suffix Google Drive, Dropbox, OneDrive and the desktops'
/// own file managers add to a duplicate.
fn is_numbered_duplicate(stem: &str) -> bool {
    stem.strip_suffix(')').and_then(|s| s.rsplit_once(" (")).is_some_and(|(_, n)| is_digits(n))
}

/// For `<ours><sep><suffix>.<ext>` where `<ours>.<ext>` is a name syncd
/// writes, returns the suffix. Tries every `sep` from the left, since peer
/// names in snapshot names may hold `-`.
fn copy_of_ours(name: &str, sep: char) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    stem.match_indices(sep).find_map(|(i, _)| {
        let suffix = &stem[i + sep.len_utf8()..];
        let original = format!("{}.{ext}", &stem[..i]);
        (!suffix.is_empty() && exact(&original).is_some()).then_some(suffix)
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "00000000000000000042";
    const SNAP: &str = "main_my-laptop_20251124T160000123Z";

    fn copy(why: &str) -> Option<&str> {
        Some(why)
    }

    #[test]
    fn every_name_in_the_table_is_classified_as_expected() {
        // `None` in the second column: a batch or snapshot; otherwise a
        // word the reason of a CloudConflictCopy must contain, or "unknown"
        // or "temporary".
        let cases: &[(String, Option<&str>)] = &[
            (format!("{B}.chg"), None),
            ("00000000000000000000.chg".into(), None),
            ("18446744073709551615.chg".into(), None),
            (format!("{SNAP}.snap"), None),
            (format!("{B} (1).chg"), copy("numbered")),
            (format!("{B} (23).chg"), copy("numbered")),
            (format!("{B} 2.chg"), copy("iCloud")),
            (format!("{B}-DESKTOP-7Q2LK.chg"), copy("OneDrive")),
            (format!("{B}-LAPTOP.chg"), copy("OneDrive")),
            (format!("{B}.sync-conflict-20240101-120000-ABCDEFG.chg"), copy("Syncthing")),
            (format!("{B} (laptop's conflicted copy 2024-01-01).chg"), copy("Dropbox")),
            (format!("{B} (conflicted copy 2024-01-01 120000).chg"), copy("Nextcloud")),
            (format!("{B} (Case Conflict).chg"), copy("conflict")),
            (format!("{B}_conflict-20240101-120000.chg"), copy("ownCloud")),
            (format!("{B}.chg.sync-conflict-20240101-120000-ABCDEFG"), copy("Syncthing")),
            (format!("{B}.CHG"), copy("renamed")),
            (format!("{B}0.chg"), copy("renamed")),
            (format!("{B}.chg.chg"), copy("renamed")),
            (format!("~${B}.chg"), copy("Office")),
            (format!(".~lock.{B}.chg#"), copy("LibreOffice")),
            (format!("{SNAP} (1).snap"), copy("numbered")),
            (format!("{SNAP}-DESKTOP-7Q2LK.snap"), copy("OneDrive")),
            (format!("{SNAP} 2.snap"), copy("iCloud")),
            (format!("{SNAP}.sync-conflict-20240101-120000-ABCDEFG.snap"), copy("Syncthing")),
            (format!("{SNAP} (host's conflicted copy 2024-01-01).snap"), copy("Dropbox")),
            (format!("{SNAP}_conflict-20240101-120000.snap"), copy("ownCloud")),
            (format!("{SNAP}.old.snap"), copy("renamed")),
            ("peer (1).json".into(), copy("numbered")),
            ("peer-LAPTOP.json".into(), copy("OneDrive")),
            ("peer.sync-conflict-20240101-120000-ABCDEFG.json".into(), copy("Syncthing")),
            ("42.chg".into(), Some("unknown")),
            ("0000000000000000004a.chg".into(), Some("unknown")),
            ("+0000000000000000042.chg".into(), Some("unknown")),
            ("99999999999999999999.chg".into(), Some("unknown")),
            ("０００００００００００００００００４２.chg".into(), Some("unknown")),
            ("main_a_20251124T160000123.snap".into(), Some("unknown")),
            ("main_a_20251324T160000123Z.snap".into(), Some("unknown")),
            ("main_a_2025112+T160000123Z.snap".into(), Some("unknown")),
            ("a_20251124T160000123Z.snap".into(), Some("unknown")),
            ("desktop.ini".into(), Some("unknown")),
            ("notes.txt".into(), Some("unknown")),
            ("".into(), Some("unknown")),
            (format!(".{B}.chg.0123456789abcdef.tmp"), Some("temporary")),
            (".syncthing.x.chg.tmp".into(), Some("temporary")),
            ("~syncthing~x.chg.tmp".into(), Some("temporary")),
            (".DS_Store".into(), Some("temporary")),
        ];
        for (name, want) in cases {
            let got = classify(name);
            match (want, &got) {
                (None, NameKind::Batch(_) | NameKind::Snapshot { .. }) => {}
                (Some("unknown"), NameKind::Unknown) => {}
                (Some("temporary"), NameKind::Temporary) => {}
                (Some(word), NameKind::CloudConflictCopy(why)) if why.contains(word) => {}
                _ => panic!("{name:?}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn only_exactly_twenty_digits_and_chg_is_a_batch() {
        assert_eq!(batch_name(42), format!("{B}.chg"));
        assert_eq!(parse_batch_name(&batch_name(42)), NameKind::Batch(42));
        assert_eq!(parse_batch_name(&batch_name(u64::MAX)), NameKind::Batch(u64::MAX));
        assert_eq!(parse_batch_name(&batch_name(0)), NameKind::Batch(0));
        assert!(batch_name(1) < batch_name(10), "names sort as numbers");
    }

    #[test]
    fn the_heartbeat_is_recognized_under_the_name_it_is_written() {
        assert_eq!(HEARTBEAT, crate::heartbeat::FILE_NAME);
        assert_eq!(classify(HEARTBEAT), NameKind::Heartbeat);
        assert_eq!(classify("Peer.json"), NameKind::Unknown);
    }

    #[test]
    fn snapshot_names_round_trip_and_sort_by_time() {
        let ms = 1_764_000_000_123;
        let name = snapshot_name("main", "my laptop", ms);
        assert_eq!(name, format!("{SNAP}.snap"));
        assert_eq!(
            parse_snapshot_name(&name),
            NameKind::Snapshot { database: "main".into(), peer_name: "my-laptop".into(), created_ms: ms }
        );
        // A database name may hold `_`; the peer name never does.
        assert_eq!(
            classify(&snapshot_name("app_data.v2", "x_y", 0)),
            NameKind::Snapshot { database: "app_data.v2".into(), peer_name: "x-y".into(), created_ms: 0 }
        );
        let earlier = snapshot_name("main", "a", 999);
        let later = snapshot_name("main", "a", 1_000);
        assert!(earlier < later);
        assert!(!name.contains(':'));
    }

    #[test]
    fn times_outside_four_digit_years_are_clamped() {
        assert_eq!(snapshot_name("d", "p", -5), "d_p_19700101T000000000Z.snap");
        assert_eq!(snapshot_name("d", "p", i64::MAX), "d_p_99991231T235959999Z.snap");
        assert!(matches!(
            classify(&snapshot_name("d", "p", i64::MAX)),
            NameKind::Snapshot { created_ms: MAX_NAMED_MS, .. }
        ));
    }

    #[test]
    fn peer_names_are_safe_on_every_file_system() {
        let cases = [
            ("laptop", "laptop"),
            ("My Laptop", "My-Laptop"),
            ("a<b>c:d\"e/f\\g|h?i*j", "a-b-c-d-e-f-g-h-i-j"),
            ("x_y", "x-y"),
            ("tab\there\nnewline\0nul", "tab-here-newline-nul"),
            ("Gérald's PC (2)", "G-rald-s-PC-2"),
            ("  --spaces--  ", "spaces"),
            ("", "peer"),
            ("___", "peer"),
            ("日本語", "peer"),
            ("host.local", "host.local"),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize_peer_name(raw), want, "{raw:?}");
        }
        assert_eq!(sanitize_peer_name(&"x".repeat(300)).len(), MAX_PEER_NAME);
        for raw in ["a (1)", "b's conflicted copy", "c-DESKTOP", "d.sync-conflict-1"] {
            let name = snapshot_name("main", raw, 1_764_000_000_123);
            assert!(matches!(classify(&name), NameKind::Snapshot { .. }), "{name}");
        }
    }
}

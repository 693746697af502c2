//! Retention: which snapshots and change batches of this peer may go.
//! DESIGN §5.
//!
//! Per peer, a snapshot is kept if it is among the newest `keep_last` or
//! younger than `keep_within`. A change batch may be removed only when a
//! kept snapshot covers it (the snapshot's own sequence number is at or past
//! it) and every peer seen within `forget_after` has applied it. The
//! decisions are pure functions of their inputs, so they are tested as a
//! table of cases; nothing here touches the hub.

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotFact {
    pub path: String,
    pub created_ms: i64,
    /// The last batch of this peer the snapshot includes.
    pub covers_seq: u64,
}

/// Another peer as retention sees it: when it was last seen, and how far it
/// has applied this peer's batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerFact {
    pub last_seen_ms: i64,
    pub applied_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub keep_last: usize,
    pub keep_within_ms: i64,
    pub forget_after_ms: i64,
}

/// The snapshots to keep (by path), from the snapshots of one peer.
pub fn kept_snapshots(snapshots: &[SnapshotFact], rules: &Rules, now_ms: i64) -> Vec<String> {
    let mut sorted: Vec<&SnapshotFact> = snapshots.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
    sorted
        .iter()
        .enumerate()
        .filter(|(i, s)| *i < rules.keep_last || now_ms - s.created_ms < rules.keep_within_ms)
        .map(|(_, s)| s.path.clone())
        .collect()
}

/// The highest sequence number of this peer's batches that may be removed
/// (0: none).
pub fn removable_batches_up_to(kept: &[&SnapshotFact], peers: &[PeerFact], rules: &Rules, now_ms: i64) -> u64 {
    let covered = kept.iter().map(|s| s.covers_seq).max().unwrap_or(0);
    let applied_by_all = peers
        .iter()
        .filter(|p| now_ms - p.last_seen_ms < rules.forget_after_ms)
        .map(|p| p.applied_seq)
        .min()
        .unwrap_or(u64::MAX);
    covered.min(applied_by_all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const RULES: Rules = Rules { keep_last: 2, keep_within_ms: 7 * DAY, forget_after_ms: 30 * DAY };

    fn snap(name: &str, age_days: i64, covers_seq: u64) -> SnapshotFact {
        SnapshotFact { path: name.into(), created_ms: 100 * DAY - age_days * DAY, covers_seq }
    }

    #[test]
    fn snapshots_are_kept_when_among_the_newest_or_young() {
        let now = 100 * DAY;
        let cases: &[(&[SnapshotFact], &[&str])] = &[
            (&[], &[]),
            (&[snap("a", 30, 1)], &["a"]),
            (&[snap("a", 30, 1), snap("b", 20, 2), snap("c", 10, 3)], &["c", "b"]),
            (&[snap("a", 1, 1), snap("b", 2, 2), snap("c", 3, 3)], &["a", "b", "c"]),
            (&[snap("a", 8, 1), snap("b", 9, 2), snap("c", 10, 3), snap("d", 6, 4)], &["d", "a"]),
        ];
        for (snaps, want) in cases {
            assert_eq!(kept_snapshots(snaps, &RULES, now), want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn batches_go_only_when_covered_and_applied_by_every_live_peer() {
        let now = 100 * DAY;
        let s10 = snap("s", 1, 10);
        let live = |applied| PeerFact { last_seen_ms: now - DAY, applied_seq: applied };
        let gone = |applied| PeerFact { last_seen_ms: now - 40 * DAY, applied_seq: applied };
        let cases: &[(&[&SnapshotFact], &[PeerFact], u64)] = &[
            (&[], &[live(50)], 0),             // no snapshot covers anything
            (&[&s10], &[], 10),                // alone: the snapshot bounds it
            (&[&s10], &[live(4)], 4),          // a live peer still needs 5..
            (&[&s10], &[live(50)], 10),        // the snapshot still bounds it
            (&[&s10], &[live(7), live(3)], 3), // the slowest live peer decides
            (&[&s10], &[gone(0), live(8)], 8), // a peer gone for 40 days no longer holds it back
        ];
        for (kept, peers, want) in cases {
            assert_eq!(removable_batches_up_to(kept, peers, &RULES, now), *want, "{kept:?} {peers:?}");
        }
    }
}

//! Property: any number of peers, any interleaving of writes and syncs →
//! identical rows on every peer once everything is delivered (DESIGN §7.1),
//! and every write is on every peer, superseded by a later write of the same
//! cell, or kept in a conflict log (§7.2).
//!
//! `SYNCD_FUZZ_CASES=N` runs more cases.
//!
//! In the first property rows are made by the peer that owns their id (id
//! mod peers), so that it is about edits, deletes and delivery order. Two
//! peers making the same integer id concurrently is the re-keying of DESIGN
//! §4: its own tests are in `keys.rs`, and `dense_key_collisions_converge`
//! below fuzzes it.

mod common;
use common::{Hub, Peer, settle};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// peer writes column `col` (0 = name, 1 = qty) of row `id`, inserting it if missing.
    Write {
        peer: usize,
        id: i64,
        col: usize,
    },
    Delete {
        peer: usize,
        id: i64,
    },
    Sync {
        peer: usize,
    },
    /// peer inserts rows `first..first + count` that it does not have, in
    /// one transaction: enough rows for apply to insert them in groups.
    Bulk {
        peer: usize,
        first: i64,
        count: i64,
    },
}

fn step(peers: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..peers, 1..6i64, 0..2usize).prop_map(|(peer, id, col)| Step::Write { peer, id, col }),
        1 => (0..peers, 1..6i64).prop_map(|(peer, id)| Step::Delete { peer, id }),
        3 => (0..peers).prop_map(|peer| Step::Sync { peer }),
    ]
}

/// `step`, and now and then many rows at once, over a key range the other
/// peers write too.
fn step_with_bulk(peers: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => step(peers),
        1 => (0..peers, 1..300i64, 40..200i64).prop_map(|(peer, first, count)| Step::Bulk { peer, first, count }),
    ]
}

/// One logged write: which cell, and the unique value written.
struct Written {
    order: usize,
    id: i64,
    col: usize,
    value: i64,
}

/// `pinned_ids`: a hex digit per peer that makes its id, which fixes the
/// order each peer merges the others in; `None`: random ids, as in use.
fn run(peer_count: usize, steps: Vec<Step>, owned_ids: bool, pinned_ids: Option<&str>) -> Result<(), TestCaseError> {
    let hub = Hub::new();
    let mut peers: Vec<Peer> = (0..peer_count).map(|i| Peer::new(&hub, &format!("p{i}"))).collect();
    for (p, digit) in peers.iter().zip(pinned_ids.unwrap_or_default().chars()) {
        p.pin_peer_id(digit);
    }
    let mut log: Vec<Written> = Vec::new();
    let mut deletes: Vec<(usize, i64)> = Vec::new();
    let mut next_value = 1000i64;
    // Values a peer's own write or delete replaced where it saw them.
    let mut overwritten = std::collections::HashSet::new();
    for (order, s) in steps.iter().enumerate() {
        match *s {
            Step::Write { peer, id, col } => {
                next_value += 1;
                let column = ["name", "qty"][col];
                let app = peers[peer].app();
                let exists: i64 =
                    app.query_row("SELECT count(*) FROM items WHERE id = ?1", [id], |r| r.get(0)).unwrap();
                if exists == 0 && owned_ids && id as usize % peer_count != peer {
                    continue;
                }
                if exists == 0 {
                    app.execute("INSERT INTO items(id, name, qty) VALUES (?1, ?2, ?2)", [id, next_value]).unwrap();
                    log.push(Written { order, id, col: 0, value: next_value });
                    log.push(Written { order, id, col: 1, value: next_value });
                } else {
                    // What this write replaces on this peer is superseded,
                    // whatever id its row has by now (rows move).
                    let old: String = app
                        .query_row(&format!("SELECT CAST({column} AS TEXT) FROM items WHERE id = ?1"), [id], |r| {
                            r.get(0)
                        })
                        .unwrap();
                    overwritten.extend(old.parse::<i64>());
                    app.execute(&format!("UPDATE items SET {column} = ?2 WHERE id = ?1"), [id, next_value]).unwrap();
                    log.push(Written { order, id, col, value: next_value });
                }
            }
            Step::Delete { peer, id } => {
                let app = peers[peer].app();
                let gone: Vec<String> = app
                    .prepare("SELECT CAST(name AS TEXT), CAST(qty AS TEXT) FROM items WHERE id = ?1")
                    .unwrap()
                    .query_map([id], |r| Ok([r.get::<_, String>(0)?, r.get::<_, String>(1)?]))
                    .unwrap()
                    .flat_map(|r| r.unwrap())
                    .collect();
                overwritten.extend(gone.iter().filter_map(|v| v.parse::<i64>().ok()));
                let n = app.execute("DELETE FROM items WHERE id = ?1", [id]).unwrap();
                if n > 0 {
                    deletes.push((order, id));
                }
            }
            Step::Sync { peer } => {
                peers[peer].sync();
            }
            Step::Bulk { peer, first, count } => {
                let mut app = peers[peer].app();
                let tx = app.transaction().unwrap();
                for id in first..first + count {
                    let exists: i64 =
                        tx.query_row("SELECT count(*) FROM items WHERE id = ?1", [id], |r| r.get(0)).unwrap();
                    if exists > 0 || (owned_ids && id as usize % peer_count != peer) {
                        continue;
                    }
                    next_value += 1;
                    tx.execute("INSERT INTO items(id, name, qty) VALUES (?1, ?2, ?2)", [id, next_value]).unwrap();
                    log.push(Written { order, id, col: 0, value: next_value });
                    log.push(Written { order, id, col: 1, value: next_value });
                }
                tx.commit().unwrap();
            }
        }
    }
    {
        let mut refs: Vec<&mut Peer> = peers.iter_mut().collect();
        settle(&mut refs, 4);
    }
    let first = peers[0].content();
    for p in &peers[1..] {
        prop_assert_eq!(&first, &p.content(), "peer {} differs from p0", p.name);
    }
    // Nothing waits for news that never comes.
    for p in peers.iter_mut() {
        prop_assert_eq!(p.engine().state().parked_count().unwrap(), 0, "{} has parked changes left", p.name);
    }
    let mut lost_values = String::new();
    for p in peers.iter_mut() {
        for c in p.conflicts() {
            lost_values.push_str(c.loser.as_deref().unwrap_or(""));
            lost_values.push(' ');
        }
    }
    let final_rows = peers[0].rows("SELECT id, name, qty FROM items");
    for w in &log {
        let cell = format!("{}", w.value);
        // Values are unique, so a write is found by value: a row made on two
        // peers with one id may have moved to a fresh id (DESIGN §4).
        let present = final_rows.iter().any(|r| {
            let parts: Vec<&str> = r.split('|').collect();
            parts[1 + w.col].contains(&cell)
        });
        let superseded = log.iter().any(|x| x.id == w.id && x.col == w.col && x.order > w.order)
            || deletes.iter().any(|&(o, id)| id == w.id && o > w.order)
            || overwritten.contains(&w.value);
        let kept = lost_values.contains(&cell);
        // A row deleted concurrently loses its values with the delete: the
        // conflict log holds the image (kept) or a later write brings it back.
        prop_assert!(present || superseded || kept, "write of {} to row {} col {} vanished", w.value, w.id, w.col);
    }
    Ok(())
}

/// A case `dense_key_collisions_converge` found on 2026-11-27: p0 got p2's
/// delete of p1's row 5 before the row itself (p2's id is below p1's, so
/// its folder is merged first), then moved a row of its own onto key 5 and
/// so forgot the delete. With random ids it ended apart in a third of the
/// runs; `keys.rs` tells the same story in a few lines
/// (`a_row_moved_to_a_fresh_key_does_not_take_the_place_of_a_delete_…`).
#[test]
fn dense_key_collisions_found_apart_2026_11_27() {
    use Step::*;
    let steps = vec![
        Write { peer: 0, id: 1, col: 1 },
        Write { peer: 0, id: 4, col: 1 },
        Write { peer: 1, id: 3, col: 1 },
        Sync { peer: 0 },
        Sync { peer: 0 },
        Write { peer: 0, id: 4, col: 1 },
        Sync { peer: 1 },
        Write { peer: 0, id: 1, col: 1 },
        Delete { peer: 1, id: 3 },
        Sync { peer: 2 },
        Write { peer: 0, id: 2, col: 1 },
        Write { peer: 0, id: 1, col: 1 },
        Write { peer: 1, id: 5, col: 1 },
        Sync { peer: 2 },
        Write { peer: 0, id: 4, col: 1 },
        Sync { peer: 1 },
        Write { peer: 2, id: 1, col: 1 },
        Sync { peer: 2 },
        Write { peer: 1, id: 3, col: 1 },
        Sync { peer: 2 },
        Sync { peer: 2 },
        Delete { peer: 2, id: 5 },
        Sync { peer: 1 },
        Write { peer: 1, id: 3, col: 1 },
        Write { peer: 0, id: 3, col: 0 },
        Sync { peer: 2 },
        Write { peer: 0, id: 3, col: 1 },
        Sync { peer: 1 },
        Sync { peer: 0 },
        Write { peer: 2, id: 3, col: 1 },
        Write { peer: 2, id: 1, col: 1 },
        Sync { peer: 2 },
        Sync { peer: 1 },
    ];
    run(3, steps, false, Some("321")).unwrap();
}

/// Another case `dense_key_collisions_converge` found on 2026-11-27 (in
/// 1,000 cases), apart whenever p2's id is below p0's (half the runs with
/// random ids). p2 deletes p1's row 5 and makes a new row 5 (SQLite hands
/// the key out again); p0 had edited row 5 meanwhile, so it keeps it
/// against p2's delete and publishes it whole; p1 deleted row 5 too, later
/// than all that. On p1, p2's new row takes key 5 over p1's tombstone of
/// the old one, the old row published whole waits for the key (parked),
/// p2's row moves off when p2 meets the old row, and the parked old row
/// then finds key 5 free with no trace of p1's own, newer delete: p1
/// brought row 5 back, p0 and p2 did not (the state keeps one row per key,
/// so the tombstone that another row replaced was gone). Now the delete is
/// kept by the deleted row's birth (`keys.rs` tells the same story:
/// `a_delete_made_here_holds_after_another_row_took_its_key_and_gave_it_back`).
#[test]
fn a_row_deleted_last_stays_deleted_when_another_row_held_its_key_meanwhile() {
    use Step::*;
    let steps = vec![
        Sync { peer: 0 },
        Delete { peer: 1, id: 4 },
        Write { peer: 0, id: 1, col: 0 },
        Write { peer: 1, id: 5, col: 1 },
        Sync { peer: 1 },
        Write { peer: 0, id: 1, col: 0 },
        Sync { peer: 0 },
        Write { peer: 1, id: 1, col: 0 },
        Write { peer: 1, id: 5, col: 1 },
        Write { peer: 1, id: 3, col: 0 },
        Sync { peer: 0 },
        Write { peer: 0, id: 4, col: 0 },
        Write { peer: 0, id: 2, col: 1 },
        Write { peer: 0, id: 3, col: 0 },
        Write { peer: 2, id: 4, col: 1 },
        Sync { peer: 0 },
        Write { peer: 1, id: 4, col: 1 },
        Write { peer: 0, id: 2, col: 1 },
        Write { peer: 1, id: 4, col: 0 },
        Sync { peer: 2 },
        Write { peer: 1, id: 5, col: 0 },
        Write { peer: 2, id: 3, col: 0 },
        Write { peer: 0, id: 4, col: 0 },
        Delete { peer: 2, id: 1 },
        Write { peer: 0, id: 2, col: 1 },
        Delete { peer: 1, id: 4 },
        Write { peer: 0, id: 5, col: 0 },
        Write { peer: 1, id: 4, col: 0 },
        Delete { peer: 2, id: 5 },
        Sync { peer: 2 },
        Delete { peer: 2, id: 3 },
        Delete { peer: 1, id: 5 },
        Sync { peer: 2 },
        Write { peer: 2, id: 5, col: 0 },
        Write { peer: 1, id: 3, col: 1 },
        Write { peer: 2, id: 3, col: 1 },
        Sync { peer: 2 },
        Write { peer: 2, id: 3, col: 0 },
    ];
    run(3, steps, false, Some("321")).unwrap();
}

/// A case `dense_key_collisions_converge` found in session 9 (500 cases),
/// apart with peer ids pinned to "012" or "021" and in 6 runs of 10 with
/// random ones. p2's row 2 met p0's older row 2 and moved to key 3; p0
/// deleted it there. p1 got p0's delete first, while it had no row at
/// key 3, then p2's insert at key 2 (free at p1 by then), then p2's move:
/// the move lost to the delete, but the copy at key 2 stayed, and p2's
/// next row 2 waited behind it for good. Now a delete that comes before
/// its row, made where the row had moved to, is kept by the row's birth
/// as well, and the row's insert is skipped wherever it arrives.
#[test]
fn a_row_deleted_where_it_had_moved_before_it_came_stays_deleted() {
    use Step::*;
    let steps = vec![
        Delete { peer: 1, id: 1 },
        Write { peer: 0, id: 2, col: 0 },
        Write { peer: 2, id: 2, col: 1 },
        Write { peer: 2, id: 1, col: 1 },
        Write { peer: 1, id: 4, col: 0 },
        Sync { peer: 1 },
        Sync { peer: 0 },
        Write { peer: 0, id: 3, col: 1 },
        Sync { peer: 2 },
        Write { peer: 1, id: 4, col: 1 },
        Delete { peer: 1, id: 3 },
        Sync { peer: 0 },
        Sync { peer: 2 },
        Write { peer: 0, id: 2, col: 0 },
        Delete { peer: 0, id: 3 },
        Delete { peer: 0, id: 2 },
        Sync { peer: 0 },
        Sync { peer: 2 },
        Write { peer: 0, id: 4, col: 1 },
        Sync { peer: 2 },
        Write { peer: 2, id: 1, col: 1 },
        Write { peer: 1, id: 2, col: 1 },
        Write { peer: 1, id: 4, col: 0 },
        Write { peer: 2, id: 2, col: 1 },
        Sync { peer: 2 },
        Sync { peer: 2 },
        Write { peer: 0, id: 2, col: 0 },
        Sync { peer: 0 },
        Write { peer: 1, id: 2, col: 1 },
        Sync { peer: 0 },
        Sync { peer: 1 },
        Write { peer: 2, id: 4, col: 1 },
        Write { peer: 2, id: 5, col: 1 },
        Write { peer: 1, id: 4, col: 0 },
        Sync { peer: 0 },
        Write { peer: 2, id: 4, col: 0 },
    ];
    run(3, steps, false, Some("012")).unwrap();
}

/// Found by `dense_key_collisions_converge_among_four_peers` (apart, or a
/// change left parked, in about one case in a hundred until this case and
/// the two below were fixed): p3's row 3 moved twice (to 4, then to 5); on
/// p1 and p2 its first move waited for key 4, which another row held, and
/// stayed parked after the second move had arrived. A whole row at a lesser key than where its row lives now
/// is from before (a row only ever moves to a greater key): it goes to
/// where the row is.
#[test]
fn an_earlier_move_of_a_row_that_moved_twice_is_not_left_waiting() {
    use Step::*;
    let steps = vec![
        Write { peer: 0, id: 1, col: 0 },
        Write { peer: 0, id: 1, col: 0 },
        Sync { peer: 0 },
        Sync { peer: 3 },
        Delete { peer: 3, id: 1 },
        Sync { peer: 2 },
        Write { peer: 2, id: 1, col: 0 },
        Sync { peer: 3 },
        Delete { peer: 0, id: 1 },
        Sync { peer: 1 },
        Write { peer: 1, id: 1, col: 0 },
        Write { peer: 0, id: 3, col: 0 },
        Write { peer: 3, id: 3, col: 0 },
    ];
    run(4, steps, false, Some("0213")).unwrap();
}

/// Found by `dense_key_collisions_converge_among_four_peers`: p1 deleted
/// p0's row 2, and p3 got the delete while its key 2 was free (a move had
/// left it): the tombstone had no birth, another row took the key and
/// moved on, and p0's row, arriving last, came back on p3 alone. Now such
/// a tombstone takes the deleted row's birth.
#[test]
fn a_delete_recorded_where_a_move_left_the_key_free_keeps_its_row_out() {
    use Step::*;
    let steps = vec![
        Write { peer: 1, id: 2, col: 0 },
        Write { peer: 0, id: 2, col: 0 },
        Sync { peer: 0 },
        Sync { peer: 1 },
        Delete { peer: 1, id: 2 },
        Write { peer: 2, id: 2, col: 0 },
    ];
    run(4, steps, false, Some("3012")).unwrap();
}

/// Found by `dense_key_collisions_converge_among_four_peers`: p2 deleted
/// p1's row 4 and made another row 4; p1's concurrent edit won, so p1 sent
/// its row again, and p2's row moved to key 5. p3 deleted p2's row at key
/// 4 before the move reached it. On p0 the delete, finding key 4 free (the
/// move had left it), did not follow the row to key 5; on p3 the move,
/// arriving after p3's own delete, brought the row back at key 5. Now an
/// edit or delete follows its row from a key that does not hold it, a
/// delete made away from its row's first key is kept by birth, and a
/// moved row is judged against its tombstone where it was.
#[test]
fn a_row_deleted_before_its_move_arrived_stays_deleted_on_every_peer() {
    use Step::*;
    let steps = vec![
        Write { peer: 1, id: 4, col: 0 },
        Sync { peer: 1 },
        Sync { peer: 2 },
        Delete { peer: 2, id: 4 },
        Sync { peer: 2 },
        Write { peer: 2, id: 4, col: 0 },
        Write { peer: 1, id: 4, col: 0 },
        Sync { peer: 2 },
        Sync { peer: 3 },
        Delete { peer: 3, id: 4 },
    ];
    run(4, steps, false, Some("1302")).unwrap();
}

/// Found by `dense_key_collisions_converge_among_four_peers` under CPU
/// load: p2 and p3 deleted p0's row 2 while p1 edited it. p0 applied p2's
/// delete and made another row 2, so it skipped p3's later delete as about
/// a row gone for good; but p1's edit beat p2's delete, and p1's row sent
/// whole came back on p0 alone (p3's delete beats it everywhere else). Now
/// such a delete is kept by the row's birth, the later of the two.
#[test]
fn a_later_delete_of_a_row_whose_maker_made_its_key_again_still_decides() {
    use Step::*;
    let steps = vec![
        Write { peer: 0, id: 2, col: 0 },
        Sync { peer: 0 },
        Sync { peer: 3 },
        Sync { peer: 2 },
        Delete { peer: 3, id: 2 },
        Delete { peer: 2, id: 2 },
        Sync { peer: 1 },
        Sync { peer: 2 },
        Write { peer: 1, id: 2, col: 0 },
        Sync { peer: 0 },
        Write { peer: 0, id: 1, col: 0 },
        Write { peer: 0, id: 2, col: 0 },
    ];
    run(4, steps, false, Some("0312")).unwrap();
}

/// Found by `dense_key_collisions_converge_among_four_peers` (1 case in
/// 1,000): p2 deletes p0's row 3 while p1 edits it; p3 makes another row
/// 3, which p0 edits; p0 makes a row 4. p1's edit wins, p1 sends p0's row
/// whole, and p3's row moves to 4. On p0 the move met p0's own row 4,
/// which moved away, and the moved row went in with p3's values: the copy
/// at key 3 holding p0's captured edit was dropped, so p0 lost its own
/// edit while every other peer applied it. Now such a move is merged with
/// the row's copy at its old key, as when the new key is free.
#[test]
fn an_edit_made_here_survives_its_row_moving_onto_a_row_made_here() {
    use Step::*;
    let steps = vec![
        Write { peer: 0, id: 3, col: 0 },
        Sync { peer: 0 },
        Sync { peer: 1 },
        Sync { peer: 2 },
        Delete { peer: 2, id: 3 },
        Sync { peer: 2 },
        Sync { peer: 3 },
        Write { peer: 3, id: 3, col: 0 },
        Sync { peer: 3 },
        Write { peer: 1, id: 3, col: 0 },
        Sync { peer: 0 },
        Sync { peer: 1 },
        Write { peer: 0, id: 3, col: 0 },
        Sync { peer: 3 },
        Write { peer: 0, id: 4, col: 0 },
    ];
    run(4, steps, false, Some("0123")).unwrap();
}

/// Found by `dense_key_collisions_converge_among_four_peers` (1 case in
/// 400): p0's row moved from key 5 to 6 while p2 edited it; p3 applied the
/// edit at key 5, then got the move at key 6, which a move had left free.
/// The move went in with p0's values and dropped the copy holding p2's
/// edit. A key left free by a move holds no row: the move is merged with
/// the row's copy where it was, as for a key never used.
#[test]
fn a_row_moved_to_a_key_another_move_left_free_keeps_the_edits_on_its_copy() {
    use Step::*;
    let steps = vec![
        Write { peer: 3, id: 5, col: 0 },
        Sync { peer: 3 },
        Sync { peer: 0 },
        Sync { peer: 1 },
        Delete { peer: 0, id: 5 },
        Write { peer: 2, id: 3, col: 0 },
        Write { peer: 0, id: 3, col: 0 },
        Sync { peer: 0 },
        Write { peer: 1, id: 5, col: 0 },
        Write { peer: 0, id: 5, col: 0 },
        Sync { peer: 0 },
        Sync { peer: 2 },
        Sync { peer: 1 },
        Sync { peer: 3 },
        Write { peer: 2, id: 5, col: 0 },
    ];
    run(4, steps, false, Some("0123")).unwrap();
}

fn cases() -> u32 {
    std::env::var("SYNCD_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn three_peers_converge_under_any_interleaving(steps in proptest::collection::vec(step(3), 1..40)) {
        run(3, steps, true, None)?;
    }

    /// Every peer may make any id, so nearly every insert collides with
    /// another peer's and rows move, often twice, while the same ids are
    /// edited, deleted and made again.
    #[test]
    fn dense_key_collisions_converge(steps in proptest::collection::vec(step(3), 1..40)) {
        run(3, steps, false, None)?;
    }

    /// As above among four peers, over more steps: rows move three or
    /// four times, and deletes and moves reach each peer in more orders.
    /// The peer ids are a drawn order of four digits (the order each peer
    /// merges the others in), so a failing case replays and shrinks.
    #[test]
    fn dense_key_collisions_converge_among_four_peers(
        ids in Just(vec!['0', '1', '2', '3']).prop_shuffle().prop_map(String::from_iter),
        steps in proptest::collection::vec(step(4), 1..60),
    ) {
        run(4, steps, false, Some(&ids))?;
    }

    /// As above, with hundreds of rows made at once over keys the other
    /// peers make too: rows new to a peer go in by the group
    /// (`apply/fresh.rs`) beside rows that collide and move.
    #[test]
    fn bulk_inserts_among_key_collisions_converge(steps in proptest::collection::vec(step_with_bulk(3), 1..30)) {
        run(3, steps, false, None)?;
    }
}

/// Positions kept in a `UNIQUE NOT NULL` column, as a list's order: each
/// step swaps two rows' positions on one peer (through a value no row
/// holds, as applications do) or syncs one peer.
#[derive(Debug, Clone)]
enum Reorder {
    Swap { peer: usize, a: i64, b: i64 },
    Sync { peer: usize },
}

/// Swaps made on `swappers` of the peers, syncs on any of them.
fn reorder(peers: usize, swappers: usize) -> impl Strategy<Value = Reorder> {
    prop_oneof![
        2 => (0..swappers, 1..5i64, 1..5i64).prop_filter("two rows", |(_, a, b)| a != b)
            .prop_map(|(peer, a, b)| Reorder::Swap { peer, a, b }),
        1 => (0..peers).prop_map(|peer| Reorder::Sync { peer }),
    ]
}

fn run_reorders(steps: Vec<Reorder>) -> Result<(), TestCaseError> {
    let hub = Hub::new();
    let schema = "PRAGMA journal_mode=WAL;
        CREATE TABLE list(id INTEGER PRIMARY KEY, pos INTEGER NOT NULL UNIQUE);";
    let mut peers: Vec<Peer> = (0..3).map(|i| Peer::with(&hub, &format!("p{i}"), schema, "")).collect();
    peers[0].exec("INSERT INTO list VALUES (1, 1), (2, 2), (3, 3), (4, 4);");
    let all = |peers: &mut Vec<Peer>| {
        let mut refs: Vec<&mut Peer> = peers.iter_mut().collect();
        settle(&mut refs, 4);
    };
    all(&mut peers);
    for s in steps {
        match s {
            Reorder::Swap { peer, a, b } => {
                let mut app = peers[peer].app();
                let pos = |app: &rusqlite::Connection, id: i64| -> Option<i64> {
                    app.query_row("SELECT pos FROM list WHERE id = ?1", [id], |r| r.get(0)).ok()
                };
                let (Some(pa), Some(pb)) = (pos(&app, a), pos(&app, b)) else { continue };
                let tx = app.transaction().unwrap();
                tx.execute("UPDATE list SET pos = -1 WHERE id = ?1", [a]).unwrap();
                tx.execute("UPDATE list SET pos = ?2 WHERE id = ?1", [b, pa]).unwrap();
                tx.execute("UPDATE list SET pos = ?2 WHERE id = ?1", [a, pb]).unwrap();
                tx.commit().unwrap();
            }
            Reorder::Sync { peer } => {
                peers[peer].sync();
            }
        }
    }
    all(&mut peers);
    let first = peers[0].rows("SELECT id, pos FROM list ORDER BY id");
    for p in &peers[1..] {
        prop_assert_eq!(&first, &p.rows("SELECT id, pos FROM list ORDER BY id"), "{} differs from p0", p.name);
    }
    // No stand-in value is left behind, and a row that lost a clash is in
    // a conflict log.
    let lost: String = peers.iter_mut().flat_map(|p| p.conflicts()).filter_map(|c| c.loser).collect();
    for id in 1..5i64 {
        let row = first.iter().find(|r| r.starts_with(&format!("Integer({id})|")));
        match row {
            Some(r) => prop_assert!((1..5).any(|n| r.ends_with(&format!("|Integer({n})"))), "row {id} holds {r}"),
            None => prop_assert!(lost.contains(&format!("\"id\":{id}")), "row {id} vanished: {lost}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    /// One peer reorders a list while the others sync at any moment: every
    /// swap reaches them whole (one row's position set aside meanwhile).
    #[test]
    fn unique_positions_swapped_on_one_peer_converge(steps in proptest::collection::vec(reorder(3, 1), 1..25)) {
        run_reorders(steps)?;
    }

    /// Swaps on several peers at once clash on positions: the rows that
    /// lose a position go on every peer, into a conflict log. Passes most
    /// cases (400 in a row on 2026-11-27) but long interleavings can still
    /// end with the peers apart: kept as the reproducer (README, "Keys made
    /// on two machines").
    #[test]
    #[ignore]
    fn unique_positions_swapped_anywhere_converge(steps in proptest::collection::vec(reorder(3, 3), 1..25)) {
        run_reorders(steps)?;
    }
}

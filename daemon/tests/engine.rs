//! The sync engine end to end in one process: real SQLite files, a real
//! folder hub, several peers (DESIGN §4 and §7).

mod common;
use common::{Hub, Peer, settle};

#[test]
fn two_peers_with_disjoint_inserts_converge() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'a1', 1), (2, 'a2', 2);");
    b.exec("INSERT INTO items(id, name, qty) VALUES (101, 'b1', 1); INSERT INTO tags VALUES (101, 'red');");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(a.one("SELECT count(*) FROM items"), "Integer(3)");
    assert_eq!(a.one("SELECT tag FROM tags WHERE item_id = 101"), "Text(\"red\")");
}

#[test]
fn updates_and_deletes_propagate() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3);");
    settle(&mut [&mut a, &mut b], 1);
    a.exec("UPDATE items SET qty = 10 WHERE id = 1; DELETE FROM items WHERE id = 2;");
    b.exec("UPDATE items SET name = 'THREE' WHERE id = 3;");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(b.one("SELECT qty FROM items WHERE id = 1"), "Integer(10)");
    assert_eq!(b.one("SELECT count(*) FROM items WHERE id = 2"), "Integer(0)");
    assert_eq!(a.one("SELECT name FROM items WHERE id = 3"), "Text(\"THREE\")");
}

#[test]
fn concurrent_edits_of_different_columns_both_survive() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name, qty) VALUES (9, 'task', 0);");
    settle(&mut [&mut a, &mut b], 1);
    a.exec("UPDATE items SET qty = 1 WHERE id = 9;");
    b.exec("UPDATE items SET name = 'fixed title' WHERE id = 9;");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(a.one("SELECT name || ':' || qty FROM items WHERE id = 9"), "Text(\"fixed title:1\")");
    assert!(a.conflicts().is_empty() && b.conflicts().is_empty());
}

/// Both peers edit one column concurrently; returns (winner value, peers).
fn same_column_conflict(policy: &str, a_edit: &str, b_edit: &str) -> (String, Peer, Peer) {
    let hub = Hub::new();
    let extra = format!("conflict = \"{policy}\"");
    let (mut a, mut b) = (Peer::with(&hub, "a", common::SCHEMA, &extra), Peer::with(&hub, "b", common::SCHEMA, &extra));
    a.exec("INSERT INTO items(id, name, qty, updated_at) VALUES (7, 'orig', 0, '2024-01-01');");
    settle(&mut [&mut a, &mut b], 1);
    a.exec(a_edit);
    b.exec(b_edit);
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content(), "{policy}: peers differ");
    let winner = a.one("SELECT name FROM items WHERE id = 7");
    // Keep the hub alive with the peers.
    std::mem::forget(hub);
    (winner, a, b)
}

#[test]
fn concurrent_update_converges_to_the_same_winner_under_lww_with_the_loser_kept() {
    let (winner, mut a, mut b) = same_column_conflict(
        "lww",
        "UPDATE items SET name = 'from-a' WHERE id = 7;",
        "UPDATE items SET name = 'from-b' WHERE id = 7;",
    );
    // b captured second, so its version is newer.
    assert_eq!(winner, "Text(\"from-b\")");
    for p in [&mut a, &mut b] {
        let c = p.conflicts();
        assert_eq!(c.len(), 1, "{}: {c:?}", p.name);
        assert!(c[0].loser.as_deref().unwrap().contains("from-a"), "{:?}", c[0]);
        assert_eq!(c[0].column.as_deref(), Some("name"));
    }
}

#[test]
fn concurrent_update_converges_under_peer_priority() {
    let (winner, mut a, _b) = same_column_conflict(
        "peer-priority:a,b",
        "UPDATE items SET name = 'from-a' WHERE id = 7;",
        "UPDATE items SET name = 'from-b' WHERE id = 7;",
    );
    assert_eq!(winner, "Text(\"from-a\")", "a is first in the priority list");
    assert!(a.conflicts()[0].loser.as_deref().unwrap().contains("from-b"));
}

#[test]
fn concurrent_update_converges_under_lww_column() {
    // a edits later in wall time but with an older timestamp column value.
    let (winner, mut a, mut b) = same_column_conflict(
        "lww-column:updated_at",
        "UPDATE items SET name = 'from-a', qty = 5, updated_at = '2024-03-01' WHERE id = 7;",
        "UPDATE items SET name = 'from-b', updated_at = '2024-02-01' WHERE id = 7;",
    );
    assert_eq!(winner, "Text(\"from-a\")", "the newer updated_at wins the whole row");
    assert_eq!(b.one("SELECT qty FROM items WHERE id = 7"), "Integer(5)");
    let lost = b.conflicts();
    assert!(lost.iter().any(|c| c.loser.as_deref().is_some_and(|l| l.contains("from-b"))), "{lost:?}");
    assert!(!a.conflicts().is_empty());
}

#[test]
fn delete_against_a_concurrent_update_converges_and_keeps_the_loser() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'x', 1), (2, 'y', 2);");
    settle(&mut [&mut a, &mut b], 1);
    // Row 1: b's edit is captured first, a's delete later: the delete is newer.
    b.exec("UPDATE items SET qty = 11 WHERE id = 1;");
    b.sync();
    a.exec("DELETE FROM items WHERE id = 1; DELETE FROM items WHERE id = 2;");
    a.sync();
    // Row 2: b edits after a's delete was captured: the edit is newer, and b
    // has not seen the delete, so the two are concurrent.
    b.exec("UPDATE items SET qty = 22 WHERE id = 2;");
    b.sync();
    settle(&mut [&mut a, &mut b], 3);
    assert_eq!(a.content(), b.content());
    assert_eq!(a.rows("SELECT id, qty FROM items ORDER BY id"), vec!["Integer(2)|Integer(22)"]);
    let on_a = a.conflicts();
    let on_b = b.conflicts();
    assert!(
        on_a.iter().any(|c| c.loser.as_deref().is_some_and(|l| l.contains("11"))),
        "a keeps b's losing edit: {on_a:?}"
    );
    assert!(
        on_b.iter().any(|c| c.loser.as_deref().is_some_and(|l| l.contains("11"))),
        "b keeps its losing row: {on_b:?}"
    );
    assert!(
        on_b.iter().any(|c| c.loser.is_none() && c.reason.contains("deleted")),
        "the losing delete of row 2 is logged: {on_b:?}"
    );
}

#[test]
fn a_table_without_a_primary_key_syncs_as_a_set_of_rows() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO tags VALUES (1, 'red'), (1, 'blue'), (2, 'red');");
    settle(&mut [&mut a, &mut b], 1);
    assert_eq!(b.rows("SELECT * FROM tags ORDER BY 1, 2").len(), 3);
    b.exec("DELETE FROM tags WHERE tag = 'blue'; INSERT INTO tags VALUES (3, 'green');");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(a.rows("SELECT item_id, tag FROM tags ORDER BY 1, 2").len(), 3);
}

/// A remote insert at a key that a row made here since the last capture
/// holds waits for that capture and never overwrites the row, whether the
/// INSERT itself finds the row or a conflict clause would let it replace it.
#[test]
fn an_insert_at_a_key_taken_here_since_the_last_capture_waits() {
    for key in ["k TEXT PRIMARY KEY", "k TEXT PRIMARY KEY ON CONFLICT REPLACE"] {
        let hub = Hub::new();
        let schema = format!(
            "PRAGMA journal_mode=WAL; CREATE TABLE a_first(k TEXT PRIMARY KEY, v TEXT); CREATE TABLE b_second({key}, v TEXT);"
        );
        let (mut a, mut b) = (Peer::with(&hub, "a", &schema, ""), Peer::with(&hub, "b", &schema, ""));
        // The application adds the row while b applies a's batch, after
        // b's capture: a_first comes first in the batch.
        b.exec("CREATE TRIGGER app AFTER INSERT ON a_first BEGIN INSERT INTO b_second VALUES ('x', 'made on b'); END;");
        a.exec("INSERT INTO a_first VALUES ('go', '1'); INSERT INTO b_second VALUES ('x', 'made on a');");
        a.sync();
        let report = b.sync();
        assert_eq!((report.applied.applied, report.applied.parked), (1, 1), "{key}");
        assert_eq!(b.one("SELECT v FROM b_second WHERE k = 'x'"), "Text(\"made on b\")", "{key}");
        let parked = b.engine().state().parked().unwrap();
        assert!(parked[0].reason.contains("added here since the last capture"), "{key}: {parked:?}");
    }
}

/// The application's triggers fire when syncd writes, through syncd's own
/// connection, which capture does not watch: the rows they write go out in
/// the same cycle all the same, not after the application's next commit.
#[test]
fn rows_that_triggers_write_while_a_batch_applies_are_published_in_the_same_cycle() {
    let hub = Hub::new();
    let schema = |peer: &str| {
        format!(
            "PRAGMA journal_mode=WAL; CREATE TABLE list(id INTEGER PRIMARY KEY, v TEXT); \
             CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT); \
             CREATE TRIGGER logged AFTER INSERT ON List BEGIN INSERT INTO \"LOG\"(what) VALUES ('{peer} saw ' || new.v); END;"
        )
    };
    let (mut a, mut b) = (Peer::with(&hub, "a", &schema("a"), ""), Peer::with(&hub, "b", &schema("b"), ""));
    a.exec("INSERT INTO list VALUES (1, 'x');");
    a.sync();
    let report = b.sync();
    assert_eq!((report.captured, report.published), (1, 1), "b's log row goes out in the cycle that applied a's row");
    settle(&mut [&mut a, &mut b], 3);
    let all = "SELECT what FROM log ORDER BY what";
    assert_eq!(a.rows(all), ["Text(\"a saw x\")", "Text(\"b saw x\")"]);
    assert_eq!(a.rows("SELECT id, what FROM log ORDER BY id"), b.rows("SELECT id, what FROM log ORDER BY id"));
}

/// Rows new to a peer go into its database many to a statement (see
/// `apply/fresh.rs`). When one row of such a group is refused, here by a
/// row the application made with its key while the batch was applied, that
/// row waits as any other would, and the rest of the group still applies.
#[test]
fn a_group_of_new_rows_applies_around_one_whose_key_was_taken_meanwhile() {
    let hub = Hub::new();
    let schema = "PRAGMA journal_mode=WAL; CREATE TABLE a_first(k TEXT PRIMARY KEY); \
        CREATE TABLE list(id INTEGER PRIMARY KEY, v TEXT);";
    let (mut a, mut b) = (Peer::with(&hub, "a", schema, ""), Peer::with(&hub, "b", schema, ""));
    b.exec("CREATE TRIGGER app AFTER INSERT ON a_first BEGIN INSERT INTO list VALUES (100, 'made on b'); END;");
    a.exec(
        "INSERT INTO a_first VALUES ('go');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
         INSERT INTO list SELECT i, 'row ' || i FROM n;",
    );
    a.sync();
    let report = b.sync();
    assert_eq!((report.applied.applied, report.applied.parked), (300, 1));
    assert_eq!(b.one("SELECT v FROM list WHERE id = 100"), "Text(\"made on b\")");
    assert_eq!(b.one("SELECT count(*) FROM list WHERE v = 'row ' || id"), "Integer(299)");
    // Once captured, b's row and a's row 100 are two rows: both stay.
    settle(&mut [&mut a, &mut b], 4);
    let all = "SELECT id, v FROM list ORDER BY id";
    assert_eq!(a.rows(all), b.rows(all));
    assert_eq!(a.one("SELECT count(*) FROM list"), "Integer(301)");
    assert_eq!(a.one("SELECT count(*) FROM list WHERE v = 'made on b'"), "Integer(1)");
}

/// A parked change has no hub file to be recovered from. Here c's row
/// arrives on b before the row it refers to (b merges c's folder first)
/// and waits; when a's row arrives, the retry inserts it, and the state
/// fails to record that after the user's database committed (a trigger in
/// the state stands for the crash). b then captures the row as one it made
/// and publishes it; every peer takes it for c's row, whose values it has,
/// and the parked change finds it there: one row everywhere, no conflict.
#[test]
fn a_crash_while_a_parked_change_is_carried_out_duplicates_nothing() {
    let hub = Hub::new();
    let schema = "PRAGMA journal_mode=WAL; CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT); \
        CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id), v TEXT);";
    let mut peers: Vec<Peer> = ["a", "b", "c"].iter().map(|n| Peer::with(&hub, n, schema, "")).collect();
    for (p, digit) in peers.iter().zip(['2', '3', '1']) {
        p.pin_peer_id(digit);
    }
    let [a, b, c] = &mut peers[..] else { unreachable!() };
    a.exec("INSERT INTO parent VALUES (1, 'p');");
    a.sync();
    c.sync();
    c.exec("INSERT INTO child VALUES (10, 1, 'made on c');");
    c.sync();
    b.engine();
    b.crash();
    let state = b.config.state_dir().join("main.state.sqlite");
    let crash = "CREATE TRIGGER crash BEFORE DELETE ON parked BEGIN SELECT RAISE(ABORT, 'crash'); END;";
    rusqlite::Connection::open(&state).unwrap().execute_batch(crash).unwrap();
    // c's row waits for its parent, which comes next; the retry inserts it,
    // then cannot unpark it.
    assert!(b.engine().run_cycle().is_err());
    assert_eq!(b.one("SELECT v FROM child"), "Text(\"made on c\")");
    b.crash();
    rusqlite::Connection::open(&state).unwrap().execute_batch("DROP TRIGGER crash;").unwrap();
    settle(&mut [a, b, c], 4);
    for p in [&*a, &*b, &*c] {
        assert_eq!(p.rows("SELECT id, v FROM child"), ["Integer(10)|Text(\"made on c\")"], "{}", p.name);
    }
    assert!(b.engine().state().parked().unwrap().is_empty());
}

/// Generated columns are SQLite's to compute on every peer: rows new to a
/// peer go in by the group without them, and nothing echoes back.
#[test]
fn rows_with_generated_columns_apply_by_the_group_and_echo_nothing() {
    let hub = Hub::new();
    let schema = "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, price REAL, qty INTEGER, \
        total REAL GENERATED ALWAYS AS (price * qty) VIRTUAL, label TEXT AS ('#' || id) STORED);";
    let (mut a, mut b) = (Peer::with(&hub, "a", schema, ""), Peer::with(&hub, "b", schema, ""));
    a.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150)
         INSERT INTO t(id, price, qty) SELECT i, i * 0.5, i % 7 FROM n;",
    );
    a.sync();
    assert_eq!(b.sync().applied.applied, 150);
    let all = "SELECT id, price, qty, total, label FROM t ORDER BY id";
    assert_eq!(a.rows(all), b.rows(all));
    assert_eq!(b.one("SELECT total, label FROM t WHERE id = 100"), "Real(100.0)|Text(\"#100\")");
    let again = b.sync();
    assert_eq!((again.captured, again.published), (0, 0));
}

/// A new row that a CHECK here refuses waits with SQLite's reason; the
/// others of its group apply, and what they recorded is exactly what was
/// written: the next capture finds nothing to publish.
#[test]
fn a_group_of_new_rows_applies_around_one_a_check_refuses_and_echoes_nothing() {
    let hub = Hub::new();
    let mut a = Peer::with(
        &hub,
        "a",
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, s TEXT);",
        "",
    );
    let mut b = Peer::with(
        &hub,
        "b",
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER CHECK (n <> 50), s TEXT);",
        "",
    );
    a.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO t SELECT i, i, CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN 'x' ELSE x'00ff' END FROM n;",
    );
    a.sync();
    let report = b.sync();
    assert_eq!((report.applied.applied, report.applied.parked), (199, 1));
    assert_eq!(b.one("SELECT count(*) FROM t"), "Integer(199)");
    let parked = b.engine().state().parked().unwrap();
    assert!(parked[0].reason.contains("CHECK"), "{parked:?}");
    let again = b.sync();
    assert_eq!((again.captured, again.published), (0, 0));
}

#[test]
fn schema_drift_applies_shared_columns_and_parks_what_cannot_apply() {
    let hub = Hub::new();
    let mut a = Peer::with(
        &hub,
        "a",
        &format!(
            "{} ALTER TABLE items ADD COLUMN colour TEXT; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);",
            common::SCHEMA
        ),
        "",
    );
    let mut b = Peer::new(&hub, "b");
    a.exec(
        "INSERT INTO items(id, name, qty, colour) VALUES (1, 'one', 1, 'blue'); INSERT INTO notes VALUES (1, 'hello');",
    );
    b.exec("INSERT INTO items(id, name, qty) VALUES (2, 'two', 2);");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content(), "shared columns converge");
    assert_eq!(a.one("SELECT colour FROM items WHERE id = 2"), "Null");
    assert_eq!(a.one("SELECT colour FROM items WHERE id = 1"), "Text(\"blue\")", "the extra column keeps its value");
    assert_eq!(b.engine().state().parked_count().unwrap(), 1, "the note for a missing table is parked");
    // The table appears on b: the parked change is retried and applied.
    b.exec("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);");
    settle(&mut [&mut b], 2);
    assert_eq!(b.one("SELECT body FROM notes WHERE id = 1"), "Text(\"hello\")");
    assert_eq!(b.engine().state().parked_count().unwrap(), 0);
}

#[test]
fn excluded_tables_and_columns_never_reach_any_hub_file() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name, token) VALUES (1, 'x', 'tok-SECRET'); INSERT INTO secrets VALUES ('pw', 'hunter2-SECRET');");
    settle(&mut [&mut a, &mut b], 2);
    a.exec("UPDATE items SET token = 'tok2-SECRET' WHERE id = 1;");
    settle(&mut [&mut a, &mut b], 1);
    let files = hub.files();
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        let plain = zstd::stream::decode_all(&raw[..]).unwrap_or_default();
        for bytes in [&raw, &plain] {
            assert!(!bytes.windows(6).any(|w| w == b"SECRET"), "{} holds excluded data", f.display());
        }
    }
    assert_eq!(b.one("SELECT count(*) FROM secrets"), "Integer(0)");
    assert_eq!(b.one("SELECT token FROM items WHERE id = 1"), "Null");
}

#[test]
fn truncated_and_bit_flipped_batches_are_skipped_and_the_good_ones_still_apply() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name) VALUES (1, 'first');");
    a.sync();
    a.exec("INSERT INTO items(id, name) VALUES (2, 'second');");
    a.sync();
    let batches = hub.batches();
    assert_eq!(batches.len(), 2);
    let good1 = std::fs::read(&batches[0]).unwrap();
    let good2 = std::fs::read(&batches[1]).unwrap();
    // Batch 1 truncated: nothing applies (batch 2 must not jump the queue).
    std::fs::write(&batches[0], &good1[..good1.len() / 2]).unwrap();
    let report = b.sync();
    assert!(!report.skipped.is_empty());
    assert_eq!(b.one("SELECT count(*) FROM items"), "Integer(0)");
    // Repaired 1, bit-flipped 2: 1 applies, 2 waits.
    std::fs::write(&batches[0], &good1).unwrap();
    let mut flipped = good2.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x04;
    std::fs::write(&batches[1], &flipped).unwrap();
    b.sync();
    assert_eq!(b.rows("SELECT id FROM items"), vec!["Integer(1)"]);
    assert!(!b.engine().health.skipped.is_empty(), "the damaged file is reported");
    std::fs::write(&batches[1], &good2).unwrap();
    b.sync();
    assert_eq!(b.rows("SELECT id FROM items ORDER BY id"), vec!["Integer(1)", "Integer(2)"]);
    assert!(b.engine().health.skipped.is_empty(), "the repaired file is no longer reported");
}

#[test]
fn files_invented_by_cloud_clients_are_ignored_and_reported() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name) VALUES (1, 'x');");
    a.sync();
    let batch = hub.batches()[0].clone();
    let dir = batch.parent().unwrap();
    let other = std::fs::read(&batch).unwrap();
    std::fs::write(dir.join("00000000000000000001 (1).chg"), &other).unwrap();
    std::fs::write(dir.join("00000000000000000001.sync-conflict-20240101-120000-ABCDEFG.chg"), &other).unwrap();
    let report = b.sync();
    assert_eq!(b.one("SELECT count(*) FROM items"), "Integer(1)");
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
}

#[test]
fn a_crash_between_capture_and_publish_loses_nothing() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.sync();
    // The hub disappears (an unmounted share) while a captures.
    let hidden = hub.dir.path().with_extension("away");
    std::fs::rename(hub.dir.path(), &hidden).unwrap();
    a.exec("INSERT INTO items(id, name) VALUES (1, 'kept');");
    a.sync();
    assert_eq!(a.engine().pending_local().1, 1, "the change waits in the outbox");
    a.crash();
    std::fs::rename(&hidden, hub.dir.path()).unwrap();
    settle(&mut [&mut a, &mut b], 1);
    assert_eq!(b.one("SELECT name FROM items WHERE id = 1"), "Text(\"kept\")");
    assert_eq!(a.engine().pending_local().1, 0);
}

#[test]
fn a_crash_between_writing_the_database_and_recording_it_loses_and_republishes_nothing() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    b.exec("INSERT INTO items(id, name) VALUES (100, 'b own');");
    b.sync();
    let before = b.state_file();
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3);");
    a.sync();
    b.sync();
    assert_eq!(b.one("SELECT count(*) FROM items"), "Integer(4)");
    let author = a.engine().identity.peer_id.clone();
    let batch = hub.batches().into_iter().find(|p| p.to_string_lossy().contains(&author)).unwrap();
    b.crash_after_user_commit(&before, &author, 1, &batch);
    let report = b.sync();
    // Without recovery, the three rows would look like b's own new rows.
    assert_eq!(report.captured, 0, "recovered rows are not b's changes: {report:?}");
    assert_eq!(report.applied.conflicts, 0, "{report:?}");
    assert_eq!(b.one("SELECT count(*) FROM items"), "Integer(4)");
    a.exec("UPDATE items SET qty = 20 WHERE id = 2;");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(b.one("SELECT qty FROM items WHERE id = 2"), "Integer(20)");
    assert!(b.conflicts().is_empty());
}

#[test]
fn three_peers_converge() {
    let hub = Hub::new();
    let (mut a, mut b, mut c) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"), Peer::new(&hub, "c"));
    a.exec("INSERT INTO items(id, name, qty) VALUES (1, 'a', 1);");
    b.exec("INSERT INTO items(id, name, qty) VALUES (2, 'b', 2);");
    c.exec("INSERT INTO items(id, name, qty) VALUES (3, 'c', 3);");
    settle(&mut [&mut a, &mut b, &mut c], 2);
    a.exec("UPDATE items SET qty = 100 WHERE id = 3;");
    c.exec("DELETE FROM items WHERE id = 2;");
    b.exec("UPDATE items SET name = 'bee' WHERE id = 1;");
    settle(&mut [&mut c, &mut b, &mut a], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(b.content(), c.content());
    assert_eq!(
        a.rows("SELECT id, name, qty FROM items ORDER BY id"),
        vec!["Integer(1)|Text(\"bee\")|Integer(1)", "Integer(3)|Text(\"c\")|Integer(100)"]
    );
}

#[test]
fn a_cycle_with_no_change_publishes_nothing() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name) VALUES (1, 'x');");
    settle(&mut [&mut a, &mut b], 2);
    let before = hub.batches().len();
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(hub.batches().len(), before, "applied changes are not echoed back");
}

/// Commits on the state leave its WAL alone; the checkpointer copies it
/// into the file after a cycle that wrote, while the engine stays open.
#[test]
fn a_cycle_that_writes_the_state_has_its_wal_copied_into_the_state_file() {
    let hub = Hub::new();
    let mut a = Peer::new(&hub, "a");
    a.sync();
    let file = a.config.state_dir().join("main.state.sqlite");
    let before = std::fs::metadata(&file).unwrap().len();
    let values: Vec<String> = (0..3000).map(|i| format!("({i}, 'row {i} with a name of some length')")).collect();
    a.exec(&format!("INSERT INTO items(id, name) VALUES {};", values.join(", ")));
    assert_eq!(a.sync().captured, 3000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let grown = loop {
        let now = std::fs::metadata(&file).unwrap().len();
        if now > before + 100_000 || std::time::Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(grown > before + 100_000, "the state file holds the new rows ({before} -> {grown} bytes)");
    // Still open: the engine did not close its way to the copy.
    assert_eq!(a.sync().captured, 0);
}

/// Text keys of a UTF-16 database come out of SQLite in another order than
/// capture's key encoding. The cycle fails with an error that says what to
/// do, and what capture recorded of the tables before it (`notes`) is
/// rolled back with it: nothing in the state, the outbox or the hub.
#[test]
fn a_table_whose_rows_do_not_come_in_key_order_fails_the_capture_and_nothing_is_kept() {
    let hub = Hub::new();
    let mut p = Peer::with(
        &hub,
        "a",
        "PRAGMA encoding = 'UTF-16le';
         CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes VALUES (1, 'kept for later');
         CREATE TABLE words(w TEXT PRIMARY KEY, n INTEGER);
         INSERT INTO words VALUES ('\u{ff}', 1), ('\u{100}', 2);",
        "",
    );
    let err = p.engine().run_cycle().unwrap_err().to_string();
    assert!(err.contains("table words") && err.contains("UTF-8"), "{err}");
    let state = p.engine().state();
    assert!(!state.has_any_rows().unwrap(), "the rows of notes were rolled back");
    assert_eq!(state.outbox_size().unwrap().0, 0);
    assert!(hub.batches().is_empty());
}

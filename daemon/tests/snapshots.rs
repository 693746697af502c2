//! Snapshots, restore, forced pull and push, and cleanup (DESIGN §5), in
//! process on real SQLite files and a real folder hub.

mod common;
use common::{Hub, Peer, settle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn snapshot_files(hub: &Hub) -> Vec<std::path::PathBuf> {
    hub.files().into_iter().filter(|p| p.extension().is_some_and(|e| e == "snap")).collect()
}

fn open_plain(snap: &std::path::Path, dir: &std::path::Path) -> rusqlite::Connection {
    let plain = zstd::stream::decode_all(&std::fs::read(snap).unwrap()[..]).unwrap();
    let path = dir.join("plain.db");
    std::fs::write(&path, plain).unwrap();
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn a_backup_while_another_process_writes_is_sound_and_consistent() {
    let hub = Hub::new();
    let mut a = Peer::new(&hub, "a");
    a.exec("INSERT INTO items(id, name) VALUES (0, 'seed'), (1, 'seed');");
    a.sync();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), a.db_path());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(db).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let mut id = 2;
            // Rows come in pairs, one transaction each: a consistent copy
            // always holds an even number of them.
            while !stop.load(Ordering::Relaxed) {
                c.execute_batch(&format!(
                    "BEGIN; INSERT INTO items(id, name) VALUES ({id}, 'w'); INSERT INTO items(id, name) VALUES ({}, 'w'); COMMIT;",
                    id + 1
                ))
                .unwrap();
                id += 2;
            }
            id
        })
    };
    for _ in 0..3 {
        a.engine().backup().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 2, "the writer wrote during the backups");
    let snaps = snapshot_files(&hub);
    assert_eq!(snaps.len(), 3);
    for s in snaps {
        let c = open_plain(&s, a.dir.path());
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        let n: i64 = c.query_row("SELECT count(*) FROM items", [], |r| r.get(0)).unwrap();
        assert_eq!(n % 2, 0, "a snapshot holds half a transaction ({n} rows)");
    }
}

#[test]
fn a_snapshot_opens_with_plain_zstd_and_holds_no_excluded_data() {
    let hub = Hub::new();
    let mut a = Peer::new(&hub, "a");
    a.exec("INSERT INTO items(id, name, token) VALUES (1, 'one', 'tok-SECRET'); INSERT INTO secrets VALUES ('k', 'v-SECRET');");
    a.engine().backup().unwrap();
    let snap = &snapshot_files(&hub)[0];
    assert!(snap.file_name().unwrap().to_string_lossy().starts_with("main_a_"));
    let plain = zstd::stream::decode_all(&std::fs::read(snap).unwrap()[..]).unwrap();
    assert!(!plain.windows(6).any(|w| w == b"SECRET"), "excluded data in the snapshot");
    // File format bytes 18 and 19: 1 is the rollback journal, 2 would be WAL,
    // a file that needs its -wal beside it to be read as it was.
    assert_eq!(plain[18..20], [1, 1], "the snapshot is an ordinary rollback-journal SQLite file");
    let c = open_plain(snap, a.dir.path());
    assert_eq!(c.query_row("SELECT name FROM items WHERE id = 1", [], |r| r.get::<_, String>(0)).unwrap(), "one");
    let listed = a.engine().list_snapshots().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].1, "the only snapshot is kept");
}

#[test]
fn restore_and_point_in_time_restore_give_exactly_the_expected_rows_and_sync() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    a.exec("INSERT INTO items(id, name) VALUES (1, 'one'), (2, 'two'); INSERT INTO secrets VALUES ('k', 'local');");
    let snap = a.engine().backup().unwrap();
    settle(&mut [&mut a, &mut b], 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    a.exec("INSERT INTO items(id, name) VALUES (3, 'three');");
    a.sync();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = syncd::hlc::wall_ms() as i64;
    std::thread::sleep(std::time::Duration::from_millis(20));
    a.exec("DELETE FROM items; INSERT INTO items(id, name) VALUES (9, 'nine');");
    settle(&mut [&mut a, &mut b], 1);
    assert_eq!(b.rows("SELECT id FROM items"), vec!["Integer(9)"]);

    // Point in time: the snapshot plus row 3, nothing after.
    a.engine().restore(&snap.path, Some(between)).unwrap();
    assert_eq!(a.rows("SELECT id FROM items ORDER BY id"), vec!["Integer(1)", "Integer(2)", "Integer(3)"]);
    assert_eq!(a.one("SELECT v FROM secrets"), "Text(\"local\")", "local excluded data survives a restore");
    settle(&mut [&mut b, &mut a], 2);
    assert_eq!(b.content(), a.content(), "the restored state reaches the other peer");

    // Plain restore: exactly the snapshot.
    a.engine().restore(&snap.path, None).unwrap();
    assert_eq!(a.rows("SELECT id FROM items ORDER BY id"), vec!["Integer(1)", "Integer(2)"]);
    settle(&mut [&mut b, &mut a], 2);
    assert_eq!(b.content(), a.content());
    let before: Vec<_> = std::fs::read_dir(a.dir.path().join("state")).unwrap().filter_map(Result::ok).collect();
    assert!(before.iter().any(|e| e.file_name().to_string_lossy().contains("before")), "a before copy is kept");
}

#[test]
fn pull_force_and_push_force_on_three_peers() {
    let hub = Hub::new();
    let (mut a, mut b, mut c) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"), Peer::new(&hub, "c"));
    a.exec("INSERT INTO items(id, name) VALUES (1, 'one'), (2, 'two');");
    settle(&mut [&mut a, &mut b, &mut c], 2);
    // c scribbles locally and then wants the hub's state back.
    c.exec("UPDATE items SET name = 'scribble' WHERE id = 1; INSERT INTO items(id, name) VALUES (50, 'local junk');");
    c.engine().pull_force().unwrap();
    assert_eq!(c.content(), a.content(), "pull --force makes c equal to the hub");
    settle(&mut [&mut a, &mut b, &mut c], 2);
    assert_eq!(a.one("SELECT count(*) FROM items WHERE id = 50"), "Integer(0)", "c's dropped rows never spread");

    // b decides its copy is the truth.
    b.exec("UPDATE items SET name = 'b-truth' WHERE id = 2;");
    a.exec("UPDATE items SET name = 'a-edit' WHERE id = 1;");
    a.sync();
    b.engine().push_force().unwrap();
    settle(&mut [&mut a, &mut c, &mut b], 2);
    assert_eq!(a.content(), b.content());
    assert_eq!(c.content(), b.content());
    assert_eq!(a.one("SELECT name FROM items WHERE id = 2"), "Text(\"b-truth\")");
}

/// A forced pull replaces the state's tables of peers, tables and column
/// layouts with those of the rebuild, whose ids may differ: what applies
/// batches afterwards must not go on with ids it had cached before.
#[test]
fn batches_applied_after_a_forced_pull_are_recorded_with_the_rebuilt_states_ids() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    // The rebuild applies a's batches before b's (folders by peer id).
    a.pin_peer_id('a');
    b.pin_peer_id('b');
    // b's state knows the layout of `tags` first, then that of `items`
    // (from a's batch); the rebuild learns them the other way round.
    b.exec("INSERT INTO tags(item_id, tag) VALUES (1, 'b');");
    b.sync();
    a.exec("INSERT INTO items(id, name) VALUES (1, 'one');");
    a.sync();
    b.sync();
    b.engine().pull_force().unwrap();
    a.exec("INSERT INTO items(id, name) VALUES (2, 'two');");
    a.sync();
    b.sync();
    // Capture reads the recorded column states of the row b edits.
    b.exec("UPDATE items SET qty = 7 WHERE id = 2;");
    b.sync();
    a.sync();
    assert_eq!(a.content(), b.content());
    assert_eq!(a.one("SELECT qty FROM items WHERE id = 2"), "Integer(7)");
}

#[test]
fn cleanup_never_removes_a_batch_a_live_peer_still_needs() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    for i in 0..3 {
        a.exec(&format!("INSERT INTO items(id, name) VALUES ({i}, 'x');"));
        a.sync();
    }
    b.sync();
    for i in 3..6 {
        a.exec(&format!("INSERT INTO items(id, name) VALUES ({i}, 'x');"));
        a.sync();
    }
    a.engine().backup().unwrap();
    // b has applied 3 of a's batches; the snapshot covers all 6.
    let dry = a.engine().cleanup(true).unwrap();
    assert_eq!(dry.removed_batches, 3, "only what b has applied may go");
    assert_eq!(hub.batches().len(), 6, "a dry run removes nothing");
    a.engine().cleanup(false).unwrap();
    assert_eq!(hub.batches().len(), 3);
    b.sync();
    assert_eq!(b.content(), a.content(), "b still gets everything it needed");
    a.engine().cleanup(false).unwrap();
    assert_eq!(hub.batches().len(), 0, "once b applied them, the covered batches go");
}

#[test]
fn a_new_peer_joins_after_batches_were_cleaned_up_and_the_hub_wins_clashes() {
    let hub = Hub::new();
    let (mut a, mut b) = (Peer::new(&hub, "a"), Peer::new(&hub, "b"));
    for i in 0..4 {
        a.exec(&format!("INSERT INTO items(id, name) VALUES ({i}, 'a{i}');"));
        a.sync();
    }
    b.sync();
    a.engine().backup().unwrap();
    a.engine().cleanup(false).unwrap();
    assert!(hub.batches().iter().all(|p| !p.to_string_lossy().contains("00000000000000000001.chg")), "batch 1 is gone");
    a.exec("INSERT INTO items(id, name) VALUES (10, 'after the snapshot');");
    a.sync();
    // c already has a row 1 of its own, and one the hub does not have.
    let mut c = Peer::new(&hub, "c");
    c.exec("INSERT INTO items(id, name) VALUES (1, 'c-version'), (77, 'only on c');");
    c.sync();
    assert_eq!(c.one("SELECT name FROM items WHERE id = 1"), "Text(\"a1\")", "the hub wins at join");
    assert!(c.conflicts().iter().any(|x| x.loser.as_deref().is_some_and(|l| l.contains("c-version"))));
    assert_eq!(c.one("SELECT name FROM items WHERE id = 10"), "Text(\"after the snapshot\")");
    settle(&mut [&mut a, &mut b, &mut c], 2);
    assert_eq!(a.one("SELECT name FROM items WHERE id = 77"), "Text(\"only on c\")", "c's own rows are published");
    assert_eq!(a.content(), c.content());
    assert_eq!(b.content(), c.content());
}

#[test]
fn a_peer_past_retention_rejoins_with_its_unpublished_rows_intact() {
    let hub = Hub::new();
    // a forgets silent peers at once, so b no longer holds back cleanup.
    let mut a = Peer::with(&hub, "a", common::SCHEMA, "forget_peers_after_days = 0");
    let mut b = Peer::new(&hub, "b");
    a.exec("INSERT INTO items(id, name) VALUES (1, 'one');");
    settle(&mut [&mut a, &mut b], 1);
    // b goes away with a change it never published.
    b.exec("INSERT INTO items(id, name) VALUES (500, 'written offline on b');");
    for i in 2..5 {
        a.exec(&format!("INSERT INTO items(id, name) VALUES ({i}, 'a{i}');"));
        a.sync();
    }
    a.engine().backup().unwrap();
    a.engine().cleanup(false).unwrap();
    assert!(hub.batches().iter().all(|p| !p.to_string_lossy().contains("00000000000000000002.chg")));
    // b comes back (a restart) and finds the batches it needs gone.
    b.crash();
    b.sync();
    assert_eq!(b.one("SELECT count(*) FROM items WHERE id BETWEEN 1 AND 4"), "Integer(4)", "b caught up");
    assert_eq!(b.one("SELECT name FROM items WHERE id = 500"), "Text(\"written offline on b\")");
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.one("SELECT name FROM items WHERE id = 500"), "Text(\"written offline on b\")");
    assert_eq!(a.content(), b.content());
}

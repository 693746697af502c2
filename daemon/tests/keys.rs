//! Keys made on two machines (DESIGN §4), on hand-made schemas like the ones
//! real applications have, three peers: integer primary keys made twice are
//! re-keyed by the author of the younger row with the rows that refer to it,
//! a UNIQUE clash is a conflict with the loser kept, foreign keys are never
//! left dangling and the application's triggers run.

mod common;
use common::{Hub, Peer, settle};

/// Notes with comments (a declared foreign key) and a trigger that keeps a
/// local-only log (`secrets` is excluded by the test configuration).
const NOTES: &str = "
    PRAGMA journal_mode=WAL;
    CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT);
    CREATE TABLE comments(id INTEGER PRIMARY KEY, note_id INTEGER NOT NULL REFERENCES notes(id), text TEXT);
    CREATE TABLE bookmarks(id INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE, title TEXT);
    CREATE TABLE secrets(k TEXT PRIMARY KEY, v TEXT);
    CREATE TRIGGER notes_log AFTER INSERT ON notes BEGIN
        INSERT OR REPLACE INTO secrets VALUES ('inserted ' || NEW.title, NEW.id);
    END;
";

fn peers(hub: &Hub) -> Vec<Peer> {
    ["a", "b", "c"].iter().map(|n| Peer::with(hub, n, NOTES, "")).collect()
}

fn notes(p: &Peer) -> Vec<String> {
    p.rows("SELECT title, body FROM notes ORDER BY title")
}

/// Every table, every column: what must be identical on every peer.
fn everything(p: &Peer) -> Vec<String> {
    let mut rows = p.rows("SELECT 'n', * FROM notes ORDER BY id");
    rows.extend(p.rows("SELECT 'c', * FROM comments ORDER BY id"));
    rows.extend(p.rows("SELECT 'b', * FROM bookmarks ORDER BY id"));
    rows
}

fn settle_all(ps: &mut [Peer]) {
    let mut refs: Vec<&mut Peer> = ps.iter_mut().collect();
    settle(&mut refs, 4);
}

fn assert_converged(ps: &[Peer]) {
    for p in &ps[1..] {
        assert_eq!(everything(&ps[0]), everything(p), "{} differs from {}", p.name, ps[0].name);
    }
    for p in ps {
        assert!(p.rows("PRAGMA foreign_key_check").is_empty(), "{}: a dangling foreign key", p.name);
    }
}

#[test]
fn rows_made_with_the_same_integer_key_on_three_peers_all_survive_with_their_comments() {
    let hub = Hub::new();
    let mut ps = peers(&hub);
    ps[0].exec("INSERT INTO notes VALUES (1, 'shared', 'made before the split');");
    settle_all(&mut ps);
    // Apart: each peer makes note 2, and comments on it.
    for (i, p) in ps.iter().enumerate() {
        p.exec(&format!(
            "INSERT INTO notes VALUES (2, 'from {n}', 'body {i}');
             INSERT INTO comments VALUES ({c}, 2, 'comment on the note from {n}');",
            n = p.name,
            c = 10 + i
        ));
    }
    settle_all(&mut ps);
    assert_converged(&ps);
    let titles: Vec<String> = notes(&ps[0]).iter().map(|r| r.split('|').next().unwrap().to_string()).collect();
    assert_eq!(titles, ["Text(\"from a\")", "Text(\"from b\")", "Text(\"from c\")", "Text(\"shared\")"]);
    // Every comment still refers to the note it was written on.
    for p in &ps {
        let pairs = p.rows("SELECT c.text, n.title FROM comments c JOIN notes n ON n.id = c.note_id ORDER BY c.id");
        assert_eq!(pairs.len(), 3, "{}: {pairs:?}", p.name);
        for pair in &pairs {
            let (text, title) = pair.split_once('|').unwrap();
            let author = title.trim_start_matches("Text(\"from ").trim_end_matches("\")");
            assert!(text.ends_with(&format!("from {author}\")")), "{}: {pair}", p.name);
        }
    }
    // The application's trigger ran for the notes that arrived.
    for p in &ps {
        assert_eq!(p.one("SELECT count(*) FROM secrets WHERE k LIKE 'inserted from %'"), "Integer(3)", "{}", p.name);
    }
    // Two of the three moved; the moves were published like any change.
    let moved: u64 = ps.iter_mut().map(|p| p.engine().state().live_row_count().unwrap()).sum::<u64>();
    assert_eq!(moved, 3 * 7, "4 notes and 3 comments on each peer, as the state sees them");
}

#[test]
fn the_same_url_bookmarked_on_two_peers_is_one_row_and_a_conflict_with_both_versions() {
    let hub = Hub::new();
    let mut ps = peers(&hub);
    ps[0].exec("INSERT INTO bookmarks VALUES (1, 'https://example.org/', 'from a');");
    ps[0].sync();
    // b made other bookmarks first: its copy of the URL has another id.
    ps[1].exec(
        "INSERT INTO bookmarks VALUES (1, 'https://b.example/', 'b only');
         INSERT INTO bookmarks VALUES (2, 'https://example.org/', 'from b');",
    );
    ps[1].sync();
    settle_all(&mut ps);
    assert_converged(&ps);
    for p in &ps {
        assert_eq!(p.one("SELECT count(*) FROM bookmarks WHERE url = 'https://example.org/'"), "Integer(1)");
        assert_eq!(p.one("SELECT title FROM bookmarks WHERE url = 'https://example.org/'"), "Text(\"from a\")");
        assert_eq!(p.one("SELECT count(*) FROM bookmarks"), "Integer(2)", "b's other bookmark is kept");
    }
    // b lost its row: the conflict shows both versions.
    let lost = ps[1].conflicts();
    let clash = lost.iter().find(|c| c.reason.contains("UNIQUE(url)")).expect("a UNIQUE conflict on b");
    assert!(clash.loser.as_deref().unwrap().contains("from b"), "{clash:?}");
    assert!(clash.winner.as_deref().unwrap().contains("from a"), "{clash:?}");
}

#[test]
fn a_comment_that_arrives_before_its_note_waits_and_never_dangles() {
    let hub = Hub::new();
    let mut ps = peers(&hub);
    // One batch holds both: the note is applied first (tables that others
    // refer to go first).
    ps[0].exec("INSERT INTO notes VALUES (7, 'parent', 'p'); INSERT INTO comments VALUES (70, 7, 'child');");
    ps[0].sync();
    ps[1].sync();
    assert!(ps[1].rows("PRAGMA foreign_key_check").is_empty());
    assert_eq!(ps[1].one("SELECT n.title FROM comments c JOIN notes n ON n.id = c.note_id"), "Text(\"parent\")");
    assert_eq!(ps[1].engine().state().parked_count().unwrap(), 0, "the waiting comment was applied in the same cycle");
}

#[test]
fn deleting_a_row_the_peer_already_moved_deletes_it_where_it_lives_now() {
    let hub = Hub::new();
    let mut ps = peers(&hub);
    ps[0].exec("INSERT INTO notes VALUES (3, 'a3', 'a');");
    ps[0].sync();
    ps[1].exec("INSERT INTO notes VALUES (3, 'b3', 'b');");
    // c gets a's note first, then b's (younger) note arrives and moves away.
    ps[2].sync();
    ps[1].sync();
    ps[2].sync();
    // c deletes b's note wherever it is now; a never saw it at its new key.
    ps[2].exec("DELETE FROM notes WHERE title = 'b3';");
    settle_all(&mut ps);
    assert_converged(&ps);
    assert_eq!(ps[0].rows("SELECT title FROM notes"), ["Text(\"a3\")"]);
}

#[test]
fn a_note_deleted_while_another_peer_comments_on_it_stays_with_its_comment() {
    let hub = Hub::new();
    let mut ps = peers(&hub);
    ps[0].exec("INSERT INTO notes VALUES (8, 'discussed', 'x');");
    settle_all(&mut ps);
    // Apart: a deletes the note, b comments on it.
    ps[0].exec("DELETE FROM notes WHERE id = 8;");
    ps[1].exec("INSERT INTO comments VALUES (80, 8, 'a reply');");
    ps[0].sync();
    ps[1].sync();
    assert!(ps[1].rows("PRAGMA foreign_key_check").is_empty(), "b applied the delete under its comment");
    settle_all(&mut ps);
    assert_converged(&ps);
    for p in &ps {
        assert_eq!(p.one("SELECT n.title FROM comments c JOIN notes n ON n.id = c.note_id"), "Text(\"discussed\")");
    }
    let kept = ps[1].conflicts();
    assert!(kept.iter().any(|c| c.reason.contains("refer to it")), "{kept:?}");
}

//! Real applications that number their rows with `INTEGER PRIMARY KEY`, run
//! through their own command lines on three peers, each with its own data
//! folder (issue 7; DESIGN §4 "Keys made on two machines"):
//!
//! - buku (bookmarks): `bookmarks(id INTEGER PRIMARY KEY, URL … UNIQUE, …)`;
//!   deleting a bookmark moves the last one into the hole (its "compaction").
//! - beets (a music library): `items(id INTEGER PRIMARY KEY, …)` plus its
//!   flexible attributes in `item_attributes(id INTEGER PRIMARY KEY,
//!   entity_id, key, value, UNIQUE(entity_id, key) ON CONFLICT REPLACE)`.
//!
//! Each scenario: the peers start from one synced database; while apart, two
//! of them add rows of the same kind (so both make the same ids), edit and
//! delete; then they sync until quiet. Every record must be on every peer
//! exactly once, the edits and deletes applied, the databases identical row
//! for row, and the application must still list and edit its data on every
//! machine, with the edits reaching the other machines.
//!
//! The applications come from PyPI through `tests/apps/install.sh`, which
//! `scripts/test.sh` runs and which exports `SYNCD_TEST_APPS_VENV`.

mod common;
use common::{Hub, Peer, wait_for};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A program of the applications' virtualenv.
fn app_program(name: &str) -> PathBuf {
    let Some(venv) = std::env::var_os("SYNCD_TEST_APPS_VENV") else {
        panic!(
            "SYNCD_TEST_APPS_VENV is not set: run scripts/test.sh or set SYNCD_TEST_APPS_VENV \
             (eval \"$(tests/apps/install.sh)\" installs the applications and prints it)"
        )
    };
    let program = PathBuf::from(venv).join("bin").join(name);
    assert!(program.exists(), "{} is missing: run tests/apps/install.sh", program.display());
    program
}

/// Runs an application's command as the user of `peer` would, with that
/// peer's own home and data folders; asserts success, returns stdout.
fn run_app(peer: &Peer, program: &str, args: &[&str]) -> String {
    let home = peer.dir.path().join("home");
    let out = Command::new(app_program(program))
        .args(args)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("BEETSDIR", peer.dir.path().join("beets"))
        .env_remove("BUKU_DEFAULT_DBDIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} on {} failed: {stdout}{}",
        peer.name,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every row of every table of the peer's database, sorted, one table after
/// the other: what "identical databases" compares (nothing excluded).
fn all_rows(peer: &Peer) -> String {
    let mut text = String::new();
    let tables =
        peer.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
    for table in tables.lines() {
        let sql = format!("SELECT * FROM \"{}\"", table.replace('"', "\"\""));
        let rows = peer.query(&sql);
        let mut rows: Vec<&str> = rows.lines().collect();
        rows.sort_unstable();
        text += &format!("-- {table} ({} rows)\n", rows.len());
        for row in rows {
            text += row;
            text.push('\n');
        }
    }
    text
}

/// `syncd once` on every peer, round after round, until a whole round
/// changes no database and all of them hold the same rows (or 8 rounds).
fn sync_until_quiet(peers: &[&Peer]) {
    let mut before: Vec<String> = peers.iter().map(|p| all_rows(p)).collect();
    for _ in 0..8 {
        for p in peers {
            p.once();
        }
        let after: Vec<String> = peers.iter().map(|p| all_rows(p)).collect();
        if after == before && after.iter().all(|rows| *rows == after[0]) {
            return;
        }
        before = after;
    }
}

/// Asserts that every peer holds exactly the rows of the first.
fn assert_identical(peers: &[&Peer]) {
    let first = all_rows(peers[0]);
    for p in &peers[1..] {
        let rows = all_rows(p);
        assert!(
            rows == first,
            "{} and {} differ:\n--- {}\n{first}\n--- {}\n{rows}",
            peers[0].name,
            p.name,
            peers[0].name,
            p.name
        );
    }
}

/// `syncctl conflicts --json` of a running daemon.
fn conflicts(peer: &Peer) -> Vec<serde_json::Value> {
    peer.ctl_json(&["conflicts"]).as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------- buku

const BUKU_DB: &str = "home/.local/share/buku/bookmarks.db";

/// `buku --nostdin --np ARGS…`: no prompt, no network fetch of titles.
fn buku(peer: &Peer, args: &[&str]) -> String {
    let mut all = vec!["--nostdin", "--np", "--nc"];
    all.extend_from_slice(args);
    run_app(peer, "buku", &all)
}

fn buku_add(peer: &Peer, url: &str, title: &str) {
    buku(peer, &["--offline", "--tacit", "-a", url, "--title", title, "--tag", "synced"]);
}

/// What `buku -p -j` lists: URL → (index, title), and every URL listed.
fn buku_list(peer: &Peer) -> (BTreeMap<String, (i64, String)>, Vec<String>) {
    let out = buku(peer, &["-p", "-j"]);
    let Some(start) = out.find('[') else { return (BTreeMap::new(), Vec::new()) };
    let list: serde_json::Value =
        serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("buku -p -j on {}: {e}: {out}", peer.name));
    let mut by_url = BTreeMap::new();
    let mut urls = Vec::new();
    for b in list.as_array().unwrap() {
        let url = b["uri"].as_str().unwrap().to_string();
        urls.push(url.clone());
        by_url.insert(url, (b["index"].as_i64().unwrap(), b["title"].as_str().unwrap_or_default().to_string()));
    }
    urls.sort();
    (by_url, urls)
}

fn buku_index_of(peer: &Peer, url: &str) -> String {
    let (by_url, _) = buku_list(peer);
    let Some((index, _)) = by_url.get(url) else { panic!("{url} is not in buku on {}: {by_url:?}", peer.name) };
    index.to_string()
}

/// Three peers on one folder hub, each with a buku database made by buku,
/// all holding the four bookmarks A made.
fn three_buku_peers(hub: &Hub) -> [Peer; 3] {
    let peers = ["a", "b", "c"].map(|name| Peer::for_app(hub, name, BUKU_DB));
    let [a, b, c] = &peers;
    for n in ["one", "two", "three", "four"] {
        buku_add(a, &format!("https://example.com/{n}"), &format!("title {n}"));
    }
    // B and C: buku makes its (empty) database on first use, then they sync.
    for p in [b, c] {
        buku(p, &["-p"]);
        assert!(p.db().exists(), "buku made no database on {}", p.name);
    }
    sync_until_quiet(&[a, b, c]);
    for p in [b, c] {
        assert_eq!(buku_list(p).1.len(), 4, "{} did not get A's bookmarks: {:?}", p.name, buku_list(p));
    }
    peers
}

#[test]
fn buku_bookmarks_added_apart_on_two_machines_all_survive_and_a_shared_url_is_one_conflict() {
    let hub = Hub::folder();
    let mut peers = three_buku_peers(&hub);
    let [a, b, c] = &peers;
    let (one, three, four) = ("https://example.com/one", "https://example.com/three", "https://example.com/four");
    let (shared, only_a, only_b) =
        ("https://shared.example/clash", "https://a.example/only-on-a", "https://b.example/only-on-b");

    // Apart. A deletes its last bookmark (id 4, so buku moves nothing and
    // reuses id 4), then adds two; B edits one, adds two: both make ids 4-5
    // or 5-6, and both bookmark the same URL (UNIQUE).
    buku(a, &["--tacit", "-d", &buku_index_of(a, four)]);
    buku_add(a, shared, "shared, from a");
    buku_add(a, only_a, "only on a");
    buku(b, &["-u", &buku_index_of(b, three), "--title", "three, edited on b"]);
    buku_add(b, shared, "shared, from b");
    buku_add(b, only_b, "only on b");

    sync_until_quiet(&[a, b, c]);

    let mut expected = vec![one, "https://example.com/two", three, shared, only_a, only_b];
    expected.sort_unstable();
    for p in [a, b, c] {
        let (by_url, urls) = buku_list(p);
        assert_eq!(urls, expected, "buku on {} lists every bookmark exactly once, and not the deleted one", p.name);
        assert_eq!(by_url[three].1, "three, edited on b", "B's edit on {}", p.name);
        assert_eq!(by_url[only_a].1, "only on a", "A's row on {} kept its own columns", p.name);
        assert_eq!(by_url[only_b].1, "only on b", "B's row on {} kept its own columns", p.name);
        let title = &by_url[shared].1;
        assert!(title == "shared, from a" || title == "shared, from b", "{}: {title}", p.name);
        assert_eq!(p.query("PRAGMA integrity_check"), "ok");
    }
    assert_identical(&[a, b, c]);

    // The shared URL: one row survives everywhere, the loser is in the
    // conflict log of the machine that lost.
    let survivor = buku_list(a).0[shared].1.clone();
    let (loser, lost_title) = if survivor == "shared, from a" { (1, "shared, from b") } else { (0, "shared, from a") };
    for p in &mut peers {
        p.start();
    }
    let [a, b, c] = &peers;
    let loser = &peers[loser];
    let log = conflicts(loser);
    assert!(
        log.iter().any(|c| c["table"] == "bookmarks"
            && c["local_value"].as_str().is_some_and(|v| v.contains(lost_title) && v.contains(shared))),
        "the losing bookmark ({lost_title}) is not in the conflict log of {}: {log:#?}",
        loser.name
    );

    // buku still edits its data on every machine, and the edits travel.
    buku(c, &["-u", &buku_index_of(c, only_b), "--title", "only on b, retitled on c"]);
    buku_add(b, "https://example.com/after", "added after the sync");
    for p in [a, b, c] {
        assert!(
            wait_for(Duration::from_secs(30), || {
                let (by_url, _) = buku_list(p);
                by_url.get(only_b).is_some_and(|(_, t)| t == "only on b, retitled on c")
                    && by_url.contains_key("https://example.com/after")
            }),
            "{}: {:?}\n{}",
            p.name,
            buku_list(p),
            p.log()
        );
    }
    assert!(wait_for(Duration::from_secs(30), || all_rows(a) == all_rows(b) && all_rows(b) == all_rows(c)));
}

/// Ignored, a known limit (issue 7): buku's renumbering on delete rewrites
/// row 2 and then reuses id 4 for a new bookmark, all between two captures,
/// so syncd sees edits of rows 2 and 4, not a move and a new row, and B's
/// edit of bookmark four lands on A's new bookmark 4. `buku --retain-order`
/// avoids it. `cargo test -- --ignored` runs it.
#[test]
#[ignore]
fn buku_deleting_a_bookmark_moves_the_last_one_into_the_hole_and_the_peers_still_converge() {
    let hub = Hub::folder();
    let [a, b, c] = three_buku_peers(&hub);
    let (one, two, three, four) =
        ("https://example.com/one", "https://example.com/two", "https://example.com/three", "https://example.com/four");
    let (only_a, only_b) = ("https://a.example/only-on-a", "https://b.example/only-on-b");

    // Apart. A deletes bookmark 2: buku moves bookmark 4 to id 2 (a change
    // of key), then A adds a bookmark, which gets id 4 again. B edits
    // bookmark 1 and adds one: id 5, the same as nothing on A, but B's
    // row 4 ("four") is now, on A, a different bookmark.
    buku(&a, &["--tacit", "-d", &buku_index_of(&a, two)]);
    assert_eq!(buku_index_of(&a, four), "2", "buku moved the last bookmark into the hole");
    buku_add(&a, only_a, "only on a");
    buku(&b, &["-u", &buku_index_of(&b, one), "--title", "one, edited on b"]);
    buku(&b, &["-u", &buku_index_of(&b, four), "--title", "four, edited on b"]);
    buku_add(&b, only_b, "only on b");

    sync_until_quiet(&[&a, &b, &c]);

    let mut expected = vec![one, three, four, only_a, only_b];
    expected.sort_unstable();
    for p in [&a, &b, &c] {
        let (by_url, urls) = buku_list(p);
        assert_eq!(urls, expected, "buku on {} lists every bookmark exactly once, and not the deleted one", p.name);
        assert_eq!(by_url[one].1, "one, edited on b", "{}", p.name);
        // buku renumbered "four" by rewriting row 2 and deleting row 4: to
        // syncd that is another bookmark's row changing, so B's edit of row
        // 4 meets A's delete. The same title wins everywhere, and B's edit
        // is never lost: applied, or kept in a conflict log.
        let title = &by_url[four].1;
        assert!(title == "four, edited on b" || title == "title four", "{}: {title}", p.name);
        assert_eq!(by_url[three].1, "title three", "{}", p.name);
        assert_eq!(by_url[only_a].1, "only on a", "{}", p.name);
        assert_eq!(by_url[only_b].1, "only on b", "{}", p.name);
    }
    assert_identical(&[&a, &b, &c]);
    let edit_applied = buku_list(&a).0[four].1 == "four, edited on b";
    // And buku keeps working on the peer that only received.
    buku(&c, &["--tacit", "-d", &buku_index_of(&c, three)]);
    sync_until_quiet(&[&a, &b, &c]);
    for p in [&a, &b, &c] {
        assert!(!buku_list(p).1.contains(&three.to_string()), "{}: {:?}", p.name, buku_list(p));
    }
    assert_identical(&[&a, &b, &c]);
    if !edit_applied {
        let mut peers = [a, b, c];
        for p in &mut peers {
            p.start();
        }
        let kept = peers.iter().any(|p| conflicts(p).iter().any(|c| c.to_string().contains("four, edited on b")));
        assert!(kept, "B's edit of bookmark four is neither applied nor in a conflict log");
    }
}

// --------------------------------------------------------------- beets

const BEETS_DB: &str = "beets/library.db";
/// beets refers to items and albums by id without declaring foreign keys:
/// the configuration names those references (README, "Keys made on two
/// machines").
const BEETS_REFERENCES: &str = "references = [\"item_attributes.entity_id -> items.id\", \
    \"album_attributes.entity_id -> albums.id\", \"items.album_id -> albums.id\"]\n";

/// Writes the peer's beets configuration: no plugin (so no network and no
/// autotagger source), the library in the peer's folder, the music in the
/// folder every machine shares (paths are stored relative to it).
fn beets_config(peer: &Peer, music: &Path) -> PathBuf {
    let folder = peer.dir.path().join("beets");
    std::fs::create_dir_all(&folder).unwrap();
    let config = folder.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "plugins: []\ndirectory: {}\nlibrary: {}\nimport:\n  autotag: no\n  copy: no\n  move: no\n  write: no\n  \
             quiet: yes\n  resume: no\n  incremental: no\n",
            music.display(),
            peer.db().display()
        ),
    )
    .unwrap();
    config
}

fn beet(peer: &Peer, args: &[&str]) -> String {
    let config = peer.dir.path().join("beets/config.yaml");
    let mut all = vec!["-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_app(peer, "beet", &all)
}

/// Imports songs as singletons, without the autotagger, in place.
fn beet_import(peer: &Peer, music: &Path, songs: &[u32]) {
    let files: Vec<String> = songs.iter().map(|n| music.join(format!("song{n}.wav")).display().to_string()).collect();
    let mut args = vec!["import", "-A", "-s", "-q", "-C", "-W"];
    args.extend(files.iter().map(String::as_str));
    beet(peer, &args);
}

/// Tiny WAV files tagged "Song N" (track N), made with Python's `wave` and
/// beets' own tag library.
fn make_songs(music: &Path, songs: std::ops::RangeInclusive<u32>) {
    let script = "import sys, wave\nfrom mediafile import MediaFile\nfor n in sys.argv[2:]:\n    p = f'{sys.argv[1]}/song{n}.wav'\n    \
                  w = wave.open(p, 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)\n    \
                  w.writeframes(bytes(1600)); w.close()\n    m = MediaFile(p); m.title = f'Song {n}'; \
                  m.artist = 'The Testers'; m.track = int(n); m.save()\n";
    let status = Command::new(app_program("python"))
        .arg("-c")
        .arg(script)
        .arg(music)
        .args(songs.map(|n| n.to_string()))
        .status()
        .unwrap();
    assert!(status.success());
}

/// What `beet ls` lists: title → (id, file name).
fn beet_list(peer: &Peer) -> BTreeMap<String, (String, String)> {
    let mut items = BTreeMap::new();
    for line in beet(peer, &["ls", "-f", "$id|$title|$path"]).lines() {
        let mut parts = line.splitn(3, '|');
        let (id, title, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let file = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
        assert!(items.insert(title.to_string(), (id.to_string(), file)).is_none(), "{} lists {title} twice", peer.name);
    }
    items
}

fn beet_id(peer: &Peer, title: &str) -> String {
    let items = beet_list(peer);
    let Some((id, _)) = items.get(title) else { panic!("{title} is not in beets on {}: {items:?}", peer.name) };
    format!("id:{id}")
}

#[test]
fn beets_songs_imported_apart_on_two_machines_all_survive_with_their_own_files_and_attributes() {
    let hub = Hub::folder();
    let music = tempfile::tempdir().unwrap();
    make_songs(music.path(), 1..=9);
    let peers = ["a", "b", "c"].map(|name| {
        let mut p = Peer::for_app(&hub, name, BEETS_DB);
        p.db_extra = BEETS_REFERENCES.into();
        p.write_config(&[("main", &p.db())]);
        p
    });
    let [a, b, c] = &peers;
    for p in &peers {
        beets_config(p, music.path());
    }
    beet_import(a, music.path(), &[1, 2, 3, 4]);
    for p in [b, c] {
        beet(p, &["ls"]); // beets makes its (empty) library on first use
    }
    sync_until_quiet(&[a, b, c]);
    for p in [b, c] {
        assert_eq!(beet_list(p).len(), 4, "{} did not get A's songs: {:?}", p.name, beet_list(p));
    }

    // Apart. Both import two songs (items 5 and 6 on both), edit, set a
    // flexible attribute (item_attributes row 1 on both, and one on a song
    // that will move) and B removes one.
    beet_import(a, music.path(), &[5, 6]);
    beet(a, &["modify", "-y", "-W", &beet_id(a, "Song 1"), "title=Song 1 (edited on a)", "rating=5"]);
    beet_import(b, music.path(), &[7, 8]);
    beet(b, &["modify", "-y", "-W", &beet_id(b, "Song 3"), "mood=calm"]);
    beet(b, &["modify", "-y", "-W", &beet_id(b, "Song 7"), "mood=upbeat"]);
    beet(b, &["remove", "-f", &beet_id(b, "Song 2")]);

    sync_until_quiet(&[a, b, c]);

    let expected = ["Song 1 (edited on a)", "Song 3", "Song 4", "Song 5", "Song 6", "Song 7", "Song 8"];
    for p in [a, b, c] {
        let items = beet_list(p);
        assert_eq!(
            items.keys().map(String::as_str).collect::<Vec<_>>(),
            expected,
            "beet ls on {} lists every song exactly once, and not the removed one",
            p.name
        );
        for (title, (_, file)) in &items {
            let n = title.trim_start_matches("Song ").split(' ').next().unwrap();
            assert_eq!(*file, format!("song{n}.wav"), "on {}, {title} points at another song's file", p.name);
        }
        assert_eq!(beet(p, &["ls", "-f", "$title", "rating:5"]).trim(), "Song 1 (edited on a)", "{}", p.name);
        assert_eq!(beet(p, &["ls", "-f", "$title", "mood:calm"]).trim(), "Song 3", "{}", p.name);
        // Song 7 moved to a fresh id on B; its attribute went along.
        assert_eq!(beet(p, &["ls", "-f", "$title", "mood:upbeat"]).trim(), "Song 7", "{}", p.name);
        assert_eq!(
            p.query("SELECT count(*) FROM item_attributes WHERE entity_id NOT IN (SELECT id FROM items)"),
            "0",
            "flexible attributes of no item on {}",
            p.name
        );
        assert_eq!(p.query("PRAGMA integrity_check"), "ok");
    }
    assert_identical(&[a, b, c]);

    // beets still edits its library on every machine, with the daemons
    // running, and the edits travel.
    let mut peers = peers;
    for p in &mut peers {
        p.start();
    }
    let [a, b, c] = &peers;
    beet(c, &["modify", "-y", "-W", &beet_id(c, "Song 7"), "title=Song 7 (edited on c)"]);
    beet_import(b, music.path(), &[9]);
    beet(a, &["remove", "-f", &beet_id(a, "Song 8")]);
    for p in [a, b, c] {
        assert!(
            wait_for(Duration::from_secs(30), || {
                let items = beet_list(p);
                items.contains_key("Song 7 (edited on c)")
                    && items.contains_key("Song 9")
                    && !items.contains_key("Song 8")
            }),
            "{}: {:?}\n{}",
            p.name,
            beet_list(p),
            p.log()
        );
    }
    assert!(wait_for(Duration::from_secs(30), || all_rows(a) == all_rows(b) && all_rows(b) == all_rows(c)));
}

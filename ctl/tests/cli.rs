//! `syncctl` as a user runs it: exit codes, the hints, socket resolution,
//! and (on Unix, against a scripted stand-in for the daemon) the JSON
//! contract and the confirmation rule for destructive requests.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `syncctl` with a clean environment: no `SYNCD_CONFIG`, and a default
/// socket directory of its own so a real daemon on this machine is never
/// reached.
fn syncctl(runtime_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncctl"));
    command.env_remove("SYNCD_CONFIG").env("XDG_RUNTIME_DIR", runtime_dir).stdin(Stdio::null());
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {:?}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

#[test]
fn no_daemon_listening_exits_3_with_a_hint_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let out = syncctl(dir.path()).arg("--socket").arg(&socket).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("syncd is not running (no socket at {})", socket.display())), "{err}");
    assert!(err.contains("systemctl --user start syncd"), "{err}");
    assert!(err.contains("syncd --config FILE"), "{err}");
}

#[test]
fn the_default_socket_follows_xdg_runtime_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = syncctl(dir.path()).arg("peers").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(&dir.path().join("syncd").join("syncd.sock").display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn not_running_with_json_prints_the_error_object_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        syncctl(dir.path()).args(["status", "--json", "--socket"]).arg(dir.path().join("x.sock")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let json = stdout_json(&out);
    assert_eq!(json["error"]["kind"], "not_running");
    assert!(json["error"]["message"].as_str().unwrap().contains("syncd is not running"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &[][..],
        &["pull"][..],
        &["push", "main"][..],
        &["sync", "--prefer", "mine"][..],
        &["restore", "snap", "--at", "yesterday"][..],
        &["conflicts", "restore"][..],
        &["--socket", "a.sock", "--config", "b.toml", "status"][..],
    ] {
        let out = syncctl(dir.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "syncctl {args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_unreadable_or_invalid_configuration_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = syncctl(dir.path()).arg("--config").arg(&missing).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read the configuration"), "{}", stderr(&out));

    let out = syncctl(dir.path()).env("SYNCD_CONFIG", &missing).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("SYNCD_CONFIG"), "{}", stderr(&out));

    for (name, text) in [("bad.toml", "socket = [unclosed"), ("number.toml", "socket = 5")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = syncctl(dir.path()).arg("--config").arg(&path).args(["status", "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert_eq!(stdout_json(&out)["error"]["kind"], "usage");
    }
}

#[test]
fn socket_comes_from_the_flag_then_the_configuration_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let from_config = dir.path().join("from-config.sock");
    let config = dir.path().join("syncd.toml");
    // Other keys, even ones this syncctl does not know, are not its business.
    std::fs::write(
        &config,
        format!("socket = {:?}\nfuture_key = 1\n[hub]\nurl = \"file:///x\"\n", from_config.display().to_string()),
    )
    .unwrap();
    let hint = |out: &Output| stderr(out);

    let out = syncctl(dir.path()).arg("--config").arg(&config).arg("status").output().unwrap();
    assert!(hint(&out).contains(&from_config.display().to_string()), "{}", hint(&out));
    let out = syncctl(dir.path()).env("SYNCD_CONFIG", &config).arg("status").output().unwrap();
    assert!(hint(&out).contains(&from_config.display().to_string()), "{}", hint(&out));

    // --socket wins over SYNCD_CONFIG, even a broken one.
    let flag = dir.path().join("flag.sock");
    let out = syncctl(dir.path())
        .env("SYNCD_CONFIG", dir.path().join("missing.toml"))
        .arg("--socket")
        .arg(&flag)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", hint(&out));
    assert!(hint(&out).contains(&flag.display().to_string()));

    // A configuration without `socket`: the default path.
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "[hub]\nurl = \"file:///x\"\n").unwrap();
    let out = syncctl(dir.path()).arg("--config").arg(&plain).arg("status").output().unwrap();
    assert!(hint(&out).contains(&dir.path().join("syncd").join("syncd.sock").display().to_string()));
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = syncctl(dir.path()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "status",
        "sync",
        "peers",
        "conflicts",
        "enable",
        "disable",
        "backup",
        "list",
        "restore",
        "pull",
        "push",
        "cleanup",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help lacks {command}:\n{help}"
        );
    }
    assert!(help.contains("--json") && help.contains("--socket") && help.contains("--config"), "{help}");
    assert!(help.contains("3 syncd is not running"), "{help}");
}

/// A scripted stand-in for the daemon: it answers each request it reads
/// with the next response of its script, and reports the requests.
#[cfg(unix)]
mod with_a_daemon {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::mpsc;
    use syncd_proto::*;

    struct FakeDaemon {
        _dir: tempfile::TempDir,
        socket: PathBuf,
        requests: mpsc::Receiver<Request>,
    }

    impl FakeDaemon {
        fn answering(script: Vec<Vec<u8>>) -> FakeDaemon {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("syncd.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let (tx, requests) = mpsc::channel();
            std::thread::spawn(move || {
                let mut script = script.into_iter();
                for conn in listener.incoming() {
                    let mut conn = conn.unwrap();
                    while let Ok(frame) = read_frame(&mut conn) {
                        let message: ClientMessage = decode(&frame).unwrap();
                        assert_eq!(message.protocol, PROTOCOL_VERSION);
                        let _ = tx.send(message.request);
                        let Some(answer) = script.next() else { return };
                        write_frame(&mut conn, &answer).unwrap();
                    }
                }
            });
            FakeDaemon { _dir: dir, socket, requests }
        }

        fn responding(responses: Vec<Response>) -> FakeDaemon {
            FakeDaemon::answering(responses.into_iter().map(|r| encode(&ServerMessage::new(r))).collect())
        }

        fn run(&self, args: &[&str]) -> Output {
            syncctl(self._dir.path()).arg("--socket").arg(&self.socket).args(args).output().unwrap()
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.try_iter().collect()
        }
    }

    fn report() -> StatusReport {
        StatusReport {
            hub: HubStatus {
                url: "file:///srv/hub".into(),
                reachable: true,
                unreachable_since: None,
                last_error: None,
            },
            databases: vec![DatabaseStatus {
                name: "main".into(),
                path: "/home/me/app.db".into(),
                state: SyncState::InSync,
                pending_local: 0,
                pending_remote: 2,
                last_sync: Some("2026-05-01T10:00:00Z".into()),
                last_error: None,
                conflicts: 0,
                parked: 0,
                auto_sync: true,
                skipped_files: vec![],
            }],
            peers: vec![PeerInfo {
                database: "main".into(),
                peer_id: "0123456789abcdef".into(),
                name: "b".into(),
                host: "b.local".into(),
                last_seen: Some("2026-05-01T10:00:00Z".into()),
                active: true,
                version: "0.1.0".into(),
                is_self: false,
                clock_skew_ms: None,
            }],
            warnings: vec![],
        }
    }

    #[test]
    fn status_json_is_the_status_report_with_the_flag_before_or_after_the_command() {
        for args in [&["status", "--json"][..], &["--json", "status"][..]] {
            let daemon = FakeDaemon::responding(vec![Response::Status(report())]);
            let out = daemon.run(args);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let json = stdout_json(&out);
            assert_eq!(json, serde_json::to_value(report()).unwrap());
            assert_eq!(json["databases"][0]["state"], "in_sync");
            assert_eq!(json["peers"][0]["active"], true);
            assert_eq!(daemon.requests(), vec![Request::Status]);
        }
    }

    #[test]
    fn human_status_is_an_aligned_table() {
        let daemon = FakeDaemon::responding(vec![Response::Status(report())]);
        let out = daemon.run(&["status"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let header = text.lines().find(|l| l.starts_with("DATABASE")).expect(&text);
        let row = text.lines().find(|l| l.starts_with("main ")).expect(&text);
        assert_eq!(header.find("STATE"), row.find("in sync"), "{text}");
        assert!(text.contains("file:///srv/hub  reachable"), "{text}");
    }

    #[test]
    fn list_json_wraps_the_snapshots_and_done_answers_carry_their_message() {
        let daemon = FakeDaemon::responding(vec![Response::Snapshots(vec![])]);
        let out = daemon.run(&["list", "main", "--json"]);
        assert_eq!(stdout_json(&out), serde_json::json!({ "snapshots": [] }));
        assert_eq!(daemon.requests(), vec![Request::List { database: Some("main".into()) }]);

        let daemon = FakeDaemon::responding(vec![Response::Done { message: "auto sync off for main".into() }]);
        let out = daemon.run(&["disable", "main", "--json"]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout_json(&out), serde_json::json!({ "message": "auto sync off for main" }));
    }

    #[test]
    fn an_error_answer_exits_1_and_prints_its_kind() {
        let daemon =
            FakeDaemon::responding(vec![Response::error(ErrorKind::UnknownDatabase, "no database named \"x\"")]);
        let out = daemon.run(&["--json", "enable", "x"]);
        assert_eq!(out.status.code(), Some(1));
        let json = stdout_json(&out);
        assert_eq!(json["error"]["kind"], "unknown_database");
        assert_eq!(json["error"]["message"], "no database named \"x\"");
        assert!(stderr(&out).contains("no database named"));
    }

    #[test]
    fn a_needed_confirmation_without_a_terminal_exits_1_and_says_to_pass_yes() {
        let daemon = FakeDaemon::responding(vec![Response::NeedsConfirmation {
            message: "restore replaces main".into(),
            active_peers: vec!["b".into(), "c".into()],
        }]);
        let out = daemon.run(&["restore", "main/p/snap.zst"]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("--yes") && err.contains("b, c"), "{err}");
        assert_eq!(
            daemon.requests(),
            vec![Request::Restore { snapshot: "main/p/snap.zst".into(), at: None, yes: false }],
            "nothing is resent without a confirmation"
        );
    }

    #[test]
    fn yes_goes_ahead_in_one_request() {
        let daemon = FakeDaemon::responding(vec![Response::Done { message: "pulled".into() }]);
        let out = daemon.run(&["pull", "--force", "main", "--yes"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(daemon.requests(), vec![Request::Pull { database: Some("main".into()), force: true, yes: true }]);
    }

    #[test]
    fn arguments_reach_the_request() {
        let cases: Vec<(&[&str], Request, Response)> = vec![
            (
                &["sync", "main", "--prefer", "local"],
                Request::Sync { database: Some("main".into()), yes: false, prefer_local: true },
                Response::Synced(vec![]),
            ),
            (
                &["conflicts", "restore", "7", "--db", "main"],
                Request::ConflictRestore { database: Some("main".into()), id: 7 },
                Response::Done { message: "restored".into() },
            ),
            (&["conflicts", "main"], Request::Conflicts { database: Some("main".into()) }, Response::Conflicts(vec![])),
            (
                &["restore", "s", "--at", "2026-05-01T12:00:00+02:00", "--yes"],
                Request::Restore { snapshot: "s".into(), at: Some("2026-05-01T10:00:00Z".into()), yes: true },
                Response::Done { message: "restored".into() },
            ),
            (&["cleanup", "--dry-run"], Request::Cleanup { database: None, dry_run: true }, Response::Cleanup(vec![])),
            (&["backup"], Request::Backup { database: None }, Response::Done { message: "ok".into() }),
            (
                &["push", "--force"],
                Request::Push { database: None, force: true, yes: false },
                Response::Done { message: "ok".into() },
            ),
        ];
        for (args, request, response) in cases {
            let daemon = FakeDaemon::responding(vec![response]);
            let out = daemon.run(args);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            assert_eq!(daemon.requests(), vec![request], "{args:?}");
        }
    }

    #[test]
    fn a_daemon_of_another_protocol_gets_a_clear_message() {
        let mut future = encode(&MessageHeader { protocol: PROTOCOL_VERSION + 1, version: "9.0.0".into() });
        future.extend_from_slice(&[99, 1, 2]);
        let daemon = FakeDaemon::answering(vec![future]);
        let out = daemon.run(&["status"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("use the syncctl that came with this syncd"), "{}", stderr(&out));
    }

    #[test]
    fn a_stale_socket_file_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("syncd.sock");
        drop(UnixListener::bind(&socket).unwrap());
        let out = syncctl(dir.path()).arg("--socket").arg(&socket).arg("status").output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(stderr(&out).contains("syncd is not running"), "{}", stderr(&out));
    }
}

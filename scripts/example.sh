#!/usr/bin/env bash
# Builds syncd and starts it in the foreground on an example database with
# the default local-folder hub, everything under ./example/. Stop it with
# Ctrl-C (it syncs once more first). In another terminal:
#   target/release/syncctl --config example/config.toml status
#   sqlite3 example/app.db "INSERT INTO notes(body) VALUES ('hello')"
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
ex="$PWD/example"
mkdir -p "$ex/hub" "$ex/state"
if [ ! -f "$ex/app.db" ]; then
  python3 - "$ex/app.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript("""
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);
INSERT INTO notes(body) VALUES ('synced by syncd'), ('edit me on another machine');
""")
db.commit()
PY
fi
cat >"$ex/config.toml" <<CFG
peer_name = "example"
state_dir = "$ex/state"
socket = "$ex/syncd.sock"
[hub]
url = "file://$ex/hub"
[[database]]
name = "example"
path = "$ex/app.db"
CFG
echo "syncd: database $ex/app.db, hub $ex/hub; syncctl --config $ex/config.toml status"
exec target/release/syncd --config "$ex/config.toml"

#!/usr/bin/env bash
# A local S3-compatible server for the tests: moto[server] from PyPI in a
# virtualenv, listening on a free port of 127.0.0.1, in the background.
#
#   eval "$(.ci/s3-server.sh)"     # or `start`: prints export SYNCD_TEST_S3_ENDPOINT=...
#   .ci/s3-server.sh stop
#
# Only the export line goes to stdout; progress and errors go to stderr. If
# the server cannot be started, stdout gets `false` instead, so that
# `set -e; eval "$(.ci/s3-server.sh)"` stops rather than silently skipping
# the S3 tests. Starting twice reuses the running server.
#
#   SYNCD_VENV        the virtualenv (default /tmp/syncd-venv)
#   SYNCD_S3_STATE    where the pid, port and log files go (default /tmp)
set -euo pipefail

venv=${SYNCD_VENV:-/tmp/syncd-venv}
state=${SYNCD_S3_STATE:-/tmp}
pidfile=$state/syncd-s3.pid
portfile=$state/syncd-s3.port
logfile=$state/syncd-s3.log
moto_spec='moto[server]>=5.1,<6'

answers() { # port -> true when an S3 server answers there
  "$venv/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)
EOF
}

running_pid() { # the pid of our server if it is still running
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile" "$portfile"
}

install() {
  if "$venv/bin/python" -c 'import moto.server, flask_cors' 2>/dev/null; then
    return 0
  fi
  echo "installing $moto_spec into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$moto_spec" >&2
}

start() {
  install
  local pid port
  if pid=$(running_pid) && [ -f "$portfile" ] && answers "$(cat "$portfile")"; then
    echo "export SYNCD_TEST_S3_ENDPOINT=http://127.0.0.1:$(cat "$portfile")"
    return 0
  fi
  stop
  # A free port can be taken between the check and the bind: try a few.
  for _ in 1 2 3; do
    port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # Output to the log: a command substitution waits for its stdout to close.
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 150); do
      if answers "$port"; then
        echo "$port" >"$portfile"
        echo "moto (pid $pid) listens on 127.0.0.1:$port; log in $logfile" >&2
        echo "export SYNCD_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    stop
  done
  echo "moto did not start; see $logfile" >&2
  tail -n 20 "$logfile" >&2 || true
  return 1
}

case "${1:-start}" in
start)
  # On any failure the caller's eval runs `false`.
  trap 'status=$?; [ $status -eq 0 ] || echo false; exit $status' EXIT
  mkdir -p "$state"
  start ;;
stop) stop ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

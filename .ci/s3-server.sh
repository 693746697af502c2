#!/usr/bin/env bash
# A local S3-compatible server for the tests: moto[server] from PyPI in a
# virtualenv, on a free port of 127.0.0.1.
#   eval "$(.ci/s3-server.sh start)"   # prints export SYNCD_TEST_S3_ENDPOINT=...
#   .ci/s3-server.sh stop
set -euo pipefail
venv=${SYNCD_VENV:-/tmp/syncd-venv}
pidfile=${SYNCD_S3_PIDFILE:-/tmp/syncd-s3.pid}
case "${1:-start}" in
stop)
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
  exit 0 ;;
esac
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q 'moto[server]' >&2
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/tmp/syncd-s3.log 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; then
    echo "export SYNCD_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    exit 0
  fi
  sleep 0.2
done
echo "moto did not start; see /tmp/syncd-s3.log" >&2
exit 1

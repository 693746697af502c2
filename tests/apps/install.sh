#!/usr/bin/env bash
# The real applications the end-to-end tests in tests/tests/apps.rs drive
# (issue 7): buku (bookmarks) and beets (music library), pinned, from PyPI,
# in a virtualenv of their own. Both keep their data in SQLite with
# INTEGER PRIMARY KEY rows; the tests run them through their own CLIs.
#
#   eval "$(tests/apps/install.sh)"   # prints export SYNCD_TEST_APPS_VENV=...
#
# Only the export line goes to stdout; progress and errors go to stderr. If
# the install fails, stdout gets `false` instead, so that
# `set -e; eval "$(tests/apps/install.sh)"` stops rather than running the
# tests without the applications. A virtualenv that already holds these
# versions is reused.
#
#   SYNCD_APPS_VENV   the virtualenv (default /tmp/syncd-apps-venv)
set -euo pipefail

venv=${SYNCD_APPS_VENV:-/tmp/syncd-apps-venv}
# mediafile is beets' own tag library; the tests use it to tag the WAV files
# they generate, so it is pinned with the applications.
pins=(buku==5.1 beets==2.14.1 mediafile==0.17.0)

installed() {
  "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    if version(name) != wanted:
        sys.exit(1)
PY
}

trap 'status=$?; [ $status -eq 0 ] || echo false; exit $status' EXIT
if ! installed || [ ! -x "$venv/bin/buku" ] || [ ! -x "$venv/bin/beet" ]; then
  echo "installing ${pins[*]} into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  installed || { echo "the pinned versions did not install into $venv" >&2; exit 1; }
fi
echo "export SYNCD_TEST_APPS_VENV=$venv"

#!/usr/bin/env bash
# The whole test suite, as CI runs it: starts a local S3-compatible server
# (moto, from PyPI) on 127.0.0.1 so the S3 hub is tested for real, installs
# the real applications of tests/tests/apps.rs (tests/apps/install.sh), then runs
# every test of the workspace with the release profile (the one the
# benchmarks and acceptance checks build too, so one build serves all).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(.ci/s3-server.sh start)"
trap '.ci/s3-server.sh stop' EXIT
echo "S3 test server: $SYNCD_TEST_S3_ENDPOINT"
# The real applications tests/tests/apps.rs drives (buku, beets), from PyPI.
eval "$(tests/apps/install.sh)"
echo "applications under test: $SYNCD_TEST_APPS_VENV"
cargo test --release --workspace "$@"

#!/usr/bin/env bash
# SDK tests: clients generated from proto/ (not from the Rust code) run a
# nanoAdmin's scenario against a real server, as client teams would:
#
#   sdk-tests/python/  grpcio-tools stubs (generated into a git-ignored dir)
#   sdk-tests/node/    @grpc/grpc-js with @grpc/proto-loader reading proto/
#
# Each scenario bootstraps its own organisation on one fresh database and one
# `usermgmt serve` on a free port; this script prints
# `sdk-tests: N passed, M failed` (N and M count scenarios).
#
# Needs: PostgreSQL on 127.0.0.1:5432 with trust auth (user postgres), psql,
# python3 (with venv), node and npm, grpcurl and jq (for the readiness check),
# and target/debug/usermgmt (built when missing). Installs the pinned
# packages into sdk-tests/python/.venv and sdk-tests/node/node_modules.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

tag=sdk-tests
database="usermgmt_sdk_$$"
venv=sdk-tests/python/.venv
# shellcheck source=scripts/lib/test-server.sh
source scripts/lib/test-server.sh
require_tools grpcurl jq psql python3 node npm

# --- 1. The clients' dependencies and the generated Python SDK. -----------
say "installing the Python client's dependencies into $venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r sdk-tests/python/requirements.txt
PYTHON="$venv/bin/python" bash sdk-tests/python/generate.sh

say "installing the Node client's dependencies (npm ci)"
npm ci --prefix sdk-tests/node --no-audit --no-fund --loglevel=error

# --- 2. A server on a fresh database and a free port. ---------------------
export USERMGMT_BIN="$binary"
start_server

# --- 3. The scenarios. ----------------------------------------------------
passed=0
failed=0
run_scenario() {
    local name=$1
    shift
    say "--- $name"
    if "$@" </dev/null; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        printf 'sdk-tests: the %s scenario failed\n' "$name" >&2
    fi
}
run_scenario python "$venv/bin/python" sdk-tests/python/scenario.py "$address"
run_scenario node node sdk-tests/node/scenario.js "$address"

echo "sdk-tests: $passed passed, $failed failed"
((failed == 0))

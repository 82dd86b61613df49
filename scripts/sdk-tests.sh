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

pg_base=postgres://postgres@127.0.0.1:5432
database="usermgmt_sdk_$$"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
/*) ;;
*) target_dir="$PWD/$target_dir" ;;
esac
binary="$target_dir/debug/usermgmt"
startup_timeout_secs=30
venv=sdk-tests/python/.venv

say() { printf 'sdk-tests: %s\n' "$*"; }
die() {
    printf 'sdk-tests: FAILED: %s\n' "$*" >&2
    exit 1
}

for tool in grpcurl jq psql python3 node npm; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [[ ! -x "$binary" ]]; then
    say "$binary is missing: building it"
    cargo build --locked --bin usermgmt
fi

work="$(mktemp -d)"
server_pid=""

psql_admin() {
    PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -q -X -c "$1"
}

cleanup() {
    local status=$?
    set +e
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    if [[ $status -ne 0 && -s "$work/server.log" ]]; then
        printf 'sdk-tests: the server log (last 50 lines):\n' >&2
        tail -n 50 "$work/server.log" >&2
    fi
    psql_admin "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. The clients' dependencies and the generated Python SDK. -----------
say "installing the Python client's dependencies into $venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r sdk-tests/python/requirements.txt
PYTHON="$venv/bin/python" bash sdk-tests/python/generate.sh

say "installing the Node client's dependencies (npm ci)"
npm ci --prefix sdk-tests/node --no-audit --no-fund --loglevel=error

# --- 2. A server on a fresh database and a free port. ---------------------
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
address="127.0.0.1:$port"
export DATABASE_URL="$pg_base/$database"
export USERMGMT_BIN="$binary"
psql_admin "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)"

say "starting usermgmt on $address with database $database"
"$binary" serve --listen "$address" >"$work/server.log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + startup_timeout_secs))
until grpcurl -plaintext -max-time 2 "$address" grpc.health.v1.Health/Check 2>/dev/null |
    jq -e '.status == "SERVING"' >/dev/null 2>&1; do
    kill -0 "$server_pid" 2>/dev/null || die "the server exited before it was SERVING"
    ((SECONDS < deadline)) || die "the server was not SERVING within ${startup_timeout_secs}s"
    sleep 0.3
done
say "the server is SERVING"

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

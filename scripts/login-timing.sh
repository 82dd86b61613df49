#!/usr/bin/env bash
# Measures whether a wrong password takes longer to answer for an email that
# has an account than for one that has none (the review's measurement, see
# docs/security.md): a fresh server on a fresh database, the login limits off
# (so that 200 failures for one email are not refused), then `login-timing`
# (crates/loadgen/src/bin/login-timing.rs): alternating pairs and a sign test.
# Extra arguments go to login-timing, e.g. `scripts/login-timing.sh --pairs 400`.
# TIMING_BIN=DIR takes usermgmt and login-timing from DIR instead of
# target/debug (e.g. a build of another commit kept aside, to compare).
# Not part of `cargo test`: it times things.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n ${TIMING_BIN:-} ]]; then
    BIN=$TIMING_BIN
else
    BIN=${CARGO_TARGET_DIR:-target}/debug
    cargo build --locked --bin usermgmt -p usermgmt >/dev/null
    cargo build --locked -p loadgen --bin login-timing >/dev/null
fi
[[ -x $BIN/usermgmt && -x $BIN/login-timing ]] || { echo "$BIN has no usermgmt and login-timing" >&2; exit 1; }

DB="usermgmt_timing_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER=
cleanup() {
    if [[ -n $SERVER ]]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

USERMGMT_LOG=warn $BIN/usermgmt bootstrap --organisation Timing --email timing@example.com \
    --password 'timing password 1' >/dev/null
USERMGMT_LOG=warn $BIN/usermgmt serve --listen "127.0.0.1:$PORT" \
    --login-rate-per-email 0 --login-rate-per-peer 0 --login-failures-per-email-per-hour 0 &
SERVER=$!
for _ in $(seq 100); do
    USERMGMT_LOG=error $BIN/usermgmt healthcheck --url "http://127.0.0.1:$PORT" >/dev/null 2>&1 && break
    sleep 0.1
done
$BIN/login-timing --addr "http://127.0.0.1:$PORT" --email timing@example.com "$@"

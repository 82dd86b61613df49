#!/usr/bin/env bash
# Runs the load generator against a fresh release server on a fresh database
# (loopback only, bounded in time). Extra arguments go to loadgen, e.g.
#   scripts/bench.sh --scenarios health,authorize_token --in-flight 64
# Set BENCH_SERVE_ARGS for extra `usermgmt serve` flags, BENCH_SEED_USERS to
# give the organisation that many more users first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=target/release
[[ -x $BIN/usermgmt && -x $BIN/loadgen ]] || cargo build --release --locked --bin usermgmt --bin loadgen
DB="usermgmt_bench_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER=""
cleanup() {
    [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

PASSWORD='bench password 1'
BOOT=$(USERMGMT_LOG=warn $BIN/usermgmt bootstrap --organisation Bench --email bench@example.com --password "$PASSWORD")
API_KEY=$(echo "$BOOT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
ORG=$(echo "$BOOT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["organisation_id"])')
SERVICE_KEY=$(USERMGMT_LOG=warn $BIN/usermgmt service register --name bench |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["service_key"])')
psql -qh 127.0.0.1 -U postgres -d "$DB" -c 'UPDATE organisations SET secure_playback = true' >/dev/null
if [[ -n ${BENCH_SEED_USERS:-} ]]; then
    USERMGMT_LOG=warn $BIN/usermgmt seed --organisation-id "$ORG" --users "$BENCH_SEED_USERS"
fi

# shellcheck disable=SC2086
USERMGMT_LOG=warn $BIN/usermgmt serve --listen "127.0.0.1:$PORT" ${BENCH_SERVE_ARGS:-} &
SERVER=$!
$BIN/loadgen --addr "http://127.0.0.1:$PORT" --email bench@example.com --password "$PASSWORD" \
    --service-key "$SERVICE_KEY" --api-key "$API_KEY" --server-pid "$SERVER" --wait-serving "$@"

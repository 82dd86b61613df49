#!/usr/bin/env bash
# Runs the load generator against a fresh release server on a fresh database
# (loopback only, bounded in time). Extra arguments go to loadgen, e.g.
#   scripts/bench.sh --scenarios health,authorize_token --in-flight 64
# Set BENCH_SERVE_ARGS for extra `usermgmt serve` flags, BENCH_SEED_USERS to
# give the organisation that many more users first (BENCH_SEED_ORGANISATIONS=M:
# spread over it and M-1 new organisations). BENCH_REPLICAS=N starts N
# `usermgmt serve` replicas of the same database on distinct loopback ports;
# the load goes to the first, and every writer waits for all N caches to
# settle. BENCH_BIN=DIR takes usermgmt and loadgen from DIR instead of the
# target directory (e.g. a copy kept aside, to compare builds);
# BENCH_USERMGMT=FILE takes the server binary (and its operator commands:
# bootstrap, seed, bench-tokens) from FILE, with loadgen still from the
# target directory or BENCH_BIN (one load generator, several server builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$BENCH_BIN
    [[ -x $BIN/loadgen && ( -n ${BENCH_USERMGMT:-} || -x $BIN/usermgmt ) ]] ||
        { echo "BENCH_BIN=$BIN has no usermgmt and loadgen" >&2; exit 1; }
else
    BIN=${CARGO_TARGET_DIR:-target}/release
    if [[ -n ${BENCH_USERMGMT:-} ]]; then
        [[ -x $BIN/loadgen ]] || cargo build --release --locked --bin loadgen
    else
        [[ -x $BIN/usermgmt && -x $BIN/loadgen ]] || cargo build --release --locked --bin usermgmt --bin loadgen
    fi
fi
USERMGMT=${BENCH_USERMGMT:-$BIN/usermgmt}
[[ -x $USERMGMT ]] || { echo "BENCH_USERMGMT=$USERMGMT is not an executable" >&2; exit 1; }
REPLICAS=${BENCH_REPLICAS:-1}
[[ $REPLICAS =~ ^[1-9][0-9]?$ ]] || { echo "BENCH_REPLICAS must be 1 to 99, not $REPLICAS" >&2; exit 1; }
DB="usermgmt_bench_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
# Distinct free loopback ports: all bound at once, then released.
read -r -a PORTS <<<"$(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$((REPLICAS + 1))")"
# The last port serves the first replica's metrics (the users cache's hit rate).
METRICS_PORT=${PORTS[-1]}
unset 'PORTS[-1]'
SERVERS=()
cleanup() {
    local pid
    for pid in "${SERVERS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVERS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

PASSWORD='bench password 1'
BOOT=$(USERMGMT_LOG=warn $USERMGMT bootstrap --organisation Bench --email bench@example.com --password "$PASSWORD")
API_KEY=$(echo "$BOOT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
ORG=$(echo "$BOOT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["organisation_id"])')
SERVICE_KEY=$(USERMGMT_LOG=warn $USERMGMT service register --name bench |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["service_key"])')
psql -qh 127.0.0.1 -U postgres -d "$DB" -c 'UPDATE organisations SET secure_playback = true' >/dev/null
if [[ -n ${BENCH_SEED_USERS:-} ]]; then
    USERMGMT_LOG=warn $USERMGMT seed --organisation-id "$ORG" --users "$BENCH_SEED_USERS" \
        --organisations "${BENCH_SEED_ORGANISATIONS:-1}"
fi

OTHERS=()
for PORT in "${PORTS[@]}"; do
    # shellcheck disable=SC2086
    METRICS_ARGS=()
    [[ $PORT != "${PORTS[0]}" ]] || METRICS_ARGS=(--metrics-listen "127.0.0.1:$METRICS_PORT")
    USERMGMT_LOG=warn $USERMGMT serve --listen "127.0.0.1:$PORT" "${METRICS_ARGS[@]}" ${BENCH_SERVE_ARGS:-} &
    SERVERS+=("$!")
    [[ $PORT == "${PORTS[0]}" ]] || OTHERS+=("http://127.0.0.1:$PORT")
done
# --wait-serving waits until the first and every other replica is SERVING.
PIDS=$(IFS=,; echo "${SERVERS[*]}")
REPLICA_ARGS=()
if ((${#OTHERS[@]})); then
    REPLICA_ARGS=(--other-replicas "$(IFS=,; echo "${OTHERS[*]}")")
fi
$BIN/loadgen --addr "http://127.0.0.1:${PORTS[0]}" --email bench@example.com --password "$PASSWORD" \
    --service-key "$SERVICE_KEY" --api-key "$API_KEY" --server-pid "$PIDS" --wait-serving \
    --usermgmt-bin "$USERMGMT" \
    --metrics-addr "127.0.0.1:$METRICS_PORT" \
    "${REPLICA_ARGS[@]}" "$@"

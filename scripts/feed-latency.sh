#!/usr/bin/env bash
# Measures the change feed's delivery latency: commit to arrival on a watcher
# of the OTHER replica, at a steady write rate, as a ratio to the settle time
# (how long a write waits for the replicas' caches) measured in the same run
# (crates/loadgen/src/bin/feed-latency.rs says how). Two release `usermgmt
# serve` replicas on a fresh database; FEED_LATENCY_RUNS runs (default 3),
# each printed, then the median (min-max) of each figure over the runs.
# Extra arguments go to feed-latency, e.g. `scripts/feed-latency.sh --rate 100`.
# FEED_LATENCY_BIN=DIR takes usermgmt and feed-latency from DIR instead of
# target/release (e.g. target/debug, or a build of another commit kept aside).
# Not part of `cargo test`: it times things.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n ${FEED_LATENCY_BIN:-} ]]; then
    BIN=$FEED_LATENCY_BIN
else
    BIN=${CARGO_TARGET_DIR:-target}/release
    cargo build --release --locked --bin usermgmt -p usermgmt >/dev/null
    cargo build --release --locked -p loadgen --bin feed-latency >/dev/null
fi
[[ -x $BIN/usermgmt && -x $BIN/feed-latency ]] || { echo "$BIN has no usermgmt and feed-latency" >&2; exit 1; }
RUNS=${FEED_LATENCY_RUNS:-3}
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "FEED_LATENCY_RUNS must be 1 to 99, not $RUNS" >&2; exit 1; }

DB="usermgmt_feed_latency_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
read -r FIRST SECOND <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
SERVERS=()
OUT=$(mktemp)
cleanup() {
    local pid
    for pid in "${SERVERS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVERS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$OUT"
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

PASSWORD='feed latency password 1'
USERMGMT_LOG=warn $BIN/usermgmt bootstrap --organisation Latency --email latency@example.com \
    --password "$PASSWORD" >/dev/null
for port in "$FIRST" "$SECOND"; do
    USERMGMT_LOG=warn $BIN/usermgmt serve --listen "127.0.0.1:$port" &
    SERVERS+=($!)
done
for port in "$FIRST" "$SECOND"; do
    for _ in $(seq 100); do
        USERMGMT_LOG=error $BIN/usermgmt healthcheck --url "http://127.0.0.1:$port" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
for run in $(seq "$RUNS"); do
    $BIN/feed-latency --writes "http://127.0.0.1:$FIRST" --watch "http://127.0.0.1:$SECOND" \
        --email latency@example.com --password "$PASSWORD" --json "$@" | tee -a "$OUT"
done
python3 - "$OUT" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"median (min-max) of {len(runs)} runs ({runs[0]['writes']} writes each at {runs[0]['rate']}/s):")
for key in ["delivery_p50_ms", "delivery_p99_ms", "after_answer_p50_ms", "after_answer_p99_ms",
            "settle_p50_ms", "settle_p99_ms", "ratio_p50", "ratio_p99",
            "after_answer_ratio_p50", "after_answer_ratio_p99",
            "answer_settling_p50_ms", "answer_plain_p50_ms"]:
    values = [run[key] for run in runs]
    print(f"  {key:24} {statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})")
EOF

#!/usr/bin/env bash
# Same-organisation writes side by side (issue 26, guarantee 8): health and
# the scenarios issue_playback, issue_playback_orgs, login and login_orgs,
# in interleaved rounds, three runs, each on a fresh database and server
# (scripts/bench-report.py, scripts/bench.sh). Prints req/s, p50 and p99 with
# their ratios to health, as medians (min–max) of the runs.
#
#   scripts/bench-writes.sh [USERMGMT ...]
#
# Each USERMGMT is a server binary (default: target/release/usermgmt); given
# several (before and after a change), they take turns run by run, and each
# is compared with the first. loadgen comes from target/release (built if
# missing) or BENCH_BIN=DIR, the same for every server binary.
#
# Each database: the bootstrap organisation and BENCH_WRITES_ORGANISATIONS-1
# seeded ones (default 16 in all), each with 64 seeded users whose password
# is `usermgmt seed`'s. The server's per-peer login limit is off (every call
# comes from one address); the per-email limits keep their defaults.
# BENCH_WRITES_RUNS (3), BENCH_WRITES_IN_FLIGHT (8: at most 8, the server's
# default bound of password hashes queued per caller), BENCH_WRITES_ROUNDS
# (3) and BENCH_WRITES_SECONDS (2, measured per round after 1 s of warm-up)
# change the method; extra loadgen flags go after `--`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILDS=()
while (($#)); do
    if [[ $1 == -- ]]; then
        shift
        break
    fi
    [[ -x $1 ]] || { echo "$1 is not an executable usermgmt" >&2; exit 1; }
    BUILDS+=(--usermgmt "$(realpath "$1")")
    shift
done

ORGANISATIONS=${BENCH_WRITES_ORGANISATIONS:-16}
[[ $ORGANISATIONS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_WRITES_ORGANISATIONS must be a positive number" >&2; exit 1; }
export BENCH_SEED_USERS=$((ORGANISATIONS * 64))
export BENCH_SEED_ORGANISATIONS=$ORGANISATIONS
export BENCH_SERVE_ARGS="--login-rate-per-peer 0 ${BENCH_SERVE_ARGS:-}"
export BENCH_REPLICAS=1

exec scripts/bench-report.py --runs "${BENCH_WRITES_RUNS:-3}" "${BUILDS[@]}" -- \
    --in-flight "${BENCH_WRITES_IN_FLIGHT:-8}" --rounds "${BENCH_WRITES_ROUNDS:-3}" \
    --duration-secs "${BENCH_WRITES_SECONDS:-2}" \
    --organisations "$ORGANISATIONS" --login-users 8 --email-prefix seed- \
    --scenarios health,issue_playback,issue_playback_orgs,login,login_orgs "$@"

# Shared by scripts/smoke.sh and scripts/sdk-tests.sh (sourced, not run): a
# `usermgmt serve` on a fresh database and a free port, torn down on exit.
#
# The caller sets `tag` (the prefix of its messages) and `database` (the name
# of the fresh database) before sourcing, and calls `start_server` when ready
# (with extra `serve` flags in the array `server_args`, if any); `address`,
# `DATABASE_URL`, `binary` and `work` are set for it.

pg_base=postgres://postgres@127.0.0.1:5432
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
/*) ;;
*) target_dir="$PWD/$target_dir" ;;
esac
bin_dir="$target_dir/debug"
binary="$bin_dir/usermgmt"
startup_timeout_secs=30

say() { printf '%s: %s\n' "$tag" "$*"; }
die() {
    printf '%s: FAILED: %s\n' "$tag" "$*" >&2
    exit 1
}

require_tools() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is not installed"
    done
}

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
        printf '%s: the server log (last 50 lines):\n' "$tag" >&2
        tail -n 50 "$work/server.log" >&2
    fi
    psql_admin "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts the server on a fresh database and a free port; returns once it is
# SERVING.
start_server() {
    local port deadline
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    address="127.0.0.1:$port"
    export DATABASE_URL="$pg_base/$database"
    psql_admin "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)"

    say "starting usermgmt on $address with database $database"
    "$binary" serve --listen "$address" ${server_args[@]+"${server_args[@]}"} >"$work/server.log" 2>&1 &
    server_pid=$!

    deadline=$((SECONDS + startup_timeout_secs))
    until grpcurl -plaintext -max-time 2 "$address" grpc.health.v1.Health/Check 2>/dev/null |
        jq -e '.status == "SERVING"' >/dev/null 2>&1; do
        kill -0 "$server_pid" 2>/dev/null || die "the server exited before it was SERVING"
        ((SECONDS < deadline)) || die "the server was not SERVING within ${startup_timeout_secs}s"
        sleep 0.3
    done
    say "the server is SERVING"
}

#!/usr/bin/env bash
# End-to-end smoke test: runs the README's own examples against a real server.
#
# README.md marks the examples to run with HTML comments:
#
#   <!-- smoke:begin -->
#   ```bash
#   grpcurl -plaintext localhost:50051 list
#   ```
#   <!-- smoke:end -->
#
# Every ```bash block between a begin and an end marker is run, in README
# order, in ONE bash process (`set -euo pipefail`, commands echoed), so a later
# block sees the variables of an earlier one (e.g. $TOKEN). There may be any
# number of such regions. Inside them, `localhost:50051` is replaced by the
# address of a server started here on a fresh database, `usermgmt` is the
# freshly built binary (target/debug is first on PATH), and DATABASE_URL names
# that database.
#
# It also checks that README.md documents every flag and environment variable
# that `usermgmt --help` lists for each command.
#
# Needs: PostgreSQL on 127.0.0.1:5432 with trust auth (user postgres), psql,
# grpcurl, jq, python3, and target/debug/usermgmt (built when missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readme=README.md
tag=smoke
database="usermgmt_smoke_$$"
# shellcheck source=scripts/lib/test-server.sh
source scripts/lib/test-server.sh
require_tools grpcurl jq psql python3

# --- 1. The README documents every setting --help lists. -----------------
missing=()
for command in "" serve migrate bootstrap; do
    # shellcheck disable=SC2086 # an empty $command means the top-level help
    help="$("$binary" $command --help)"
    while read -r item; do
        [[ -z "$item" || "$item" == --help || "$item" == --version ]] && continue
        grep -qF -- "\`$item\`" "$readme" || missing+=("$item (usermgmt $command --help)")
    done < <({
        sed -nE 's/^ +(-[A-Za-z], )?(--[a-z0-9-]+).*/\2/p' <<<"$help"
        grep -oE '\[env: [A-Z0-9_]+' <<<"$help" | sed 's/^\[env: //'
    } | sort -u)
done
if ((${#missing[@]} > 0)); then
    printf 'smoke: README.md does not document: %s\n' "${missing[@]}" >&2
    die "document every flag and environment variable in README.md's configuration table"
fi
say "README.md documents every flag and environment variable of --help"

# --- 2. The README's examples, extracted. --------------------------------
python3 - "$readme" "$work/blocks" <<'PY'
import os
import re
import sys

readme, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir)
lines = open(readme, encoding="utf-8").read().splitlines()
inside = False
fence = None
blocks = []
for number, line in enumerate(lines, start=1):
    stripped = line.strip()
    if fence is None:
        if stripped == "<!-- smoke:begin -->":
            if inside:
                sys.exit(f"{readme}:{number}: smoke:begin inside a smoke region")
            inside = True
            continue
        if stripped == "<!-- smoke:end -->":
            if not inside:
                sys.exit(f"{readme}:{number}: smoke:end without smoke:begin")
            inside = False
            continue
        match = re.match(r"^(`{3,}|~{3,})\s*(\S*)", stripped)
        if match:
            fence = match.group(1)
            if inside and match.group(2) == "bash":
                blocks.append((number, []))
                collecting = True
            else:
                collecting = False
            continue
    else:
        if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
            fence = None
            continue
        if inside and collecting:
            blocks[-1][1].append(line)
if inside:
    sys.exit(f"{readme}: a smoke region is not closed with <!-- smoke:end -->")
if fence is not None:
    sys.exit(f"{readme}: a code block is not closed")
for index, (number, body) in enumerate(blocks, start=1):
    with open(os.path.join(out_dir, f"{index:03d}.sh"), "w", encoding="utf-8") as f:
        f.write(f"# {readme}:{number}\n")
        f.write("\n".join(body) + "\n")
PY
shopt -s nullglob
blocks=("$work"/blocks/*.sh)
shopt -u nullglob
total=${#blocks[@]}
((total > 0)) || die "no \`\`\`bash block between <!-- smoke:begin --> and <!-- smoke:end --> in $readme"
say "$total example blocks found in $readme"

# --- 3. A server on a fresh database and a free port. --------------------
start_server

# --- 4. The examples, in one bash process. --------------------------------
script="$work/smoke-run.sh"
progress="$work/passed"
echo 0 >"$progress"
{
    echo 'set -euo pipefail'
    index=0
    for block in "${blocks[@]}"; do
        index=$((index + 1))
        origin="$(head -n 1 "$block" | sed 's/^# //')"
        printf '\necho %q >&2\n' "smoke: --- block $index/$total ($origin)"
        echo 'set -x'
        tail -n +2 "$block" | sed "s/localhost:50051/$address/g"
        echo '{ set +x; } 2>/dev/null'
        printf 'echo %d >%q\n' "$index" "$progress"
    done
} >"$script"

status=0
PATH="$bin_dir:$PATH" bash "$script" </dev/null || status=$?
passed="$(cat "$progress")"
if [[ $status -ne 0 || $passed -ne $total ]]; then
    ((status != 0)) || status=1
    printf 'smoke: block %d of %d failed (exit status %d); %d not run\n' \
        "$((passed + 1))" "$total" "$status" "$((total - passed - 1))" >&2
    echo "smoke: $passed passed, 1 failed"
    exit "$status"
fi
echo "smoke: $total passed, 0 failed"

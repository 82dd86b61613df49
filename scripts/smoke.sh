#!/usr/bin/env bash
# End-to-end smoke test: runs the documentation's own examples against a real
# server: README.md's, then those of every page of docs/ (api.md first, the
# others in name order), as one script.
#
# A page marks the examples to run with HTML comments:
#
#   <!-- smoke:begin -->
#   ```bash
#   grpcurl -plaintext localhost:50051 list
#   ```
#   <!-- smoke:end -->
#
# Every ```bash block between a begin and an end marker is run, in page
# order, in ONE bash process (`set -euo pipefail`, commands echoed), so a later
# block sees the variables of an earlier one (e.g. $TOKEN). There may be any
# number of such regions. Inside them, `localhost:50051` is replaced by the
# address of a server started here on a fresh database, `usermgmt` is the
# freshly built binary (target/debug is first on PATH), and DATABASE_URL names
# that database.
#
# It also checks that docs/operations.md documents every flag and environment
# variable that `usermgmt --help` lists for each command.
#
# Needs: PostgreSQL on 127.0.0.1:5432 with trust auth (user postgres), psql,
# grpcurl, jq, python3, and target/debug/usermgmt (built when missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The settings' reference, and the pages whose examples run, in order.
settings_page=docs/operations.md
pages=(README.md docs/api.md)
for page in docs/*.md; do
    [[ " ${pages[*]} " == *" $page "* ]] || pages+=("$page")
done
tag=smoke
database="usermgmt_smoke_$$"
# shellcheck source=scripts/lib/test-server.sh
source scripts/lib/test-server.sh
require_tools grpcurl jq psql python3

# --- 1. The settings page documents every setting --help lists. --------
missing=()
for command in "" serve migrate bootstrap; do
    # shellcheck disable=SC2086 # an empty $command means the top-level help
    help="$("$binary" $command --help)"
    while read -r item; do
        [[ -z "$item" || "$item" == --help || "$item" == --version ]] && continue
        grep -qF -- "\`$item\`" "$settings_page" || missing+=("$item (usermgmt $command --help)")
    done < <({
        sed -nE 's/^ +(-[A-Za-z], )?(--[a-z0-9-]+).*/\2/p' <<<"$help"
        grep -oE '\[env: [A-Z0-9_]+' <<<"$help" | sed 's/^\[env: //'
    } | sort -u)
done
if ((${#missing[@]} > 0)); then
    printf 'smoke: %s does not document: %s\n' "$settings_page" "${missing[@]}" >&2
    die "document every flag and environment variable in $settings_page's configuration table"
fi
say "$settings_page documents every flag and environment variable of --help"

# --- 2. The pages' examples, extracted. ---------------------------------
python3 - "$work/blocks" "${pages[@]}" <<'PY'
import os
import re
import sys

out_dir, pages = sys.argv[1], sys.argv[2:]
os.makedirs(out_dir)


def blocks_of(page):
    """The bash blocks of `page`'s smoke regions, with their line numbers."""
    lines = open(page, encoding="utf-8").read().splitlines()
    inside = False
    fence = None
    collecting = False
    blocks = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if fence is None:
            if stripped == "<!-- smoke:begin -->":
                if inside:
                    sys.exit(f"{page}:{number}: smoke:begin inside a smoke region")
                inside = True
                continue
            if stripped == "<!-- smoke:end -->":
                if not inside:
                    sys.exit(f"{page}:{number}: smoke:end without smoke:begin")
                inside = False
                continue
            match = re.match(r"^(`{3,}|~{3,})\s*(\S*)", stripped)
            if match:
                fence = match.group(1)
                collecting = inside and match.group(2) == "bash"
                if collecting:
                    blocks.append((number, []))
                continue
        else:
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                fence = None
                continue
            if collecting:
                blocks[-1][1].append(line)
    if inside:
        sys.exit(f"{page}: a smoke region is not closed with <!-- smoke:end -->")
    if fence is not None:
        sys.exit(f"{page}: a code block is not closed")
    return blocks


index = 0
for page in pages:
    for number, body in blocks_of(page):
        index += 1
        with open(os.path.join(out_dir, f"{index:03d}.sh"), "w", encoding="utf-8") as f:
            f.write(f"# {page}:{number}\n")
            f.write("\n".join(body) + "\n")
PY
shopt -s nullglob
blocks=("$work"/blocks/*.sh)
shopt -u nullglob
total=${#blocks[@]}
((total > 0)) || die "no \`\`\`bash block between <!-- smoke:begin --> and <!-- smoke:end --> in ${pages[*]}"
say "$total example blocks found in ${pages[*]}"

# --- 3. A server on a fresh database and a free port, mailing to a local ---
# SMTP server (tests/smtp_sink.py, aiosmtpd), whose messages the examples
# read with `mail_token`.
export MAIL_DIR="$work/mail"
mkdir -p "$MAIL_DIR"
coproc SMTP_SINK { exec python3 tests/smtp_sink.py --dir "$MAIL_DIR"; }
read -r -t 30 sink_line <&"${SMTP_SINK[0]}" || die "the SMTP sink did not start (is aiosmtpd installed?)"
smtp_address="${sink_line#listening on }"
say "SMTP sink on $smtp_address"
server_args=(--smtp-url "smtp://$smtp_address" --public-url https://dashboard.example.com)
start_server

# mail_token ADDRESS: the token of the link in the newest mail to ADDRESS,
# once one has arrived (at most 30 s).
mail_token() {
    python3 - "$MAIL_DIR" "$1" <<'PY'
import email
import pathlib
import re
import sys
import time

directory, address = pathlib.Path(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 30
while True:
    found = []
    for path in sorted(directory.glob("*.eml"), key=lambda p: int(p.stem)):
        message = email.message_from_bytes(path.read_bytes())
        if address in message.get("X-Envelope-To", ""):
            found.append(message)
    if found:
        break
    if time.monotonic() > deadline:
        sys.exit(f"no mail to {address} in {directory}")
    time.sleep(0.05)
for part in found[-1].walk():
    if part.get_content_type() == "text/plain":
        text = part.get_payload(decode=True).decode()
        print(re.search(r"token=([A-Za-z0-9_-]+)", text).group(1))
        break
PY
}
export -f mail_token

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

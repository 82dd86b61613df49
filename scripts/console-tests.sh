#!/usr/bin/env bash
# The console's browser suite (console/e2e/): builds the console as a
# newcomer would (npm ci, then `npm run build`: the client generated from
# proto/, tsc strict, the esbuild bundle into console/dist), then runs
# Playwright's specs in Debian's Chromium against real `usermgmt serve`
# processes, each on a fresh PostgreSQL database (console/e2e/fixtures.ts).
#
# Nothing may download a browser: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, the
# specs launch /usr/bin/chromium (or $CHROMIUM), and this script fails when
# Playwright's browser cache appeared or changed during the run.
#
#   bash scripts/console-tests.sh                        # the whole suite
#   bash scripts/console-tests.sh e2e/security.spec.ts   # one spec (arguments go to `playwright test`)
#
# Needs: PostgreSQL on 127.0.0.1:5432 with trust auth (user postgres), node
# (20 or later) and npm, Debian's chromium, and target/debug/usermgmt (built when missing).
# CONSOLE_TEST_WORKERS sets Playwright's workers (2 by default).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

tag=console-tests
say() { printf '%s: %s\n' "$tag" "$*"; }
die() {
    printf '%s: FAILED: %s\n' "$tag" "$*" >&2
    exit 1
}

for tool in node npm; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
# Playwright needs Node.js 20 or later (Debian 12's own nodejs is 18).
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js $(node --version) is too old: Playwright needs 20 or later"
chromium="${CHROMIUM:-/usr/bin/chromium}"
[[ -x "$chromium" ]] || die "$chromium is missing: install Debian's chromium (apt-get install chromium)"
# Debian's wrapper script complains on stderr about its memory check; the
# version is on stdout.
say "$("$chromium" --version 2>/dev/null)"

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
# Where Playwright would put a browser it downloads: its cache, and the
# package's own directory when PLAYWRIGHT_BROWSERS_PATH=0.
browser_caches=("${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}"
    console/node_modules/playwright-core/.local-browsers)
browser_cache_listing() {
    local dir
    for dir in "${browser_caches[@]}"; do
        [[ "$dir" == 0 ]] && continue
        [[ -e "$dir" ]] && find "$dir" -maxdepth 2 -printf '%p %T@\n'
    done | sort
    return 0
}
caches_before="$(browser_cache_listing)"

started=$SECONDS

say "installing the console's dependencies (npm ci)"
npm ci --prefix console --no-audit --no-fund --loglevel=error

say "building the console (generate, tsc strict, esbuild)"
npm run --prefix console --silent build

target_dir="${CARGO_TARGET_DIR:-target}"
if [[ ! -x "$target_dir/debug/usermgmt" ]]; then
    say "$target_dir/debug/usermgmt is missing: building it"
    cargo build --locked --bin usermgmt
fi

workers="${CONSOLE_TEST_WORKERS:-2}"
say "running the browser suite ($workers workers)"
status=0
(cd console && CHROMIUM="$chromium" npx --no-install playwright test --workers "$workers" "$@") || status=$?

caches_after="$(browser_cache_listing)"
if [[ "$caches_after" != "$caches_before" ]]; then
    printf '%s\n' "$caches_after" >&2
    die "something downloaded a browser (Playwright's browser cache changed during the run)"
fi
say "no browser was downloaded"

((status == 0)) || die "the browser suite failed (exit status $status)"
say "passed in $((SECONDS - started)) s (install, build and suite)"

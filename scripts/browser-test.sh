#!/usr/bin/env bash
# End-to-end test of the web playground in a real browser: Debian's headless Chromium
# driven by playwright-core (tests/browser/). Installs what it needs when missing:
# chromium (apt-get) and the node modules (npm ci, kept in tests/browser/node_modules
# and redone only when package-lock.json changes). Never downloads a browser build.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    echo "==> installing chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # fonts-liberation so the page's text renders as people see it.
    apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is needed for the browser test" >&2; exit 1; }
done

browser_dir=tests/browser
stamp="$browser_dir/node_modules/.package-lock.sha256"
want="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> npm ci ($browser_dir)"
    (cd "$browser_dir" && npm ci --no-audit --no-fund)
    echo "$want" >"$stamp"
fi

# The test command hands over the binary its `cargo test` just built (PIPELET_BIN);
# building `-p pipelet` alone would resolve other features and rebuild dependencies.
if [ -z "${PIPELET_BIN:-}" ] || [ ! -x "$PIPELET_BIN" ]; then
    echo "==> cargo build -p pipelet"
    cargo build -p pipelet --locked
fi

echo "==> browser test (headless chromium)"
export CHROMIUM
node --test "$browser_dir/playground.test.mjs"

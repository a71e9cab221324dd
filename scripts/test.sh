#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind: installs what the tests need
# (ffmpeg for ffprobe, chromium and node modules for the browser test, nginx and
# docker-compose for the deployment check), checks formatting and lints, then runs every
# test: Rust (SQLite and PostgreSQL stores, HTTP API, real-process crash tests), the web
# playground in headless Chromium, the deployment files, and the Wan runner on CPU with
# tiny models.
set -euo pipefail
cd "$(dirname "$0")/.."

# `step NAME`: announces a step and times it; the summary at exit says where the time
# went (also when a step fails).
step_names=()
step_starts=()
step() {
    echo "==> $*"
    step_names+=("$*")
    step_starts+=("$SECONDS")
}
step_summary() {
    local status=$?
    local i end
    echo "==> time per step (s)"
    for i in "${!step_names[@]}"; do
        end=${step_starts[$((i + 1))]:-$SECONDS}
        printf '%6d  %s\n' "$((end - step_starts[i]))" "${step_names[i]}"
    done
    printf '%6d  total\n' "$SECONDS"
    return "$status"
}
trap step_summary EXIT

# A fresh CI clone gains nothing from incremental builds; they only cost disk and time.
# Its compiled dependencies are kept between runs in a build folder outside the clone
# (cargo names them by the path relative to the workspace, so every clone reuses them);
# the folder is emptied when it passes PIPELET_TARGET_CACHE_GB (default 16) and is
# simply rebuilt on a machine without it.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
    if [ -z "${CARGO_TARGET_DIR:-}" ]; then
        cache="${PIPELET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipelet}"
        export CARGO_TARGET_DIR="$cache/cargo-target"
        mkdir -p "$CARGO_TARGET_DIR"
        used_gb=$(du -s --block-size=1G "$CARGO_TARGET_DIR" | cut -f1)
        if [ "$used_gb" -gt "${PIPELET_TARGET_CACHE_GB:-16}" ]; then
            echo "==> the cached build folder holds ${used_gb} GB; emptying it"
            rm -rf "$CARGO_TARGET_DIR"
            mkdir -p "$CARGO_TARGET_DIR"
        fi
    fi
fi
# The binary the script-driven tests run.
PIPELET_BIN="${CARGO_TARGET_DIR:-target}/debug/pipelet"
case "$PIPELET_BIN" in /*) ;; *) PIPELET_BIN="$PWD/$PIPELET_BIN" ;; esac

need_apt=()
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
if [ ${#need_apt[@]} -gt 0 ]; then
    step "installing ${need_apt[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "moto (S3 test server, cached in ~/.cache/pipelet)"
source scripts/s3-env.sh

step "standardwebhooks (independent webhook signature check, cached in ~/.cache/pipelet)"
source scripts/webhook-verify-env.sh

step "cargo test"
# The slow real-process suites (kill -9, restarts, PostgreSQL stopped under load) are
# skipped by a plain `cargo test`; the full test command runs them.
export PIPELET_SLOW_TESTS=1
cargo test --workspace --locked

step "browser test"
PIPELET_BIN="$PIPELET_BIN" ./scripts/browser-test.sh

# The real Python fal-client (cached virtualenv) through nginx with TLS: submit with
# webhook_url (`?fal_webhook=`), status, result and the signed webhooks.
step "fal-client test"
PIPELET_BIN="$PIPELET_BIN" ./scripts/fal-client-test.sh

# The deployment files (deploy/, Dockerfile): nginx in front of the binary just built,
# the systemd units, the compose and Kubernetes schemas; the image only where a Docker
# engine answers.
step "deploy check"
PIPELET_BIN="$PIPELET_BIN" ./scripts/deploy-check.sh

# The Wan runner: Python tests and server → worker → runner end to end with tiny
# models (builds a cached virtualenv with torch and diffusers on first use).
step "wan test"
./scripts/wan-test.sh

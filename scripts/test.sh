#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind: installs what the tests need
# (ffmpeg for ffprobe, chromium and node modules for the browser test, nginx and
# docker-compose for the deployment check), checks formatting and lints, then runs every
# test: Rust (SQLite and PostgreSQL stores, HTTP API, real-process crash tests), the web
# playground in headless Chromium, the deployment files, and the Wan runner on CPU with
# tiny models.
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh CI clone gains nothing from incremental builds; they only cost disk and time.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

need_apt=()
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing ${need_apt[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> moto (S3 test server, cached in ~/.cache/pipelet)"
source scripts/s3-env.sh

echo "==> standardwebhooks (independent webhook signature check, cached in ~/.cache/pipelet)"
source scripts/webhook-verify-env.sh

echo "==> cargo test"
cargo test --workspace --locked

./scripts/browser-test.sh

# The real Python fal-client (cached virtualenv) through nginx with TLS: submit with
# webhook_url (`?fal_webhook=`), status, result and the signed webhooks.
PIPELET_BIN=target/debug/pipelet ./scripts/fal-client-test.sh

# The deployment files (deploy/, Dockerfile): nginx in front of the binary just built,
# the systemd units, the compose and Kubernetes schemas; the image only where a Docker
# engine answers.
PIPELET_BIN=target/debug/pipelet ./scripts/deploy-check.sh

# The Wan runner: Python tests and server → worker → runner end to end with tiny
# models (builds a cached virtualenv with torch and diffusers on first use).
./scripts/wan-test.sh

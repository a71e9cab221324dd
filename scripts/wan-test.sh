#!/usr/bin/env bash
# The Wan 2.2 runner's tests, on a machine with no GPU and no access to the model hub:
#
#  1. a Python virtualenv for runners/wan, cached OUTSIDE the repo and keyed by the hash
#     of runners/wan/requirements*.txt and the Python version
#     (~/.cache/pipelet/wan-venv-<hash>; the first build pip-installs torch & co:
#     about 2 minutes and 6 GB; later runs reuse it);
#  2. tiny random-weight Wan 2.2 models (runners/wan/make_tiny_model.py), built once
#     into the cache, keyed by the script and the environment;
#  3. the runner's own tests (pytest, runners/wan/tests: protocol, MP4 writer, LoRA
#     layouts, Lightning sampling, memory plan, models pull/check, generation);
#  4. scripts/gpu-check.sh --dry-run: the GPU check's plumbing at tiny sizes on CPU;
#  5. the Rust tests of the wan runner: the supervisor against a stand-in runner, and
#     `pipelet serve` → `pipelet worker --runner wan` end to end with the tiny models
#     (plus `pipelet models pull|check` and the memory refusal at start).
#
# Environment: PYTHON (the base interpreter, default python3), PIPELET_CACHE_DIR (default
# ~/.cache/pipelet). Extra arguments go to the Rust test binary (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffprobe >/dev/null 2>&1; then
    echo "==> installing ffmpeg (apt-get) for ffprobe"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

# The virtualenv (PY) and the tiny models (MODELS), cached outside the repo.
. scripts/wan-env.sh

export HF_HUB_OFFLINE=1
export PIPELET_WAN_PYTHON="$PY"
export PIPELET_WAN_TINY_MODELS="$MODELS"

echo "==> runner tests (pytest runners/wan/tests)"
started=$SECONDS
(cd "$RUNNER" && "$PY" -m pytest -q -p no:cacheprovider tests)
echo "    $((SECONDS - started)) s"

echo "==> scripts/gpu-check.sh --dry-run (its non-CUDA parts, tiny sizes on CPU)"
started=$SECONDS
scripts/gpu-check.sh --dry-run --out "$CACHE/gpu-check-dry-run.md" >/dev/null
grep -q '^| fp8 weights, fp32 compute | 48x32x5 | whole |' "$CACHE/gpu-check-dry-run.md" || {
    echo "gpu-check --dry-run made no table:" >&2; cat "$CACHE/gpu-check-dry-run.md" >&2; exit 1; }
echo "    $((SECONDS - started)) s"

echo "==> wan runner supervision (cargo test -p pipelet-runner --test it wan_supervision)"
started=$SECONDS
cargo test -p pipelet-runner --test it wan_supervision
echo "    $((SECONDS - started)) s"

echo "==> end to end: pipelet serve + pipelet worker --runner wan (cargo test -p pipelet --test it wan::)"
started=$SECONDS
# One at a time: each test runs a server, a worker and a PyTorch process. Only the wan
# tests (module `wan` of the one test binary), or the ones named on the command line.
cargo test -p pipelet --test it -- --include-ignored --test-threads=1 "${@:-wan::}"
echo "    $((SECONDS - started)) s"

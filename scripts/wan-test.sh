#!/usr/bin/env bash
# The Wan 2.2 runner's tests, on a machine with no GPU and no access to the model hub:
#
#  1. a Python virtualenv for runners/wan, cached OUTSIDE the repo and keyed by the hash
#     of runners/wan/requirements*.txt and the Python version
#     (~/.cache/pipelet/wan-venv-<hash>; the first build pip-installs torch & co:
#     about 2 minutes and 6 GB; later runs reuse it);
#  2. tiny random-weight Wan 2.2 models (runners/wan/make_tiny_model.py), built once
#     into the cache, keyed by the script and the environment;
#  3. the runner's own tests (pytest, runners/wan/tests);
#  4. the Rust tests of the wan runner: the supervisor against a stand-in runner, and
#     `pipelet serve` → `pipelet worker --runner wan` end to end with the tiny models.
#
# Environment: PYTHON (the base interpreter, default python3), PIPELET_CACHE_DIR (default
# ~/.cache/pipelet). Extra arguments go to the Rust test binary (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNNER=runners/wan
CACHE="${PIPELET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipelet}"
BASE_PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

if ! command -v ffprobe >/dev/null 2>&1; then
    echo "==> installing ffmpeg (apt-get) for ffprobe"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

hash_of() { sha256sum | cut -c1-16; }
KEY=$( { cat "$RUNNER/requirements.txt" "$RUNNER/requirements-test.txt"
         "$BASE_PYTHON" -c 'import sys; print(sys.version)'; } | hash_of)
VENV="$CACHE/wan-venv-$KEY"

# One build at a time per cache, even with several checkouts testing at once.
exec 9>"$CACHE/wan.lock"
flock 9

if [ ! -f "$VENV/.complete" ]; then
    echo "==> building the runner's virtualenv in $VENV (first run: ~2 min, ~6 GB)"
    started=$SECONDS
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$RUNNER/requirements.txt" -r "$RUNNER/requirements-test.txt"
    touch "$VENV/.complete"
    echo "    installed in $((SECONDS - started)) s; $(du -sh "$VENV" | cut -f1)"
fi
PY="$VENV/bin/python"

MODELS_KEY=$( { cat "$RUNNER/make_tiny_model.py"; echo "$KEY"; } | hash_of)
MODELS="$CACHE/wan-tiny-$MODELS_KEY"
if [ ! -f "$MODELS/.complete" ]; then
    echo "==> building the tiny Wan 2.2 models in $MODELS"
    rm -rf "$MODELS" "$MODELS.tmp"
    HF_HUB_OFFLINE=1 "$PY" "$RUNNER/make_tiny_model.py" "$MODELS.tmp"
    touch "$MODELS.tmp/.complete"
    mv "$MODELS.tmp" "$MODELS"
fi
flock -u 9

export HF_HUB_OFFLINE=1
export PIPELET_WAN_PYTHON="$PY"
export PIPELET_WAN_TINY_MODELS="$MODELS"

echo "==> runner tests (pytest runners/wan/tests)"
started=$SECONDS
(cd "$RUNNER" && "$PY" -m pytest -q -p no:cacheprovider tests)
echo "    $((SECONDS - started)) s"

echo "==> wan runner supervision (cargo test -p pipelet-runner --test wan_supervision)"
started=$SECONDS
cargo test -p pipelet-runner --test wan_supervision
echo "    $((SECONDS - started)) s"

echo "==> end to end: pipelet serve + pipelet worker --runner wan (cargo test -p pipelet --test wan)"
started=$SECONDS
# One at a time: each test runs a server, a worker and a PyTorch process.
cargo test -p pipelet --test wan -- --include-ignored --test-threads=1 "$@"
echo "    $((SECONDS - started)) s"

# Sourced by scripts/wan-test.sh and scripts/gpu-check.sh (from the repository root):
# the Wan runner's Python environment and the tiny test models, both cached outside the
# repo. Sets PY (the virtualenv's python) and MODELS (the tiny models' folder).
#
#  - the virtualenv: ~/.cache/pipelet/wan-venv-<hash of runners/wan/requirements*.txt and
#    the Python version>; the first build pip-installs torch & co (about 2 minutes and
#    6 GB, needs PyPI); PIPELET_WAN_PYTHON names an existing one instead;
#  - the tiny random-weight Wan 2.2 models (runners/wan/make_tiny_model.py), built once,
#    keyed by the script and the environment.
#
# Environment: PYTHON (the base interpreter, default python3), PIPELET_CACHE_DIR (default
# ~/.cache/pipelet), PIPELET_WAN_PYTHON, PIPELET_WAN_TINY_MODELS (existing ones).

RUNNER=runners/wan
CACHE="${PIPELET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipelet}"
BASE_PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

hash_of() { sha256sum | cut -c1-16; }

# One build at a time per cache, even with several checkouts testing at once.
exec 9>"$CACHE/wan.lock"
flock 9

if [ -n "${PIPELET_WAN_PYTHON:-}" ]; then
    PY="$PIPELET_WAN_PYTHON"
    KEY=$("$PY" -c 'import sys, torch, diffusers; print(sys.version, torch.__version__, diffusers.__version__)' | hash_of)
else
    KEY=$( { cat "$RUNNER/requirements.txt" "$RUNNER/requirements-test.txt"
             "$BASE_PYTHON" -c 'import sys; print(sys.version)'; } | hash_of)
    VENV="$CACHE/wan-venv-$KEY"
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
fi

MODELS_KEY=$( { cat "$RUNNER/make_tiny_model.py"; echo "$KEY"; } | hash_of)
MODELS="$CACHE/wan-tiny-$MODELS_KEY"
if [ -n "${PIPELET_WAN_TINY_MODELS:-}" ] && [ -f "$PIPELET_WAN_TINY_MODELS/t2v/model_index.json" ]; then
    MODELS="$PIPELET_WAN_TINY_MODELS"
elif [ ! -f "$MODELS/.complete" ]; then
    echo "==> building the tiny Wan 2.2 models in $MODELS"
    rm -rf "$MODELS" "$MODELS.tmp"
    HF_HUB_OFFLINE=1 "$PY" "$RUNNER/make_tiny_model.py" "$MODELS.tmp"
    touch "$MODELS.tmp/.complete"
    mv "$MODELS.tmp" "$MODELS"
fi
flock -u 9

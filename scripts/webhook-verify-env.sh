# Sourced (`source scripts/webhook-verify-env.sh`) before `cargo test`: installs PyPI's
# `standardwebhooks` (scripts/webhook-verify-requirements.txt, pinned) into a virtualenv
# cached outside the repo, ${XDG_CACHE_HOME:-~/.cache}/pipelet/webhook-verify-venv-<hash>
# (keyed by the requirements and the Python version), and exports
# PIPELET_WEBHOOK_VERIFY_PYTHON, the interpreter with which the webhook tests check
# pipelet's signatures against that independent implementation. Without it those checks
# are skipped (with a printed reason). PIPELET_PYTHON picks the interpreter that builds
# the virtualenv (default python3).
if [ -z "${PIPELET_WEBHOOK_VERIFY_PYTHON:-}" ]; then
    PIPELET_WEBHOOK_VERIFY_PYTHON="$(
        set -euo pipefail
        here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
        requirements="$here/webhook-verify-requirements.txt"
        python="${PIPELET_PYTHON:-python3}"
        command -v "$python" >/dev/null 2>&1 || { echo "$python not found (set PIPELET_PYTHON)" >&2; exit 1; }
        version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        hash="$( (cat "$requirements"; echo "python $version") | sha256sum | cut -c1-12)"
        cache="${XDG_CACHE_HOME:-$HOME/.cache}/pipelet"
        venv="$cache/webhook-verify-venv-$hash"
        if [ ! -f "$venv/.installed" ]; then
            mkdir -p "$cache"
            # Two test runs installing at once: the second waits for the first.
            exec 9>"$venv.lock"
            flock 9
            if [ ! -f "$venv/.installed" ]; then
                echo "==> installing standardwebhooks into $venv (pip, once)" >&2
                rm -rf "$venv"
                "$python" -m venv "$venv" >&2
                "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
                "$venv/bin/python" -c 'import standardwebhooks.webhooks' >&2
                touch "$venv/.installed"
            fi
        fi
        echo "$venv/bin/python"
    )" || {
        echo "scripts/webhook-verify-env.sh: cannot install standardwebhooks" >&2
        return 1 2>/dev/null || exit 1
    }
    export PIPELET_WEBHOOK_VERIFY_PYTHON
fi

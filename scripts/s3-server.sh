#!/usr/bin/env bash
# moto's S3 server, for the tests that run pipelet against S3 (crates/pipelet/tests/
# it/shared_engines.rs). It is installed from PyPI (scripts/moto-requirements.txt, pinned)
# into a virtualenv cached outside the repo, keyed by a hash of the requirements and the
# Python version: ${XDG_CACHE_HOME:-~/.cache}/pipelet/moto-venv-<hash>.
#
#   scripts/s3-server.sh path        installs it if missing; prints the moto_server path
#                                    (what PIPELET_TEST_MOTO wants; see scripts/s3-env.sh)
#   scripts/s3-server.sh run [PORT]  installs it if missing and runs it in the foreground
#                                    on 127.0.0.1:PORT (default: a free port; it prints
#                                    "Running on http://127.0.0.1:<port>")
#
# The tests start their own moto_server per test on a free port; `run` is for trying
# pipelet against S3 by hand:
#   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
#   AWS_ENDPOINT_URL=http://127.0.0.1:<port> AWS_ALLOW_HTTP=true \
#   pipelet serve --blob-url s3://<bucket>/pipelet      (create the bucket first:
#   curl -X PUT http://127.0.0.1:<port>/<bucket>)
#
# PIPELET_PYTHON picks the interpreter that builds the virtualenv (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/moto-requirements.txt"
python="${PIPELET_PYTHON:-python3}"

die() {
    echo "s3-server.sh: $*" >&2
    exit 1
}

moto_venv() {
    command -v "$python" >/dev/null 2>&1 || die "$python not found (set PIPELET_PYTHON)"
    local version hash cache
    version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    hash="$( (cat "$requirements"; echo "python $version") | sha256sum | cut -c1-12)"
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/pipelet"
    echo "$cache/moto-venv-$hash"
}

install() {
    local venv="$1"
    [ -f "$venv/.installed" ] && return 0
    mkdir -p "$(dirname "$venv")"
    # Two test runs installing at once: the second waits for the first.
    exec 9>"$venv.lock"
    flock 9
    if [ ! -f "$venv/.installed" ]; then
        echo "==> installing moto's S3 server into $venv (pip, once)" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv" >&2 || die "cannot create a virtualenv with $python (is its venv module installed?)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2 ||
            die "pip install -r $requirements failed"
        "$venv/bin/moto_server" --help >/dev/null || die "moto_server does not run"
        touch "$venv/.installed"
    fi
    flock -u 9
    exec 9>&-
}

venv="$(moto_venv)"
case "${1:-}" in
    path)
        install "$venv"
        echo "$venv/bin/moto_server"
        ;;
    run)
        install "$venv"
        exec "$venv/bin/moto_server" -H 127.0.0.1 -p "${2:-0}"
        ;;
    *)
        sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac

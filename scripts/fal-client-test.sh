#!/usr/bin/env bash
# The real Python `fal-client` (PyPI, pinned in scripts/fal-client-requirements.txt)
# against pipelet: `submit(..., webhook_url=...)`, which sends `?fal_webhook=`, then the
# handle's status and result, and the signed webhooks a local receiver gets
# (tests/fal_client/test_fal_client.py).
#
# fal-client speaks only https and posts to `https://$FAL_QUEUE_RUN_HOST/<app id>`, so
# the test puts nginx with a self-signed certificate in front of pipelet and sets
# FAL_QUEUE_RUN_HOST=127.0.0.1:<port>/queue: the app id `wan22-fast-t2v` then lands on
# pipelet's `POST /queue/wan22-fast-t2v` with no rewrite; the handle follows the
# `status_url`/`response_url` pipelet returns (built from nginx's Host and
# X-Forwarded-Proto). This is what an operator does to use fal-client with pipelet.
# The same test then runs a second time with no proxy at all: pipelet serving https
# itself with the same certificate (`--tls-cert`/`--tls-key`).
#
# Installs what is missing: nginx-light and openssl (apt-get), and fal-client into a
# virtualenv cached outside the repo, ${XDG_CACHE_HOME:-~/.cache}/pipelet/fal-client-venv-<hash>.
# PIPELET_BIN picks the binary (default: cargo build, then target/debug/pipelet).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "==> installing ${need_apt[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

requirements="$repo/scripts/fal-client-requirements.txt"
python="${PIPELET_PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || { echo "error: $python not found (set PIPELET_PYTHON)" >&2; exit 1; }
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
hash="$( (cat "$requirements"; echo "python $version") | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pipelet"
venv="$cache/fal-client-venv-$hash"
if [ ! -f "$venv/.installed" ]; then
    mkdir -p "$cache"
    # Two runs installing at once: the second waits for the first.
    exec 9>"$venv.lock"
    flock 9
    if [ ! -f "$venv/.installed" ]; then
        echo "==> installing fal-client into $venv (pip, once)"
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        "$venv/bin/python" -c 'import fal_client'
        touch "$venv/.installed"
    fi
    exec 9>&-
fi

if [ -z "${PIPELET_BIN:-}" ]; then
    echo "==> cargo build -p pipelet"
    cargo build -p pipelet --locked
    PIPELET_BIN="$repo/target/debug/pipelet"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
        alive=
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -n "$alive" ] || break
        sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pipelet_port="$(free_port)"
tls_port="$(free_port)"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# nginx in its own prefix; as root its workers run as root so they can use $work.
user_line=
[ "$(id -u)" = 0 ] && user_line='user root;'
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$tls_port ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_set_header Connection "";
        proxy_set_header Host \$http_host;
        proxy_set_header X-Forwarded-Proto \$scheme;
        location / {
            proxy_pass http://127.0.0.1:$pipelet_port;
        }
    }
}
CONF

"$PIPELET_BIN" serve --webhook-allow-private --listen "127.0.0.1:$pipelet_port" \
    --data-dir "$work/data" >"$work/serve.log" 2>&1 &
pids+=($!)
nginx -p "$work/nginx" -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
pids+=($!)

# Waits until `https://127.0.0.1:<port>/ready` answers with the test's certificate
# and the server has saved its admin key in <data dir>; else shows the logs and fails.
wait_ready() {
    local port="$1" data="$2" what="$3"
    for _ in $(seq 300); do
        [ -s "$data/admin.key" ] \
            && curl -sf -o /dev/null --cacert "$work/cert.pem" "https://127.0.0.1:$port/ready" \
            && return 0
        sleep 0.1
    done
    echo "error: pipelet is not ready $what (https://127.0.0.1:$port):" >&2
    cat "$work"/*.log >&2 2>/dev/null || true
    exit 1
}

# The Python test against https://127.0.0.1:<port>, with the admin key of <data dir>.
run_test() {
    local port="$1" data="$2" log="$3"
    if ! PIPELET_ADMIN_KEY="$(cat "$data/admin.key")" \
        FAL_QUEUE_RUN_HOST="127.0.0.1:$port/queue" \
        SSL_CERT_FILE="$work/cert.pem" \
        timeout 120 "$venv/bin/python" tests/fal_client/test_fal_client.py; then
        echo "--- pipelet log" >&2; tail -50 "$log" >&2
        echo "--- nginx error log" >&2; tail -20 "$work/nginx-error.log" >&2 2>/dev/null || true
        exit 1
    fi
}

wait_ready "$tls_port" "$work/data" "through nginx"
echo "==> fal-client test (fal-client $(grep -o '[0-9.]*$' "$requirements"), nginx TLS on :$tls_port → pipelet on :$pipelet_port)"
run_test "$tls_port" "$work/data" "$work/serve.log"

# No proxy: pipelet serves https itself (HTTP/2 or HTTP/1.1 by ALPN; fal-client's
# httpx speaks HTTP/1.1), and builds its links with https:// from that alone.
direct_port="$(free_port)"
"$PIPELET_BIN" serve --webhook-allow-private --listen "127.0.0.1:$direct_port" \
    --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    --data-dir "$work/data-tls" >"$work/serve-tls.log" 2>&1 &
pids+=($!)
wait_ready "$direct_port" "$work/data-tls" "with --tls-cert"
echo "==> fal-client test (fal-client $(grep -o '[0-9.]*$' "$requirements"), pipelet's own TLS on :$direct_port, no proxy)"
run_test "$direct_port" "$work/data-tls" "$work/serve-tls.log"

#!/usr/bin/env bash
# Checks the deployment files of deploy/ and the Dockerfile as far as this machine can:
#
#  - nginx: `nginx -t` on deploy/nginx/pipelet.conf, on its HTTPS form (as
#    docs/deployment.md describes it, with a throwaway certificate) and on
#    deploy/compose/nginx.conf; then deploy/nginx/pipelet.conf, unchanged, in front of a
#    real `pipelet serve` and `pipelet worker` in a private network namespace (the
#    upstream addresses exist only there): a client creates a job through nginx, follows
#    its status stream, and fetches the video.
#  - systemd: `systemd-analyze verify` on both units.
#  - compose: `docker-compose config` validates deploy/compose/compose.yaml against the
#    Compose schema; its ports, its nginx.conf and the image's agree.
#  - Kubernetes: kubernetes-validate --strict on deploy/kubernetes/pipelet.yaml (schemas
#    bundled, no cluster needed).
#  - docs/deployment.md names only files that exist.
#  - Docker: builds the image and runs it, when a Docker engine answers; otherwise says
#    that it was skipped.
#
# Needs root (network and mount namespaces). Installs what is missing: nginx-light and
# docker-compose (apt-get), kubernetes-validate (a cached virtualenv, pinned in
# scripts/deploy-check-requirements.txt).
# PIPELET_BIN: the binary to run (default: builds target/debug/pipelet).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing ${need_apt[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
reqs=scripts/deploy-check-requirements.txt
venv="${XDG_CACHE_HOME:-$HOME/.cache}/pipelet/deploy-check-$(sha256sum "$reqs" | cut -c1-12)"
# Built in place (a virtualenv cannot be moved); .complete marks a finished install.
if [ ! -f "$venv/.complete" ]; then
    echo "==> kubernetes-validate (virtualenv in $venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
    touch "$venv/.complete"
fi
if [ -z "${PIPELET_BIN:-}" ]; then
    echo "==> cargo build -p pipelet"
    cargo build -p pipelet --locked
    PIPELET_BIN="$repo/target/debug/pipelet"
fi
PIPELET_BIN="$(realpath "$PIPELET_BIN")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---------- nginx -t ----------
# A main config around a conf.d file, writing only under $work.
nginx_main() { # FILE -> prints the path of a main config including FILE
    local conf="$work/main-$(basename "$1")"
    cat >"$conf" <<EOF
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http { access_log off; include $1; }
EOF
    echo "$conf"
}
# Runs a command with `api` resolving to 127.0.0.1 (compose's service name), in a
# private mount namespace so the machine's /etc/hosts is left alone.
with_api_host() {
    cp /etc/hosts "$work/hosts"
    echo "127.0.0.1 api" >>"$work/hosts"
    unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$work/hosts" "$@"
}

echo "==> nginx -t deploy/nginx/pipelet.conf"
nginx -q -t -c "$(nginx_main "$repo/deploy/nginx/pipelet.conf")"

echo "==> nginx -t deploy/nginx/pipelet.conf for HTTPS (docs/deployment.md)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=video.example.com \
    -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
sed -e 's|^    listen 80;$|    listen 443 ssl;\n    ssl_certificate     '"$work"'/tls.pem;\n    ssl_certificate_key '"$work"'/tls.key;|' \
    deploy/nginx/pipelet.conf >"$work/pipelet-tls.conf"
grep -q 'listen 443 ssl;' "$work/pipelet-tls.conf" || { echo "error: no 'listen 80;' line to turn into HTTPS" >&2; exit 1; }
nginx -q -t -c "$(nginx_main "$work/pipelet-tls.conf")"

echo "==> nginx -t deploy/compose/nginx.conf"
with_api_host nginx -q -t -c "$(nginx_main "$repo/deploy/compose/nginx.conf")"

# ---------- deploy/nginx/pipelet.conf in front of pipelet ----------
echo "==> a job through deploy/nginx/pipelet.conf (server, worker and client in a network namespace)"
cat >"$work/through-nginx.sh" <<'EOF'
set -euo pipefail
work="$1"; repo="$2"; bin="$3"
ip link set lo up
# The upstream's addresses: the first runs pipelet, the second has nothing listening
# (a server that is down), so nginx must pass requests on to the first.
ip addr add 10.0.0.11/32 dev lo
ip addr add 10.0.0.12/32 dev lo
pids=()
# SIGTERM, ten seconds to stop, then SIGKILL: a worker holding a job keeps trying to
# hand it back while the server is gone, and must not outlive the check.
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 100); do
        alive=
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -n "$alive" ] || break
        sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

nginx -c "$work/main-pipelet.conf" -g 'daemon off;' &
pids+=($!)
"$bin" serve --workers 0 --listen 10.0.0.11:8080 --data-dir "$work/data" >"$work/serve.log" 2>&1 &
pids+=($!)
ready=
for _ in $(seq 300); do
    [ -s "$work/data/admin.key" ] && curl -sf -o /dev/null http://127.0.0.1/ready && { ready=1; break; }
    sleep 0.1
done
[ -n "$ready" ] || { echo "error: pipelet is not ready through nginx:" >&2; cat "$work/serve.log" >&2; exit 1; }
key="$(cat "$work/data/admin.key")"
worker_key="$("$bin" keys create --data-dir "$work/data" --name nginx-check --role worker)"
PIPELET_SERVER=http://127.0.0.1 PIPELET_KEY="$worker_key" "$bin" worker --runner preview >"$work/worker.log" 2>&1 &
pids+=($!)

base=http://127.0.0.1
created="$(curl -sS -f "$base/queue/wan22-fast-t2v" -H 'Host: video.example.com' \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d '{"prompt": "a paper boat through nginx", "width": 512, "height": 512, "duration": 1}')"
echo "$created" | jq -e '.status_url | startswith("http://video.example.com/queue/")' >/dev/null \
    || { echo "error: the response's URLs do not use nginx's Host: $created" >&2; exit 1; }
id="$(echo "$created" | jq -r .request_id)"
# The status stream, unbuffered through nginx, ends with the terminal status.
curl -sS -N --max-time 120 "$base/queue/wan22-fast-t2v/requests/$id/status/stream" \
    -H "Authorization: Bearer $key" >"$work/stream.txt" || true
grep -q '"status":"COMPLETED"' "$work/stream.txt" \
    || { echo "error: the stream did not end COMPLETED:" >&2; cat "$work/stream.txt" "$work/worker.log" >&2; exit 1; }
curl -sS -f "$base/queue/wan22-fast-t2v/requests/$id" -H "Authorization: Bearer $key" \
    | jq -r .video.data_uri | base64 --decode >"$work/out.bin"
head -c 12 "$work/out.bin" | grep -q ftyp || { echo "error: the result is not an MP4" >&2; exit 1; }
echo "    job $id: created, streamed and fetched through nginx"
EOF
unshare -n -m bash "$work/through-nginx.sh" "$work" "$repo" "$PIPELET_BIN"

# ---------- systemd ----------
if command -v systemd-analyze >/dev/null 2>&1; then
    echo "==> systemd-analyze verify deploy/systemd/*.service"
    # ExecStart's /usr/local/bin/pipelet must exist: the binary, at that path, only in a
    # private mount namespace. The template is checked as its instance @0.
    mkdir -p "$work/bin" "$work/units"
    cp "$PIPELET_BIN" "$work/bin/pipelet"
    cp deploy/systemd/pipelet-serve.service "$work/units/"
    cp deploy/systemd/pipelet-worker@.service "$work/units/pipelet-worker@0.service"
    out="$(cd "$work/units" && unshare -m sh -c 'mount --bind "$0" /usr/local/bin && systemd-analyze verify ./pipelet-serve.service ./pipelet-worker@0.service 2>&1' "$work/bin")"
    if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
else
    echo "==> systemd-analyze is not installed: the units were not verified"
fi

# ---------- compose and Kubernetes ----------
echo "==> docker-compose config (deploy/compose/compose.yaml, with and without --profile gpu)"
(cd deploy/compose && docker-compose config -q && docker-compose --profile gpu config -q)

echo "==> kubernetes-validate --strict deploy/kubernetes/pipelet.yaml"
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/pipelet.yaml

echo "==> the ports of compose.yaml, its nginx.conf, the image and the manifest agree"
"$venv/bin/python" - <<'EOF'
import re, sys, yaml
compose = yaml.safe_load(open("deploy/compose/compose.yaml"))
k8s = list(yaml.safe_load_all(open("deploy/kubernetes/pipelet.yaml")))
nginx = open("deploy/compose/nginx.conf").read()
docker = open("Dockerfile").read()
errors = []
def check(ok, what):
    if not ok: errors.append(what)
s = compose["services"]
check(s["lb"]["ports"] == ["8080:8080"], "lb publishes 8080:8080")
check(re.search(r"^\s*listen 8080;", nginx, re.M), "compose nginx listens on 8080")
check(re.search(r"server api:8080;", nginx), "compose nginx proxies to api:8080")
check("PIPELET_LISTEN=0.0.0.0:8080" in docker and "EXPOSE 8080" in docker, "the image listens on 0.0.0.0:8080")
check(all(s[w]["environment"]["PIPELET_SERVER"] == "http://lb:8080" for w in ("worker-cpu", "worker-gpu0")), "workers use http://lb:8080")
check(s["api"]["environment"]["PIPELET_PUBLIC_URL"] == "http://localhost:8080", "public URL is the published port")
kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s}
check(("Service", "pipelet-api") in kinds and ("Deployment", "pipelet-api") in kinds, "k8s API Deployment and Service")
cfg = next(d for d in k8s if d["kind"] == "ConfigMap")
check(cfg["data"]["PIPELET_LISTEN"] == "0.0.0.0:8080", "k8s listens on 8080")
if errors:
    sys.exit("error: " + "; ".join(errors))
EOF

echo "==> docs/deployment.md names only files that exist"
missing="$(grep -oE '(deploy/(compose|kubernetes|nginx|systemd)[A-Za-z0-9_./@-]*|scripts/[A-Za-z0-9_.-]+|Dockerfile|\.dockerignore)' docs/deployment.md \
    | sed 's/[.]$//' | sort -u | while read -r f; do [ -e "$f" ] || echo "$f"; done)"
[ -z "$missing" ] || { echo "error: docs/deployment.md names missing files: $missing" >&2; exit 1; }

# ---------- Docker ----------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo "==> docker build and run"
    docker build -t pipelet-check .
    cid="$(docker run -d -p 127.0.0.1::8080 pipelet-check)"
    port="$(docker port "$cid" 8080/tcp | head -1 | sed 's/.*://')"
    ok=
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && { ok=1; break; }; sleep 0.1; done
    docker exec "$cid" cat /var/lib/pipelet/admin.key >/dev/null || ok=
    docker rm -f "$cid" >/dev/null
    [ -n "$ok" ] || { echo "error: the container did not become ready" >&2; exit 1; }
else
    echo "==> no Docker engine answers here: the Dockerfile was NOT built or run"
fi
echo "==> deploy check passed"

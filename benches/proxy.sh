#!/usr/bin/env bash
# Proxy throughput and latency: wrk against one trivial backend (nginx answering
# 200 "ok"), (1) directly, (2) through nginx proxy_pass with an upstream
# keepalive pool, (3) through kuma-cluster; same worker count for both proxies.
#
#   bash benches/proxy.sh [seconds] [connections] [workers]
#
# Needs wrk and nginx (apt-get install wrk nginx) and builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-15}
connections=${2:-64}
workers=${3:-1}

cargo build --release --quiet
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend=$(port); nginx_proxy=$(port); kc=$(port)

nginx_conf() { # name, worker count, server block
    mkdir -p "$work/$1"
    cat > "$work/$1/nginx.conf" <<CONF
worker_processes $2;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    $3
}
CONF
}
nginx_conf backend 1 "server { listen 127.0.0.1:$backend; location / { return 200 'ok'; } }"
nginx_conf proxy "$workers" "upstream kuma { server 127.0.0.1:$backend; keepalive 64; }
    server { listen 127.0.0.1:$nginx_proxy; location / { proxy_pass http://kuma; proxy_http_version 1.1;
        proxy_set_header Connection ''; proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } }"
nginx -p "$work/backend" -c "$work/backend/nginx.conf" & pids+=($!)
nginx -p "$work/proxy" -c "$work/proxy/nginx.conf" & pids+=($!)

cat > "$work/kc.toml" <<CONF
[[nodes.static]]
id = "node1"
host = "127.0.0.1:$backend"
CONF
KUMA_CLUSTER__DATABASE__URL="sqlite://$work/kc.db?mode=rwc" \
KUMA_CLUSTER__SERVER__LISTEN="127.0.0.1:$kc" \
KUMA_CLUSTER__PROXY__WORKERS="$workers" \
RUST_LOG=warn ./target/release/kuma-cluster --config "$work/kc.toml" serve & pids+=($!)

for _ in $(seq 1 100); do
    curl -sf "127.0.0.1:$kc/lb/available-nodes" | grep -q '"ready":1' && break
    sleep 0.1
done

run() { # label, port
    wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$2/" >/dev/null  # warm-up
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$2/")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)
    printf '%-14s %12s %10s %10s %s\n' "$1" "$rps" "$p50" "$p99" "$errors"
}
echo "wrk -t1 -c$connections -d${duration}s, proxy workers: $workers, $(nproc) cores"
printf '%-14s %12s %10s %10s\n' target requests/s p50 p99
run direct "$backend"
run nginx "$nginx_proxy"
run kuma-cluster "$kc"

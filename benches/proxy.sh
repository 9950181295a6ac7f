#!/usr/bin/env bash
# Proxy cost per request: nginx, HAProxy and kuma-cluster in front of one nginx
# backend, interleaved in one run (every round runs each proxy in turn), with
# 1 and 2 proxy workers, for a trivial body and Kuma-like 1.4 KB JSON, each
# request carrying a browser's headers (cookie with the session, bearer token,
# user agent). Reports requests/s, p50/p99 latency and the proxy's CPU time
# per request (utime+stime from /proc/<pid>/stat over the run, all its
# processes), and the medians over the rounds with ratios to nginx.
#
#   bash benches/proxy.sh [seconds] [connections] [rounds] ["workers ..."]
#   KC_BINARIES="before=/tmp/old-kuma-cluster after=target/release/kuma-cluster" bash benches/proxy.sh
#
# Needs wrk, nginx and haproxy (apt-get install wrk nginx haproxy); without
# KC_BINARIES it builds and measures the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-64}
rounds=${3:-3}
worker_counts=${4:-"1 2"}

if [[ -z "${KC_BINARIES:-}" ]]; then
    cargo build --release --quiet
    KC_BINARIES="kuma-cluster=$PWD/target/release/kuma-cluster"
fi
work=$(mktemp -d)
chmod 755 "$work"  # nginx workers run as nobody and serve a file from here
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
clk_tck=$(getconf CLK_TCK)

# the backend: Kuma's health path, a trivial body and a 1.4 KB JSON answer
backend=$(port)
mkdir -p "$work/backend/www/api"
python3 - "$work/backend/www/api/monitors.json" <<'PY'
import json, sys
monitors = [{"id": i, "name": f"monitor {i}", "type": "http", "url": f"https://service-{i}.example.com/health",
             "interval": 60, "active": True, "node_id": f"node{i % 3 + 1}"} for i in range(1, 9)]
body = json.dumps({"ok": True, "monitors": monitors})
open(sys.argv[1], "w").write(body)
PY
cat > "$work/backend/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$backend;
        location = /api/v1/health { return 200 '{"ok":true}'; }
        location = /trivial { return 200 'ok'; }
        location = /api/v1/monitors { default_type application/json; alias $work/backend/www/api/monitors.json; }
    }
}
CONF
nginx -p "$work/backend" -c "$work/backend/nginx.conf" & pids+=($!)

# the request a browser sends: session cookie, bearer token, user agent, accepts
cat > "$work/browser.lua" <<'LUA'
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "application/json, text/plain, */*"
wrk.headers["Accept-Language"] = "en-US,en;q=0.9,de;q=0.8"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VybmFtZSI6ImFkbWluIiwiaCI6IjVmNGRjYzNiNWFhNzY1ZDYxZDgzMjdkZWI4ODJjZjk5IiwiaWF0IjoxNzMzNTg3MjAwfQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0wMTIzNDU2Nzg5"
wrk.headers["Cookie"] = "KUMA_CLUSTER_NODE=node1; theme=dark; _ga=GA1.1.1234567890.1733587200; remember_me=eyJ1c2VyIjoiYWRtaW4ifQ"
wrk.headers["Referer"] = "http://kuma.example.com/dashboard"
LUA

# each start_* sets started_port and started_pid
start_nginx() { # workers
    local p; p=$(port)
    mkdir -p "$work/nginx$1"
    cat > "$work/nginx$1/nginx.conf" <<CONF
worker_processes $1;
daemon off;
pid $work/nginx$1/nginx.pid;
error_log $work/nginx$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream kuma { server 127.0.0.1:$backend; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$p;
        location / {
            proxy_pass http://kuma; proxy_http_version 1.1;
            proxy_set_header Connection ''; proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
CONF
    nginx -p "$work/nginx$1" -c "$work/nginx$1/nginx.conf" & pids+=($!)
    started_port=$p started_pid=$!
}

start_haproxy() { # workers
    local p; p=$(port)
    cat > "$work/haproxy$1.cfg" <<CONF
global
    nbthread $1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option forwardfor
    http-reuse always
frontend f
    bind 127.0.0.1:$p
    default_backend b
backend b
    server node1 127.0.0.1:$backend
CONF
    haproxy -f "$work/haproxy$1.cfg" & pids+=($!)
    started_port=$p started_pid=$!
}

start_kc() { # binary, workers
    local p; p=$(port)
    cat > "$work/kc.toml" <<CONF
[[nodes.static]]
id = "node1"
host = "127.0.0.1:$backend"
CONF
    # the Kuma tables a node would create
    python3 - "$work/kc-$p.db" <<'PY'
import sqlite3, sys
sqlite3.connect(sys.argv[1]).executescript("""
CREATE TABLE node (node_id VARCHAR(50) PRIMARY KEY NOT NULL, node_name VARCHAR(100) NOT NULL,
  location VARCHAR(200), host VARCHAR(45), hostname VARCHAR(100), status VARCHAR(20) DEFAULT 'online',
  active BOOLEAN DEFAULT 1, is_primary BOOLEAN DEFAULT 0, created_date DATETIME DEFAULT CURRENT_TIMESTAMP,
  modified_date DATETIME DEFAULT CURRENT_TIMESTAMP, last_seen DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE monitor (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(150), active BOOLEAN NOT NULL DEFAULT 1,
  node_id VARCHAR(50), assigned_node VARCHAR(255));
""")
PY
    KUMA_CLUSTER__DATABASE__URL="sqlite://$work/kc-$p.db?mode=rwc" \
    KUMA_CLUSTER__SERVER__LISTEN="127.0.0.1:$p" \
    KUMA_CLUSTER__PROXY__WORKERS="$2" \
    RUST_LOG=warn "$1" --config "$work/kc.toml" serve >/dev/null & pids+=($!)
    started_port=$p started_pid=$!
    for _ in $(seq 1 200); do
        curl -sf "127.0.0.1:$p/lb/available-nodes" | grep -q '"ready":1' && return
        sleep 0.1
    done
    echo "kuma-cluster ($1) did not see its node ready" >&2
    exit 1
}

# CPU ticks (utime + stime) of a process and its children threads/processes
ticks() {
    local total=0 pid
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

family() { # a process and its direct children (nginx workers)
    echo "$1 $(cat "/proc/$1/task/$1/children" 2>/dev/null || true)"
}

results="$work/results.tsv"
measure() { # round workers body label port pids...
    local round=$1 workers=$2 body=$3 label=$4 p=$5; shift 5
    local path=/trivial; [[ $body == json ]] && path=/api/v1/monitors
    wrk -t1 -c"$connections" -d2s -s "$work/browser.lua" "http://127.0.0.1:$p$path" >/dev/null
    local before; before=$(ticks "$@")
    local out; out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$work/browser.lua" "http://127.0.0.1:$p$path")
    local after; after=$(ticks "$@")
    local requests rps p50 p99 errors
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd';' || true)
    local cpu; cpu=$(python3 -c "print(f'{($after-$before)*1e6/$clk_tck/$requests:.1f}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$workers" "$body" "$label" "$rps" "$p50" "$p99" "$cpu" "$errors" | tee -a "$results"
}

echo "wrk -t1 -c$connections -d${duration}s with a browser's headers, $rounds rounds, $(nproc) cores, $(date -u +%F)"
printf 'round\tworkers\tbody\tproxy\treq/s\tp50\tp99\tcpu_us/req\terrors\n'
for workers in $worker_counts; do
    start_nginx "$workers"; ng_port=$started_port ng_pid=$started_pid
    start_haproxy "$workers"; hp_port=$started_port hp_pid=$started_pid
    kcs=()
    for entry in $KC_BINARIES; do
        start_kc "${entry#*=}" "$workers"
        kcs+=("${entry%%=*} $started_port $started_pid")
    done
    sleep 1
    for round in $(seq 1 "$rounds"); do
        for body in trivial json; do
            measure "$round" "$workers" "$body" nginx "$ng_port" $(family "$ng_pid")
            measure "$round" "$workers" "$body" haproxy "$hp_port" "$hp_pid"
            for kc in "${kcs[@]}"; do
                read -r label kc_port kc_pid <<<"$kc"
                measure "$round" "$workers" "$body" "$label" "$kc_port" "$kc_pid"
            done
        done
    done
    kill "$ng_pid" "$hp_pid" 2>/dev/null || true
    for kc in "${kcs[@]}"; do read -r _ _ kc_pid <<<"$kc"; kill "$kc_pid" 2>/dev/null || true; done
    sleep 1
done

echo
echo "medians over $rounds rounds (ratios to nginx at the same workers and body)"
python3 - "$results" <<'PY'
import sys, statistics, collections
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit) and not (unit == "s" and v.endswith(("us", "ms"))):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, w, body, proxy, rps, p50, p99, cpu, _ = line.rstrip("\n").split("\t")
    rows[(w, body, proxy)].append((float(rps), ms(p50), ms(p99), float(cpu)))
print(f"{'workers':>7} {'body':>7} {'proxy':>14} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7} {'req/s:nginx':>11} {'cpu:nginx':>9} {'p99-nginx':>9}")
for (w, body, proxy), vals in rows.items():
    med = [statistics.median(v[i] for v in vals) for i in range(4)]
    base = [statistics.median(v[i] for v in rows[(w, body, "nginx")]) for i in range(4)]
    print(f"{w:>7} {body:>7} {proxy:>14} {med[0]:>9.0f} {med[1]:>7.2f} {med[2]:>7.2f} {med[3]:>7.1f} "
          f"{med[0]/base[0]:>11.2f} {med[3]/base[3]:>9.2f} {med[2]-base[2]:>+9.2f}")
PY

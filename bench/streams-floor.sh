#!/usr/bin/env bash
# The measuring client's floor for the stream benchmark: the same
# `keel-bench streams` burst (CLIENTS connections opened at once, time from
# each request's start to its first event), against nginx serving the stream
# as a static file: no session, no store, no waiting for events. Whatever
# this reports is what the client, the kernel and the shared cores cost
# before any server work; compare bench/streams.sh's figures with it.
#
#   bench/streams-floor.sh            knobs: CLIENTS=1000 EVENTS=50 RUNS=3 NGINX_WORKERS=1
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

CLIENTS=${CLIENTS:-1000}
EVENTS=${EVENTS:-50}
RUNS=${RUNS:-3}
NGINX_WORKERS=${NGINX_WORKERS:-1}

bench_ensure_release_tools
command -v nginx >/dev/null || bench_apt_install nginx nginx-light
bench_init
ulimit -n 65536 2>/dev/null || bench_log "WARNING: could not raise the open-file limit ($(ulimit -n))"

dir="$BENCH_TMP/nginx"
mkdir -p "$dir/html"
{
  printf 'retry: 1000\n\n'
  for ((i = 1; i <= EVENTS; i++)); do
    printf 'id: %d\nevent: token\ndata: {"text":"t%d"}\n\n' "$i" "$i"
  done
  printf 'id: %d\nevent: done\ndata: {}\n\n' $((EVENTS + 1))
} >"$dir/html/events"
port=$(bench_free_port)
cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes $NGINX_WORKERS;
pid $dir/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/client; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { root $dir/html; default_type text/event-stream; }
  }
}
CONF
nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" &
nginx_pid=$!
bench_on_exit "kill $nginx_pid 2>/dev/null || true"
bench_wait_for_url "http://127.0.0.1:$port/events" "$nginx_pid" "$dir/error.log"
bench_log "nginx $(nginx -v 2>&1 | sed 's/.*\///'), $NGINX_WORKERS worker(s), static stream of $EVENTS events on 127.0.0.1:$port"

for ((run = 1; run <= RUNS; run++)); do
  bench_log "run $run: $CLIENTS streams at once"
  "$KEEL_BENCH_BIN" streams --raw-url "http://127.0.0.1:$port/events" --clients "$CLIENTS" --events "$EVENTS" \
    | sed 's/^/floor: /'
done

#!/usr/bin/env bash
# Floors for the stream benchmark's first-event figure. The same burst as
# bench/streams.sh (CLIENTS streams opened at once, time from each connect to
# its first event) against three servers sending the same 51-event stream
# with nothing to wait for:
#   nginx        nginx serving the stream as a static file
#   hummingbird  a bare Hummingbird 2 app (`keel-bench floor-server`): the
#                framework Keel is built on, with no middleware, session or store
#   keel         keel serve on SQLite, streams of jobs that already finished
#                (session check, job read, events read; no live fan-out)
# measured by two clients taken in turn: `keel-bench streams` (bare SwiftNIO,
# the client of bench/streams.sh) and bench/floor-client.c (one thread,
# epoll, nothing else: about as little as a client can cost). Runs are
# interleaved, so each round sees the machine in the same phase.
#
#   bench/streams-floor.sh
#
# Knobs (environment): CLIENTS=1000 EVENTS=50 RUNS=3 NGINX_WORKERS=1
# SERVERS="nginx hummingbird keel" MEASURE_WITH="c nio", KEEL_BIN / KEEL_BENCH_BIN.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

CLIENTS=${CLIENTS:-1000}
EVENTS=${EVENTS:-50}
RUNS=${RUNS:-3}
NGINX_WORKERS=${NGINX_WORKERS:-1}
SERVERS=${SERVERS:-nginx hummingbird keel}
MEASURE_WITH=${MEASURE_WITH:-c nio}

bench_ensure_release_tools
bench_init
ulimit -n 65536 2>/dev/null || bench_log "WARNING: could not raise the open-file limit ($(ulimit -n))"

floor_client="$BENCH_TMP/floor-client"
cc -O2 -o "$floor_client" bench/floor-client.c || bench_die "could not compile bench/floor-client.c"

# Where each server listens: "PORT PATHS [BEARER]".
declare -A target

for server in $SERVERS; do
  case $server in
    nginx)
      command -v nginx >/dev/null || bench_apt_install nginx nginx-light
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
      bench_log "nginx $(nginx -v 2>&1 | sed 's/.*\///'), $NGINX_WORKERS worker(s), static stream on 127.0.0.1:$port"
      target[nginx]="$port /events"
      ;;
    hummingbird)
      bench_start_floor_server --events "$EVENTS"
      target[hummingbird]="${FLOOR_URL##*:} /events"
      ;;
    keel)
      bench_start_keel "sqlite:$BENCH_TMP/keel.sqlite" floor --log-level warning --workers 2
      token=$(curl -sf -XPOST "$KEEL_URL/api/session" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
      [ -n "$token" ] || bench_die "could not create a session"
      paths=()
      for ((i = 0; i < 10; i++)); do
        id=$(curl -sf -XPOST "$KEEL_URL/api/jobs" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
          -d "{\"type\":\"demo.generate\",\"input\":{\"tokens\":$EVENTS,\"delay_ms\":0}}" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
        [ -n "$id" ] || bench_die "could not create a job"
        paths+=("/api/jobs/$id/events")
      done
      for path in "${paths[@]}"; do
        for ((i = 0; ; i++)); do
          status=$(curl -sf "$KEEL_URL${path%/events}" -H "Authorization: Bearer $token" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
          [ "$status" = succeeded ] && break
          [ "$i" -lt 300 ] && [ "$status" != failed ] || bench_die "job ${path%/events} did not succeed (status: ${status:-none})"
          sleep 0.1
        done
      done
      bench_log "keel $("$KEEL_BIN" --version), SQLite, 10 finished jobs of $EVENTS tokens"
      target[keel]="${KEEL_URL##*:} $(IFS=,; echo "${paths[*]}") $token"
      ;;
    *) bench_die "unknown server '$server' (nginx, hummingbird, keel)" ;;
  esac
done

echo "# stream floors, $(date -u +%Y-%m-%d), $(nproc) cores, $CLIENTS streams at once; time to first event in ms; the hypervisor's steal over each run"
for ((run = 1; run <= RUNS; run++)); do
  for server in $SERVERS; do
    read -r port paths bearer <<<"${target[$server]}"
    for client in $MEASURE_WITH; do
      ticks=$(bench_cpu_ticks)
      case $client in
        c)
          line=$("$floor_client" 127.0.0.1 "$port" "$paths" "$CLIENTS" ${bearer:+"$bearer"}) || bench_die "$server: incomplete streams: $line"
          first=$(sed -n 's/^first event ms: //p' <<<"$line")
          ;;
        nio)
          # keel-bench streams takes one URL and the bearer it creates itself; Keel is measured by bench/streams.sh.
          [ "$server" = keel ] && continue
          line=$("$KEEL_BENCH_BIN" streams --raw-url "http://127.0.0.1:$port${paths%%,*}" --clients "$CLIENTS" --events "$EVENTS")
          grep -q 'incomplete=0' <<<"$line" || bench_die "$server: incomplete streams: $line"
          first=$(sed -n 's/^time to first event: n=[0-9]* //p' <<<"$line")
          ;;
        *) bench_die "unknown client '$client' (c, nio)" ;;
      esac
      printf 'run %d  %-12s %-4s %s  (steal %s %%)\n' "$run" "$server" "$client" "$first" "$(bench_steal_percent "$ticks" "$(bench_cpu_ticks)")"
    done
  done
done

#!/usr/bin/env bash
# Stream benchmarks: many concurrent SSE clients following live jobs (time to
# first event, every event delivered), and many idle streams held by one
# instance (resident memory, heartbeats).
#
#   bench/streams.sh [sqlite|postgres]
#
# Knobs (environment): CLIENTS=1000 STREAM_JOBS=10 EVENTS=50 INTERVAL_MS=20
# IDLE_CLIENTS=10000 HOLD_SECONDS=40 HEARTBEAT=15s, KEEL_BIN / KEEL_BENCH_BIN.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

store=${1:-sqlite}
CLIENTS=${CLIENTS:-1000}
STREAM_JOBS=${STREAM_JOBS:-10}
EVENTS=${EVENTS:-50}
INTERVAL_MS=${INTERVAL_MS:-20}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
HOLD_SECONDS=${HOLD_SECONDS:-40}
HEARTBEAT=${HEARTBEAT:-15s}

bench_ensure_release_tools
bench_init
# Each stream is a socket on both ends.
ulimit -n 65536 2>/dev/null || bench_log "WARNING: could not raise the open-file limit ($(ulimit -n))"

case $store in
  sqlite) store_url="sqlite:$BENCH_TMP/keel.sqlite" ;;
  postgres)
    bench_on_exit pg_stop
    pg_start
    "$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres keelbench
    store_url="postgres://postgres@127.0.0.1:$PG_PORT/keelbench?sslmode=disable"
    ;;
  *)
    echo "usage: $0 [sqlite|postgres]" >&2
    exit 2
    ;;
esac


rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

echo "# keel streams benchmark ($store), $(date -u +%Y-%m-%d), $(nproc) cores, keel $("$KEEL_BIN" --version)"

bench_start_keel "$store_url" live --log-level warning --workers "$STREAM_JOBS"
bench_log "$CLIENTS clients on $STREAM_JOBS live jobs, $EVENTS events $INTERVAL_MS ms apart"
"$KEEL_BENCH_BIN" streams --url "$KEEL_URL" --clients "$CLIENTS" --jobs "$STREAM_JOBS" --events "$EVENTS" --interval-ms "$INTERVAL_MS"
echo "server resident memory after: $(rss_mb "$KEEL_PID") MB"
bench_stop_keel

bench_start_keel "$store_url" idle --log-level warning --workers 1 --sse-heartbeat "$HEARTBEAT"
baseline=$(rss_mb "$KEEL_PID")
bench_log "$IDLE_CLIENTS idle streams held $HOLD_SECONDS s (heartbeat $HEARTBEAT)"
out="$BENCH_TMP/idle.txt"
"$KEEL_BENCH_BIN" idle --url "$KEEL_URL" --clients "$IDLE_CLIENTS" --hold-seconds "$HOLD_SECONDS" >"$out" 2>&1 &
bench_pid=$!
peak=0
while kill -0 "$bench_pid" 2>/dev/null; do
  rss=$(rss_mb "$KEEL_PID")
  [ "$rss" -gt "$peak" ] && peak=$rss
  sleep 1
done
wait "$bench_pid" || { cat "$out"; bench_die "keel-bench idle failed"; }
cat "$out"
echo "server resident memory: ${baseline} MB idle before, peak ${peak} MB while holding $IDLE_CLIENTS streams"
bench_stop_keel

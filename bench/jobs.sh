#!/usr/bin/env bash
# Job benchmarks: end-to-end throughput of no-op jobs created over HTTP, the
# same split into creation alone and workers alone, and pickup latency (creation to start) with workers in the same process and in
# a separate `keel worker` process.
#
#   bench/jobs.sh [sqlite|postgres|all]
#
# Knobs (environment): JOBS=15000 CONCURRENCY=32 WORKERS=64 SAMPLES=300,
# KEEL_BIN / KEEL_BENCH_BIN (default: release builds, built when missing).
# Results go to stdout; copy them to docs/benchmarks.md with the date.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

bench_parse_stores "${1:-all}"

JOBS=${JOBS:-15000}
CONCURRENCY=${CONCURRENCY:-32}
# Workers are Swift tasks, not threads or processes. More of them means
# larger shared writes: group commit on SQLite, multi-row statements on
# PostgreSQL. End to end, 64 workers gave 2,900-3,250 jobs/s on SQLite and
# 2,000-2,900 on PostgreSQL, against 2,250 and 2,270 with 32
# (docs/benchmarks.md).
WORKERS=${WORKERS:-64}
SAMPLES=${SAMPLES:-300}

bench_ensure_release_tools
bench_init


WORKER_PID=
stop_all() {
  bench_stop_pid "$WORKER_PID"
  WORKER_PID=
  bench_stop_keel
}
bench_on_exit stop_all

start_worker() {
  local store_url=$1 label=$2
  shift 2
  "$KEEL_BIN" worker --store "$store_url" --log-level warning --drain-timeout 5s "$@" >"$BENCH_TMP/worker-$label.log" 2>&1 &
  WORKER_PID=$!
  sleep 1
}

# with_steal CMD...: run CMD, then print the share of CPU time the
# hypervisor took away while it ran (bench_steal_percent).
with_steal() {
  local ticks
  ticks=$(bench_cpu_ticks)
  "$@"
  echo "steal: $(bench_steal_percent "$ticks" "$(bench_cpu_ticks)") %"
}

run_store() {
  local store=$1 url=$2
  echo "## $store"
  bench_start_keel "$url" "$store-throughput" --log-level warning --workers "$WORKERS"
  bench_log "$store: $JOBS no-op jobs, $CONCURRENCY creating clients, $WORKERS workers in the server"
  with_steal "$KEEL_BENCH_BIN" jobs --url "$KEEL_URL" --jobs "$JOBS" --concurrency "$CONCURRENCY" | sed 's/^/throughput: /'
  bench_log "$store: pickup, workers in the same process"
  with_steal "$KEEL_BENCH_BIN" pickup --url "$KEEL_URL" --samples "$SAMPLES" | sed 's/^/in-process /'
  stop_all

  # The two halves apart: creation alone (no workers anywhere), then a
  # `keel worker` with the same worker count draining the queue alone. The
  # drain time includes the worker's start (a few hundred ms) and stops when
  # the queue is empty (the last few running jobs finish within milliseconds).
  bench_start_keel "$url" "$store-split" --log-level warning --workers 0
  bench_log "$store: split: $JOBS jobs created with no worker running"
  "$KEEL_BENCH_BIN" jobs --url "$KEEL_URL" --jobs "$JOBS" --concurrency "$CONCURRENCY" --enqueue-only | sed 's/^/split, creation only: /'
  local started finished
  started=$(date +%s.%N)
  "$KEEL_BIN" worker --store "$url" --log-level warning --drain-timeout 5s --workers "$WORKERS" >"$BENCH_TMP/worker-$store-split.log" 2>&1 &
  WORKER_PID=$!
  bench_wait_queue_empty "$KEEL_URL"
  finished=$(date +%s.%N)
  awk -v n="$JOBS" -v a="$started" -v b="$finished" -v w="$WORKERS" \
    'BEGIN { printf "split, workers only: %d jobs drained by keel worker --workers %d in %.2fs: %.0f jobs/s\n", n, w, b - a, n / (b - a) }'
  stop_all

  bench_start_keel "$url" "$store-cross" --log-level warning --workers 0
  start_worker "$url" "$store-cross" --workers 2
  bench_log "$store: pickup, workers in a separate keel worker process"
  with_steal "$KEEL_BENCH_BIN" pickup --url "$KEEL_URL" --samples "$SAMPLES" | sed 's/^/cross-process /'
  stop_all
}

echo "# keel jobs benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, keel $("$KEEL_BIN" --version)"
for store in "${stores[@]}"; do
  case $store in
    sqlite)
      run_store sqlite "sqlite:$BENCH_TMP/keel.sqlite"
      ;;
    postgres)
      bench_on_exit pg_stop
      pg_start
      "$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres keelbench
      run_store postgres "postgres://postgres@127.0.0.1:$PG_PORT/keelbench?sslmode=disable"
      pg_stop
      ;;
  esac
done

#!/usr/bin/env bash
# The worker side of the job benchmark on its own, with the lightest creating
# client: wrk creates no-op jobs for CREATE_SECONDS against a server with no
# workers (bench/create-job.lua), then a `keel worker` drains the backlog;
# the clock runs from the worker's start until `/system-health` reports an
# empty queue. Repeats RUNS times, each with a fresh store; set KEEL_BIN to
# compare builds (alternate them: this machine's figures drift by ±20 %).
#
#   bench/jobs-drain.sh          knobs: WORKERS=8 CREATE_SECONDS=4 RUNS=3 CONNECTIONS=32
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

WORKERS=${WORKERS:-8}
CREATE_SECONDS=${CREATE_SECONDS:-4}
RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-32}

bench_ensure_release_tools
bench_ensure_wrk
bench_init

WORKER_PID=
stop_worker() {
  bench_stop_pid "$WORKER_PID"
  WORKER_PID=
}
bench_on_exit stop_worker

echo "# keel backlog drain, $(date -u +%Y-%m-%d), $(nproc) cores, keel $("$KEEL_BIN" --version), $WORKERS workers"
for ((run = 1; run <= RUNS; run++)); do
  store="sqlite:$BENCH_TMP/drain-$run.sqlite"
  bench_start_keel "$store" "drain-$run" --log-level warning --workers 0
  TOKEN=$(curl -s -X POST "$KEEL_URL/api/session" | grep -o '"token":"[^"]*"' | cut -d'"' -f4)
  [ -n "$TOKEN" ] || bench_die "could not create a session"
  export TOKEN
  created=$(wrk -t2 -c"$CONNECTIONS" -d"${CREATE_SECONDS}s" -s bench/create-job.lua "$KEEL_URL/api/jobs" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
  queued=$(bench_queue_depth "$KEEL_URL")
  started=$(date +%s.%N)
  "$KEEL_BIN" worker --store "$store" --log-level warning --drain-timeout 5s --workers "$WORKERS" >"$BENCH_TMP/worker-$run.log" 2>&1 &
  WORKER_PID=$!
  bench_wait_queue_empty "$KEEL_URL"
  finished=$(date +%s.%N)
  awk -v r="$run" -v c="$created" -v n="$queued" -v a="$started" -v b="$finished" -v w="$WORKERS" \
    'BEGIN { printf "run %d: creation %d jobs/s; %d jobs drained by keel worker --workers %d in %.2fs: %.0f jobs/s\n", r, c, n, w, b - a, n / (b - a) }'
  stop_worker
  bench_stop_keel
done

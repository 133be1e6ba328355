#!/usr/bin/env bash
# The peer of bench/jobs.sh: RQ (Python job queue on Redis) with 2 workers,
# measured the same way: no-op jobs enqueued by 32 concurrent clients, end to
# end; and pickup latency (enqueued_at to started_at) one job at a time.
#
#   bench/peer-rq.sh
#
# Knobs (environment): JOBS=4000 CONCURRENCY=32 RQ_WORKERS=2 SAMPLES=200,
# PEER_VENV (default /tmp/keel-bench-rq-venv; created and kept as a cache).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

JOBS=${JOBS:-4000}
CONCURRENCY=${CONCURRENCY:-32}
RQ_WORKERS=${RQ_WORKERS:-2}
SAMPLES=${SAMPLES:-200}
PEER_VENV=${PEER_VENV:-/tmp/keel-bench-rq-venv}

bench_apt_install redis-server redis-server
bench_init

if [ ! -x "$PEER_VENV/bin/python" ]; then
  bench_log "creating virtualenv $PEER_VENV…"
  python3 -m venv "$PEER_VENV"
fi
"$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements-rq.txt

port=$(bench_free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$BENCH_TMP/redis.pid" --logfile "$BENCH_TMP/redis.log"
sleep 0.5
redis_pid=$(cat "$BENCH_TMP/redis.pid")
bench_on_exit "bench_stop_pid $redis_pid"
url="redis://127.0.0.1:$port/0"

WORKER_PIDS=()
stop_workers() {
  local pid
  for pid in "${WORKER_PIDS[@]}"; do bench_stop_pid "$pid"; done
  WORKER_PIDS=()
}
bench_on_exit stop_workers

start_workers() {
  local i
  for ((i = 0; i < RQ_WORKERS; i++)); do
    (cd bench/peer && exec "$PEER_VENV/bin/rq" worker --url "$url" --worker-class rq.worker.SimpleWorker --quiet bench) \
      >"$BENCH_TMP/rq-worker-$i.log" 2>&1 &
    WORKER_PIDS+=($!)
  done
  sleep 2
}

echo "# RQ peer benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, $("$PEER_VENV/bin/pip" freeze --disable-pip-version-check | grep -iE '^(rq|redis)==' | tr '\n' ' ')redis-server $(redis-server --version | awk '{print $3}'), $RQ_WORKERS SimpleWorkers"
start_workers
(cd bench/peer && "$PEER_VENV/bin/python" rq_bench.py throughput "$url" "$JOBS" "$CONCURRENCY") | sed 's/^/throughput: /'
(cd bench/peer && "$PEER_VENV/bin/python" rq_bench.py pickup "$url" "$SAMPLES" 30)
stop_workers

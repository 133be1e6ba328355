#!/usr/bin/env bash
# The peer of bench/streams.sh: FastAPI + sse-starlette under uvicorn (one
# worker process), each of CLIENTS concurrent streams getting EVENTS events
# INTERVAL_MS apart, measured by the same client (`keel-bench streams
# --raw-url`): time to first event, and every event delivered in order.
#
#   bench/peer-sse.sh
#
# Knobs (environment): CLIENTS=1000 EVENTS=50 INTERVAL_MS=20,
# PEER_VENV (default /tmp/keel-bench-sse-venv), KEEL_BENCH_BIN.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

CLIENTS=${CLIENTS:-1000}
EVENTS=${EVENTS:-50}
INTERVAL_MS=${INTERVAL_MS:-20}
PEER_VENV=${PEER_VENV:-/tmp/keel-bench-sse-venv}

bench_ensure_release_tools
bench_init
ulimit -n 65536 2>/dev/null || true

if [ ! -x "$PEER_VENV/bin/python" ]; then
  bench_log "creating virtualenv $PEER_VENV…"
  python3 -m venv "$PEER_VENV"
fi
"$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements-sse.txt

port=$(bench_free_port)
(cd bench/peer && EVENTS=$EVENTS INTERVAL_MS=$INTERVAL_MS exec "$PEER_VENV/bin/uvicorn" sse_app:app \
  --host 127.0.0.1 --port "$port" --log-level warning --backlog 4096) >"$BENCH_TMP/uvicorn.log" 2>&1 &
peer_pid=$!
bench_on_exit "bench_stop_pid $peer_pid"
bench_wait_for_url "http://127.0.0.1:$port/docs" "$peer_pid" "$BENCH_TMP/uvicorn.log"

echo "# sse-starlette peer benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, $("$PEER_VENV/bin/pip" freeze --disable-pip-version-check | grep -iE '^(fastapi|sse-starlette|uvicorn)==' | tr '\n' ' ')"
"$KEEL_BENCH_BIN" streams --raw-url "http://127.0.0.1:$port/stream" --clients "$CLIENTS" --events "$EVENTS" --interval-ms "$INTERVAL_MS"

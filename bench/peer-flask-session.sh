#!/usr/bin/env bash
# The comparison stack from the field reports, measured the same way as
# bench/session-get.sh: Flask + Flask-Session with sessions in Redis, served
# by gunicorn with 4 sync workers (bench/peer/flask_session_app.py). wrk
# hammers `GET /api/session` with one valid session cookie, keep-alive and
# with `Connection: close`, and one summary line per run is printed in the
# same format as session-get.sh; exits 1 if any response was not 2xx.
#
# Usage: bench/peer-flask-session.sh
#
# Knobs (environment):
#   DURATION=20s  CONNECTIONS=64  THREADS=2   passed to wrk (-d, -c, -t)
#   PEER_WORKERS=4                            gunicorn sync workers
#   PEER_VENV=/tmp/keel-bench-peer-venv       virtualenv for the pinned Python
#   PEER_REFRESH_EACH_REQUEST=0               1: Flask-Session default (every GET rewrites the session)
#                                             packages (bench/peer/requirements.txt);
#                                             kept between runs, delete it to rebuild
# Example quick check: DURATION=2s CONNECTIONS=8 bench/peer-flask-session.sh
#
# Installs wrk and redis-server (apt) if missing, and the Python packages
# into PEER_VENV only (never the system Python). Redis runs on 127.0.0.1
# without persistence. Every process and temp dir is removed on exit (the
# venv is a cache and stays).
# gunicorn's sync workers close the connection after every response, so the
# keep-alive row also opens a connection per request: that is how this stack
# is deployed, and what the comparison is about.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

PEER_WORKERS=${PEER_WORKERS:-4}
PEER_VENV=${PEER_VENV:-/tmp/keel-bench-peer-venv}
export PEER_REFRESH_EACH_REQUEST=${PEER_REFRESH_EACH_REQUEST:-0}

bench_ensure_wrk
bench_apt_install redis-server redis-server
bench_apt_install redis-cli redis-tools

if [ ! -x "$PEER_VENV/bin/python" ]; then
  bench_log "creating virtualenv $PEER_VENV ($(python3 --version))…"
  python3 -m venv "$PEER_VENV"
fi
bench_log "installing bench/peer/requirements.txt into $PEER_VENV (pip)…"
"$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements.txt
bench_log "peer: $("$PEER_VENV/bin/python" --version), $("$PEER_VENV/bin/pip" freeze --disable-pip-version-check | grep -iE '^(flask|flask-session|redis|gunicorn)==' | tr '\n' ' ')redis-server $(redis-server --version | awk '{print $3}')"

bench_init

# --- redis ---------------------------------------------------------------------
REDIS_PORT=$(bench_free_port)
REDIS_PIDFILE="$BENCH_TMP/redis.pid"
REDIS_PID=
stop_redis() {
  # Read the pid before stopping: redis deletes its pidfile on exit.
  if [ -z "$REDIS_PID" ] && [ -s "$REDIS_PIDFILE" ]; then REDIS_PID=$(cat "$REDIS_PIDFILE"); fi
  bench_stop_pid "$REDIS_PID"
  REDIS_PID=
}
bench_on_exit stop_redis
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$REDIS_PIDFILE" --dir "$BENCH_TMP" --logfile "$BENCH_TMP/redis.log"
for _ in $(seq 100); do
  [ -s "$REDIS_PIDFILE" ] && redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
[ -s "$REDIS_PIDFILE" ] || { cat "$BENCH_TMP/redis.log" >&2; bench_die "redis did not start"; }
REDIS_PID=$(cat "$REDIS_PIDFILE")
bench_log "redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

# --- gunicorn + flask ----------------------------------------------------------
APP_PORT=$(bench_free_port)
APP_URL="http://127.0.0.1:$APP_PORT"
APP_LOG="$BENCH_TMP/gunicorn.log"
GUNICORN_PID=
stop_gunicorn() {
  bench_stop_pid "$GUNICORN_PID"
  GUNICORN_PID=
}
bench_on_exit stop_gunicorn
# Started directly (not in a subshell) so $! is gunicorn's master process.
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" "$PEER_VENV/bin/gunicorn" \
  --workers "$PEER_WORKERS" --worker-class sync --bind "127.0.0.1:$APP_PORT" \
  --graceful-timeout 5 --chdir "$PWD/bench/peer" flask_session_app:app >"$APP_LOG" 2>&1 &
GUNICORN_PID=$!
bench_log "gunicorn ($PEER_WORKERS sync workers) on $APP_URL"
bench_wait_for_url "$APP_URL/ready" "$GUNICORN_PID" "$APP_LOG"

# --- one session, then wrk -----------------------------------------------------
curl -sS -f -c "$BENCH_TMP/cookies" -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d "$BENCH_SESSION_BODY" "$APP_URL/api/session" || bench_die "POST /api/session failed"
# Netscape cookie jar: name in field 6, value in field 7.
SESSION_COOKIE=$(awk -F'\t' '$6 == "session" { print $7 }' "$BENCH_TMP/cookies")
[ -n "$SESSION_COOKIE" ] || { cat "$BENCH_TMP/cookies" >&2; bench_die "POST /api/session set no session cookie"; }
bench_check_get "$APP_URL/api/session" "Cookie: session=$SESSION_COOKIE"

label=flask+redis; [ "${PEER_REFRESH_EACH_REQUEST:-0}" = 1 ] && label=flask+redis+refresh
bench_wrk "$label" keep-alive "$APP_URL/api/session" -H "Cookie: session=$SESSION_COOKIE"
bench_wrk "$label" close "$APP_URL/api/session" -H "Cookie: session=$SESSION_COOKIE" -H "Connection: close"

bench_finish

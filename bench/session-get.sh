#!/usr/bin/env bash
# Keel session-read throughput and latency: wrk hammers `GET /api/session`
# with one valid bearer token, against a fresh SQLite file and/or a throwaway
# PostgreSQL 15 on loopback. Each store gets two runs: keep-alive, and with
# `Connection: close` (a new TCP connection per request). Prints one summary
# line per run (store, mode, requests/s, p50, p99, non-2xx count, socket
# errors); exits 1 if any response was not 2xx.
#
# Usage: bench/session-get.sh [sqlite|postgres|all|hummingbird]     (default: all)
#
# `hummingbird` runs the same two wrk runs against a bare Hummingbird app
# (`keel-bench floor-server`, GET /session: a fixed JSON body of the same
# size, no middleware, no session check, no store): the framework's own
# ceiling on this machine, for comparison.
#
# Knobs (environment):
#   DURATION=20s  CONNECTIONS=64  THREADS=2   passed to wrk (-d, -c, -t)
#   SESSIONS=1                                how many sessions; above 1, each request carries
#                                             the next of SESSIONS tokens (bench/tokens.lua)
#   PG_QUERY=                                 appended to the PostgreSQL URL's query, e.g.
#                                             "pool_size=8&session_reads=4"
#   KEEL_BIN=.build/release/keel              server binary; the default is built
#                                             with `swift build -c release --product keel`
#                                             if missing. Other KEEL_* variables
#                                             (e.g. KEEL_SQLITE_SYNCHRONOUS) reach keel.
# Example quick check: DURATION=2s CONNECTIONS=8 KEEL_BIN=.build/debug/keel bench/session-get.sh sqlite
#
# Installs wrk (apt) and, for postgres, PostgreSQL (apt) if missing. Starts
# everything on 127.0.0.1 and removes every process and temp dir on exit.
# wrk and the server share this machine's cores: compare numbers only between
# runs on the same machine with the same knobs.
set -euo pipefail

# Resolve KEEL_BIN against the caller's directory before moving to the repo.
if [ -n "${KEEL_BIN:-}" ]; then
  case $KEEL_BIN in /*) ;; *) KEEL_BIN="$PWD/$KEEL_BIN" ;; esac
fi
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

if [ "${1:-}" = hummingbird ]; then
  stores=(hummingbird)
else
  bench_parse_stores "${1:-all}"
fi

if [ -z "${KEEL_BIN:-}" ]; then
  KEEL_BIN="$PWD/.build/release/keel"
  if [ ! -x "$KEEL_BIN" ]; then
    bench_log "building keel (release)…"
    swift build -c release --product keel
  fi
fi
[ -x "$KEEL_BIN" ] || bench_die "KEEL_BIN=$KEEL_BIN is not an executable"
bench_log "keel $("$KEEL_BIN" --version) at $KEEL_BIN; tree $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"

bench_ensure_wrk
bench_init


# bench_store LABEL: create a session on the running keel, check it reads
# back, then run wrk keep-alive and with Connection: close.
bench_store() {
  local label=$1 token i
  TOKENS_FILE="$BENCH_TMP/tokens-$label.txt"
  export TOKENS_FILE
  : >"$TOKENS_FILE"
  for ((i = 0; i < ${SESSIONS:-1}; i++)); do
    token=$(curl -sS -f -X POST -H 'Content-Type: application/json' \
      -d "$BENCH_SESSION_BODY" "$KEEL_URL/api/session" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') \
      || bench_die "POST /api/session failed ($label)"
    bench_check_get "$KEEL_URL/api/session" "Authorization: Bearer $token"
    echo "$token" >>"$TOKENS_FILE"
  done
  if [ "${SESSIONS:-1}" -gt 1 ]; then
    bench_log "$SESSIONS sessions, round robin (bench/tokens.lua)"
    bench_wrk "$label" "keep-alive, $SESSIONS sessions" "$KEEL_URL/api/session" -s bench/tokens.lua
    bench_wrk "$label" "close, $SESSIONS sessions" "$KEEL_URL/api/session" -s bench/tokens.lua -H "Connection: close"
  else
    bench_wrk "$label" keep-alive "$KEEL_URL/api/session" -H "Authorization: Bearer $token"
    bench_wrk "$label" close "$KEEL_URL/api/session" -H "Authorization: Bearer $token" -H "Connection: close"
  fi
}

for store in "${stores[@]}"; do
  case $store in
    hummingbird)
      bench_ensure_release_tools
      bench_start_floor_server
      bench_wrk hummingbird keep-alive "$FLOOR_URL/session"
      bench_wrk hummingbird close "$FLOOR_URL/session" -H "Connection: close"
      ;;
    sqlite)
      bench_start_keel "sqlite:$BENCH_TMP/keel.sqlite" sqlite
      bench_store sqlite
      bench_stop_keel
      ;;
    postgres)
      bench_on_exit pg_stop
      pg_start # scripts/lib/postgres.sh: runs as the postgres user when we are root
      "$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres keelbench
      bench_log "PostgreSQL on 127.0.0.1:$PG_PORT ($("$(pg_bindir)/postgres" --version))"
      bench_start_keel "postgres://postgres@127.0.0.1:$PG_PORT/keelbench?sslmode=disable${PG_QUERY:+&$PG_QUERY}" postgres
      bench_store postgres
      bench_stop_keel
      pg_stop
      ;;
  esac
done

bench_finish

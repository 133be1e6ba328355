# Shared helpers for the scripts in bench/: knobs, temp dir and cleanup,
# installing tools, free ports, waiting for a server, running wrk and
# summarising its output. Source it from a bench script; it defines functions
# and knob defaults only and starts nothing by itself.
#
# Knobs (environment), shared by every bench script:
#   DURATION=20s      how long each wrk run lasts (wrk's -d)
#   CONNECTIONS=64    open connections (wrk's -c)
#   THREADS=2         wrk threads (wrk's -t)
#
# Typical use:
#   source bench/lib.sh
#   bench_init                                   # temp dir + cleanup trap
#   bench_on_exit "some_command args"            # runs on exit, last registered first
#   bench_wrk STORE MODE URL -H "Header: value"  # one run, appended to the table
#   bench_finish                                 # prints the table; exit 1 if a run failed
# shellcheck shell=bash

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/postgres.sh
source "$BENCH_ROOT/scripts/lib/postgres.sh" # pg_start/pg_stop, and pg_free_port

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}

# The session both stacks are asked to create and then serve on every GET
# (Keel: POST /api/session {"data": ...}; the Flask peer accepts the same body).
# shellcheck disable=SC2034 # used by the scripts that source this file
BENCH_SESSION_BODY='{"data":{"user_id":42,"name":"bench-user","roles":["reader","writer"],"preferences":{"theme":"dark","language":"en"}}}'

bench_log() { printf '[bench] %s\n' "$*" >&2; }
bench_die() {
  printf '\n[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

# --- temp dir and cleanup ----------------------------------------------------

BENCH_CLEANUPS=()

# bench_on_exit CMD: run CMD (a string, eval'd) when the script exits, however
# it exits. Commands run last-registered first; a failing one does not stop
# the others.
bench_on_exit() { BENCH_CLEANUPS+=("$1"); }

bench_run_cleanups() {
  local i
  for ((i = ${#BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${BENCH_CLEANUPS[i]}" || true
  done
  BENCH_CLEANUPS=()
}

# bench_init: make BENCH_TMP (removed on exit), BENCH_RESULTS, and the traps.
bench_init() {
  BENCH_TMP=$(mktemp -d /tmp/keel-bench.XXXXXX)
  chmod 755 "$BENCH_TMP"
  BENCH_RESULTS="$BENCH_TMP/results.tsv"
  : >"$BENCH_RESULTS"
  # shellcheck disable=SC2016 # expanded when the cleanup runs
  bench_on_exit 'rm -rf "$BENCH_TMP"'
  trap bench_run_cleanups EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# bench_stop_pid PID [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace
# period (default 15s). Works for children and for daemons (e.g. redis).
bench_stop_pid() {
  local pid=$1 grace=${2:-15} i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    bench_log "pid $pid still running after ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true # reap it if it is our child
}

# --- tools -------------------------------------------------------------------

# bench_apt_install COMMAND PACKAGE: install PACKAGE with apt-get unless
# COMMAND is already on PATH; `apt-get update` only if the first try fails.
bench_apt_install() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  bench_log "installing $pkg (apt)…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$pkg" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "$pkg" >/dev/null; } \
    || bench_die "could not install $pkg with apt-get"
  command -v "$cmd" >/dev/null 2>&1 || bench_die "$pkg installed but $cmd is not on PATH"
}

bench_ensure_wrk() { bench_apt_install wrk wrk; }

# --- servers -----------------------------------------------------------------

# bench_free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
bench_free_port() { pg_free_port; }

# bench_wait_for_url URL PID LOG [TIMEOUT_SECONDS]: wait until GET URL answers
# 200. Fails early, printing LOG, if process PID exits first.
bench_wait_for_url() {
  local url=$1 pid=$2 log=$3 timeout=${4:-60} i code
  for ((i = 0; i < timeout * 10; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) || true
    [ "$code" = 200 ] && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      [ -f "$log" ] && tail -n 30 "$log" >&2
      bench_die "server (pid $pid) exited before $url answered 200"
    fi
    sleep 0.1
  done
  [ -f "$log" ] && tail -n 30 "$log" >&2
  bench_die "$url did not answer 200 within ${timeout}s (last status: ${code:-none})"
}

# bench_check_get URL HEADER: one GET with HEADER must answer 200 with the
# benchmark session's data in the body (so wrk measures real session reads,
# not error responses).
bench_check_get() {
  local url=$1 header=$2 body="$BENCH_TMP/check-body" code
  code=$(curl -sS -o "$body" -w '%{http_code}' -H "$header" "$url") || bench_die "GET $url failed"
  [ "$code" = 200 ] || { cat "$body" >&2; bench_die "GET $url answered $code, not 200"; }
  grep -q '"bench-user"' "$body" || { cat "$body" >&2; bench_die "GET $url did not return the session's data"; }
}

# --- wrk ---------------------------------------------------------------------

# bench_cpu_ticks: the machine's CPU time counters, "total steal" (ticks since
# boot, all CPUs, from /proc/stat's first line).
bench_cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit }' /proc/stat; }

# bench_steal_percent BEFORE AFTER: the share of CPU time the hypervisor took
# away (steal) between two bench_cpu_ticks readings, in percent. On this
# shared virtual machine it varies from run to run, and tail latency with it.
bench_steal_percent() {
  local total0 steal0 total1 steal1
  read -r total0 steal0 <<<"$1"
  read -r total1 steal1 <<<"$2"
  awk -v t=$((total1 - total0)) -v s=$((steal1 - steal0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * s / t : 0) }'
}

# bench_parse_wrk FILE: print "rps p50_ms p99_ms non2xx socket_errors requests"
# from the output of `wrk --latency`. wrk omits the "Socket errors" and
# "Non-2xx or 3xx responses" lines when they are zero.
bench_parse_wrk() {
  awk '
    function ms(v,   n, unit) {
      n = v + 0; unit = v; sub(/^[0-9.]+/, "", unit)
      if (unit == "us") return n / 1000
      if (unit == "ms") return n
      if (unit == "s")  return n * 1000
      if (unit == "m")  return n * 60000
      if (unit == "h")  return n * 3600000
      return -1
    }
    /^ +50% /                     { p50 = ms($2) }
    /^ +99% /                     { p99 = ms($2) }
    / requests in /               { requests = $1 }
    /^Requests\/sec:/             { rps = $2 }
    /Non-2xx or 3xx responses:/   { non2xx = $NF }
    /Socket errors:/              { gsub(",", ""); sockerr = $4 + $6 + $8 + $10 }
    END {
      if (rps == "" || p50 == "" || p99 == "" || requests == "") exit 1
      printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, non2xx, sockerr, requests
    }' "$1"
}

# bench_wrk STORE MODE URL [WRK_ARGS...]: one wrk run with the knobs above and
# --latency; WRK_ARGS are typically -H headers. Its raw output goes to stderr,
# its summary to the results table. A run with any non-2xx response (or no
# completed request) is marked FAIL and makes bench_finish exit 1.
bench_wrk() {
  local store=$1 mode=$2 url=$3 out rps p50 p99 non2xx sockerr requests status=ok ticks steal
  shift 3
  out="$BENCH_TMP/wrk-$store-$mode.txt"
  bench_log "wrk: $store, $mode: -t $THREADS -c $CONNECTIONS -d $DURATION $url"
  ticks=$(bench_cpu_ticks)
  wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency "$@" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; bench_die "wrk failed ($store, $mode)"; }
  steal=$(bench_steal_percent "$ticks" "$(bench_cpu_ticks)")
  sed 's/^/    /' "$out" >&2
  read -r rps p50 p99 non2xx sockerr requests < <(bench_parse_wrk "$out") \
    || bench_die "could not parse wrk's output ($store, $mode); see above"
  if [ "$non2xx" -ne 0 ] || [ "$requests" -eq 0 ]; then
    status=FAIL
    bench_log "FAIL: $store, $mode: $non2xx of $requests responses were not 2xx"
  fi
  if [ "$sockerr" -ne 0 ]; then
    bench_log "WARNING: $store, $mode: $sockerr socket errors (connect/read/write/timeout), see wrk's output above"
    # wrk decides whether to reuse a connection from the response alone: when a
    # server closes after a `Connection: close` request without saying
    # `Connection: close` in its response, wrk writes the next request on the
    # dead socket, counts a read error, and reconnects; the completed request
    # is still counted. So about one read error per request here is that.
    case $mode in *close*) bench_log "(about one read error per request in this mode means the server closed without answering 'Connection: close')" ;; esac
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$store" "$mode" "$rps" "$p50" "$p99" "$non2xx" "$sockerr" "$steal" "$status" >>"$BENCH_RESULTS"
}

# bench_finish: print the summary table (stdout) for every bench_wrk run so
# far; exit 1, loudly, if any run had a non-2xx response.
bench_finish() {
  echo
  echo "# wrk -t $THREADS -c $CONNECTIONS -d $DURATION, $(nproc) cores; latency in ms"
  {
    printf 'store\tmode\trequests/s\tp50_ms\tp99_ms\tnon-2xx\tsocket_errors\tsteal_%%\tstatus\n'
    cat "$BENCH_RESULTS"
  } | awk -F'\t' '{ printf "%-12s %-11s %11s %9s %9s %8s %14s %8s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
  if grep -q $'\tFAIL$' "$BENCH_RESULTS"; then
    bench_die "some runs had non-2xx responses (or none at all): see the FAIL rows above"
  fi
}

# --- a fake model: nginx sending a static stream ------------------------------

# bench_fake_openai_stream TOKENS FILE: write an OpenAI chat-completions
# stream of TOKENS content chunks (`tok0 `, `tok1 `, …) to FILE, in the
# chunk format of Tests/Clients/models/fake_openai.py: a role chunk, the
# content chunks, a finish chunk, a usage chunk, then `data: [DONE]`.
# Served by nginx as a static file it is a zero-cost upstream: no per-chunk
# writes, no GIL, no timers (bench/models-router.sh, bench/chats.sh).
bench_fake_openai_stream() {
  local tokens=$1 file=$2 id=chatcmpl-bench0000000000000000000 head i
  head='{"id":"'$id'","object":"chat.completion.chunk","created":1796325533,"model":"tokens-'$tokens'","service_tier":"default","system_fingerprint":"fp_fake0001","choices":[{"index":0,"delta":'
  {
    printf 'data: %s{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n' "$head"
    for ((i = 0; i < tokens; i++)); do
      printf 'data: %s{"content":"tok%d "},"logprobs":null,"finish_reason":null}],"usage":null}\n\n' "$head" "$i"
    done
    printf 'data: %s{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n' "$head"
    printf 'data: {"id":"%s","object":"chat.completion.chunk","created":1796325533,"model":"tokens-%d","service_tier":"default","system_fingerprint":"fp_fake0001","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}\n\n' "$id" "$tokens" "$tokens" $((tokens + 8))
    printf 'data: [DONE]\n\n'
  } >"$file"
}

# --- release builds of keel and keel-bench -----------------------------------

# bench_ensure_release_tools: set KEEL_BIN and KEEL_BENCH_BIN (absolute),
# building the release products when they are missing.
bench_ensure_release_tools() {
  local built=false
  for var in KEEL_BIN KEEL_BENCH_BIN; do
    if [ -n "${!var:-}" ]; then
      case ${!var} in /*) ;; *) printf -v "$var" '%s' "$PWD/${!var}" ;; esac
    fi
  done
  if [ -z "${KEEL_BIN:-}" ] || [ -z "${KEEL_BENCH_BIN:-}" ]; then
    if [ ! -x .build/release/keel ] || [ ! -x .build/release/keel-bench ]; then
      bench_log "building keel and keel-bench (release)…"
      swift build -c release --product keel && swift build -c release --product keel-bench
      built=true
    fi
    KEEL_BIN=${KEEL_BIN:-$PWD/.build/release/keel}
    KEEL_BENCH_BIN=${KEEL_BENCH_BIN:-$PWD/.build/release/keel-bench}
  fi
  [ -x "$KEEL_BIN" ] || bench_die "KEEL_BIN=$KEEL_BIN is not an executable"
  [ -x "$KEEL_BENCH_BIN" ] || bench_die "KEEL_BENCH_BIN=$KEEL_BENCH_BIN is not an executable"
  $built || bench_log "using $KEEL_BIN and $KEEL_BENCH_BIN (delete them or set KEEL_BIN/KEEL_BENCH_BIN to rebuild)"
}

# --- one keel server at a time ----------------------------------------------

KEEL_PID=
KEEL_URL=

# bench_start_keel STORE_URL LABEL [SERVE_ARGS...]: start `$KEEL_BIN serve` on
# a free port of 127.0.0.1 and wait for /ready; sets KEEL_PID and KEEL_URL.
# Its log is $BENCH_TMP/keel-LABEL.log. Stopped by bench_stop_keel, and on exit.
bench_start_keel() {
  local store_url=$1 label=$2 port log
  shift 2
  port=$(bench_free_port)
  log="$BENCH_TMP/keel-$label.log"
  bench_log "starting keel ($label) on 127.0.0.1:$port"
  # Started directly (not in a subshell) so $! is keel's own pid.
  # Benchmarks drive demo.generate with no quotas; builds before these flags had neither.
  local extra=()
  # Read the whole help first: `grep -q` stops reading early, keel then dies
  # of SIGPIPE, and under pipefail the test failed now and then.
  local help
  help=$("$KEEL_BIN" serve --help 2>/dev/null || true)
  if grep -q -- --demo-jobs <<<"$help"; then
    extra=(--demo-jobs true --session-create-rate 0 --session-max-active-jobs 0)
  fi
  "$KEEL_BIN" serve --host 127.0.0.1 --port "$port" --store "$store_url" \
    --drain-delay 0s --drain-timeout 5s "${extra[@]}" "$@" >"$log" 2>&1 &
  KEEL_PID=$!
  KEEL_URL="http://127.0.0.1:$port"
  if [ -z "${BENCH_KEEL_CLEANUP:-}" ]; then
    BENCH_KEEL_CLEANUP=1
    bench_on_exit bench_stop_keel
  fi
  bench_wait_for_url "$KEEL_URL/ready" "$KEEL_PID" "$log"
}

# bench_start_floor_server [FLOOR_SERVER_ARGS...]: start `keel-bench
# floor-server` (a bare Hummingbird app, the framework's own floor) on a free
# port of 127.0.0.1 and wait for it; sets FLOOR_URL. Stopped on exit.
FLOOR_URL=
bench_start_floor_server() {
  local port pid log="$BENCH_TMP/floor-server.log"
  port=$(bench_free_port)
  "$KEEL_BENCH_BIN" floor-server --port "$port" "$@" >"$log" 2>&1 &
  pid=$!
  bench_on_exit "bench_stop_pid $pid"
  FLOOR_URL="http://127.0.0.1:$port"
  bench_wait_for_url "$FLOOR_URL/session" "$pid" "$log"
  bench_log "bare Hummingbird (keel-bench floor-server) on 127.0.0.1:$port"
}

# bench_queue_depth URL: the queued jobs /system-health reports (empty if unreachable).
bench_queue_depth() { curl -s "$1/system-health" | grep -o '"queue_depth":[0-9]*' | cut -d: -f2 || true; }

# bench_wait_queue_empty URL: returns once /system-health reports no queued job.
bench_wait_queue_empty() {
  while [ "$(bench_queue_depth "$1")" != 0 ]; do sleep 0.05; done
}

bench_stop_keel() {
  bench_stop_pid "$KEEL_PID"
  KEEL_PID=
}

# bench_parse_stores sqlite|postgres|all: set the array `stores`, or print the
# usage and exit 2.
bench_parse_stores() {
  # shellcheck disable=SC2034 # read by the scripts that call this
  case $1 in
    sqlite) stores=(sqlite) ;;
    postgres) stores=(postgres) ;;
    all) stores=(sqlite postgres) ;;
    *)
      echo "usage: $0 [sqlite|postgres|all]" >&2
      exit 2
      ;;
  esac
}

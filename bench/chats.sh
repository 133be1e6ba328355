#!/usr/bin/env bash
# Issue 18: a burst of concurrent chats, every message answered by a fake
# model streaming TOKENS tokens, through Keel and through the field reports'
# stack (FastAPI + sse-starlette under uvicorn) calling the same fake, side
# by side in one run. For each case: every answer complete (all tokens, in
# order, `done` last; on Keel also stored, its text equal to the streamed
# text), time to first token p50/p99 (from the POST written to the first
# `token` event), answers/s (CHATS over the time from the first POST to the
# last answer's end), and CPU per answer of the server's processes (from
# /proc/PID/stat, utime + stime + reaped children, before and after the
# burst), with the store's, the balancer's and the fake's CPU beside it.
#
#   bench/chats.sh
#   CASES="keel-sqlite peer" ROUNDS=3 bench/chats.sh
#
# Cases (CASES, in this order each round):
#   keel-sqlite     one `keel serve`, the embedded SQLite default
#   keel-postgres   one `keel serve` on PostgreSQL
#   keel3-postgres  three `keel serve` on one PostgreSQL behind nginx, round
#                   robin (deploy/nginx/keel.conf.template, rendered as
#                   scripts/cluster does)
#   peer            bench/peer/chat_app.py: uvicorn --workers PEER_WORKERS
#                   (default: the number of cores), uvloop + httptools
#
# The fake model is nginx (1 worker) sending a static OpenAI chat-completions
# stream of TOKENS chunks (bench_fake_openai_stream): a zero-cost upstream,
# the same for Keel (`--models FILE`, kind openai) and the peer (httpx).
# Each case gets WARMUP chats first (untimed, not counted), then the burst.
#
# Knobs (environment): CHATS=200 TOKENS=200 WARMUP=20 ROUNDS=1,
# CASES="keel-sqlite keel-postgres keel3-postgres peer", KEEL_WORKERS
# (keel serve --workers for every Keel instance; default: Keel's own, 4),
# KEEL_ARGS (more `keel serve` flags), PEER_WORKERS=$(nproc),
# PEER_VENV=/tmp/keel-bench-chat-venv, KEEL_BIN, KEEL_BENCH_BIN,
# PERF=1 (record the server's processes with `perf record` during each
# timed burst; the flat profiles, by shared object and by symbol, go to
# PERF_DIR=/tmp/keel-bench-chats-perf).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

CHATS=${CHATS:-200}
TOKENS=${TOKENS:-200}
WARMUP=${WARMUP:-20}
ROUNDS=${ROUNDS:-1}
CASES=${CASES:-keel-sqlite keel-postgres keel3-postgres peer}
KEEL_WORKERS=${KEEL_WORKERS:-}
KEEL_ARGS=${KEEL_ARGS:-}
PEER_WORKERS=${PEER_WORKERS:-$(nproc)}
PEER_VENV=${PEER_VENV:-/tmp/keel-bench-chat-venv}
PERF=${PERF:-0}
PERF_DIR=${PERF_DIR:-/tmp/keel-bench-chats-perf}

for case_name in $CASES; do
  case $case_name in
    keel-sqlite | keel-postgres | keel3-postgres | peer) ;;
    *) bench_die "unknown case '$case_name' (keel-sqlite, keel-postgres, keel3-postgres, peer)" ;;
  esac
done

bench_ensure_release_tools
bench_init
ulimit -n 65536 2>/dev/null || true
command -v nginx >/dev/null || bench_apt_install nginx nginx-light
if [ "$PERF" = 1 ]; then
  command -v perf >/dev/null || bench_die "PERF=1 needs perf (apt-get install linux-perf)"
  mkdir -p "$PERF_DIR"
fi

# --- the fake model ------------------------------------------------------------

upstream_dir="$BENCH_TMP/upstream"
mkdir -p "$upstream_dir/html/v1/chat"
bench_fake_openai_stream "$TOKENS" "$upstream_dir/html/v1/chat/completions"
upstream_port=$(bench_free_port)
# A POST to a static file is a 405 in nginx; error_page turns it into the
# file (an internal GET), with status 200.
cat >"$upstream_dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $upstream_dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_body_temp_path $upstream_dir/client; proxy_temp_path $upstream_dir/proxy;
  fastcgi_temp_path $upstream_dir/fastcgi; uwsgi_temp_path $upstream_dir/uwsgi; scgi_temp_path $upstream_dir/scgi;
  server {
    listen 127.0.0.1:$upstream_port backlog=4096;
    location / { root $upstream_dir/html; default_type text/event-stream; error_page 405 =200 \$uri; }
  }
}
CONF
nginx -e "$upstream_dir/error.log" -p "$upstream_dir" -c "$upstream_dir/nginx.conf" &
upstream_pid=$!
bench_on_exit "bench_stop_pid $upstream_pid 5"
bench_wait_for_url "http://127.0.0.1:$upstream_port/v1/chat/completions" "$upstream_pid" "$upstream_dir/error.log"
upstream=http://127.0.0.1:$upstream_port/v1
bench_log "fake model: nginx $(nginx -v 2>&1 | sed 's/.*\///'), 1 worker, static $TOKENS-token stream ($(wc -c <"$upstream_dir/html/v1/chat/completions") bytes) at $upstream"

models="$BENCH_TMP/models.json"
cat >"$models" <<JSON
{"providers": {"fake": {"kind": "openai", "base_url": "$upstream"}},
 "models":    {"fake": {"provider": "fake", "model": "tokens-$TOKENS"}}}
JSON

keel_flags=(--models "$models" --log-level warning)
[ -n "$KEEL_WORKERS" ] && keel_flags+=(--workers "$KEEL_WORKERS")
# shellcheck disable=SC2206 # KEEL_ARGS is split on purpose
[ -n "$KEEL_ARGS" ] && keel_flags+=($KEEL_ARGS)

# --- the peer's virtualenv -----------------------------------------------------

if [[ " $CASES " == *" peer "* ]]; then
  if [ ! -x "$PEER_VENV/bin/python" ]; then
    bench_log "creating virtualenv $PEER_VENV…"
    python3 -m venv "$PEER_VENV"
  fi
  "$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements-chat.txt
fi

# --- PostgreSQL, shared by the PostgreSQL cases (a fresh database each) ---------

pg_pid=
if [[ " $CASES " == *"postgres "* ]]; then
  pg_start
  bench_on_exit pg_stop
  pg_pid=$(head -n 1 "$PG_DIR/data/postmaster.pid")
  bench_log "PostgreSQL $("$(pg_bindir)/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (pid $pg_pid)"
fi
# pg_fresh_url NAME: a new, empty database NAME on the PostgreSQL above
# (called in $(…), so the name must be new each time: the caller's).
pg_fresh_url() {
  pg_as_owner "$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$1" >&2 || bench_die "createdb $1 failed"
  echo "postgres://postgres@127.0.0.1:$PG_PORT/$1?sslmode=disable"
}

# --- one burst -------------------------------------------------------------------

SUMMARY="$BENCH_TMP/summary.txt"
: >"$SUMMARY"

# The server's processes (comma-separated), for PERF=1; set by each case.
PERF_PIDS=

# perf_report LABEL DATA: the flat profiles of a recording, to PERF_DIR.
perf_report() {
  local label=$1 data=$2 out
  out="$PERF_DIR/$1-$(date -u +%H%M%S)"
  local demangle=(cat)
  command -v swift >/dev/null && demangle=(swift demangle --simplified)
  perf report -i "$data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 25 >"$out-dso.txt" || true
  perf report -i "$data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 80 | "${demangle[@]}" >"$out-symbols.txt" || true
  bench_log "perf ($label): $out-dso.txt, $out-symbols.txt"
  sed 's/^/    [perf dso] /' "$out-dso.txt" | head -n 12 >&2
}

# burst LABEL URL [KEEL_BENCH_CHATS_ARGS...]: the warm-up, then the timed
# burst; its RESULT line (with the load before it) goes to the summary.
burst() {
  local label=$1 url=$2 out="$BENCH_TMP/burst-$1.txt" load status=0
  shift 2
  if [ "$WARMUP" -gt 0 ]; then
    "$KEEL_BENCH_BIN" chats --url "$url" --chats "$WARMUP" --tokens "$TOKENS" --label warmup "$@" >"$BENCH_TMP/warmup.txt" 2>&1 \
      || { cat "$BENCH_TMP/warmup.txt" >&2; bench_die "$label: the warm-up failed"; }
  fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  local ticks; ticks=$(bench_cpu_ticks)
  local perf_pid=
  if [ "$PERF" = 1 ] && [ -n "$PERF_PIDS" ]; then
    perf record -F 997 -p "$PERF_PIDS" -o "$BENCH_TMP/perf-$label.data" >"$BENCH_TMP/perf-$label.log" 2>&1 &
    perf_pid=$!
    sleep 1 # perf attaches
  fi
  "$KEEL_BENCH_BIN" chats --url "$url" --chats "$CHATS" --tokens "$TOKENS" --label "$label" "$@" >"$out" 2>&1 || status=$?
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf_report "$label" "$BENCH_TMP/perf-$label.data"
  fi
  sed 's/^/    /' "$out" >&2
  local result; result=$(grep '^RESULT ' "$out" | tail -n 1 | sed 's/^RESULT //')
  [ -n "$result" ] || result="label=$label complete=0 error=exit-$status"
  echo "$result load=$load steal=$(bench_steal_percent "$ticks" "$(bench_cpu_ticks)")" >>"$SUMMARY"
  [ "$status" = 0 ] || bench_log "FAIL: $label: not every answer completed (exit $status); see above"
}

# --- the cases ---------------------------------------------------------------------

case_keel() {
  local label=$1 store_url=$2
  bench_start_keel "$store_url" "$label" "${keel_flags[@]}"
  local cpu=(--cpu "keel=$KEEL_PID" --cpu "fake=+$upstream_pid")
  PERF_PIDS=$KEEL_PID
  [ -n "$pg_pid" ] && [[ $store_url == postgres* ]] && cpu+=(--cpu "postgres=+$pg_pid")
  burst "$label" "$KEEL_URL" "${cpu[@]}"
  # What the server logged (--log-level warning: warnings and errors only).
  grep -v '^$' "$BENCH_TMP/keel-$label.log" | head -n 20 | sed "s/^/    [$label log] /" >&2 || true
  bench_stop_keel
}

case_keel3() {
  local label=$1 store_url=$2 ports=() pids=() i lb_port lb="$BENCH_TMP/lb-$1"
  for i in 0 1 2; do
    bench_start_keel "$store_url" "$label-$i" "${keel_flags[@]}" --instance-id "node-$i" --trusted-proxies 127.0.0.1
    ports+=("${KEEL_URL##*:}")
    pids+=("$KEEL_PID")
    bench_on_exit "bench_stop_pid $KEEL_PID"
  done
  KEEL_PID=
  lb_port=$(bench_free_port)
  mkdir -p "$lb/logs" "$lb/temp"
  sed -e "s#{{PORT_A}}#${ports[0]}#g" -e "s#{{PORT_B}}#${ports[1]}#g" -e "s#{{PORT_C}}#${ports[2]}#g" \
    -e "s#{{LISTEN_PORT}}#$lb_port#g" -e "s#{{PREFIX}}#$lb#g" -e "s#{{READ_TIMEOUT}}#60s#g" \
    deploy/nginx/keel.conf.template >"$lb/nginx.conf"
  nginx -t -q -p "$lb" -c "$lb/nginx.conf" -e "$lb/logs/error.log" || bench_die "the rendered nginx template does not load"
  nginx -p "$lb" -c "$lb/nginx.conf" -e "$lb/logs/error.log" &
  local lb_pid=$!
  bench_wait_for_url "http://127.0.0.1:$lb_port/health" "$lb_pid" "$lb/logs/error.log"
  bench_log "nginx round robin (deploy/nginx/keel.conf.template, $(nproc) workers) on 127.0.0.1:$lb_port → ${ports[*]}"
  PERF_PIDS=$(IFS=,; echo "${pids[*]}")
  burst "$label" "http://127.0.0.1:$lb_port" --cpu "keel=$(IFS=,; echo "${pids[*]}")" --cpu "postgres=+$pg_pid" --cpu "balancer=+$lb_pid" \
    --cpu "fake=+$upstream_pid"
  grep -v '^$' "$lb/logs/error.log" | head -n 20 | sed "s/^/    [$label nginx] /" >&2 || true
  for i in 0 1 2; do
    grep -v '^$' "$BENCH_TMP/keel-$label-$i.log" | head -n 10 | sed "s/^/    [$label-$i log] /" >&2 || true
  done
  bench_stop_pid "$lb_pid" 5
  for pid in "${pids[@]}"; do bench_stop_pid "$pid"; done
}

case_peer() {
  local port log="$BENCH_TMP/uvicorn.log"
  port=$(bench_free_port)
  (cd bench/peer && UPSTREAM=$upstream MODEL=tokens-$TOKENS exec "$PEER_VENV/bin/uvicorn" chat_app:app \
    --host 127.0.0.1 --port "$port" --workers "$PEER_WORKERS" --loop uvloop --http httptools \
    --log-level warning --no-access-log --backlog 4096) >"$log" 2>&1 &
  local peer_pid=$!
  bench_on_exit "bench_stop_pid $peer_pid"
  bench_wait_for_url "http://127.0.0.1:$port/docs" "$peer_pid" "$log"
  PERF_PIDS=$(pgrep -d, -P "$peer_pid" || true)
  burst peer "http://127.0.0.1:$port" --peer --cpu "peer=+$peer_pid" --cpu "fake=+$upstream_pid"
  grep -v '^$' "$log" | head -n 20 | sed 's/^/    [peer log] /' >&2 || true
  bench_stop_pid "$peer_pid"
}

peer_versions=
[[ " $CASES " == *" peer "* ]] && peer_versions=$("$PEER_VENV/bin/pip" freeze --disable-pip-version-check | grep -iE '^(fastapi|sse-starlette|uvicorn|httpx|uvloop|httptools)==' | tr '\n' ' ')
echo "# chat burst, $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?'): $CHATS chats at once, $TOKENS tokens each, warm-up $WARMUP; keel --workers ${KEEL_WORKERS:-default}; peer: uvicorn --workers $PEER_WORKERS ${peer_versions}"
for ((round = 1; round <= ROUNDS; round++)); do
  for case_name in $CASES; do
    bench_log "round $round: $case_name (load $(cut -d' ' -f1-3 /proc/loadavg))"
    case $case_name in
      keel-sqlite) case_keel keel-sqlite "sqlite:$BENCH_TMP/keel-$round.sqlite" ;;
      keel-postgres) case_keel keel-postgres "$(pg_fresh_url "keel1_$round")" ;;
      keel3-postgres) case_keel3 keel3-postgres "$(pg_fresh_url "keel3_$round")" ;;
      peer) case_peer ;;
    esac
  done
done

# --- the table ---------------------------------------------------------------------

echo
echo "# ttft: from the POST written to the first token event (ms); tok_events: token events per answer (TOKENS when each token is its own event, fewer when pieces share a store write); cpu: ms per answer (server processes; store, balancer, fake beside)"
awk '
  function field(name,   i, kv) { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }; return "-" }
  BEGIN { printf "%-15s %9s %10s %10s %10s %10s %10s %10s %10s %10s %10s %6s %6s\n", "case", "complete", "answers/s", "ttft_p50", "ttft_p99", "total_p99", "tok_events", "cpu_server", "cpu_store", "cpu_lb", "cpu_fake", "load", "steal%" }
  {
    server = field("cpu_keel_ms"); if (server == "-") server = field("cpu_peer_ms")
    printf "%-15s %9s %10s %10s %10s %10s %10s %10s %10s %10s %10s %6s %6s\n", field("label"), field("complete") "/" field("chats"), field("answers_s"),
      field("ttft_p50_ms"), field("ttft_p99_ms"), field("total_p99_ms"), field("token_events"), server, field("cpu_postgres_ms"), field("cpu_balancer_ms"), field("cpu_fake_ms"), field("load"), field("steal")
  }' "$SUMMARY"

# Ratios against the peer, per round (Keel's answers/s over the peer's; the peer's ttft p99 over Keel's: above 1, Keel is ahead).
if grep -q '^label=peer ' "$SUMMARY"; then
  echo
  echo "# against the peer, in the order run (answers/s: keel / peer; ttft p99: keel / peer)"
  awk '
    function field(name,   i, kv) { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }; return "" }
    { label[NR] = field("label"); rate[NR] = field("answers_s"); p99[NR] = field("ttft_p99_ms") }
    END {
      # Each Keel row against the peer row of its round (the next peer row after it, else the last before it).
      for (i = 1; i <= NR; i++) {
        if (label[i] == "peer") continue
        j = 0
        for (k = i + 1; k <= NR; k++) if (label[k] == "peer") { j = k; break }
        if (!j) for (k = i - 1; k >= 1; k--) if (label[k] == "peer") { j = k; break }
        if (j && rate[j] > 0 && p99[j] > 0) printf "%-15s answers/s %.2fx   ttft p99 %.2fx\n", label[i], rate[i] / rate[j], p99[i] / p99[j]
      }
    }' "$SUMMARY"
fi
if awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } if (v["complete"] != v["chats"]) bad = 1 } END { exit !bad }' "$SUMMARY"; then
  bench_die "some answers were lost: see the LOST lines above"
fi

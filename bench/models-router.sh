#!/usr/bin/env bash
# The model router's overhead (issue 17): Keel's added time to first token
# and added total time, p50 and p99, for a 500-token streamed answer from a
# local fake, against calling the fake directly.
#
# The fake is nginx sending a static file: an OpenAI chat-completions stream
# of 500 content chunks (the chunk format of Tests/Clients/models/fake_openai.py:
# a role chunk, the content chunks, a finish chunk, a usage chunk, then
# `data: [DONE]`) as `text/event-stream`, on a keep-alive connection that is
# never closed by the server. `keel-bench router` (release) then runs, in one
# process, the same OpenAICompatibleProvider two ways taken in turn: directly,
# and through a ModelRouter over it with its shared health in a migrated
# SQLite store. It prints p50/p99 of each, the difference of the percentiles,
# and the percentiles of the paired differences.
#
#   bench/models-router.sh
#
# Knobs (environment): REQUESTS=1000 (pairs per run) WARMUP=200
# CONCURRENCY="1 16" (one run each) TOKENS=500, UPSTREAM=nginx|python (python:
# the test suite's fake, for comparison; it streams 500 tokens in 4-11 ms,
# one write per chunk, with millisecond jitter), RELAY=1 (0: leave out the
# third side, a bare relay task between the provider and the caller: the
# router's structure without its work), CPU_ROUNDS=2 (rounds of the CPU-time
# phase: each side alone, `keel-bench router --only SIDE`, under
# /usr/bin/time; CPU time per request is less disturbed by other load on the
# machine than wall time; 0 skips it), OVERHEAD=1 (0: skip the overhead runs
# and the CPU phase), KEEL_BENCH_BIN.
#
# Failover cost (issue 17): "a 429 on the first model, then the second
# answers: time to first token minus the second model's own". nginx has two
# more locations answering every chat completion with 429 and OpenAI's
# rate-limit error body (application/json): /rate-limited/v1 without any
# retry header, /rate-limited-retry-after/v1 with `Retry-After: 30`.
# `keel-bench router --failover` runs, in turn: the second model's provider
# alone (direct); a chain first → second with the cooldown off (every request
# meets the 429, records it in the SQLite health store and falls back:
# failover); the same chain with the defaults over the Retry-After location
# (the first request falls back and cools the first model; later ones skip
# it: cooling). Knobs: FAILOVER=1 (0 skips it; nginx only),
# one client (its checks of each fallback assume requests one at a time), RETRY_AFTER=30 (seconds; a request
# meeting the 429 again after the cooldown ended is allowed and counted),
# REQUESTS, WARMUP, TOKENS.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

REQUESTS=${REQUESTS:-1000}
WARMUP=${WARMUP:-200}
CONCURRENCY=${CONCURRENCY:-1 16}
TOKENS=${TOKENS:-500}
UPSTREAM=${UPSTREAM:-nginx}
RELAY=${RELAY:-1}
CPU_ROUNDS=${CPU_ROUNDS:-2}
OVERHEAD=${OVERHEAD:-1}
FAILOVER=${FAILOVER:-1}
RETRY_AFTER=${RETRY_AFTER:-30}

if [ -z "${KEEL_BENCH_BIN:-}" ]; then
  bench_log "building keel-bench (release)…"
  swift build -c release --product keel-bench >&2 || bench_die "release build failed"
  KEEL_BENCH_BIN=$PWD/.build/release/keel-bench
fi
[ -x "$KEEL_BENCH_BIN" ] || bench_die "KEEL_BENCH_BIN=$KEEL_BENCH_BIN is not an executable"
bench_init

case $UPSTREAM in
  nginx)
    command -v nginx >/dev/null || bench_apt_install nginx nginx-light
    dir="$BENCH_TMP/nginx"
    mkdir -p "$dir/html/v1/chat"
    bench_fake_openai_stream "$TOKENS" "$dir/html/v1/chat/completions"
    # OpenAI's 429 for a request-rate limit (its body, without the headers).
    rate_limit_body='{"error":{"message":"Rate limit reached for tokens-'$TOKENS' in organization org-bench on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in '$RETRY_AFTER's. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}'
    port=$(bench_free_port)
    # A POST to a static file is a 405 in nginx; error_page turns it into
    # the file (an internal GET), with status 200.
    cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_body_temp_path $dir/client; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port;
    location / { root $dir/html; default_type text/event-stream; error_page 405 =200 \$uri; }
    location = /rate-limited/v1/chat/completions { default_type application/json; return 429 '$rate_limit_body'; }
    location = /rate-limited-retry-after/v1/chat/completions {
      default_type application/json; add_header Retry-After $RETRY_AFTER always; return 429 '$rate_limit_body';
    }
  }
}
CONF
    nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" &
    upstream_pid=$!
    bench_on_exit "bench_stop_pid $upstream_pid 5"
    bench_wait_for_url "http://127.0.0.1:$port/v1/chat/completions" "$upstream_pid" "$dir/error.log"
    bench_log "nginx $(nginx -v 2>&1 | sed 's/.*\///'), 1 worker, static $TOKENS-token stream ($(wc -c <"$dir/html/v1/chat/completions") bytes) on 127.0.0.1:$port"
    ;;
  python)
    "${PYTHON:-python3}" Tests/Clients/models/fake_openai.py >"$BENCH_TMP/fake.out" 2>"$BENCH_TMP/fake.err" &
    upstream_pid=$!
    bench_on_exit "bench_stop_pid $upstream_pid 5"
    for ((i = 0; i < 100; i++)); do
      port=$(head -n 1 "$BENCH_TMP/fake.out" 2>/dev/null || true)
      [ -n "$port" ] && break
      sleep 0.1
    done
    [ -n "$port" ] || bench_die "the Python fake did not start: $(cat "$BENCH_TMP/fake.err")"
    bench_log "Tests/Clients/models/fake_openai.py on 127.0.0.1:$port"
    ;;
  *) bench_die "unknown UPSTREAM '$UPSTREAM' (nginx, python)" ;;
esac

# The fake must answer a POST with the whole stream.
code=$(curl -s -o "$BENCH_TMP/check.sse" -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
  -d '{"model":"tokens-'"$TOKENS"'","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}' \
  "http://127.0.0.1:$port/v1/chat/completions")
[ "$code" = 200 ] && tail -n 2 "$BENCH_TMP/check.sse" | grep -q '^data: \[DONE\]$' || bench_die "the fake answered $code without [DONE]"

if [ "$UPSTREAM" = nginx ] && [ "$FAILOVER" = 1 ]; then
  # The 429 locations: status, body, and the retry header only where meant.
  for location in rate-limited rate-limited-retry-after; do
    curl -s -D "$BENCH_TMP/429.head" -o "$BENCH_TMP/429.body" -XPOST -H 'Content-Type: application/json' -d '{"model":"x"}' \
      "http://127.0.0.1:$port/$location/v1/chat/completions"
    head -n 1 "$BENCH_TMP/429.head" | grep -q ' 429' && grep -qi '^content-type: application/json' "$BENCH_TMP/429.head" \
      && grep -q '"code":"rate_limit_exceeded"' "$BENCH_TMP/429.body" || bench_die "/$location did not answer OpenAI's 429"
    retry=$(grep -ci '^retry-after' "$BENCH_TMP/429.head" || true)
    [ "$retry" = "$([ $location = rate-limited ] && echo 0 || echo 1)" ] || bench_die "/$location: $retry retry headers"
  done
fi

echo "# model router, $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores, upstream: $UPSTREAM, $TOKENS tokens; $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for concurrency in $CONCURRENCY; do
  [ "$OVERHEAD" = 1 ] || break
  echo "# (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
  ticks=$(bench_cpu_ticks)
  "$KEEL_BENCH_BIN" router --upstream "http://127.0.0.1:$port/v1" --model "tokens-$TOKENS" --tokens "$TOKENS" \
    --requests "$REQUESTS" --warmup "$WARMUP" --concurrency "$concurrency" \
    $([ "$RELAY" = 1 ] && echo --with-relay) || bench_die "keel-bench router failed (concurrency $concurrency)"
  echo "# (steal over the run: $(bench_steal_percent "$ticks" "$(bench_cpu_ticks)") %; load: $(cut -d' ' -f1-3 /proc/loadavg))"
done

if [ "$FAILOVER" = 1 ]; then
  if [ "$UPSTREAM" != nginx ]; then
    bench_log "the failover cost needs UPSTREAM=nginx (its 429 locations); skipped"
  else
    echo "# (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
    ticks=$(bench_cpu_ticks)
    "$KEEL_BENCH_BIN" router --failover --upstream "http://127.0.0.1:$port/v1" --model "tokens-$TOKENS" --tokens "$TOKENS" \
      --rate-limited "http://127.0.0.1:$port/rate-limited/v1" --rate-limited-retry-after "http://127.0.0.1:$port/rate-limited-retry-after/v1" \
      --requests "$REQUESTS" --warmup "$WARMUP" --concurrency 1 || bench_die "keel-bench router --failover failed"
    echo "# (steal over the run: $(bench_steal_percent "$ticks" "$(bench_cpu_ticks)") %; load: $(cut -d' ' -f1-3 /proc/loadavg))"
  fi
fi

if [ "$OVERHEAD" = 1 ] && [ "$CPU_ROUNDS" -gt 0 ]; then
  command -v /usr/bin/time >/dev/null || bench_apt_install /usr/bin/time time
  echo "# CPU time of the whole keel-bench process per request (user + system), each side alone, $REQUESTS requests after $WARMUP, sides in turn"
  sides="direct routed"
  [ "$RELAY" = 1 ] && sides="direct relay routed"
  for concurrency in $CONCURRENCY; do
    for ((round = 1; round <= CPU_ROUNDS; round++)); do
      line="concurrency $concurrency, round $round:"
      for side in $sides; do
        /usr/bin/time -o "$BENCH_TMP/time" -f '%U %S %e' "$KEEL_BENCH_BIN" router --upstream "http://127.0.0.1:$port/v1" --model "tokens-$TOKENS" \
          --tokens "$TOKENS" --requests "$REQUESTS" --warmup "$WARMUP" --concurrency "$concurrency" --only "$side" >/dev/null \
          || bench_die "keel-bench router --only $side failed"
        line+=$(awk -v n=$((REQUESTS + WARMUP)) -v side="$side" '{ printf "  %s %.3f ms (wall %.2f s)", side, 1000 * ($1 + $2) / n, $3 }' "$BENCH_TMP/time")
      done
      echo "$line  (load $(cut -d' ' -f1 /proc/loadavg))"
    done
  done
fi

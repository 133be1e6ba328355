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
# machine than wall time; 0 skips it), KEEL_BENCH_BIN.
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
    id=chatcmpl-bench0000000000000000000
    head='{"id":"'$id'","object":"chat.completion.chunk","created":1796325533,"model":"tokens-'$TOKENS'","service_tier":"default","system_fingerprint":"fp_fake0001","choices":[{"index":0,"delta":'
    {
      printf 'data: %s{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n' "$head"
      for ((i = 0; i < TOKENS; i++)); do
        printf 'data: %s{"content":"tok%d "},"logprobs":null,"finish_reason":null}],"usage":null}\n\n' "$head" "$i"
      done
      printf 'data: %s{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n' "$head"
      printf 'data: {"id":"%s","object":"chat.completion.chunk","created":1796325533,"model":"tokens-%d","service_tier":"default","system_fingerprint":"fp_fake0001","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}\n\n' "$id" "$TOKENS" "$TOKENS" $((TOKENS + 8))
      printf 'data: [DONE]\n\n'
    } >"$dir/html/v1/chat/completions"
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

echo "# model router overhead, $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores, upstream: $UPSTREAM, $TOKENS tokens; $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for concurrency in $CONCURRENCY; do
  ticks=$(bench_cpu_ticks)
  "$KEEL_BENCH_BIN" router --upstream "http://127.0.0.1:$port/v1" --model "tokens-$TOKENS" --tokens "$TOKENS" \
    --requests "$REQUESTS" --warmup "$WARMUP" --concurrency "$concurrency" \
    $([ "$RELAY" = 1 ] && echo --with-relay) || bench_die "keel-bench router failed (concurrency $concurrency)"
  echo "# (steal over the run: $(bench_steal_percent "$ticks" "$(bench_cpu_ticks)") %; load: $(cut -d' ' -f1-3 /proc/loadavg))"
done

if [ "$CPU_ROUNDS" -gt 0 ]; then
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

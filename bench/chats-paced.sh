#!/usr/bin/env bash
# Chats against a paced model: each answer takes as long as a real model's
# (TOKENS tokens, TOKEN_MS apart: 20 × 50 ms = 1 s by default), so what
# bounds a burst is how many answers one process streams at once, not CPU.
# One `keel serve` on SQLite, CHATS chats at once, through `keel-bench
# chats` (every answer complete, in order, stored with the streamed text),
# for each configuration in turn:
#
#   default   Keel's defaults: the model lane (--model-workers 256) and up
#             to 512 connections per model host (--model-max-connections)
#   before    the way it was: model jobs on the 4 --workers
#             (--model-workers 0) and AsyncHTTPClient's 8 connections per
#             host (--model-max-connections 8)
#   lane64    a model lane of 64 (--model-workers 64)
#
# The model is Tests/Clients/models/fake_openai.py (`slow-N-MS`), a
# threaded HTTP/1.1 server with a listen backlog of 1024: at 1 s per answer
# its own cost is negligible, and its pacing is what a real model's
# answers look like to Keel.
#
#   bench/chats-paced.sh
#   CHATS="64 200" ROUNDS=2 bench/chats-paced.sh
#
# Knobs (environment): CHATS="64 200" TOKENS=20 TOKEN_MS=50 ROUNDS=1,
# CONFIGS="default before lane64", KEEL_BIN, KEEL_BENCH_BIN.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

CHATS=${CHATS:-64 200}
TOKENS=${TOKENS:-20}
TOKEN_MS=${TOKEN_MS:-50}
ROUNDS=${ROUNDS:-1}
CONFIGS=${CONFIGS:-default before lane64}

bench_ensure_release_tools
bench_init
ulimit -n 65536 2>/dev/null || true

python3 Tests/Clients/models/fake_openai.py --port 0 >"$BENCH_TMP/fake.port" 2>"$BENCH_TMP/fake.log" &
fake_pid=$!
bench_on_exit "bench_stop_pid $fake_pid 5"
for _ in $(seq 50); do [ -s "$BENCH_TMP/fake.port" ] && break; sleep 0.1; done
fake_port=$(head -1 "$BENCH_TMP/fake.port")
[ -n "$fake_port" ] || bench_die "the fake model did not start: $(cat "$BENCH_TMP/fake.log")"
models="$BENCH_TMP/models.json"
cat >"$models" <<JSON
{"providers": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:$fake_port/v1"}},
 "models":    {"paced": {"provider": "fake", "model": "slow-$TOKENS-$TOKEN_MS"}}}
JSON
bench_log "paced model: fake_openai.py slow-$TOKENS-$TOKEN_MS on 127.0.0.1:$fake_port ($((TOKENS * TOKEN_MS)) ms per answer)"

echo "# paced chats, $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?'): $TOKENS tokens $TOKEN_MS ms apart per answer, one keel serve on SQLite"
results="$BENCH_TMP/paced.txt"
: >"$results"
for round in $(seq "$ROUNDS"); do
  for chats in $CHATS; do
    for config in $CONFIGS; do
      case $config in
        default) flags=() ;;
        before) flags=(--model-workers 0 --model-max-connections 8) ;;
        lane64) flags=(--model-workers 64) ;;
        *) bench_die "unknown configuration '$config' (default, before, lane64)" ;;
      esac
      store="$BENCH_TMP/store-$round-$chats-$config"
      mkdir -p "$store"
      bench_start_keel "sqlite:$store/keel.db" "$config-$chats" --models "$models" --log-level warning "${flags[@]}"
      bench_log "round $round: $chats chats, $config ${flags[*]} (load $(cut -d' ' -f1-3 /proc/loadavg))"
      out="$BENCH_TMP/out-$round-$chats-$config.txt"
      status=0
      "$KEEL_BENCH_BIN" chats --url "$KEEL_URL" --chats "$chats" --tokens "$TOKENS" --label "$config" --timeout-seconds 600 >"$out" 2>&1 || status=$?
      cat "$out"
      bench_stop_keel
      [ "$status" = 0 ] || bench_die "keel-bench chats failed ($status) for $config at $chats chats"
      grep '^RESULT' "$out" | sed "s/^RESULT /RESULT chats_at_once=$chats /" >>"$results"
    done
  done
done

echo
echo "# seconds: from the first POST to the last answer's end; ttft: from the POST written to the first token (ms)"
printf '%-9s %6s %9s %10s %10s %10s %10s\n' config chats complete seconds answers/s ttft_p50 ttft_p99
awk '{
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "%-9s %6s %9s %10.2f %10.1f %10.0f %10.0f\n", v["label"], v["chats_at_once"], v["complete"] "/" v["chats"], v["seconds"], v["answers_s"], v["ttft_p50_ms"], v["ttft_p99_ms"]
}' "$results"

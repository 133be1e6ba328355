#!/usr/bin/env bash
# Streams opened and dropped at once (issue 15's finding 1): STREAMS event
# streams on one long job, WAVE at a time, each dropped as soon as its head
# arrives. Prints keel's resident memory before, right after, and SETTLE
# seconds later, and the streams the process still holds. With a binary that
# frees a stream only at its next write, the streams and their memory stay
# until the heartbeat (15 s by default).
#
#   bench/sse-abort.sh [KEEL_BIN]      # default .build/release/keel, else .build/debug/keel
#   STREAMS=16000 WAVE=1000 SETTLE=5   # the defaults
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_init
KEEL_BIN=${1:-$( [ -x "$BENCH_ROOT/.build/release/keel" ] && echo "$BENCH_ROOT/.build/release/keel" || echo "$BENCH_ROOT/.build/debug/keel")}
STREAMS=${STREAMS:-16000}
WAVE=${WAVE:-1000}
SETTLE=${SETTLE:-5}

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
open_streams() { curl -s "$KEEL_URL/metrics" | awk '$1 == "keel_sse_open_streams" {print $2}'; }

bench_start_keel "sqlite:$BENCH_TMP/keel.sqlite" sse-abort --log-level warning
token=$(curl -s -X POST "$KEEL_URL/api/session" | python3 -c 'import sys, json; print(json.load(sys.stdin)["token"])')
job=$(curl -s -X POST "$KEEL_URL/api/jobs" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"type":"demo.generate","input":{"tokens":2,"delay_ms":60000}}' | python3 -c 'import sys, json; print(json.load(sys.stdin)["id"])')
sleep 1
before=$(rss_mb "$KEEL_PID")
port=${KEEL_URL##*:}
echo "# keel $("$KEEL_BIN" --version) ($KEEL_BIN), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
printf '| burst | client | RSS before | right after | after %s s | streams held right after | after %s s |\n|---:|---|---:|---:|---:|---:|---:|\n' "$SETTLE" "$SETTLE"
# ROUNDS bursts: memory that a burst leaves behind would grow with each.
for round in $(seq 1 "${ROUNDS:-3}"); do
  result=$(python3 "$BENCH_ROOT/bench/sse_abort_client.py" 127.0.0.1 "$port" "$token" "$job" "$STREAMS" "$WAVE")
  after=$(rss_mb "$KEEL_PID"); held_after=$(open_streams)
  sleep "$SETTLE"
  settled=$(rss_mb "$KEEL_PID"); held_settled=$(open_streams)
  printf '| %s | %s | %s MB | %s MB | %s MB | %s | %s |\n' "$round" "$result" "$before" "$after" "$settled" "${held_after:-?}" "${held_settled:-?}"
done

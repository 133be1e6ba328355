#!/usr/bin/env bash
# Resumable uploads: one SIZE_MIB file in CHUNK_MIB tus PATCHes over loopback,
# side by side: Keel (SQLite store, bytes in files beside it, each PATCH synced
# and committed before it is acknowledged), tuspyserver (FastAPI's tus server
# under uvicorn) and `dd conv=fsync` on the same disk. The same Python client
# (bench/peer/tus_client.py, one keep-alive connection) drives both servers.
# Also records each server's peak resident memory after a small and a big
# upload, to show it stays flat whatever the file size.
#
#   bench/uploads.sh
#
# Knobs (environment): SIZE_MIB=512 SMALL_MIB=64 CHUNK_MIB=5 RUNS=3,
# PEER_VENV (default /tmp/keel-bench-tus-venv; created and kept as a cache),
# KEEL_BIN (default: the release build, built when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

SIZE_MIB=${SIZE_MIB:-512}
SMALL_MIB=${SMALL_MIB:-64}
CHUNK_MIB=${CHUNK_MIB:-5}
RUNS=${RUNS:-3}
PEER_VENV=${PEER_VENV:-/tmp/keel-bench-tus-venv}

bench_init
bench_ensure_release_tools
if [ ! -x "$PEER_VENV/bin/python" ]; then
  bench_log "creating virtualenv $PEER_VENV…"
  python3 -m venv "$PEER_VENV"
fi
"$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements-tus.txt

chunk=$((CHUNK_MIB * 1048576))
big="$BENCH_TMP/big.bin"
small="$BENCH_TMP/small.bin"
bench_log "writing ${SIZE_MIB} MiB and ${SMALL_MIB} MiB of random data"
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$big"
head -c $((SMALL_MIB * 1048576)) /dev/urandom >"$small"
results="$BENCH_TMP/uploads.tsv"
: >"$results"

peak_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
mbps() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["mb_per_s"])'; }

run_dd() {
  local out="$BENCH_TMP/dd.out" started ended
  sync
  started=$(date +%s.%N)
  dd if="$big" of="$out" bs="${CHUNK_MIB}M" conv=fsync status=none
  ended=$(date +%s.%N)
  rm -f "$out"
  python3 -c "print(round($((SIZE_MIB * 1048576)) / ($ended - $started) / 1e6, 1))"
}

run_keel() {
  local run=$1 dir="$BENCH_TMP/keel-$1"
  mkdir -p "$dir"
  bench_start_keel "sqlite:$dir/keel.sqlite" "uploads-$run" --workers 0 --log-level warning
  local token
  token=$(curl -fsS -X POST "$KEEL_URL/api/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  "$PEER_VENV/bin/python" bench/peer/tus_client.py "$KEEL_URL/api/uploads" "$small" "$chunk" "$token" >/dev/null
  local after_small; after_small=$(rss_kib "$KEEL_PID")
  local speed
  speed=$("$PEER_VENV/bin/python" bench/peer/tus_client.py "$KEEL_URL/api/uploads" "$big" "$chunk" "$token" | mbps)
  printf 'keel\t%s\t%s\t%s\t%s\n' "$run" "$speed" "$after_small" "$(rss_kib "$KEEL_PID")/$(peak_kib "$KEEL_PID")" >>"$results"
  bench_stop_keel
  rm -rf "$dir"
}

run_tuspyserver() {
  local run=$1 dir="$BENCH_TMP/tus-$1" port log
  mkdir -p "$dir"
  port=$(bench_free_port)
  log="$BENCH_TMP/tuspyserver-$run.log"
  (cd bench/peer && TUS_FILES_DIR="$dir" exec "$PEER_VENV/bin/uvicorn" tus_app:app --host 127.0.0.1 --port "$port" --log-level warning) >"$log" 2>&1 &
  local pid=$!
  bench_wait_for_url "http://127.0.0.1:$port/docs" "$pid" "$log"
  "$PEER_VENV/bin/python" bench/peer/tus_client.py "http://127.0.0.1:$port/files/" "$small" "$chunk" >/dev/null
  local after_small; after_small=$(rss_kib "$pid")
  local speed
  speed=$("$PEER_VENV/bin/python" bench/peer/tus_client.py "http://127.0.0.1:$port/files/" "$big" "$chunk" | mbps)
  printf 'tuspyserver\t%s\t%s\t%s\t%s\n' "$run" "$speed" "$after_small" "$(rss_kib "$pid")/$(peak_kib "$pid")" >>"$results"
  bench_stop_pid "$pid"
  rm -rf "$dir"
}

echo "# uploads benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, ${SIZE_MIB} MiB in ${CHUNK_MIB} MiB PATCHes, $RUNS runs; $("$PEER_VENV/bin/pip" freeze --disable-pip-version-check | grep -iE '^(tuspyserver|uvicorn)==' | tr '\n' ' ')"
for ((run = 1; run <= RUNS; run++)); do
  printf 'dd\t%s\t%s\t-\t-\n' "$run" "$(run_dd)" >>"$results"
  run_keel "$run"
  run_tuspyserver "$run"
done

{
  printf 'system\trun\tMB/s\tRSS_after_%sMiB_KiB\tRSS_after_%sMiB/peak_KiB\n' "$SMALL_MIB" "$SIZE_MIB"
  cat "$results"
} | awk -F'\t' '{ printf "%-12s %4s %8s %20s %26s\n", $1, $2, $3, $4, $5 }'
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
speeds = {}
for system, _, speed, *_ in rows:
    speeds.setdefault(system, []).append(float(speed))
median = {system: statistics.median(values) for system, values in speeds.items()}
for system, values in speeds.items():
    print(f"{system:<12} median {median[system]:.1f} MB/s (range {min(values):.1f}–{max(values):.1f})")
print(f"keel / dd = {median['keel'] / median['dd']:.0%} (target ≥ 70%); keel / tuspyserver = {median['keel'] / median['tuspyserver']:.1f}× (target ≥ 3×)")
PY

#!/usr/bin/env bash
# Resumable uploads: one SIZE_MIB file in CHUNK_MIB tus PATCHes over loopback,
# side by side: `dd conv=fsync` on the same disk; Keel (release build, fresh
# SQLite store in a temp dir, bytes in files beside it, each PATCH synced and
# committed before it is acknowledged); tuspyserver (FastAPI's tus server,
# bench/peer/tus_app.py) under plain uvicorn (h11, asyncio) and under
# uvicorn[standard] (httptools, uvloop). The same Python client
# (bench/peer/tus_client.py, one keep-alive connection, stop-and-wait PATCHes)
# drives every server. Each server first takes a SMALL_MIB upload, then the
# big one, and its resident memory is read from /proc/PID/status (VmRSS after
# each, VmHWM at the end) to show whether it stays flat across file sizes.
# Every stored upload is checked against the source file afterwards.
#
#   bench/uploads.sh
#   SIZE_MIB=64 SMALL_MIB=16 RUNS=1 bench/uploads.sh      # a quick check
#
# Knobs (environment): SIZE_MIB=512 SMALL_MIB=64 CHUNK_MIB=5 RUNS=3,
# CLIENT=requests (or httpx: the client library of tus_client.py),
# TUS_FLAVOURS="h11 standard" (which uvicorn set-ups to run tuspyserver under),
# DD_DSYNC=1 (also `dd oflag=dsync`: a sync per block, the pattern of a
# server that syncs each PATCH; for context, the target compares with
# conv=fsync), TUSPY_CHECK=1 (in run 1, also upload SMALL_MIB with the official tuspy
# client to each server), KEEL_SERVE_ARGS (extra `keel serve` flags, e.g.
# "--upload-commit-bytes 33554432"), PEER_VENV (default
# /tmp/keel-bench-tus-venv; created and kept as a cache), KEEL_BIN (default:
# the release build, built when missing).
# Results go to stdout; copy them to docs/benchmarks.md with the date.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

SIZE_MIB=${SIZE_MIB:-512}
SMALL_MIB=${SMALL_MIB:-64}
CHUNK_MIB=${CHUNK_MIB:-5}
RUNS=${RUNS:-3}
CLIENT=${CLIENT:-requests}
TUS_FLAVOURS=${TUS_FLAVOURS:-h11 standard}
TUSPY_CHECK=${TUSPY_CHECK:-1}
DD_DSYNC=${DD_DSYNC:-1}
PEER_VENV=${PEER_VENV:-/tmp/keel-bench-tus-venv}
read -r -a keel_serve_args <<<"${KEEL_SERVE_ARGS:-}"
read -r -a flavours <<<"$TUS_FLAVOURS"

if pgrep -f "swift-build|swift-test|swift-frontend" >/dev/null; then
  bench_log "WARNING: a Swift build or test run is going on; timings on 2 cores will be noisy"
fi

bench_ensure_release_tools
bench_init
if [ ! -x "$PEER_VENV/bin/python" ]; then
  bench_log "creating virtualenv $PEER_VENV…"
  python3 -m venv "$PEER_VENV"
fi
"$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements-tus.txt
PY="$PEER_VENV/bin/python"

chunk=$((CHUNK_MIB * 1048576))
big="$BENCH_TMP/big.bin"
small="$BENCH_TMP/small.bin"
bench_log "writing ${SIZE_MIB} MiB and ${SMALL_MIB} MiB of random data to $BENCH_TMP"
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$big"
head -c $((SMALL_MIB * 1048576)) /dev/urandom >"$small"
big_sha=$(sha256sum "$big" | cut -d' ' -f1)
small_sha=$(sha256sum "$small" | cut -d' ' -f1)
results="$BENCH_TMP/uploads.tsv"  # system run MB/s seconds rss_start rss_small rss_big hwm (KiB)
checks="$BENCH_TMP/tuspy.tsv"     # system MB/s
: >"$results"
: >"$checks"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
json_field() { "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

# upload ENDPOINT FILE [CLIENT] [TOKEN]: one upload with tus_client.py; prints its JSON.
upload() {
  local endpoint=$1 file=$2 client=${3:-$CLIENT} token=${4:-}
  "$PY" bench/peer/tus_client.py --url "$endpoint" --file "$file" --chunk "$chunk" --client "$client" \
    ${token:+--bearer "$token"} || bench_die "upload of $file to $endpoint failed"
}

# run_dd RUN SYSTEM DD_FLAG: dd of the big file, CHUNK_MIB per block, to the same disk.
run_dd() {
  local run=$1 system=$2 flag=$3 out="$BENCH_TMP/dd.out" started ended seconds
  sync
  started=$(date +%s.%N)
  dd if="$big" of="$out" bs="${CHUNK_MIB}M" "$flag" status=none
  ended=$(date +%s.%N)
  rm -f "$out"
  seconds=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.3f", b - a }')
  printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$system" "$run" \
    "$(awk -v s="$seconds" -v n=$((SIZE_MIB * 1048576)) 'BEGIN { printf "%.1f", n / s / 1e6 }')" "$seconds" >>"$results"
}

run_keel() {
  local run=$1 dir="$BENCH_TMP/keel-$1" token rss_start rss_small out location sha
  mkdir -p "$dir"
  sync
  bench_start_keel "sqlite:$dir/keel.sqlite" "uploads-$run" --workers 0 --log-level warning "${keel_serve_args[@]}"
  token=$(curl -fsS -X POST "$KEEL_URL/api/session" | json_field token)
  rss_start=$(rss_kib "$KEEL_PID")
  upload "$KEEL_URL/api/uploads" "$small" "$CLIENT" "$token" >/dev/null
  rss_small=$(rss_kib "$KEEL_PID")
  sync
  out=$(upload "$KEEL_URL/api/uploads" "$big" "$CLIENT" "$token")
  printf 'keel\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$(json_field mb_per_s <<<"$out")" "$(json_field seconds <<<"$out")" \
    "$rss_start" "$rss_small" "$(rss_kib "$KEEL_PID")" "$(hwm_kib "$KEEL_PID")" >>"$results"
  location=$(json_field location <<<"$out")
  sha=$(curl -fsS -H "Authorization: Bearer $token" "$location/info" | json_field sha256)
  [ "$sha" = "$big_sha" ] || bench_die "keel stored a different file (sha256 $sha, expected $big_sha)"
  if [ "$TUSPY_CHECK" = 1 ] && [ "$run" = 1 ]; then
    out=$(upload "$KEEL_URL/api/uploads" "$small" tuspy "$token")
    location=$(json_field location <<<"$out")
    sha=$(curl -fsS -H "Authorization: Bearer $token" "$location/info" | json_field sha256)
    [ "$sha" = "$small_sha" ] || bench_die "keel stored a different file from tuspy (sha256 $sha)"
    printf 'keel\t%s\n' "$(json_field mb_per_s <<<"$out")" >>"$checks"
  fi
  bench_stop_keel
  rm -rf "$dir"
}

TUS_PID=
stop_tuspyserver() {
  bench_stop_pid "$TUS_PID"
  TUS_PID=
}
bench_on_exit stop_tuspyserver

# run_tuspyserver RUN FLAVOUR: FLAVOUR h11 (plain uvicorn) or standard (uvicorn[standard]).
run_tuspyserver() {
  local run=$1 flavour=$2 dir="$BENCH_TMP/tus-$1-$2" port log pid rss_start rss_small out uid system
  local -a server_args
  case $flavour in
    h11) server_args=(--loop asyncio --http h11) ;;
    standard) server_args=(--loop uvloop --http httptools) ;;
    *) bench_die "unknown TUS_FLAVOURS entry: $flavour (h11 or standard)" ;;
  esac
  system="tuspyserver-$flavour"
  mkdir -p "$dir"
  sync
  port=$(bench_free_port)
  log="$BENCH_TMP/$system-$run.log"
  bench_log "starting tuspyserver (uvicorn ${server_args[*]}) on 127.0.0.1:$port"
  (cd bench/peer && TUS_FILES_DIR="$dir" exec "$PEER_VENV/bin/uvicorn" tus_app:app --host 127.0.0.1 --port "$port" \
    --log-level warning --no-access-log "${server_args[@]}") >"$log" 2>&1 &
  pid=$!
  TUS_PID=$pid
  bench_wait_for_url "http://127.0.0.1:$port/docs" "$pid" "$log"
  rss_start=$(rss_kib "$pid")
  upload "http://127.0.0.1:$port/files/" "$small" >/dev/null
  rss_small=$(rss_kib "$pid")
  sync
  out=$(upload "http://127.0.0.1:$port/files/" "$big")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$run" "$(json_field mb_per_s <<<"$out")" "$(json_field seconds <<<"$out")" \
    "$rss_start" "$rss_small" "$(rss_kib "$pid")" "$(hwm_kib "$pid")" >>"$results"
  uid=$(json_field location <<<"$out")
  cmp -s "$big" "$dir/${uid##*/}" || bench_die "tuspyserver stored a different file ($dir/${uid##*/})"
  if [ "$TUSPY_CHECK" = 1 ] && [ "$run" = 1 ]; then
    out=$(upload "http://127.0.0.1:$port/files/" "$small" tuspy)
    uid=$(json_field location <<<"$out")
    cmp -s "$small" "$dir/${uid##*/}" || bench_die "tuspyserver stored a different file from tuspy"
    printf '%s\t%s\n' "$system" "$(json_field mb_per_s <<<"$out")" >>"$checks"
  fi
  stop_tuspyserver
  rm -rf "$dir"
}

echo "# uploads benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, ${SIZE_MIB} MiB (and ${SMALL_MIB} MiB) in ${CHUNK_MIB} MiB PATCHes, $RUNS runs, client $CLIENT"
echo "# keel $("$KEEL_BIN" --version)${KEEL_SERVE_ARGS:+ serve $KEEL_SERVE_ARGS}; $("$PEER_VENV/bin/pip" freeze --disable-pip-version-check | grep -iE '^(tuspyserver|uvicorn|uvloop|httptools|requests|httpx|tuspy)==' | tr '\n' ' ')"
echo "# disk: $(df -h --output=source,fstype,size "$BENCH_TMP" | tail -n 1 | tr -s ' ')"
for ((run = 1; run <= RUNS; run++)); do
  bench_log "run $run of $RUNS"
  run_dd "$run" dd conv=fsync
  if [ "$DD_DSYNC" = 1 ]; then run_dd "$run" dd-dsync oflag=dsync; fi
  run_keel "$run"
  for flavour in "${flavours[@]}"; do run_tuspyserver "$run" "$flavour"; done
done

python3 - "$results" "$checks" "$SIZE_MIB" "$SMALL_MIB" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
checks = [line.rstrip("\n").split("\t") for line in open(sys.argv[2]) if line.strip()]
size, small = sys.argv[3], sys.argv[4]
mib = lambda kib: "-" if kib == "-" else f"{int(kib) / 1024:.1f}"

print()
print(f"{'system':<22} {'run':>3} {'MB/s':>7} {'seconds':>8} {'RSS start':>10} {'RSS ' + small + 'MiB':>11} {'RSS ' + size + 'MiB':>12} {'peak':>7}  (MiB)")
for system, run, speed, seconds, start, after_small, after_big, peak in rows:
    print(f"{system:<22} {run:>3} {speed:>7} {seconds:>8} {mib(start):>10} {mib(after_small):>11} {mib(after_big):>12} {mib(peak):>7}")

speeds, growth = {}, {}
for system, _, speed, _, _, after_small, after_big, _ in rows:
    speeds.setdefault(system, []).append(float(speed))
    if after_small != "-":
        growth.setdefault(system, []).append((int(after_big) - int(after_small)) / 1024)
median = {system: statistics.median(values) for system, values in speeds.items()}
print()
for system, values in speeds.items():
    line = f"{system:<22} median {median[system]:7.1f} MB/s ({median[system] * 1e6 / 1048576:.1f} MiB/s), range {min(values):.1f}–{max(values):.1f}"
    if system in growth:
        line += f"; RSS after {size} MiB minus after {small} MiB: {min(growth[system]):+.1f} to {max(growth[system]):+.1f} MiB"
    print(line)
if "keel" in median and "dd" in median:
    print(f"keel / dd conv=fsync = {median['keel'] / median['dd']:.0%} (target ≥ 70%)")
if "keel" in median and "dd-dsync" in median:
    print(f"keel / dd oflag=dsync = {median['keel'] / median['dd-dsync']:.0%} (context: a sync per block)")
peers = {s: v for s, v in median.items() if s.startswith("tuspyserver")}
for system, value in peers.items():
    print(f"keel / {system} = {median['keel'] / value:.2f}× (target ≥ 3×)")
for system, speed in checks:
    print(f"tuspy client ({small} MiB, a new connection per PATCH) against {system}: {speed} MB/s, stored file verified")
PY

#!/usr/bin/env bash
# PDF ingestion (issue 16): the 300-page fixture (scripts/make-document-fixtures.py
# --bench) through Keel against Poppler's command-line tools alone on the
# same file, alternating, RUNS times each:
#   pdftotext FILE OUT.txt                          (the target's yardstick)
#   pdftohtml -xml -i -stdout -q -nodrm FILE > OUT  (the one pass Keel runs, alone)
#   keel: a tus upload to a running `keel serve` (release, SQLite store in a
#         temp dir), POST /api/documents, GET /api/documents/ID every POLL_MS
#         until ready. Keel's figure is the document.ingest job's run time:
#         its finished_at minus started_at (the job JSON's own timestamps,
#         millisecond resolution): claim, read the upload, pdfinfo, pdftohtml,
#         parse, sections, passages, one store transaction. Also shown: the
#         wall time from POST /api/documents to the poll that saw `ready`
#         (includes queueing and up to POLL_MS of polling), and where the job's
#         time went, from its progress events in the store (extracting →
#         sections → indexing → done, millisecond timestamps).
# Target: keel job time ≤ 1.5× pdftotext.
#
#   bench/documents-pdf.sh
#   RUNS=9 KEEL_BIN=/path/to/keel bench/documents-pdf.sh
#
# Knobs (environment): RUNS=5, POLL_MS=10, KEEL_SERVE_ARGS (extra `keel serve`
# flags), and KEEL_BIN, DOC_VENV, FIXTURES_DIR (see bench/documents-lib.sh).
# Results go to stdout; copy them to docs/benchmarks.md with the date.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh
# shellcheck source-path=SCRIPTDIR source=documents-lib.sh
source bench/documents-lib.sh

RUNS=${RUNS:-5}
POLL_MS=${POLL_MS:-10}
read -r -a keel_serve_args <<<"${KEEL_SERVE_ARGS:-}"

docs_ensure_keel
docs_ensure_tools
docs_ensure_fixtures
bench_init
pdf="$FIXTURES_DIR/big-300.pdf"
results="$BENCH_TMP/pdf.tsv" # system run seconds [keel: wall claim→extracting extracting→sections sections→indexing indexing→done passages]
: >"$results"

echo "# documents-pdf, $(date -u +%Y-%m-%dT%H:%MZ), keel $("$KEEL_BIN" --version) ($KEEL_BIN)"
echo "# $pdf: $(stat -c %s "$pdf") bytes, $(pdfinfo "$pdf" | awk '/^Pages:/ { print $2 }') pages; $(pdftotext -v 2>&1 | head -n 1)"
docs_machine_line

db="$BENCH_TMP/keel.sqlite"
bench_start_keel "sqlite:$db" documents-pdf --log-level warning "${keel_serve_args[@]}"
token=$(docs_token)

# A first ingest, not counted: pages in the binary, the store's first writes.
python3 "$DOC_CLIENT" ingest --poll-ms "$POLL_MS" -- "$KEEL_URL" "$token" "$pdf" >/dev/null

run_tool() {
  local run=$1 system=$2 t0 t1
  shift 2
  t0=$(docs_now)
  "$@"
  t1=$(docs_now)
  printf '%s\t%s\t%s\n' "$system" "$run" "$(docs_elapsed "$t0" "$t1")" >>"$results"
}

run_keel() {
  local run=$1 out job stages
  out=$(python3 "$DOC_CLIENT" ingest --poll-ms "$POLL_MS" -- "$KEEL_URL" "$token" "$pdf")
  job=$(docs_json_field job <<<"$out")
  # Progress events' timestamps (ms) against the job's claim, from the store.
  stages=$(sqlite3 -readonly -separator ' ' "$db" "
    SELECT (SELECT started_at FROM keel_jobs WHERE id = '$job'),
      (SELECT MIN(created_at) FROM keel_job_events WHERE job_id = '$job' AND type = 'progress' AND data LIKE '%extracting%'),
      (SELECT MIN(created_at) FROM keel_job_events WHERE job_id = '$job' AND type = 'progress' AND data LIKE '%sections%'),
      (SELECT MIN(created_at) FROM keel_job_events WHERE job_id = '$job' AND type = 'progress' AND data LIKE '%indexing%'),
      (SELECT MIN(created_at) FROM keel_job_events WHERE job_id = '$job' AND type = 'done');")
  local s e x i d
  read -r s e x i d <<<"$stages"
  [ -n "$d" ] || bench_die "no stage timestamps for job $job: $stages"
  printf 'keel\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$(docs_json_field job_run_s <<<"$out")" "$(docs_json_field wall_s <<<"$out")" \
    "$(( e - s ))" "$(( x - e ))" "$(( i - x ))" "$(( d - i ))" "$(docs_json_field passage_count <<<"$out")" >>"$results"
}

for ((run = 1; run <= RUNS; run++)); do
  bench_log "run $run of $RUNS"
  run_tool "$run" pdftotext pdftotext "$pdf" "$BENCH_TMP/out.txt"
  run_tool "$run" pdftohtml-xml sh -c 'pdftohtml -xml -i -stdout -q -nodrm "$1" >"$2"' _ "$pdf" "$BENCH_TMP/out.xml"
  run_keel "$run"
done
echo "# pdftotext output $(stat -c %s "$BENCH_TMP/out.txt") bytes, pdftohtml -xml output $(stat -c %s "$BENCH_TMP/out.xml") bytes"
docs_machine_line

python3 - "$results" "$RUNS" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
by = {}
for row in rows:
    by.setdefault(row[0], []).append(row)
print()
print(f"{'system':<16} " + " ".join(f"{'run ' + str(r + 1):>8}" for r in range(int(sys.argv[2]))) + f" {'median':>8} {'min':>8}  (seconds)")
med = {}
for system in ("pdftotext", "pdftohtml-xml", "keel"):
    values = [float(r[2]) for r in by.get(system, [])]
    med[system] = statistics.median(values)
    print(f"{system:<16} " + " ".join(f"{v:8.3f}" for v in values) + f" {med[system]:8.3f} {min(values):8.3f}")
keel = by.get("keel", [])
walls = [float(r[3]) for r in keel]
print(f"{'keel wall':<16} " + " ".join(f"{v:8.3f}" for v in walls) + f" {statistics.median(walls):8.3f} {min(walls):8.3f}  (POST /api/documents → ready seen, {len(walls)} runs)")
print()
print("keel job time by stage (medians, ms): claim→extracting {}, extracting (read upload, pdfinfo, pdftohtml, parse) {}, "
      "sections→passages {}, store (one transaction) + done {}; passages {}".format(
          *(statistics.median(int(r[i]) for r in keel) for i in (4, 5, 6, 7)), keel[0][8]))
print(f"keel / pdftotext = {med['keel'] / med['pdftotext']:.2f}× (target ≤ 1.5×); keel / pdftohtml -xml = {med['keel'] / med['pdftohtml-xml']:.2f}×; "
      f"pdftohtml -xml / pdftotext = {med['pdftohtml-xml'] / med['pdftotext']:.2f}×")
PY

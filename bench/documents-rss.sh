#!/usr/bin/env bash
# Peak memory while ingesting big documents (issue 16): for each of the
# ~50 MB DOCX and the 300-page PDF (scripts/make-document-fixtures.py
# --bench), a fresh `keel serve` (release, SQLite store in a temp dir):
#   baseline   keel's VmRSS and VmHWM after start and one POST /api/session
#   uploaded   VmRSS and VmHWM after the tus upload (8 MiB PATCHes), before the document
#   ingest     POST /api/documents, wait until ready; meanwhile
#              bench/documents_rss_sampler.py samples keel and its
#              descendants every SAMPLE_MS (VmRSS; a child's own VmHWM, so
#              Poppler's pdfinfo/pdftohtml peaks are caught separately)
#   after      keel's VmHWM (its peak over its whole life) and VmRSS at the end
#
#   bench/documents-rss.sh
#   RUNS=3 bench/documents-rss.sh
#
# Knobs (environment): RUNS=1 (fresh servers per file), SAMPLE_MS=20,
# FILES="big-50mb.docx big-300.pdf", KEEL_SERVE_ARGS, and KEEL_BIN, DOC_VENV,
# FIXTURES_DIR (see bench/documents-lib.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh
# shellcheck source-path=SCRIPTDIR source=documents-lib.sh
source bench/documents-lib.sh

RUNS=${RUNS:-1}
SAMPLE_MS=${SAMPLE_MS:-20}
read -r -a files <<<"${FILES:-big-50mb.docx big-300.pdf}"
read -r -a keel_serve_args <<<"${KEEL_SERVE_ARGS:-}"

docs_ensure_keel
docs_ensure_tools
docs_ensure_fixtures
bench_init
results="$BENCH_TMP/rss.tsv"
: >"$results"

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

echo "# documents-rss, $(date -u +%Y-%m-%dT%H:%MZ), keel $("$KEEL_BIN" --version) ($KEEL_BIN), sampling every ${SAMPLE_MS} ms"
docs_machine_line

for ((run = 1; run <= RUNS; run++)); do
  for name in "${files[@]}"; do
    file="$FIXTURES_DIR/$name"
    [ -s "$file" ] || bench_die "$file is missing"
    dir="$BENCH_TMP/rss-$run-$name"
    mkdir -p "$dir"
    bench_start_keel "sqlite:$dir/keel.sqlite" "rss-$run-$name" --log-level warning "${keel_serve_args[@]}"
    token=$(docs_token)
    sleep 1
    base_rss=$(kib "$KEEL_PID" VmRSS)
    base_hwm=$(kib "$KEEL_PID" VmHWM)
    upload_id=$(python3 "$DOC_CLIENT" upload -- "$KEEL_URL" "$token" "$file")
    up_rss=$(kib "$KEEL_PID" VmRSS)
    up_hwm=$(kib "$KEEL_PID" VmHWM)
    stop="$dir/stop"
    python3 bench/documents_rss_sampler.py "$KEEL_PID" "$stop" --interval "$(awk -v m="$SAMPLE_MS" 'BEGIN { print m / 1000 }')" >"$dir/sampler.json" &
    sampler=$!
    out=$(python3 "$DOC_CLIENT" ingest --upload-id="$upload_id" --poll-ms 20 -- "$KEEL_URL" "$token" "$file")
    sleep 0.2
    touch "$stop"
    wait "$sampler"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$base_rss" "$base_hwm" "$up_rss" "$up_hwm" \
      "$(kib "$KEEL_PID" VmRSS)" "$out" "$(cat "$dir/sampler.json")" >>"$results"
    bench_stop_keel
    rm -rf "$dir"
  done
done
docs_machine_line

python3 - "$results" <<'PY'
import json, sys
mib = lambda k: f"{int(k) / 1024:.1f}"
print()
print(f"{'file':<15} {'run':>3} {'base RSS':>9} {'base HWM':>9} {'uploaded':>9} {'ingest peak':>12} {'keel HWM':>9} {'end RSS':>8} "
      f"{'tree peak':>10} {'poppler child peak':>20} {'job s':>6} {'passages':>8}  (MiB)")
for line in open(sys.argv[1]):
    name, run, base_rss, base_hwm, up_rss, up_hwm, end_rss, out, sampler = line.rstrip("\n").split("\t")
    o, s = json.loads(out), json.loads(sampler)
    poppler = [f"{n} {mib(c['hwm_kib'])}" for n, c in sorted(s["children"].items()) if n.startswith(("pdf",))]
    others = [f"{n} {mib(c['hwm_kib'])}" for n, c in sorted(s["children"].items()) if not n.startswith(("pdf",))]
    print(f"{name:<15} {run:>3} {mib(base_rss):>9} {mib(base_hwm):>9} {mib(up_rss):>9} {mib(s['keel_rss_peak_kib']):>12} "
          f"{mib(s['keel_hwm_kib']):>9} {mib(s['keel_rss_end_kib']):>8} {mib(s['tree_rss_peak_kib']):>10} {', '.join(poppler) or '-':>20} "
          f"{o['job_run_s']:>6} {o['passage_count']:>8}")
    if others:
        print(f"    other children seen: {', '.join(others)}")
    print(f"    {s['samples']} samples; upload HWM {mib(up_hwm)} MiB; document {o['chars']} characters, {o['section_count']} sections"
          + (f"; {o['superseded_retries']} ingest(s) failed 'superseded' and were restarted (peaks include them)" if o.get("superseded_retries") else ""))
PY

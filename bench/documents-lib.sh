# Helpers shared by bench/documents-*.sh (issue 16): the keel binary, the
# Python virtualenv and Debian tools the document fixtures need, the big
# fixtures themselves, and small /proc readers. Source it after bench/lib.sh
# and bench_init.
#
# Knobs (environment):
#   KEEL_BIN        the keel binary (default: .build/release/keel of this
#                   checkout, built with `swift build -c release --product keel`
#                   when missing)
#   DOC_VENV        virtualenv for python-docx and fpdf2 (default
#                   /tmp/keel-bench-docs-venv; created and kept as a cache)
#   FIXTURES_DIR    where big-300.pdf and big-50mb.docx are (default
#                   /tmp/keel-bench-docs-fixtures; made by
#                   scripts/make-document-fixtures.py --bench when missing)
# shellcheck shell=bash

DOC_VENV=${DOC_VENV:-/tmp/keel-bench-docs-venv}
FIXTURES_DIR=${FIXTURES_DIR:-/tmp/keel-bench-docs-fixtures}
DOC_CLIENT="$BENCH_ROOT/bench/documents_client.py"

# docs_ensure_keel: set KEEL_BIN (absolute), building the release keel when missing.
docs_ensure_keel() {
  if [ -z "${KEEL_BIN:-}" ]; then
    KEEL_BIN=$BENCH_ROOT/.build/release/keel
    if [ ! -x "$KEEL_BIN" ]; then
      bench_log "building keel (release)…"
      (cd "$BENCH_ROOT" && swift build -c release --product keel) || bench_die "release build failed"
    fi
  fi
  case $KEEL_BIN in /*) ;; *) KEEL_BIN=$PWD/$KEEL_BIN ;; esac
  [ -x "$KEEL_BIN" ] || bench_die "KEEL_BIN=$KEEL_BIN is not an executable"
  export KEEL_BIN
}

# docs_ensure_tools: Poppler (pdftotext, pdftohtml, pdfinfo), sqlite3.
docs_ensure_tools() {
  bench_apt_install pdftotext poppler-utils
  bench_apt_install sqlite3 sqlite3
}

# docs_ensure_fixtures: big-300.pdf and big-50mb.docx in FIXTURES_DIR.
docs_ensure_fixtures() {
  if [ -s "$FIXTURES_DIR/big-300.pdf" ] && [ -s "$FIXTURES_DIR/big-50mb.docx" ]; then return 0; fi
  bench_apt_install pandoc pandoc
  if [ ! -x "$DOC_VENV/bin/python" ]; then
    bench_log "creating virtualenv $DOC_VENV…"
    python3 -m venv "$DOC_VENV"
  fi
  "$DOC_VENV/bin/pip" install -q --disable-pip-version-check -r "$BENCH_ROOT/Tests/Fixtures/documents/requirements.txt"
  bench_log "making big-300.pdf and big-50mb.docx in $FIXTURES_DIR…"
  mkdir -p "$FIXTURES_DIR"
  "$DOC_VENV/bin/python" "$BENCH_ROOT/scripts/make-document-fixtures.py" --bench "$FIXTURES_DIR" >&2
}

# docs_token: a new session on the running keel; prints its bearer token.
docs_token() { python3 "$DOC_CLIENT" session "$KEEL_URL"; }

# docs_json_field FIELD: FIELD of the JSON object on stdin.
docs_json_field() { python3 -c 'import json,sys; v = json.loads(sys.stdin.read())[sys.argv[1]]; print("" if v is None else v)' "$1"; }

# docs_machine_line: one line about the machine right now (cores, load, other busy processes).
docs_machine_line() {
  local others
  others=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 && $2 != "ps" { printf "%s(%s%%) ", $2, $1 }' | head -c 300)
  echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)${others:+; busy now: $others}"
}

docs_now() { date +%s.%N; }
docs_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

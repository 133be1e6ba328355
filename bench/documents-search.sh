#!/usr/bin/env bash
# Search latency over 100,000 passages (issue 16), on each store. For each
# store, a fresh `keel serve` (release) is filled through Keel itself: DOCUMENTS
# synthetic markdown documents (bench/make_search_corpus.py: PARAGRAPHS
# paragraphs of 900–990 characters each, so one passage each at the default
# --document-passage-chars 1000, a seeded Zipf vocabulary, planted words for
# the queries) are uploaded with tus and made documents (POST /api/documents),
# and the script waits until all are ready and checks that passage_count sums
# to at least MIN_PASSAGES. Then, for each query (a rare word, a common word,
# two words, a quoted phrase):
#   keel:   GET /api/search?q=Q&limit=LIMIT, REQUESTS times one after
#           another on one keep-alive connection (bench/documents_client.py,
#           Python http.client; its own overhead is included), after WARMUP.
#   engine: the same SQL the store runs, same query, session id and limit
#           (bench/documents_engine.py): SQLite through Python's sqlite3
#           module (perf_counter per execution) and the sqlite3 shell with
#           `.timer on`; PostgreSQL through psql with \timing, in a session
#           that does `SET enable_bitmapscan = on` first (as Keel's search
#           does since bc9ac92), and also Keel's whole round timed in psql
#           (psql-txn: BEGIN; SET LOCAL enable_bitmapscan = on; the statement;
#           COMMIT, on a session with bitmap scans off as Keel's start).
# p50/p99 per query and store; target: Keel's p99 within 2× of the engine's.
#
#   bench/documents-search.sh [sqlite|postgres|all]      # default all
#   DOCUMENTS=10 MIN_PASSAGES=10000 bench/documents-search.sh sqlite   # quick
#
# Knobs (environment): DOCUMENTS=100, PARAGRAPHS=1000, MIN_PASSAGES=100000,
# REQUESTS=200, WARMUP=20, LIMIT=10, CORPUS_DIR (default: in the temp dir;
# set it to keep the generated documents between runs), EXPLAIN=1 (print
# PostgreSQL's EXPLAIN ANALYZE per query to stderr), ENGINE_SQL=c50a32d (the
# version of the store's statement the engine runs: 341c365 for builds
# before c50a32d; c50a32d also for bc9ac92, whose statement is the same; it
# must match KEEL_BIN's), KEEL_SERVE_ARGS, and
# KEEL_BIN (see bench/documents-lib.sh). The store is filled with
# --session-max-active-jobs 0 (bench_start_keel passes it), so every ingest
# is queued at once.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh
# shellcheck source-path=SCRIPTDIR source=documents-lib.sh
source bench/documents-lib.sh

bench_parse_stores "${1:-all}"
DOCUMENTS=${DOCUMENTS:-100}
PARAGRAPHS=${PARAGRAPHS:-1000}
MIN_PASSAGES=${MIN_PASSAGES:-100000}
REQUESTS=${REQUESTS:-200}
WARMUP=${WARMUP:-20}
LIMIT=${LIMIT:-10}
EXPLAIN=${EXPLAIN:-0}
ENGINE_SQL=${ENGINE_SQL:-c50a32d}
read -r -a keel_serve_args <<<"${KEEL_SERVE_ARGS:-}"

docs_ensure_keel
docs_ensure_tools
bench_init
CORPUS_DIR=${CORPUS_DIR:-$BENCH_TMP/corpus}
queries_file="$CORPUS_DIR/queries.json"
if [ ! -s "$queries_file" ] || [ "$(ls "$CORPUS_DIR"/*.md 2>/dev/null | wc -l)" -ne "$DOCUMENTS" ]; then
  bench_log "writing $DOCUMENTS documents of $PARAGRAPHS paragraphs to $CORPUS_DIR…"
  rm -rf "$CORPUS_DIR"
  mkdir -p "$CORPUS_DIR"
  python3 bench/make_search_corpus.py "$CORPUS_DIR" --documents "$DOCUMENTS" --paragraphs "$PARAGRAPHS" >"$BENCH_TMP/queries.json"
  mv "$BENCH_TMP/queries.json" "$queries_file"
fi
mapfile -t query_kinds < <(python3 -c 'import json,sys; [print(k) for k in json.load(open(sys.argv[1]))]' "$queries_file")
query_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$queries_file" "$1"; }

results="$BENCH_TMP/search.tsv" # store kind query side p50 p90 p99 max mean results matches
: >"$results"
echo "# documents-search, $(date -u +%Y-%m-%dT%H:%MZ), keel $("$KEEL_BIN" --version) ($KEEL_BIN)"
echo "# corpus: $DOCUMENTS documents, $(du -sh "$CORPUS_DIR" | cut -f1), $REQUESTS requests per query after $WARMUP, limit $LIMIT"
docs_machine_line

run_store() {
  local store=$1 store_url db="" token fill passages kind query out
  case $store in
    sqlite)
      db="$BENCH_TMP/search.sqlite"
      store_url="sqlite:$db"
      ;;
    postgres)
      pg_start
      bench_on_exit pg_stop
      store_url=$PG_URL
      ;;
  esac
  bench_start_keel "$store_url" "search-$store" --log-level warning "${keel_serve_args[@]}"
  token=$(docs_token)
  bench_log "$store: filling with $DOCUMENTS documents…"
  fill=$(python3 "$DOC_CLIENT" populate -- "$KEEL_URL" "$token" "$CORPUS_DIR")
  passages=$(docs_json_field passages <<<"$fill")
  echo "# $store: filled through keel: $fill"
  [ "$passages" -ge "$MIN_PASSAGES" ] || bench_die "$store: only $passages passages (MIN_PASSAGES=$MIN_PASSAGES)"
  if [ "$store" = sqlite ]; then
    echo "# sqlite store: $(du -sh "$db" | cut -f1) (+ WAL $(du -sh "$db-wal" 2>/dev/null | cut -f1))"
  else
    echo "# postgres: $(psql -X -At "$PG_URL" -c "SELECT 'passages table with indexes ' || pg_size_pretty(pg_total_relation_size('keel_document_passages')) || ', GIN index ' || pg_size_pretty(pg_relation_size('keel_document_passages_search'))"); $(psql -X -At "$PG_URL" -c 'SELECT version()' | cut -d, -f1)"
    psql -X -q "$PG_URL" -c 'VACUUM ANALYZE' # what autovacuum would have done by now; plans then see real statistics
  fi
  for kind in "${query_kinds[@]}"; do
    query=$(query_of "$kind")
    bench_log "$store: $kind: $query"
    out=$(python3 "$DOC_CLIENT" search --query="$query" --requests "$REQUESTS" --warmup "$WARMUP" --limit "$LIMIT" -- "$KEEL_URL" "$token")
    python3 - "$store" "$kind" keel "$out" >>"$results" <<'PY'
import json, sys
o = json.loads(sys.argv[4])
print("\t".join([sys.argv[1], sys.argv[2], o["query"], sys.argv[3]] + [str(o[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "results")] + ["-"]))
PY
    if [ "$store" = sqlite ]; then
      out=$(python3 bench/documents_engine.py sqlite --sql "$ENGINE_SQL" --query="$query" --runs "$REQUESTS" --warmup "$WARMUP" --limit "$LIMIT" -- "$db")
    else
      out=$(python3 bench/documents_engine.py postgres "$PG_URL" --sql "$ENGINE_SQL" --query="$query" --runs "$REQUESTS" --warmup "$WARMUP" --limit "$LIMIT" \
        $([ "$EXPLAIN" = 1 ] && echo --explain))
    fi
    python3 - "$store" "$kind" "$out" >>"$results" <<'PY'
import json, sys
o = json.loads(sys.argv[3])
cols = lambda s: [str(s[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")]
print("\t".join([sys.argv[1], sys.argv[2], o["query"], "engine"] + cols(o) + [str(o["results"]), str(o["matches"])]))
if o.get("shell"):
    print("\t".join([sys.argv[1], sys.argv[2], o["query"], "sqlite3-shell"] + cols(o["shell"]) + [str(o["results"]), str(o["matches"])]))
if o.get("transaction"):
    print("\t".join([sys.argv[1], sys.argv[2], o["query"], "psql-txn"] + cols(o["transaction"]) + [str(o["results"]), str(o["matches"])]))
PY
  done
  # The floor beside the queries: GET /api/session on the same connection
  # (session lookup, HTTP, JSON), what every search pays before its query.
  out=$(python3 "$DOC_CLIENT" search --floor --requests "$REQUESTS" --warmup "$WARMUP" -- "$KEEL_URL" "$token")
  python3 - "$store" "$out" >>"$results" <<'PY'
import json, sys
o = json.loads(sys.argv[2])
print("\t".join([sys.argv[1], "floor", "GET /api/session", "keel"] + [str(o[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")] + ["-", "-"]))
PY
  bench_stop_keel
  if [ "$store" = postgres ]; then pg_stop; fi
}

for store in "${stores[@]}"; do run_store "$store"; done
docs_machine_line

python3 - "$results" <<'PY'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
print()
print(f"{'store':<9} {'query':<11} {'q':<28} {'measured':<14} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8} {'results':>7} {'matching':>8}  (ms)")
for store, kind, q, side, p50, p90, p99, mx, mean, results, matches in rows:
    print(f"{store:<9} {kind:<11} {q:<28} {side:<14} {p50:>8} {p90:>8} {p99:>8} {mx:>8} {mean:>8} {results:>7} {matches:>8}")
print()
by = {(r[0], r[1], r[3]): r for r in rows}
for store, kind, _, side, *_ in rows:
    if side != "keel" or (store, kind, "engine") not in by:
        continue
    k, e = by[(store, kind, "keel")], by[(store, kind, "engine")]
    ratio = float(k[6]) / float(e[6])
    print(f"{store:<9} {kind:<11} keel p99 {k[6]:>9} ms / engine p99 {e[6]:>9} ms = {ratio:5.2f}× {'(target ≤ 2×: met)' if ratio <= 2 else '(target ≤ 2×: missed)'}")
    floor = by.get((store, "floor", "keel"))
    if floor:
        with_floor = float(k[6]) / (float(e[6]) + float(floor[6]))
        print(f"{'':<9} {'':<11} against engine + the floor (GET /api/session p99 {floor[6]} ms): {with_floor:5.2f}×")
PY

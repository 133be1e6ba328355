"""The SQL Keel's document stores run for GET /api/search, timed in the
database engine alone (bench/documents-search.sh), with the same query
text, session id and limit as the HTTP requests.

  documents_engine.py sqlite DB --query Q [--runs 200] [--warmup 20] [--limit 10]
      SQLite: the statement of SQLiteDocumentStore.search, its FTS5 MATCH
      string made the way FullTextQuery.fts5(match: .all) makes it (each word
      double-quoted, a group per word or phrase, groups AND-ed), run RUNS
      times through the sqlite3 command-line shell with `.timer on` (its
      "Run Time: real" per statement, millisecond resolution) and, for a
      finer clock, through Python's sqlite3 module on the same libsqlite3
      (each execution + fetch timed with perf_counter). Prints JSON.
  documents_engine.py postgres PSQL_URL --query Q [--runs 200] [--warmup 20] [--limit 10] [--explain]
      PostgreSQL: the statement of PostgresDocumentStore.search with the
      bound values written in as literals (Keel's binds use the unnamed
      statement, planned for the values like literals are), run RUNS times in
      one psql session with \\timing (client-side: parse, plan, execute,
      rows to psql over loopback). With --explain, also prints one
      EXPLAIN (ANALYZE, BUFFERS) of it.

The session id is the one session that owns documents in the store.
--sql picks the statement's version: 341c365 (issue 16's first commit) or
c50a32d (adds `d.status = 'ready'`; the default). Use the one of the build
measured; bench/documents-search.sh passes ENGINE_SQL.
The statement is unchanged at bc9ac92; what bc9ac92 changed is around it:
Keel's connections start with enable_bitmapscan = off (for the job queue)
unless the store URL says startup_parameters=none, and since bc9ac92 the
search runs in a transaction that first does `SET LOCAL enable_bitmapscan =
on` (before it, Keel searched with bitmap scans off; see docs/benchmarks.md,
Documents). Every psql session here starts with `SET enable_bitmapscan = on`,
so the engine plans as Keel now does whatever the server's default. The
"transaction" figure times Keel's whole round: BEGIN; SET LOCAL
enable_bitmapscan = on; the statement; COMMIT (the sum of psql's four
\timing lines per round); the target compares against the statement alone.
"""
import argparse
import json
import math
import re
import sqlite3
import subprocess
import sys
import time

HIGHLIGHT = "**"
PG_OPTIONS = f'StartSel="{HIGHLIGHT}", StopSel="{HIGHLIGHT}", MaxWords=30, MinWords=12, MaxFragments=1'

SQLITE_SQL = """
SELECT p.document_id, p.section_index, p.heading, p.body, d.title AS document_title, d.filename, s.title AS section_title,
    snippet(keel_passages_fts, 1, ?, ?, '…', 24) AS snippet, bm25(keel_passages_fts, 2.0, 1.0) AS rank
FROM keel_passages_fts
JOIN keel_document_passages p ON p.id = keel_passages_fts.rowid
JOIN keel_documents d ON d.id = p.document_id
JOIN keel_document_sections s ON s.document_id = p.document_id AND s.idx = p.section_index
WHERE keel_passages_fts MATCH ? AND p.session_id = ?
ORDER BY rank, p.id LIMIT ?
"""

# The statements as of 341c365 (measured on 2026-12-03); c50a32d added the
# `d.status = 'ready'` filter and renumbered PostgreSQL's parameters. Pick
# with --sql (default: c50a32d, the newer).
SQLITE_SQL_C50A32D = SQLITE_SQL.replace("WHERE keel_passages_fts MATCH ? AND p.session_id = ?",
                                        "WHERE keel_passages_fts MATCH ? AND p.session_id = ? AND d.status = 'ready'")

PG_SQL = """
WITH q AS (SELECT websearch_to_tsquery('english'::regconfig, $1) AS query),
hits AS (
    SELECT p.id, ts_rank_cd(p.search, q.query) AS rank FROM keel_document_passages p, q
    WHERE p.session_id = $2 AND p.search @@ q.query  AND cardinality($3::text[]) >= 0
    ORDER BY rank DESC, p.id LIMIT $4
)
SELECT p.document_id, p.section_index, p.heading, p.body, d.title AS document_title, d.filename, s.title AS section_title,
    ts_headline('english'::regconfig, p.body, q.query, $5) AS snippet, hits.rank::float8 AS rank
FROM hits
JOIN keel_document_passages p ON p.id = hits.id
JOIN keel_documents d ON d.id = p.document_id
JOIN keel_document_sections s ON s.document_id = p.document_id AND s.idx = p.section_index,
q
ORDER BY hits.rank DESC, p.id
"""

PG_SQL_C50A32D = """
WITH q AS (SELECT websearch_to_tsquery('english'::regconfig, $1) AS query),
hits AS (
    SELECT p.id, ts_rank_cd(p.search, q.query) AS rank FROM keel_document_passages p
    JOIN keel_documents d ON d.id = p.document_id AND d.status = 'ready', q
    WHERE p.session_id = $2 AND p.search @@ q.query
    ORDER BY rank DESC, p.id LIMIT $3
)
SELECT p.document_id, p.section_index, p.heading, p.body, d.title AS document_title, d.filename, s.title AS section_title,
    ts_headline('english'::regconfig, p.body, q.query, $4) AS snippet, hits.rank::float8 AS rank
FROM hits
JOIN keel_document_passages p ON p.id = hits.id
JOIN keel_documents d ON d.id = p.document_id
JOIN keel_document_sections s ON s.document_id = p.document_id AND s.idx = p.section_index,
q
ORDER BY hits.rank DESC, p.id
"""


def fts5(text):
    """FullTextQuery(text).fts5(match: .all) for plain words and "quoted phrases" (no or, no -excluded)."""
    groups = []
    for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', text):
        words = [w.lower() for w in re.findall(r"[^\W_]+", quoted or bare)]
        if words:
            groups.append('("' + " ".join(words) + '")')
    return " AND ".join(groups)


def percentile(values, p):
    values = sorted(values)
    return values[max(1, math.ceil(p / 100 * len(values))) - 1]


def summary(times, **extra):
    return {**extra, "runs": len(times), "p50_ms": round(percentile(times, 50), 3), "p90_ms": round(percentile(times, 90), 3),
            "p99_ms": round(percentile(times, 99), 3), "max_ms": round(max(times), 3), "mean_ms": round(sum(times) / len(times), 3)}


def sql_literal(value):
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def run_sqlite(args):
    match = fts5(args.query)
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    session = db.execute("SELECT DISTINCT session_id FROM keel_documents").fetchall()
    if len(session) != 1:
        sys.exit(f"expected one session owning documents, found {len(session)}")
    session = session[0][0]
    params = (HIGHLIGHT, HIGHLIGHT, match, session, args.limit)
    sqlite_sql = SQLITE_SQL if args.sql == "341c365" else SQLITE_SQL_C50A32D
    rows = None
    for _ in range(args.warmup):
        rows = db.execute(sqlite_sql, params).fetchall()
    matches = db.execute("SELECT count(*) FROM keel_passages_fts WHERE keel_passages_fts MATCH ?", (match,)).fetchone()[0]
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        rows = db.execute(sqlite_sql, params).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    db.close()
    # The same statement through the sqlite3 shell, `.timer on`.
    literal = sqlite_sql.strip()
    for value in params:
        literal = literal.replace("?", sql_literal(value), 1)
    script = ".timer on\n" + (literal + ";\n") * (2 + args.runs)
    shell = subprocess.run(["sqlite3", "-readonly", args.db], input=script, capture_output=True, text=True, check=True)
    real = [float(m) * 1000 for m in re.findall(r"Run Time: real ([0-9.]+)", shell.stdout)][2:]
    out = summary(times, store="sqlite", engine="python sqlite3 " + sqlite3.sqlite_version, query=args.query, fts5=match, results=len(rows),
                  matches=matches)
    out["shell"] = summary(real) if real else None
    print(json.dumps(out))


# As Keel's search does (bc9ac92: SET LOCAL in its transaction), whatever the server's default.
PG_SESSION_SETUP = "SET enable_bitmapscan = on;\n"


def psql(url, script):
    script = PG_SESSION_SETUP + script
    result = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"psql failed: {result.stderr[:500]}")
    return result.stdout


def run_postgres(args):
    sessions = psql(args.url, "\\pset tuples_only on\n\\pset format unaligned\nSELECT DISTINCT session_id FROM keel_documents;\n").split()
    if len(sessions) != 1:
        sys.exit(f"expected one session owning documents, found {len(sessions)}")
    if args.sql == "341c365":
        values, sql = [args.query, sessions[0], "{}", args.limit, PG_OPTIONS], PG_SQL.strip()
    else:
        values, sql = [args.query, sessions[0], args.limit, PG_OPTIONS], PG_SQL_C50A32D.strip()
    for n in range(len(values), 0, -1):
        literal = sql_literal(values[n - 1])
        if values[n - 1] == "{}":
            literal += "::text[]"
        sql = sql.replace(f"${n}", literal)
    count = psql(args.url, "\\pset tuples_only on\n\\pset format unaligned\n"
                 f"SELECT count(*) FROM keel_document_passages p WHERE p.session_id = {sql_literal(sessions[0])} "
                 f"AND p.search @@ websearch_to_tsquery('english'::regconfig, {sql_literal(args.query)});\n").split()
    rows = psql(args.url, "\\pset tuples_only on\n\\pset format unaligned\nSELECT count(*) FROM (" + sql + ") r;\n").split()
    script = "\\o /dev/null\n" + (sql + ";\n") * args.warmup + "\\timing on\n" + (sql + ";\n") * args.runs
    timings = [float(m) for m in re.findall(r"Time: ([0-9.]+) ms", psql(args.url, script))]
    out = summary(timings, store="postgres", engine="psql \\timing", query=args.query, websearch=args.query, results=int(rows[-1]), matches=int(count[-1]))
    # Keel's whole round since bc9ac92, in one psql session with bitmap scans off
    # as Keel's connections start: BEGIN; SET LOCAL …; the statement; COMMIT.
    round_sql = "BEGIN;\nSET LOCAL enable_bitmapscan = on;\n" + sql + ";\nCOMMIT;\n"
    script = "SET enable_bitmapscan = off;\n\\o /dev/null\n" + round_sql * args.warmup + "\\timing on\n" + round_sql * args.runs
    parts = [float(m) for m in re.findall(r"Time: ([0-9.]+) ms", psql(args.url, script))]
    if len(parts) == 4 * args.runs:
        out["transaction"] = summary([sum(parts[i:i + 4]) for i in range(0, len(parts), 4)])
    print(json.dumps(out))
    if args.explain:
        plan = psql(args.url, "EXPLAIN (ANALYZE, BUFFERS) " + sql + ";\n")
        print(plan, file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="engine", required=True)
    for name in ("sqlite", "postgres"):
        p = sub.add_parser(name)
        p.add_argument("db" if name == "sqlite" else "url")
        p.add_argument("--query", required=True)
        p.add_argument("--runs", type=int, default=200)
        p.add_argument("--warmup", type=int, default=20)
        p.add_argument("--limit", type=int, default=10)
        p.add_argument("--explain", action="store_true")
        p.add_argument("--sql", choices=("341c365", "c50a32d"), default="c50a32d",
                       help="which version of the store's statement (the build measured must match)")
    args = parser.parse_args()
    run_sqlite(args) if args.engine == "sqlite" else run_postgres(args)


if __name__ == "__main__":
    main()

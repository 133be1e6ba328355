#!/usr/bin/env bash
# Issue 20: the pages' weight, and the time from a question to its first
# token on screen, in one run beside the same path without the browser and
# the model upstream's own first token (the floors).
#
#   bench/web.sh
#   QUESTIONS=50 MODEL=tokens-200 bench/web.sh
#
# - weight: every file `/` and `/admin` load, as Keel serves them (it does
#   not compress; gzip -9 sizes beside, for a proxy that would);
# - page: headless Chromium (Debian's chromium through selenium,
#   Tests/Clients/browser/keel_page.py timing) opens `/`, starts a chat and
#   asks QUESTIONS questions one after the other; for each, from the click on
#   Send to the first token's text in the DOM (the page's keelTimings), over
#   POST /api/chats/{id}/messages (202) then the reply job's event stream;
# - api: bench/chat_first_token.py asks the same number of questions through
#   the API with Accept: text/event-stream (the stream in the same
#   response), from the request to the first `token` event: Keel without
#   the page;
# - upstream: bench/openai_first_token.py straight at the fake model, the
#   floor under both.
# Keel is the release build (`keel serve` on SQLite, its defaults, with
# --models pointing at Tests/Clients/models/fake_openai.py answering MODEL,
# default tokens-50: 50 tokens at once). No documents are uploaded: each
# reply searches the session's (empty) passages, as a first question does.
#
# Knobs: QUESTIONS=30 WARMUP=5 MODEL=tokens-50, KEEL_BIN, KEEL_BENCH_BIN,
# BROWSER_PYTHON (a Python with selenium; default .build/clients-venv).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

QUESTIONS=${QUESTIONS:-30}
WARMUP=${WARMUP:-5}
MODEL=${MODEL:-tokens-50}
BROWSER_PYTHON=${BROWSER_PYTHON:-$PWD/.build/clients-venv/bin/python}

bench_init
bench_ensure_release_tools
bench_apt_install chromium chromium
bench_apt_install chromedriver chromium-driver
"$BROWSER_PYTHON" -c 'import selenium' 2>/dev/null || bench_die "$BROWSER_PYTHON has no selenium (./scripts/test makes .build/clients-venv; or set BROWSER_PYTHON)"

# The fake model upstream.
python3 Tests/Clients/models/fake_openai.py >"$BENCH_TMP/fake.port" 2>"$BENCH_TMP/fake.log" &
fake_pid=$!
bench_on_exit "bench_stop_pid $fake_pid"
for _ in $(seq 100); do [ -s "$BENCH_TMP/fake.port" ] && break; sleep 0.1; done
fake="http://127.0.0.1:$(head -1 "$BENCH_TMP/fake.port")"
cat >"$BENCH_TMP/models.json" <<JSON
{"providers": {"fake": {"kind": "openai", "base_url": "$fake/v1"}},
 "models": {"bench": {"provider": "fake", "model": "$MODEL"}},
 "chains": {"default": ["bench"]}}
JSON
admin_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
KEEL_ADMIN_TOKEN=$admin_token bench_start_keel "sqlite:$BENCH_TMP/keel.sqlite" web --models "$BENCH_TMP/models.json" --log-level warning

echo "# The pages, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, $(git rev-parse --short HEAD): $QUESTIONS questions after $WARMUP, model $MODEL"
echo
echo "## weight (bytes as served; gzip -9 beside)"
total_app=0 total_admin=0
printf '%-22s %8s %8s\n' file bytes gzip
for path in / /admin /assets/app.css /assets/common.js /assets/app.js /assets/admin.js; do
  curl -fsS "$KEEL_URL$path" -o "$BENCH_TMP/asset"
  bytes=$(wc -c <"$BENCH_TMP/asset")
  gz=$(gzip -9 -c "$BENCH_TMP/asset" | wc -c)
  printf '%-22s %8d %8d\n' "$path" "$bytes" "$gz"
  case $path in
    /) total_app=$((total_app + bytes)) ;;
    /admin|/assets/admin.js) total_admin=$((total_admin + bytes)) ;;
    /assets/app.js) total_app=$((total_app + bytes)) ;;
    *) total_app=$((total_app + bytes)); total_admin=$((total_admin + bytes)) ;;
  esac
done
printf 'all of /: %d bytes; all of /admin: %d bytes\n' "$total_app" "$total_admin"

echo
echo "## time from a question to its first token (ms)"
bench_log "page: $QUESTIONS questions in headless Chromium"
"$BROWSER_PYTHON" Tests/Clients/browser/keel_page.py timing --page "$KEEL_URL/" --question "What is new?" --count $((QUESTIONS + WARMUP)) \
  >"$BENCH_TMP/page.out" 2>&1 || { cat "$BENCH_TMP/page.out" >&2; bench_die "the page timing failed"; }
python3 - "$BENCH_TMP/page.out" "$WARMUP" <<'PY'
import json, math, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("{"))
result = json.loads(line)
times = result["first_token_ms"]["all"][int(sys.argv[2]):]
ordered = sorted(times)
pick = lambda p: ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
print(f"page      requests={len(times)} p50={pick(50):.1f} p95={pick(95):.1f} max={max(times):.1f}   (click on Send to the first token in the DOM)")
print(f"          the page's own load: {result['page_bytes']['total_decoded']} bytes decoded, {len(result['page_bytes']['assets'])} files")
PY
bench_log "api: the same through the API, no browser"
printf 'api       %s   (POST with Accept: text/event-stream to the first token event)\n' \
  "$(python3 bench/chat_first_token.py "$KEEL_URL" "$QUESTIONS" "$WARMUP" | sed 's/^FIRST //')"
tokens=${MODEL#tokens-}
printf '{"model": "%s", "messages": [{"role": "user", "content": "What is new?"}], "stream": true}' "$MODEL" >"$BENCH_TMP/body.json"
bench_log "upstream: the fake model directly"
printf 'upstream  %s   (the fake model alone: its first content chunk)\n' \
  "$(python3 bench/openai_first_token.py "$fake/v1/chat/completions" "$BENCH_TMP/body.json" "$tokens" "$QUESTIONS" "$WARMUP" | sed 's/^FIRST //')"

#!/usr/bin/env bash
# Issue 19: Keel's OpenAI-compatible POST /v1/chat/completions against a
# LiteLLM proxy, side by side in one run, in front of the same local fake
# upstream: requests per second and latency p50/p99, streaming and not, at
# each concurrency; added latency = a proxy's percentile minus the
# upstream's own, called directly at the same concurrency.
#
#   bench/openai-proxy.sh
#   CONCURRENCY="1 16" DURATION=10s TOKENS=20 bench/openai-proxy.sh
#
# The upstream is nginx (1 worker) serving static files on keep-alive
# connections, any POST answered 200 (error_page 405, as in bench/chats.sh):
#   /json/v1/chat/completions  one chat.completion whose message is the text
#                              `tok0 tok1 … tok{TOKENS-1} ` (application/json)
#   /sse/v1/chat/completions   the same text as a stream of TOKENS chunks
#                              (bench_fake_openai_stream), text/event-stream
# The request chooses by its model: `bench-json` (non-streaming requests)
# and `bench-sse` (streaming ones). LiteLLM maps them to the two locations:
# it calls its upstream with the client's own `stream`, and so does Keel
# (OpenAICompatibleProvider sends `stream: false` for a non-streaming
# client and reads one JSON body): both proxies map the two models to the
# same two locations.
#
# Cases, all three running for the whole script, taken in turn for each
# concurrency and mode (so neither proxy always runs on a warmer or quieter
# machine):
#   direct   wrk straight at nginx (the floor)
#   keel     release `keel serve` on SQLite (the default store), --models
#            with the two models, a key from `keel keys create` (Bearer);
#            each request authenticates the key against the store and
#            records its usage there, as in production
#   litellm  `litellm --config` (pinned bench/peer/requirements-litellm.txt,
#            a virtualenv in LITELLM_VENV), its defaults, --num_workers
#            LITELLM_WORKERS (default: the number of cores), a master key,
#            no database
# Every response is checked by bench/openai-proxy.lua (status 200, the
# whole text, `[DONE]` last in a stream): any bad or non-2xx response fails
# the run. With FIRST_TOKEN=N (default 200), N streamed requests one at a
# time per case also give the time to the response's head and to the first
# token (bench/openai_first_token.py, Python's http.client on one
# keep-alive connection), after 20 untimed.
#
# Knobs (environment): CONCURRENCY="1 16 64" DURATION=20s (each wrk run; lib.sh)
# WARMUP_DURATION=3s (an untimed wrk run before each case's first run of a
# mode) MODES="json stream" CASES="direct keel litellm" TOKENS=100
# LITELLM_WORKERS=$(nproc) LITELLM_VENV=/tmp/keel-bench-litellm-venv
# FIRST_TOKEN=200 ROUNDS=1, KEEL_BIN, KEEL_BENCH_BIN, KEEL_ARGS (more
# `keel serve` flags), PERF=1 (record the proxy's processes with `perf
# record -g` during each timed run of keel and litellm; flat profiles by
# shared object and by symbol, and the call graph's top, to
# PERF_DIR=/tmp/keel-bench-openai-perf; the figures of such a run are not
# for the table).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source bench/lib.sh

CONCURRENCY=${CONCURRENCY:-1 16 64}

WARMUP_DURATION=${WARMUP_DURATION:-3s}
MODES=${MODES:-json stream}
CASES=${CASES:-direct keel litellm}
TOKENS=${TOKENS:-100}
LITELLM_WORKERS=${LITELLM_WORKERS:-$(nproc)}
LITELLM_VENV=${LITELLM_VENV:-/tmp/keel-bench-litellm-venv}
FIRST_TOKEN=${FIRST_TOKEN:-200}
ROUNDS=${ROUNDS:-1}
KEEL_ARGS=${KEEL_ARGS:-}
PERF=${PERF:-0}
PERF_DIR=${PERF_DIR:-/tmp/keel-bench-openai-perf}

for case_name in $CASES; do
  case $case_name in direct | keel | litellm) ;; *) bench_die "unknown case '$case_name' (direct, keel, litellm)" ;; esac
done
for mode in $MODES; do
  case $mode in json | stream) ;; *) bench_die "unknown mode '$mode' (json, stream)" ;; esac
done

bench_ensure_release_tools
bench_init
bench_ensure_wrk
ulimit -n 65536 2>/dev/null || true
command -v nginx >/dev/null || bench_apt_install nginx nginx-light
if [ "$PERF" = 1 ]; then
  command -v perf >/dev/null || bench_die "PERF=1 needs perf (apt-get install linux-perf)"
  mkdir -p "$PERF_DIR"
fi

# --- the upstream ------------------------------------------------------------------

upstream_dir="$BENCH_TMP/upstream"
mkdir -p "$upstream_dir/html/sse/v1/chat" "$upstream_dir/html/json/v1/chat"
bench_fake_openai_stream "$TOKENS" "$upstream_dir/html/sse/v1/chat/completions"
text=$(for ((i = 0; i < TOKENS; i++)); do printf 'tok%d ' "$i"; done)
# OpenAI's non-streaming answer, in the stream's ids and usage.
printf '{"id":"chatcmpl-bench0000000000000000000","object":"chat.completion","created":1796325533,"model":"tokens-%d","choices":[{"index":0,"message":{"role":"assistant","content":"%s","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d},"service_tier":"default","system_fingerprint":"fp_fake0001"}\n' \
  "$TOKENS" "$text" "$TOKENS" $((TOKENS + 8)) >"$upstream_dir/html/json/v1/chat/completions"
upstream_port=$(bench_free_port)
cat >"$upstream_dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $upstream_dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_body_temp_path $upstream_dir/client; proxy_temp_path $upstream_dir/proxy;
  fastcgi_temp_path $upstream_dir/fastcgi; uwsgi_temp_path $upstream_dir/uwsgi; scgi_temp_path $upstream_dir/scgi;
  server {
    listen 127.0.0.1:$upstream_port backlog=4096;
    location /sse/ { root $upstream_dir/html; default_type text/event-stream; error_page 405 =200 \$uri; }
    location /json/ { root $upstream_dir/html; default_type application/json; error_page 405 =200 \$uri; }
  }
}
CONF
nginx -e "$upstream_dir/error.log" -p "$upstream_dir" -c "$upstream_dir/nginx.conf" &
upstream_pid=$!
bench_on_exit "bench_stop_pid $upstream_pid 5"
upstream=http://127.0.0.1:$upstream_port
bench_wait_for_url "$upstream/sse/v1/chat/completions" "$upstream_pid" "$upstream_dir/error.log"
bench_log "upstream: nginx $(nginx -v 2>&1 | sed 's/.*\///'), 1 worker, $TOKENS tokens: $upstream/json/v1 ($(wc -c <"$upstream_dir/html/json/v1/chat/completions") bytes), $upstream/sse/v1 ($(wc -c <"$upstream_dir/html/sse/v1/chat/completions") bytes)"

# The request bodies, by mode.
messages='"messages":[{"role":"user","content":"Count to '"$TOKENS"', please."}]'
printf '{"model":"bench-json",%s}' "$messages" >"$BENCH_TMP/body-json.json"
printf '{"model":"bench-sse","stream":true,%s}' "$messages" >"$BENCH_TMP/body-stream.json"

# --- Keel --------------------------------------------------------------------------

keel_url=''
keel_key=''
if [[ " $CASES " == *" keel "* ]]; then
  cat >"$BENCH_TMP/models.json" <<JSON
{"providers": {"fake-json": {"kind": "openai", "base_url": "$upstream/json/v1"},
               "fake-sse":  {"kind": "openai", "base_url": "$upstream/sse/v1"}},
 "models":    {"bench-json": {"provider": "fake-json", "model": "tokens-$TOKENS"},
               "bench-sse":  {"provider": "fake-sse", "model": "tokens-$TOKENS"}},
 "chains":    {"default": ["bench-sse"]}}
JSON
  keel_store="sqlite:$BENCH_TMP/keel.sqlite"
  keel_flags=(--models "$BENCH_TMP/models.json" --log-level warning)
  # shellcheck disable=SC2206 # KEEL_ARGS is split on purpose
  [ -n "$KEEL_ARGS" ] && keel_flags+=($KEEL_ARGS)
  bench_start_keel "$keel_store" keel "${keel_flags[@]}"
  keel_url=$KEEL_URL
  keel_key=$("$KEEL_BIN" keys create --store "$keel_store" --name bench | tail -n 1)
  case $keel_key in sk-keel-*) ;; *) bench_die "keel keys create did not print a key on its last line" ;; esac
  bench_log "keel $("$KEEL_BIN" --version 2>/dev/null || git rev-parse --short HEAD) on $keel_url (pid $KEEL_PID), SQLite, key ${keel_key:0:12}…"
fi

# --- LiteLLM -----------------------------------------------------------------------

litellm_url=''
litellm_pid=''
litellm_key=sk-litellm-bench-master-key
if [[ " $CASES " == *" litellm "* ]]; then
  if [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
    bench_log "creating virtualenv $LITELLM_VENV (about 75 s, 760 MB)…"
    python3 -m venv "$LITELLM_VENV"
  fi
  "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check -r bench/peer/requirements-litellm.txt
  cat >"$BENCH_TMP/litellm.yaml" <<YAML
model_list:
  - model_name: bench-json
    litellm_params:
      model: openai/tokens-$TOKENS
      api_base: $upstream/json/v1
      api_key: sk-fake-upstream
  - model_name: bench-sse
    litellm_params:
      model: openai/tokens-$TOKENS
      api_base: $upstream/sse/v1
      api_key: sk-fake-upstream
YAML
  litellm_port=$(bench_free_port)
  # Offline: the model cost map from the package, not the network.
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_MASTER_KEY=$litellm_key \
    "$LITELLM_VENV/bin/litellm" --config "$BENCH_TMP/litellm.yaml" --host 127.0.0.1 --port "$litellm_port" \
    --num_workers "$LITELLM_WORKERS" >"$BENCH_TMP/litellm.log" 2>&1 &
  litellm_pid=$!
  bench_on_exit "bench_stop_pid $litellm_pid"
  litellm_url=http://127.0.0.1:$litellm_port
  bench_wait_for_url "$litellm_url/health/liveliness" "$litellm_pid" "$BENCH_TMP/litellm.log" 120
  bench_log "LiteLLM $("$LITELLM_VENV/bin/pip" show litellm 2>/dev/null | awk '/^Version/ {print $2}') on $litellm_url (pid $litellm_pid), --num_workers $LITELLM_WORKERS"
fi

# url_of CASE: the chat completions URL and the key of a case.
url_of() {
  case $1 in
    direct) echo "$upstream/$2/v1/chat/completions" ;;
    keel) echo "$keel_url/v1/chat/completions" ;;
    litellm) echo "$litellm_url/v1/chat/completions" ;;
  esac
}
key_of() {
  case $1 in
    direct) echo "" ;;
    keel) echo "$keel_key" ;;
    litellm) echo "$litellm_key" ;;
  esac
}
# The upstream location of a mode.
location_of() { [ "$1" = json ] && echo json || echo sse; }

# --- one request of each kind, checked, before any timing ---------------------------

for case_name in $CASES; do
  for mode in $MODES; do
    url=$(url_of "$case_name" "$(location_of "$mode")")
    key=$(key_of "$case_name")
    out="$BENCH_TMP/check-$case_name-$mode"
    code=$(curl -sS -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' ${key:+-H "Authorization: Bearer $key"} \
      --data-binary "@$BENCH_TMP/body-$mode.json" "$url") || bench_die "$case_name, $mode: POST $url failed"
    [ "$code" = 200 ] || { head -c 600 "$out" >&2; bench_die "$case_name, $mode: POST $url answered $code"; }
    grep -q "tok$((TOKENS - 1)) " "$out" || { head -c 600 "$out" >&2; bench_die "$case_name, $mode: the answer's text is missing"; }
    bench_log "$case_name, $mode: 200, $(wc -c <"$out") bytes"
  done
done

# --- the runs -----------------------------------------------------------------------

SUMMARY="$BENCH_TMP/summary.tsv"
: >"$SUMMARY"
warmed=" "

# tree_cpu_ms PID: the CPU time (user + system, with reaped children) of PID
# and all its descendants now, in ms.
tree_cpu_ms() {
  local tree=("$1") i=0 child
  while [ "$i" -lt "${#tree[@]}" ]; do
    for child in $(pgrep -P "${tree[i]}" || true); do tree+=("$child"); done
    i=$((i + 1))
  done
  for i in "${tree[@]}"; do cat "/proc/$i/stat" 2>/dev/null || true; done \
    | awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 } END { printf "%.0f", t * 1000 / hz }'
}
# The process tree whose CPU a case uses.
pid_of() {
  case $1 in
    direct) echo "$upstream_pid" ;;
    keel) echo "$KEEL_PID" ;;
    litellm) echo "$litellm_pid" ;;
  esac
}

# run CASE MODE CONCURRENCY ROUND: one checked wrk run; its figures to the summary.
run() {
  local case_name=$1 mode=$2 c=$3 round=$4 url key label out check good bad load
  url=$(url_of "$case_name" "$(location_of "$mode")")
  key=$(key_of "$case_name")
  label="$mode-c$c-r$round"
  local stream=0
  [ "$mode" = stream ] && stream=1
  export BODY_FILE="$BENCH_TMP/body-$mode.json" KEY="$key" STREAM=$stream TOKENS
  CONNECTIONS=$c
  THREADS=$((c < 2 ? 1 : 2))
  if [[ $warmed != *" $case_name-$mode "* ]]; then
    wrk -t "$THREADS" -c "$c" -d "$WARMUP_DURATION" --timeout 30s -s bench/openai-proxy.lua "$url" >/dev/null 2>&1 || true
    warmed+="$case_name-$mode "
  fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  local perf_pid='' pids=''
  if [ "$PERF" = 1 ]; then
    case $case_name in
      keel) pids=$KEEL_PID ;;
      litellm) pids=$(pgrep -d, -P "$litellm_pid" || true) ;;
    esac
  fi
  if [ -n "$pids" ]; then
    perf record -g -F 999 -p "$pids" -o "$BENCH_TMP/perf.data" >"$BENCH_TMP/perf.log" 2>&1 &
    perf_pid=$!
    sleep 1 # perf attaches
  fi
  local cpu_before cpu_after
  cpu_before=$(tree_cpu_ms "$(pid_of "$case_name")")
  bench_wrk "$case_name" "$label" "$url" -s bench/openai-proxy.lua --timeout 30s
  cpu_after=$(tree_cpu_ms "$(pid_of "$case_name")")
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf_report "$case_name-$label" "$BENCH_TMP/perf.data"
  fi
  out="$BENCH_TMP/wrk-$case_name-$label.txt"
  check=$(grep '^CHECK ' "$out" | tail -n 1)
  good=$(sed -n 's/.*good=\([0-9]*\).*/\1/p' <<<"$check")
  bad=$(sed -n 's/.*bad=\([0-9]*\).*/\1/p' <<<"$check")
  if [ -z "$good" ] || [ "$good" -eq 0 ] || [ "$bad" != 0 ]; then
    bench_die "$case_name, $label: responses failed the check ($check); see wrk's output above"
  fi
  # Requests wrk completed (checked) and the CPU the case's processes used for them.
  tail -n 1 "$BENCH_RESULTS" | awk -F'\t' -v c="$c" -v m="$mode" -v r="$round" -v good="$good" -v load="$load" \
    -v cpu="$((cpu_after - cpu_before))" \
    'BEGIN { OFS = "\t" } { print $1, m, c, r, $3, $4, $5, $6, $7, $8, good, load, sprintf("%.3f", cpu / good) }' >>"$SUMMARY"
}

# perf_report LABEL DATA: the flat profiles of a recording, and the top of
# its call graph (children included), to PERF_DIR.
perf_report() {
  local label=$1 data=$2 out
  out="$PERF_DIR/$label-$(date -u +%H%M%S)"
  local demangle=(cat)
  command -v swift >/dev/null && demangle=(swift demangle --simplified)
  perf report -i "$data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 25 >"$out-dso.txt" || true
  perf report -i "$data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 80 | "${demangle[@]}" >"$out-symbols.txt" || true
  perf report -i "$data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 120 | "${demangle[@]}" >"$out-children.txt" || true
  bench_log "perf ($label): $out-dso.txt, $out-symbols.txt, $out-children.txt"
  sed 's/^/    [perf dso] /' "$out-dso.txt" | head -n 12 >&2
}

# first_token CASE: FIRST_TOKEN streamed requests one at a time.
first_token() {
  local case_name=$1 url key line
  url=$(url_of "$case_name" sse)
  key=$(key_of "$case_name")
  line=$(python3 bench/openai_first_token.py "$url" "$BENCH_TMP/body-stream.json" "$TOKENS" "$FIRST_TOKEN" 20 "$key") \
    || bench_die "$case_name: the first-token run failed"
  echo "$case_name $line (load $(cut -d' ' -f1 /proc/loadavg))" >>"$BENCH_TMP/first.txt"
  bench_log "first token, $case_name: $line"
}

echo "# OpenAI chat completions through Keel and LiteLLM, $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?'): $TOKENS tokens per answer, wrk -d $DURATION (after $WARMUP_DURATION untimed per case and mode); LiteLLM --num_workers $LITELLM_WORKERS"
: >"$BENCH_TMP/first.txt"
for ((round = 1; round <= ROUNDS; round++)); do
  for c in $CONCURRENCY; do
    for mode in $MODES; do
      for case_name in $CASES; do
        bench_log "round $round, concurrency $c, $mode: $case_name (load $(cut -d' ' -f1-3 /proc/loadavg))"
        run "$case_name" "$mode" "$c" "$round"
      done
    done
  done
  if [ "$FIRST_TOKEN" -gt 0 ] && [[ " $MODES " == *" stream "* ]]; then
    for case_name in $CASES; do first_token "$case_name"; done
  fi
done

# --- the table -------------------------------------------------------------------------

bench_finish >&2
echo
echo "# requests/s; latency of the whole response (ms); added = the case's percentile minus direct's at the same concurrency, mode and round; cpu = ms of CPU per request of the case's processes (nginx for direct; keel; LiteLLM's master and workers)"
awk -F'\t' '
  { key = $2 "\t" $3 "\t" $4; row[NR] = $0; if ($1 == "direct") { d50[key] = $6; d99[key] = $7 } }
  END {
    printf "%-8s %-6s %5s %5s %11s %9s %9s %9s %9s %7s %8s %8s %8s %6s %6s\n", "case", "mode", "conc", "round", "requests/s", "p50", "p99", "added50", "added99", "cpu", "checked", "non-2xx", "sock_err", "load", "steal%"
    for (i = 1; i <= NR; i++) {
      split(row[i], f, "\t"); key = f[2] "\t" f[3] "\t" f[4]
      a50 = (key in d50) ? sprintf("%.3f", f[6] - d50[key]) : "-"
      a99 = (key in d99) ? sprintf("%.3f", f[7] - d99[key]) : "-"
      printf "%-8s %-6s %5s %5s %11s %9s %9s %9s %9s %7s %8s %8s %8s %6s %6s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], a50, a99, f[13], f[11], f[8], f[9], f[12], f[10]
    }
  }' "$SUMMARY"

if grep -q '^keel' "$SUMMARY" && grep -q '^litellm' "$SUMMARY"; then
  echo
  echo "# Keel against LiteLLM (goal: requests/s >= 10x, added latency <= 1/10, i.e. LiteLLM's added / Keel's >= 10)"
  awk -F'\t' '
    { key = $2 "\t" $3 "\t" $4; if ($1 == "direct") { d50[key] = $6; d99[key] = $7 } if ($1 == "keel") { k[key] = $0; order[++n] = key } if ($1 == "litellm") l[key] = $0 }
    END {
      for (i = 1; i <= n; i++) {
        key = order[i]; if (!(key in l)) continue
        split(k[key], a, "\t"); split(l[key], b, "\t"); split(key, kk, "\t")
        ratio = b[5] > 0 ? a[5] / b[5] : 0
        line = sprintf("%-6s c%-3s r%s  requests/s %.1fx %s", kk[1], kk[2], kk[3], ratio, ratio >= 10 ? "(met)" : "(not met)")
        if (key in d50) {
          ka50 = a[6] - d50[key]; ka99 = a[7] - d99[key]; la50 = b[6] - d50[key]; la99 = b[7] - d99[key]
          r50 = ka50 > 0 ? sprintf("%.1fx", la50 / ka50) : "inf"; r99 = ka99 > 0 ? sprintf("%.1fx", la99 / ka99) : "inf"
          line = line sprintf("   added p50: keel %.2f ms, litellm %.2f ms, %s %s   added p99: keel %.2f, litellm %.2f, %s %s", ka50, la50, r50,
            (ka50 <= 0 || la50 / ka50 >= 10) ? "(met)" : "(not met)", ka99, la99, r99, (ka99 <= 0 || la99 / ka99 >= 10) ? "(met)" : "(not met)")
        }
        print line
      }
    }' "$SUMMARY"
fi

if [ -s "$BENCH_TMP/first.txt" ]; then
  echo
  echo "# one streamed request at a time, $FIRST_TOKEN after 20 (ms): ttfb = the response head, first = the first token, total = the end"
  cat "$BENCH_TMP/first.txt"
fi
grep -v '^$' "$BENCH_TMP/keel-keel.log" 2>/dev/null | head -n 10 | sed 's/^/    [keel log] /' >&2 || true
grep -iE 'error|exception|traceback' "$BENCH_TMP/litellm.log" 2>/dev/null | head -n 10 | sed 's/^/    [litellm log] /' >&2 || true

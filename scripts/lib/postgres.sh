# Throwaway PostgreSQL for tests and benchmarks, on 127.0.0.1 only.
# PostgreSQL refuses to run as root, so when we are root it runs as the
# `postgres` OS user (created if missing). Source this file, then:
#   pg_start            # sets PG_PORT, PG_DIR, PG_URL (postgres://postgres@127.0.0.1:PORT/postgres)
#   pg_stop             # stops it and removes its files
# shellcheck shell=bash

pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

pg_ensure_installed() {
  if ! pg_bindir >/dev/null; then
    echo "installing PostgreSQL (apt)…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
  fi
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  pg_ensure_installed
  local bin; bin=$(pg_bindir)
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home postgres
  fi
  PG_DIR=$(mktemp -d /tmp/keel-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  PG_PORT=$(pg_free_port)
  (cd "$PG_DIR" && pg_as_owner "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >"$PG_DIR/initdb.log" 2>&1) \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  (cd "$PG_DIR" && pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=300 -c fsync=on" start >/dev/null) \
    || { cat "$PG_DIR/server.log" >&2; return 1; }
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
  export PG_DIR PG_PORT PG_URL
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  local bin; bin=$(pg_bindir)
  (cd "$PG_DIR" && pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1) || true
  rm -rf "$PG_DIR"
  PG_DIR=
}

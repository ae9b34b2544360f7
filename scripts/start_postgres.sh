#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for zoo's team-registry tests, and print its URL.
#
#   export ZOO_TEST_POSTGRES_URL=$(scripts/start_postgres.sh)      # installs Debian's postgresql if missing
#   scripts/start_postgres.sh --no-install                          # only start (tests use this when it is installed)
#   scripts/start_postgres.sh --stop
#
# The cluster lives in $ZOO_PG_DIR (default /tmp/zoo-postgres), listens on 127.0.0.1:$ZOO_PG_PORT (default 54329)
# only, and has a random password written next to it. Running it again reuses a running server. Progress goes to
# stderr; stdout is only the URL, so `$(...)` captures it.
set -euo pipefail
DIR=${ZOO_PG_DIR:-/tmp/zoo-postgres}
PORT=${ZOO_PG_PORT:-54329}
DB=zoo_test
log() { echo "start_postgres: $*" >&2; }

find_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return 0; fi
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return 0
  return 1
}

# initdb and postgres refuse to run as root: run them as the `postgres` user that Debian's package creates
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

BIN=$(find_bin || true)
if [ "${1:-}" = "--stop" ]; then
  [ -n "$BIN" ] && [ -f "$DIR/data/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2
  exit 0
fi
if [ -z "$BIN" ]; then
  if [ "${1:-}" = "--no-install" ]; then log "PostgreSQL is not installed"; exit 1; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL is not installed and cannot be (needs root and apt-get)"; exit 1
  fi
  log "installing Debian's postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # the package would create and start a default cluster on 5432: we want only our own, so skip that
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/zoo-no-main.conf
  apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN=$(find_bin) || { log "initdb not found after installing postgresql"; exit 1; }
fi

mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
if [ ! -f "$DIR/password" ]; then
  as_owner sh -c "umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > '$DIR/password'"
fi
PASSWORD=$(cat "$DIR/password")
URL="postgresql://zoo:$PASSWORD@127.0.0.1:$PORT/$DB"

if [ ! -f "$DIR/data/PG_VERSION" ]; then
  log "creating a cluster in $DIR/data"
  as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=scram-sha-256 --pwfile="$DIR/password" \
    --encoding=UTF8 --no-locale >/dev/null
fi
if ! as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$PORT"
  # loopback only; fsync off: a throwaway test server (zoo's own crash tests kill clients, not the server)
  as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
fi
export PGPASSWORD=$PASSWORD
PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
if [ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'zoo'")" != 1 ]; then
  # CREATEDB: the tests make a fresh database per test
  "${PSQL[@]}" -c "CREATE ROLE zoo LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
if [ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  "${PSQL[@]}" -c "CREATE DATABASE $DB OWNER zoo"
fi
echo "$URL"

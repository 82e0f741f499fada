#!/usr/bin/env bash
# The postgres:16 stand-in's entrypoint: the official image's contract, smaller. On the first start
# (an empty $PGDATA) initdb creates $POSTGRES_USER (superuser, password $POSTGRES_PASSWORD) and
# $POSTGRES_DB, runs /docker-entrypoint-initdb.d/*.sh|*.sql, and the server then listens on
# 0.0.0.0:5432 with password auth (scram-sha-256; POSTGRES_HOST_AUTH_METHOD to change) for TCP.
# The server runs as "postgres" and is PID 1 (exec), so SIGINT/SIGTERM stop it cleanly.
set -Eeuo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
log() { echo "[postgres-standin] $*" >&2; }

# "docker run postgres:16 -c max_connections=200" passes server options
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 700 "$PGDATA"
  chown postgres:postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    log "the database is uninitialized and POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)"
    exit 1
  fi
  log "initdb: superuser $user, database $db, host auth $auth, in $PGDATA"
  pwargs=()
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    pwargs=(--pwfile="$pwfile")
  fi
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options, as upstream
  initdb --username="$user" "${pwargs[@]}" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
  [ -z "${pwfile:-}" ] || rm -f "$pwfile"
  {
    echo
    echo "listen_addresses = '*'"
    [ "$auth" != md5 ] || echo "password_encryption = md5"
  } >>"$PGDATA/postgresql.conf"
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

  # A temporary server on the unix socket only, to create the database and run init scripts.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc)
  if [ "$db" != postgres ]; then
    "${psql[@]}" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";' >/dev/null
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh) log "running $f"; . "$f" ;;
      *.sql) log "running $f"; "${psql[@]}" --dbname "$db" -f "$f" >/dev/null ;;
      *) log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  log "init done; starting the server"
fi

exec "$@"

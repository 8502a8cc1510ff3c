#!/bin/sh
# Entry point of the PostgreSQL stand-in image (docker/postgres.Dockerfile), the official image's contract in short:
# on the first start of an empty $PGDATA, initdb with POSTGRES_USER/POSTGRES_PASSWORD, run the init scripts on a
# server that listens on its socket only (so healthchecks over TCP fail until init is done), then serve on all
# interfaces of the container. Password authentication (scram-sha-256) for every TCP client; trust on the socket,
# as in the official image.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (compose.yaml takes it from .env)}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --no-locale >/dev/null
  rm -f "$pwfile"
  # initdb allows TCP from 127.0.0.1 only: the servers connect over the compose network.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$script" ] || continue
    echo "postgres-entrypoint: running $script"
    sh "$script"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-entrypoint: initialised $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"

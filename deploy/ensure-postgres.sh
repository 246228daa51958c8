#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with a `test` database (for the test suite).
# Installs Debian's server if it is missing and starts the local cluster if it is down.
set -euo pipefail
HOST=${PGHOST:-127.0.0.1}
if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
fi
if ! pg_isready -h "$HOST" -q 2>/dev/null; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -h "$HOST" -q && break; sleep 1; done
fi
pg_isready -h "$HOST" -q || { echo "PostgreSQL is not reachable on $HOST:5432" >&2; exit 1; }
if ! psql -h "$HOST" -U postgres -tAc "select 1 from pg_database where datname='test'" postgres 2>/dev/null | grep -q 1; then
  psql -h "$HOST" -U postgres -c "create database test" postgres >/dev/null 2>&1 \
    || su postgres -c "psql -c 'create database test'" >/dev/null 2>&1 || true
fi
echo "PostgreSQL ready on $HOST:5432"

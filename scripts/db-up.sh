#!/usr/bin/env bash
# Creates (first time) and starts the project's own Postgres cluster on $DB_PORT, with pg_cron preloaded
# and what hosted Supabase provides (roles, auth schema); then applies new migrations with the Supabase CLI.
# Usage: scripts/db-up.sh [--fresh]   (--fresh wipes the cluster first: used by the test command)
. "$(dirname "$0")/lib.sh"

fresh=0; [ "${1:-}" = "--fresh" ] && fresh=1
bin="$(pg_bindir)"
data="$(stack_data_dir)"
pgdata="$data/pgdata"

if [ "$fresh" = 1 ] && [ -d "$pgdata" ]; then
  as_owner "$bin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pgdata"
fi

if [ ! -f "$pgdata/PG_VERSION" ]; then
  say "creating the $STACK_NAME cluster in $pgdata"
  [ "$(id -u)" = 0 ] && chown postgres: "$data"
  pwfile="$data/.pw"; printf 'postgres\n' > "$pwfile"; [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
  as_owner "$bin/initdb" -D "$pgdata" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$data/initdb.log" 2>&1 || die "initdb failed; see $data/initdb.log"
  rm -f "$pwfile"
  cat >>"$pgdata/postgresql.conf" <<CONF
# stockhold local stack (as supabase start configures it)
listen_addresses = '127.0.0.1'
port = $DB_PORT
unix_socket_directories = '$data'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
# pg_cron connects like a client; through the socket (trust) it needs no password, as on Supabase.
cron.host = '$data'
cron.timezone = 'UTC'
timezone = 'UTC'
max_connections = 300
fsync = ${PG_FSYNC:-on}
wal_writer_delay = ${PG_WAL_WRITER_DELAY:-200ms}
log_min_messages = warning
logging_collector = off
CONF
fi

if as_owner "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  say "the $STACK_NAME database is already running on port $DB_PORT"
else
  port_in_use "$DB_PORT" && die "port $DB_PORT is taken by another program; stop it or set DB_PORT in .env"
  # The stack's ports (543xx) lie in Linux's ephemeral range: a client connection elsewhere may have had one as its
  # local port, and once closed it holds it in TIME_WAIT for 60 s, where Postgres cannot bind it (nothing listens,
  # so the check above passes; seen here). Wait that out rather than fail.
  for try in $(seq 1 14); do
    as_owner "$bin/pg_ctl" -D "$pgdata" -l "$data/postgres.log" -w -t 60 start >/dev/null && break
    { [ "$try" -lt 14 ] && tail -n 6 "$data/postgres.log" | grep 'could not bind' >/dev/null; } \
      || die "postgres did not start; see $data/postgres.log"
    say "port $DB_PORT is still held by a closed connection (TIME_WAIT); retrying in 5 s"
    sleep 5
  done
fi

psql_db -f scripts/sql/bootstrap.sql >/dev/null || die "bootstrapping the Supabase roles failed"

# The real Supabase CLI applies the migrations and records them in supabase_migrations.schema_migrations.
out="$(supabase db push --db-url "$CLI_DB_URL" --include-all --yes 2>&1)" || {
  printf '%s\n' "$out" >&2; die "a migration failed (above); fix it and run again, or 'npm run db:reset'"; }
printf '%s\n' "$out" | grep -vE '^\s*$' | sed 's/^/  /' >&2

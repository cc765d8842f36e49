#!/usr/bin/env bash
# `npm run stop`: stops the dev database (the functions gateway stops with Ctrl-C in its terminal).
. "$(dirname "$0")/lib.sh"
pgdata="$ROOT/.stack/$STACK_NAME/pgdata"
if [ -f "$pgdata/postmaster.pid" ]; then
  as_owner "$(pg_bindir)/pg_ctl" -D "$(readlink -f "$ROOT/.stack/$STACK_NAME")/pgdata" -m fast stop >/dev/null && say "stopped the $STACK_NAME database"
else
  say "the $STACK_NAME database is not running"
fi

#!/usr/bin/env bash
# `npm start`: installs what is missing, starts the dev database (port $DB_PORT) with migrations and seed
# applied by the Supabase CLI, prints the status block, and serves the functions on $API_PORT in the
# foreground until Ctrl-C. The database keeps running afterwards; `npm run stop` stops it.
. "$(dirname "$0")/lib.sh"

if port_in_use "$API_PORT"; then
  if curl -s -o /dev/null "http://127.0.0.1:$API_PORT/functions/v1/health" 2>/dev/null; then
    die "stockhold is already running (functions on $SUPABASE_URL, database on port $DB_PORT); 'npm run stop' stops it"
  fi
  die "port $API_PORT is taken by another program; stop it or set API_PORT in .env"
fi

bash scripts/setup.sh
bash scripts/db-up.sh
# The seed goes in through the CLI too; it records what it seeded, so a second start does not seed twice.
supabase db push --db-url "$CLI_DB_URL" --include-seed --yes >/dev/null 2>&1 \
  || die "the seed (supabase/seed.sql) failed to apply; run 'npm run db:reset' to rebuild"

bash scripts/status.sh
exec deno run --allow-net --allow-env --allow-read --allow-sys scripts/serve-functions.ts

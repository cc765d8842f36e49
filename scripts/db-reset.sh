#!/usr/bin/env bash
# `npm run db:reset`: rebuilds the dev database from supabase/migrations and supabase/seed.sql with the
# Supabase CLI (`supabase db reset --db-url`), which drops every non-system schema first.
. "$(dirname "$0")/lib.sh"
bash scripts/db-up.sh
supabase db reset --db-url "$CLI_DB_URL" --yes >&2 || die "the reset failed (above): a migration or the seed does not apply"
psql_db -f scripts/sql/bootstrap.sql >/dev/null
say "database rebuilt from migrations and seed"

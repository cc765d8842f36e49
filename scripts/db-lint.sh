#!/usr/bin/env bash
# `npm run db:lint`: plpgsql_check over every function, through `supabase db lint`; fails on errors.
. "$(dirname "$0")/lib.sh"
supabase db lint --db-url "$CLI_DB_URL" --fail-on error

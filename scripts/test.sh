#!/usr/bin/env bash
# `npm test`: every test, on a fresh test database of its own (port $TEST_DB_PORT, built from the
# migrations by the Supabase CLI; the dev database is never touched). Steps: install what is missing,
# `supabase db lint`, the pgTAP suite with pg_prove, type-check, the Deno tests. Ends with one line
# `N passed, N failed` counting pgTAP assertions, Deno tests and the lint/type-check gates.
export STACK_NAME=test
export DB_PORT="${TEST_DB_PORT:-54332}"
export API_PORT="${TEST_API_PORT:-54331}"
export PG_FSYNC=off   # a throwaway cluster: durability buys nothing here and costs seconds
export PG_WAL_WRITER_DELAY=10s  # asynchronous commits reach disk only when something waits for them (db.test.ts)
export NO_COLOR=1     # plain output, so the summary lines can be read
. "$(dirname "$0")/lib.sh"
set +e -o pipefail   # keep going after a failing step: every step is counted, the last line says it all

passed=0; failed=0
logs="$ROOT/.stack/test-logs"; mkdir -p "$logs"
step() { printf '\n== %s\n' "$*"; }
gate() { # gate <name> <command...>: a pass/fail check counted as one test
  local name="$1"; shift
  if "$@" >"$logs/$name.log" 2>&1; then passed=$((passed+1)); echo "ok: $name"
  else failed=$((failed+1)); echo "FAILED: $name"; tail -n 40 "$logs/$name.log"; fi
}
stop_db() { as_owner "$(pg_bindir)/pg_ctl" -D "$(readlink -f "$ROOT/.stack/test")/pgdata" -m immediate stop >/dev/null 2>&1 || true; }
trap stop_db EXIT

step "set-up"
bash scripts/setup.sh
bash scripts/db-up.sh --fresh 2>"$logs/db-up.log" || { cat "$logs/db-up.log"; echo "0 passed, 1 failed"; exit 1; }
echo "test database on port $DB_PORT, migrations applied"

step "supabase db lint (plpgsql_check)"
gate db-lint supabase db lint --db-url "$CLI_DB_URL" --fail-on error
gate seed psql_db -f supabase/seed.sql

step "pgTAP (pg_prove)"
tap="$logs/pgtap.log"
pg_prove --verbose --failures -d "$DB_URL" supabase/tests/database/*.test.sql >"$tap" 2>&1; prove_rc=$?
tap_ok=$(grep -cE '^ok [0-9]+' "$tap" || true)
tap_fail=$(grep -cE '^not ok [0-9]+' "$tap" || true)
if [ "$prove_rc" != 0 ] && [ "$tap_fail" = 0 ]; then tap_fail=1; fi  # a file that died or planned wrong
grep -E '^(not ok|# |Failed|Dubious|Parse errors|Result|Files=)' "$tap" | grep -vE '^# (Subtest|Looks like you planned)' | tail -n 40
passed=$((passed+tap_ok)); failed=$((failed+tap_fail))
echo "pgTAP: $tap_ok passed, $tap_fail failed"

step "deno check, lint, fmt"
gate deno-check deno check scripts/*.ts supabase/functions
gate deno-lint deno lint supabase/functions scripts
gate deno-fmt deno fmt --check supabase/functions scripts

step "Deno tests"
dlog="$logs/deno.log"
deno test -A --no-check supabase/functions/tests/ 2>&1 | tee "$dlog" | grep -vE '^(running|.* \.\.\. ok \()' ; 
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$dlog" | tail -n 1)
d_ok=$(printf '%s' "$summary" | sed -nE 's/.*\| ([0-9]+) passed.*/\1/p'); d_fail=$(printf '%s' "$summary" | sed -nE 's/.*\| ([0-9]+) failed.*/\1/p')
if [ -z "$summary" ]; then d_ok=0; d_fail=1; echo "the Deno test run did not finish (see $dlog)"; fi
passed=$((passed+${d_ok:-0})); failed=$((failed+${d_fail:-0}))
echo "Deno: ${d_ok:-0} passed, ${d_fail:-0} failed"

step "pg_cron ran the sweep in this cluster"
# The job fires at each minute boundary; the suites above take about that long, so this rarely waits.
cron_ran() {
  for _ in $(seq 1 75); do
    n=$(psql_db -Atc "select count(*) from cron.job_run_details d join cron.job j using (jobid)
                      where j.jobname = 'stockhold-expire-reservations' and d.status = 'succeeded'")
    [ "${n:-0}" -gt 0 ] && return 0
    failed_run=$(psql_db -Atc "select return_message from cron.job_run_details where status = 'failed' limit 1")
    [ -n "$failed_run" ] && { echo "a pg_cron run failed: $failed_run"; return 1; }
    sleep 1
  done
  echo "no sweep run recorded in cron.job_run_details"; return 1
}
gate pg-cron-sweep cron_ran

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# `npm run bench`: builds a fresh benchmark cluster (port $BENCH_DB_PORT, fsync on, as in production) from the
# migrations and runs scripts/bench.ts, which prints a table and writes bench/results/latest.json.
# Knobs: BENCH_CLIENTS (default 8), BENCH_SECONDS per SQL run (10), BENCH_HTTP_CLIENTS (50), BENCH_SWEEP_SIZES (10000,100000),
# BENCH_ROUNDS (3: back-to-back pairs of the limit and the hot product, and runs of the largest sweep).
export STACK_NAME=bench
export DB_PORT="${BENCH_DB_PORT:-54342}"
. "$(dirname "$0")/lib.sh"
bash scripts/setup.sh
say "building the bench cluster on port $DB_PORT"
bash scripts/db-up.sh --fresh 2>/dev/null || die "the bench cluster did not come up; try: STACK_NAME=bench DB_PORT=$DB_PORT bash scripts/db-up.sh --fresh"
trap 'as_owner "$(pg_bindir)/pg_ctl" -D "$(readlink -f .stack/bench)/pgdata" -m fast stop >/dev/null 2>&1' EXIT
deno run -A scripts/bench.ts

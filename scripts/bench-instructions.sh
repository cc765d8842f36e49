#!/usr/bin/env bash
# `npm run bench:instructions`: CPU instructions per create_order on one hot product, counted by valgrind's
# callgrind, which counts the same total for the same binary and inputs however busy or slow the machine is (the
# timed bench's figures move by tens of per cent between these VMs). BENCHMARKS.md's instruction figures come from
# this. A throwaway cluster (port $BENCH_CG_DB_PORT) gets the migrations and one stocked product, is stopped, and
# a single-user backend on a copy of it runs N create_orders in a DO loop, committing after each as real orders
# do, once with N = 30 and once with N = 130: the difference over 100 orders leaves out start-up and the first
# call's compilation. p_now is fixed, so every run does the same work. Takes about ten seconds.
export STACK_NAME=cg
export DB_PORT="${BENCH_CG_DB_PORT:-54372}"
. "$(dirname "$0")/lib.sh"
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
bash scripts/setup.sh
say "building the cluster on port $DB_PORT"
bash scripts/db-up.sh --fresh 2>/dev/null || die "the cluster did not come up; try: STACK_NAME=cg DB_PORT=$DB_PORT bash scripts/db-up.sh --fresh"
data="$(readlink -f .stack/cg)"
psql_db -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null || die "could not create the hot product"
update cron.job set active = false where jobname = 'stockhold-expire-reservations';
insert into public.products (sku, name, unit_price, currency, tax_rate_bp) values ('HOT', 'Hot', 1000, 'EUR', 1900);
select public.restock((select id from public.products where sku = 'HOT'), 'shop', 1000000, 'cg');
SQL
as_owner "$(pg_bindir)/pg_ctl" -D "$data/pgdata" -m fast stop >/dev/null

work="$(mktemp -d /tmp/stockhold-cg.XXXXXX)"; chmod 777 "$work"
trap 'rm -rf "$work"' EXIT
# instructions <n>: callgrind's total for a loop of n orders (collection on only inside the DO block)
instructions() {
  rm -rf "$work/data"; cp -a "$data/pgdata" "$work/data"
  # a single-user backend has no background workers to start
  sed -i "s/^shared_preload_libraries.*/shared_preload_libraries = ''/" "$work/data/postgresql.conf"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$work/data"
  cat > "$work/in.sql" <<SQL
set synchronous_commit = off;
do \$\$ declare v uuid := (select id from public.products where sku = 'HOT'); begin for i in 1..$1 loop perform public.create_order(jsonb_build_array(jsonb_build_object('product_id', v, 'quantity', 1)), 'sumup', gen_random_uuid()::text, 'bench', '{}'::jsonb, null, '2026-01-01 12:00:00+00'); commit; end loop; end \$\$;
SQL
  as_owner valgrind --tool=callgrind --collect-atstart=no --toggle-collect=plpgsql_inline_handler \
    --callgrind-out-file="$work/out.$1" "$(pg_bindir)/postgres" --single -D "$work/data" postgres \
    <"$work/in.sql" >"$work/log.$1" 2>&1
  grep -oP 'Collected : \K[0-9]+' "$work/log.$1" || { tail -n 20 "$work/log.$1" >&2; die "callgrind run failed"; }
}
say "counting 30 orders, then 130"
a=$(instructions 30) && b=$(instructions 130) || exit 1
printf 'create_order, one hot product: %s instructions per order (callgrind, %s - %s over 100 orders)\n' \
  "$(( (b - a) / 100 ))" "$b" "$a"

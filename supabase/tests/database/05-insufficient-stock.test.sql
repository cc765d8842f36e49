-- Insufficient stock: every line is checked before anything is reserved; one SH409 names every short product
-- with what was asked and what is available, and the failed call writes nothing at all.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(10);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select pg_temp.product('T-SHORT-X', 1000, 1900, 2, 1) as x \gset
select pg_temp.product('T-SHORT-Y', 500, 1900, 0, 1) as y \gset
select pg_temp.product('T-SHORT-Z', 200, 1900, 50, 50) as z \gset
select pg_temp.product('T-SHORT-NONE', 200, 1900, 0, 0) as none \gset

create temp table snapshot on commit drop as
select (select count(*) from public.orders) as orders,
       (select count(*) from public.order_items) as items,
       (select count(*) from private.reservations) as reservations,
       (select count(*) from private.stock_movements) as moves,
       (select count(*) from private.order_status_history) as history;

select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'short-1', 'h')$$,
         jsonb_build_array(pg_temp.line(:'x', 4), pg_temp.line(:'z', 1), pg_temp.line(:'y', 2))),
  'SH409', 'insufficient_stock: not enough stock for T-SHORT-X, T-SHORT-Y',
  'insufficient_stock_raises_once: one SH409 names every short product, and only those');
select is(
  pg_temp.error_of(format($$select public.create_order(%L, 'sumup', 'short-2', 'h')$$,
         jsonb_build_array(pg_temp.line(:'x', 4), pg_temp.line(:'z', 1), pg_temp.line(:'y', 2)))),
  jsonb_build_object('code', 'SH409', 'detail', jsonb_build_object('items', jsonb_build_array(
    jsonb_build_object('product_id', :'x', 'sku', 'T-SHORT-X', 'requested', 4, 'available', 3),
    jsonb_build_object('product_id', :'y', 'sku', 'T-SHORT-Y', 'requested', 2, 'available', 1)))),
  'insufficient_stock_detail: DETAIL.items lists product_id, sku, requested and available for each short line');

select is(
  (select row((select count(*) from public.orders), (select count(*) from public.order_items),
              (select count(*) from private.reservations), (select count(*) from private.stock_movements),
              (select count(*) from private.order_status_history))::text),
  (select row(s.orders, s.items, s.reservations, s.moves, s.history)::text from snapshot s),
  'insufficient_stock_writes_nothing: no order, line, reservation, ledger row or history row is left behind');
select is(
  array[pg_temp.stock(:'x', 'shop'), pg_temp.stock(:'x', 'warehouse'), pg_temp.stock(:'z', 'shop')],
  array['2/0', '1/0', '50/0'],
  'insufficient_stock_no_partial_reservation: not even the lines that were available are reserved');

-- ---- what others hold is not available ------------------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'x', 2)), 'sumup', 'short-3', 'h') is not null as held \gset
select is(
  pg_temp.error_of(format($$select public.create_order(%L, 'stripe', 'short-4', 'h')$$,
         jsonb_build_array(pg_temp.line(:'x', 2)))) -> 'detail' -> 'items' -> 0 -> 'available',
  '1'::jsonb,
  'insufficient_stock_counts_reservations: units held by another unpaid order are not available');
select lives_ok(
  format($$select public.create_order(%L, 'stripe', 'short-5', 'h')$$, jsonb_build_array(pg_temp.line(:'x', 1))),
  'insufficient_stock_last_unit: the last free unit can still be sold');
select is(
  array[pg_temp.stock(:'x', 'shop'), pg_temp.stock(:'x', 'warehouse')],
  array['2/2', '1/1'],
  'insufficient_stock_fully_reserved: every unit is now reserved and reserved never exceeds on_hand');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'short-6', 'h')$$, jsonb_build_array(pg_temp.line(:'x', 1))),
  'SH409', 'insufficient_stock: not enough stock for T-SHORT-X',
  'insufficient_stock_sold_out: a sold-out product is refused');
select is(
  pg_temp.error_of(format($$select public.create_order(%L, 'sumup', 'short-7', 'h')$$,
         jsonb_build_array(pg_temp.line(:'none', 1)))) -> 'detail' -> 'items' -> 0 -> 'available',
  '0'::jsonb,
  'insufficient_stock_never_stocked: a product never stocked anywhere is short with 0 available');
select is(
  (select count(*)::int from public.orders where idempotency_key in ('short-1', 'short-2', 'short-4', 'short-6', 'short-7')),
  0,
  'insufficient_stock_no_order_rows: no refused request left an order under its key');

select * from finish();
rollback;

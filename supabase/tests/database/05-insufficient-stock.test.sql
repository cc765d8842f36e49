-- Insufficient stock: every line is checked before anything is reserved; one SH409 names every short product
-- with what was asked and what is available, and the failed call writes nothing at all.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(10);

-- Fixtures (rolled back with the test): products stocked through restock, so the ledger matches from the start.
create function pg_temp.product(p_sku text, p_price bigint, p_tax integer, p_shop integer, p_warehouse integer,
                                p_currency text default 'EUR', p_active boolean default true)
returns uuid language plpgsql as $f$
declare v_id uuid;
begin
  insert into public.products (sku, name, unit_price, currency, tax_rate_bp, active)
  values (p_sku, 'Test ' || p_sku, p_price, p_currency, p_tax, p_active) returning id into v_id;
  if p_shop > 0 then perform public.restock(v_id, 'shop', p_shop, 'test fixture'); end if;
  if p_warehouse > 0 then perform public.restock(v_id, 'warehouse', p_warehouse, 'test fixture'); end if;
  return v_id;
end $f$;
create function pg_temp.line(p_product uuid, p_quantity integer) returns jsonb language sql as $f$
  select jsonb_build_object('product_id', p_product, 'quantity', p_quantity) $f$;
create function pg_temp.stock(p_product uuid, p_location text) returns text language sql as $f$
  select format('%s/%s', s.on_hand, s.reserved) from private.stock_levels s
  join private.locations l on l.id = s.location_id where s.product_id = p_product and l.code = p_location $f$;
create function pg_temp.order_id(p_result jsonb) returns uuid language sql as $f$
  select (p_result -> 'order' ->> 'id')::uuid $f$;
-- The SQLSTATE and DETAIL an engine call raises (null when it succeeds): throws_ok checks code and message,
-- this reads the JSON detail the doors rely on.
create function pg_temp.error_of(p_sql text) returns jsonb language plpgsql as $f$
declare v_state text; v_detail text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail;
  return jsonb_build_object('code', v_state, 'detail', case when v_detail like '{%' then v_detail::jsonb end);
end $f$;

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

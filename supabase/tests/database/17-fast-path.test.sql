-- create_order's fast path (stock row locked last, by a conditional UPDATE) and its fallback to the locked path:
-- when the units are gone by the time the UPDATE runs, when lapsed reservations must be expired first, and when
-- stock is short (SH409 still names every short line). Whatever path decided, the ledger, the reservations and
-- the stock levels agree, and a rolled-back fast attempt leaves nothing behind.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(9);

create function pg_temp.product(p_sku text, p_shop integer, p_warehouse integer)
returns uuid language plpgsql as $f$
declare v_id uuid;
begin
  insert into public.products (sku, name, unit_price, currency, tax_rate_bp)
  values (p_sku, 'Test ' || p_sku, 1000, 'EUR', 1900) returning id into v_id;
  if p_shop > 0 then perform public.restock(v_id, 'shop', p_shop, 'test fixture'); end if;
  if p_warehouse > 0 then perform public.restock(v_id, 'warehouse', p_warehouse, 'test fixture'); end if;
  return v_id;
end $f$;
create function pg_temp.line(p_product uuid, p_quantity integer) returns jsonb language sql as $f$
  select jsonb_build_object('product_id', p_product, 'quantity', p_quantity) $f$;
create function pg_temp.stock(p_product uuid, p_location text) returns text language sql as $f$
  select format('%s/%s', s.on_hand, s.reserved) from private.stock_levels s
  join private.locations l on l.id = s.location_id where s.product_id = p_product and l.code = p_location $f$;
create function pg_temp.clean(p_products uuid[]) returns boolean language sql as $f$
  select bool_and(on_hand_difference = 0 and reserved_ledger_difference = 0 and reserved_difference = 0)
  from admin.stock_reconciliation where product_id = any (p_products) $f$;

select pg_temp.product('T-FAST-A', 5, 5) as a \gset
select pg_temp.product('T-FAST-B', 2, 0) as b \gset
select pg_temp.product('T-FAST-C', 1, 0) as c \gset

-- 1. the common case: one conditional UPDATE per stock row drawn, channel priority kept (sumup: shop first)
select public.create_order(jsonb_build_array(pg_temp.line(:'a', 7)), 'sumup', 'fast-1', 'h') -> 'order' ->> 'id'
  as o1 \gset
select is(
  array[pg_temp.stock(:'a', 'shop'), pg_temp.stock(:'a', 'warehouse'),
        (select string_agg(format('%s@%s', r.quantity, l.code), ',' order by l.code)
         from private.reservations r join private.locations l on l.id = r.location_id where r.order_id = :'o1')],
  array['5/5', '5/2', '5@shop,2@warehouse'],
  'fast_path_allocates: shop first for sumup, split over both locations, reserved moved on both rows');

-- 2. the units vanish between the unlocked read and the conditional UPDATE (here: an AFTER INSERT trigger on
-- reservations, which fires inside the fast attempt, takes every free unit of the row). The UPDATE finds nothing
-- free, the fast attempt is rolled back (the trigger's change with it) and the locked path sells.
create sequence pg_temp.race_fired;
create function pg_temp.steal() returns trigger language plpgsql as $f$
begin
  -- only the first time: a sequence keeps counting when its caller's subtransaction is rolled back
  if nextval('pg_temp.race_fired') = 1 then
    update private.stock_levels s set reserved = s.on_hand
    where (s.product_id, s.location_id) in (select n.product_id, n.location_id from new_rows n);
  end if;
  return null;
end $f$;
create trigger t_race after insert on private.open_reservations
  referencing new table as new_rows for each statement execute function pg_temp.steal();

select public.create_order(jsonb_build_array(pg_temp.line(:'b', 1)), 'sumup', 'fast-2', 'h') -> 'order' ->> 'id'
  as o2 \gset
drop trigger t_race on private.open_reservations;
select is(
  array[(select currval('pg_temp.race_fired'))::text, pg_temp.stock(:'b', 'shop'),
        (select count(*) from private.reservations where order_id = :'o2')::text,
        (select count(*) from private.stock_movements m join private.reservations r on r.id = m.reservation_id
         where r.order_id = :'o2' and m.reason = 'reserve')::text],
  array['2', '2/1', '1', '1'],
  'fast_path_falls_back_when_stock_moved: the rolled-back attempt left no reservation, ledger row or stock change; the locked path reserved once');
select ok(pg_temp.clean(array[:'a', :'b']::uuid[]),
  'fast_path_fallback_reconciles: levels, ledger and active reservations agree after a fallback');

-- 3. lapsed reservations: the only unit of C is held by an order that lapsed. The unlocked read sees nothing
-- free, so the locked path expires the lapsed reservation (exact expiry) and sells the unit.
select public.create_order(jsonb_build_array(pg_temp.line(:'c', 1)), 'sumup', 'fast-3a', 'h', '{}', null,
                           now() - interval '1 hour') -> 'order' ->> 'id' as lapsed \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'c', 1)), 'sumup', 'fast-3b', 'h') -> 'order' ->> 'id'
  as o3 \gset
select is(
  array[(select status from private.reservations where order_id = :'lapsed'),
        (select status from private.reservations where order_id = :'o3'), pg_temp.stock(:'c', 'shop')],
  array['expired', 'active', '1/1'],
  'fast_path_defers_to_exact_expiry: a sale needing lapsed units takes the locked path, which expires them first');

-- 4. a lapsed reservation on the product, with free units left on its row: the fast path draws the line from that
-- row and, holding it, expires the lapsed reservation itself, so exact expiry keeps releasing lapsed units as
-- buyers arrive.
select public.restock(:'c', 'shop', 2, 'more') is not null as restocked \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'c', 1)), 'sumup', 'fast-4a', 'h', '{}', null,
                           now() - interval '1 hour') -> 'order' ->> 'id' as lapsed2 \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'c', 1)), 'sumup', 'fast-4b', 'h') is not null as ok4 \gset
select is(
  array[(select status from private.reservations where order_id = :'lapsed2'), pg_temp.stock(:'c', 'shop')],
  array['expired', '3/2'],
  'fast_path_expires_held_rows: lapsed reservations on a row the sale draws from are expired by the sale');

-- 5. short stock: the unlocked read sees it, the locked path decides and names every short line, nothing written
create temp table counts on commit drop as
select (select count(*) from public.orders) as orders, (select count(*) from private.reservations) as reservations,
       (select count(*) from private.stock_movements) as moves;
select throws_ok(
  format($$select public.create_order(%L, 'stripe', 'fast-5', 'h')$$,
         jsonb_build_array(pg_temp.line(:'a', 4), pg_temp.line(:'b', 2), pg_temp.line(:'c', 5))),
  'SH409', 'insufficient_stock: not enough stock for T-FAST-A, T-FAST-B, T-FAST-C',
  'fast_path_short_raises_once: SH409 names every short line');
select is(
  (select array[count(*)] from public.orders) || (select count(*) from private.reservations)
    || (select count(*) from private.stock_movements),
  (select array[orders, reservations, moves] from counts),
  'fast_path_short_writes_nothing: the refused order left no order, reservation or ledger row');

-- 6. enough in total but not at the first location: the fast path splits in priority order (stripe: warehouse
-- first), one conditional UPDATE per row, in (product_id, location_id) order
select public.create_order(jsonb_build_array(pg_temp.line(:'a', 3)), 'stripe', 'fast-6', 'h') -> 'order' ->> 'id'
  as o6 \gset
select is(
  (select string_agg(format('%s@%s', r.quantity, l.code), ',' order by l.code)
   from private.reservations r join private.locations l on l.id = r.location_id where r.order_id = :'o6'),
  '3@warehouse',
  'fast_path_online_priority: stripe draws from the warehouse first');
select ok(pg_temp.clean(array[:'a', :'b', :'c']::uuid[]),
  'fast_path_reconciles: after every path, levels, ledger and active reservations agree');

select * from finish();
rollback;

-- After a flash sale the statistics say one product holds nearly every active reservation. A cached plan then
-- estimates that "the reservations of product X" are all of them, whatever X is, and could read them through
-- open_reservations_expiry_idx, filtering on the product. Before this was fixed: every order of any other product
-- walked all of the hot product's reservations in its lapsed check (~50 ms an order on the bench); the shop
-- window read every lapsed reservation for each product it listed; exact expiry (create_order's locked path) read
-- every lapsed reservation for the products it had locked. Checked through this transaction's index counters
-- (pg_stat_get_xact_tuples_returned) as the planner sees the skewed table; then, for the lapsed check, with the
-- product index dropped (inside the test), which leaves the expiry index as the only index on product and time.
-- (create_order's lapsed check now reads the stock rows' next_expiry, not the reservations: 20-next-expiry.)
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(6);

\ir fixtures.psql

-- Three orders of one product, one unit each.
create function pg_temp.three_orders(p_product uuid, p_key text) returns integer language sql as $f$
  select count(public.create_order(jsonb_build_array(pg_temp.line(p_product, 1)), 'sumup', p_key || n, 'h-' || p_key))::int
  from generate_series(1, 3) n $f$;

select pg_temp.product('T-SKEW-HOT', 1000, 1900, 5000, 0) as hot \gset
select pg_temp.product('T-SKEW-OTHER', 1000, 1900, 50, 0) as other \gset

-- the flash sale: one order through the engine, then reservations of the hot product written straight into the
-- table (the stock figures do not matter here, only what the statistics see; quicker than 70000 create_order
-- calls): 50000 expiring one after the other over the next 33 minutes, and 2000 that lapsed in the last ten
-- minutes and wait for the sweep (the shop window counts those as free)
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'hot', 1)), 'sumup', 'skew-1', 'h-skew'))
  as hot_order \gset
insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
select :'hot_order', :'hot', l.id, 1, now() + make_interval(secs => n * 0.04)
from generate_series(1, 50000) n
cross join private.locations l
where l.code = 'shop';
insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
select :'hot_order', :'hot', l.id, 1, now() - interval '10 minutes' + make_interval(secs => n * 0.3)
from generate_series(1, 2000) n
cross join private.locations l
where l.code = 'shop';
-- (what the engine's own UPDATE of the stock row does for every reservation it opens)
update private.stock_levels s
set next_expiry = (select min(r.expires_at) from private.open_reservations r
                   where r.product_id = s.product_id and r.location_id = s.location_id)
where s.product_id = :'hot' and s.location_id = (select id from private.locations where code = 'shop');
analyze private.open_reservations;
-- as autovacuum leaves a table whose rows are all committed: every page all-visible (in the catalogue, rolled back
-- with the test)
update pg_class set relallvisible = relpages where oid = 'private.open_reservations'::regclass;
set local plan_cache_mode = force_generic_plan;

-- ---- as the planner sees the skewed table -------------------------------------------------------------------------
select pg_temp.tuples_read('open_reservations_expiry_idx') as expiry_before,
       pg_temp.tuples_read('open_reservations_product_idx') as product_before \gset
select is(pg_temp.three_orders(:'other', 'skew-other-'), 3, 'skew_orders: orders of another product go through');
select is(
  format('expiry index %s, product index at most 10: %s',
         pg_temp.tuples_read('open_reservations_expiry_idx') - :expiry_before,
         pg_temp.tuples_read('open_reservations_product_idx') - :product_before <= 10),
  'expiry index 0, product index at most 10: t',
  'skew_create_order: orders of another product read at most their own product''s reservations, through the product index');

-- (a session's first five calls of a statement are planned for their values, the ones after that generically)
set local plan_cache_mode = force_custom_plan;
select pg_temp.tuples_read('open_reservations_expiry_idx') as expiry_before,
       pg_temp.tuples_read('open_reservations_product_idx') as product_before \gset
-- (the page of this test's two products only: a database other tests have filled holds more, with reservations)
select public.list_products('T-SKEW-', 2) is not null as listed \gset
select is(
  format('expiry index %s, product index %s',
         pg_temp.tuples_read('open_reservations_expiry_idx') - :expiry_before,
         pg_temp.tuples_read('open_reservations_product_idx') - :product_before),
  'expiry index 0, product index 2000',
  'skew_list_products: the shop window counts the 2000 lapsed units through the product index');
set local plan_cache_mode = force_generic_plan;

-- an order of the other product that must first expire a lapsed reservation of that product (exact expiry, on
-- the locked path) reads only that product's lapsed reservations too
select public.create_order(jsonb_build_array(pg_temp.line(:'other', 1)), 'sumup', 'skew-lapsed', 'h-skew-lapsed',
                           '{}'::jsonb, null, now() - interval '1 hour') is not null as lapsed_made \gset
select pg_temp.tuples_read('open_reservations_expiry_idx') as expiry_before \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'other', 1)), 'sumup', 'skew-after-lapse', 'h-s-a')
  is not null as after_lapse \gset
select is(
  format('released %s, expiry index %s',
         not exists (select 1 from private.open_reservations r
                     where r.product_id = :'other' and r.expires_at <= now()),
         pg_temp.tuples_read('open_reservations_expiry_idx') - :expiry_before),
  'released t, expiry index 0',
  'skew_expire_lapsed_on: the lapsed reservation of the other product is released without walking the expiry index');

-- ---- with the expiry index the only index left on product and time ----------------------------------------------
drop index private.open_reservations_product_idx;
select pg_temp.tuples_read('open_reservations_expiry_idx') as expiry_before \gset
select is(pg_temp.three_orders(:'other', 'skew-other-b-'), 3, 'skew_orders_no_product_index: they still go through');
select is(
  pg_temp.tuples_read('open_reservations_expiry_idx') - :expiry_before, 0::bigint,
  'skew_create_order_shape: the lapsed check does not walk the expiry index (52000 entries) either');

select * from finish();
rollback;

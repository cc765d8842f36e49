-- stock_levels.next_expiry: a lower bound on the expiry of the row's active reservations. Opening a reservation
-- lowers it, closing one (paid, cancelled, swept) leaves it, exact expiry raises it to the earliest expiry still
-- active on the product. While it lies ahead, create_order's fast path and the shop window know that nothing has
-- lapsed without reading the reservations: a closed reservation leaves a dead entry at the head of its product's
-- range in open_reservations_product_idx until VACUUM, and reading "the earliest active reservation" walked them
-- all, on every order.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(13);

\ir fixtures.psql

create temp table clock as select date_trunc('minute', now()) - interval '30 minutes' as t0;
create function pg_temp.bounds(p_product uuid) returns text language sql as $f$
  select string_agg(format('%s %s', l.code, case when isfinite(s.next_expiry) then
                      to_char(s.next_expiry - (select t0 from pg_temp.clock), 'HH24:MI') else 'none' end),
                    ', ' order by l.code)
  from private.stock_levels s join private.locations l on l.id = s.location_id where s.product_id = p_product $f$;
-- Scans started on a reservations index in this transaction (inserting a reservation adds entries, no scan), and
-- the entries scans returned.
create function pg_temp.scans(p_index text) returns bigint language sql as $f$
  select pg_stat_get_xact_numscans(('private.' || p_index)::regclass) $f$;
create function pg_temp.entries(p_index text) returns bigint language sql as $f$
  select pg_stat_get_xact_tuples_returned(('private.' || p_index)::regclass) $f$;
select t0 from pg_temp.clock \gset

select pg_temp.product('T-NEXT-A', 1000, 1900, 50, 50) as a \gset
select is(
  (select string_agg(s.next_expiry::text, ',') from private.stock_levels s where s.product_id = :'a'),
  'infinity,infinity',
  'next_expiry_fresh: a stock row without reservations has nothing to expire');

-- t0: an in-store order (shop, lapses at 00:15); t0+5: an online one (warehouse first, 00:40); t0+6: an in-store
-- order (00:21), cancelled at once: its release leaves the shop's bound where it was
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'sumup', 'next-1', 'h1',
                        '{}', null, :'t0'::timestamptz)) as o1 \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'stripe', 'next-2', 'h2',
                        '{}', null, :'t0'::timestamptz + interval '5 minutes')) as o2 \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'sumup', 'next-3', 'h3',
                        '{}', null, :'t0'::timestamptz + interval '6 minutes')) as o3 \gset
select public.cancel_order(:'o3', 'test', :'t0'::timestamptz + interval '7 minutes') is not null as cancelled \gset
select is(pg_temp.bounds(:'a'), 'shop 00:15, warehouse 00:40',
  'next_expiry_lowered: each opened reservation lowers its row''s bound; a release does not raise it');

-- t0+20: the shop's bound has come, so the sale takes the locked path: exact expiry releases order 1's lapsed
-- reservation and raises both rows to the earliest expiry still active on the product (order 2's, 00:40); the
-- new reservation then lowers the shop's to its own (00:35)
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'sumup', 'next-4', 'h4',
                        '{}', null, :'t0'::timestamptz + interval '20 minutes')) as o4 \gset
select is(
  array[(select status from private.reservations where order_id = :'o1'), pg_temp.bounds(:'a')],
  array['expired', 'shop 00:35, warehouse 00:40'],
  'next_expiry_raised: exact expiry releases the lapsed unit and raises the bound to the earliest active expiry');

-- t0+22: both bounds lie ahead: the fast path reads neither reservations index
select pg_temp.scans('open_reservations_product_idx') as product_before,
       pg_temp.scans('open_reservations_expiry_idx') as expiry_before \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'sumup', 'next-5', 'h5',
                        '{}', null, :'t0'::timestamptz + interval '22 minutes')) as o5 \gset
select is(
  array[pg_temp.scans('open_reservations_product_idx') - :product_before,
        pg_temp.scans('open_reservations_expiry_idx') - :expiry_before],
  array[0, 0]::bigint[],
  'next_expiry_fast_path: with every bound ahead, an order reads no reservations to know that nothing lapsed');

-- A busy product: 600 orders placed and cancelled leave 600 dead entries at the head of its range in the product
-- index (in this transaction they are not even marked dead). The earliest active reservation behind them is what
-- the lapsed check used to read; now an order and the shop window read none of it.
select pg_temp.product('T-NEXT-BUSY', 1000, 1900, 1000, 0) as busy \gset
select count(public.cancel_order(pg_temp.order_id(public.create_order(
         jsonb_build_array(pg_temp.line(:'busy', 1)), 'sumup', 'busy-' || n, 'hb' || n,
         '{}', null, :'t0'::timestamptz + interval '25 minutes')), 'test', :'t0'::timestamptz + interval '25 minutes'))
  as churned
from generate_series(1, 600) n \gset
select pg_temp.entries('open_reservations_product_idx') as before_old \gset
select r.expires_at is null as none_active from (
  select r.expires_at from private.open_reservations r
  where r.product_id >= :'busy' and r.product_id <= :'busy'
  order by r.product_id, r.expires_at limit 1) r right join (select 1) one on true \gset
select is(pg_temp.entries('open_reservations_product_idx') - :before_old, 600::bigint,
  'next_expiry_dead_head: the old lapsed check (the earliest active reservation) walks the 600 closed ones');
select pg_temp.scans('open_reservations_product_idx') as product_before \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'busy', 1)), 'sumup', 'busy-x', 'hbx',
                        '{}', null, :'t0'::timestamptz + interval '26 minutes')) as busy_x \gset
-- (the page of T-NEXT-A and T-NEXT-BUSY only: a database other tests have filled holds more, with reservations)
select (public.list_products('T-NEXT-', 2, :'t0'::timestamptz + interval '26 minutes') -> 'items') is not null
  as listed \gset
select is(pg_temp.scans('open_reservations_product_idx') - :product_before, 0::bigint,
  'next_expiry_busy_product: an order of it and the shop window read none of its reservations');

-- Exact expiry reads a product's reservations from its lowest bound on. t0+42: the bound (00:40, the cancelled
-- orders') has come; the locked path expires busy-x and finds nothing active behind it. t0+58: the bound (00:57,
-- the sale at t0+42) has come again; this time exact expiry starts at 00:57, past the 601 closed reservations.
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'busy', 1)), 'sumup', 'busy-y', 'hby',
                        '{}', null, :'t0'::timestamptz + interval '42 minutes')) as busy_y \gset
select pg_temp.entries('open_reservations_product_idx') as entries_before \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'busy', 1)), 'sumup', 'busy-z', 'hbz',
                        '{}', null, :'t0'::timestamptz + interval '58 minutes')) as busy_z \gset
select is(
  array[(select status from private.reservations where order_id = :'busy_x'),
        (select status from private.reservations where order_id = :'busy_y'),
        (pg_temp.entries('open_reservations_product_idx') - :entries_before <= 4)::text],
  array['expired', 'expired', 'true'],
  'next_expiry_floor: exact expiry starts at the lowest bound, not at the 601 closed reservations before it');

-- Exact expiry without the locked path: a lapsed reservation on the very row a sale draws its whole line from is
-- expired by the sale once it holds the row (freeing those units first could not change what it takes there);
-- one on a row the sale does not draw from sends it through the locked path, which frees first, then allocates.
set local track_functions = 'pl';
create function pg_temp.lock_stock_calls() returns bigint language sql as $f$
  select coalesce(pg_stat_get_xact_function_calls('private.lock_stock(uuid[],smallint[],boolean)'::regprocedure), 0) $f$;
select pg_temp.product('T-NEXT-E', 1000, 1900, 10, 0) as e \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'e', 1)), 'sumup', 'e-lapsed', 'he1',
                        '{}', null, now() - interval '1 hour')) as e_lapsed \gset
select pg_temp.lock_stock_calls() as calls_before \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'e', 2)), 'sumup', 'e-now', 'he2'))
  as e_now \gset
select is(
  array[(select status from private.reservations where order_id = :'e_lapsed'), pg_temp.stock(:'e', 'shop'),
        (pg_temp.lock_stock_calls() - :calls_before)::text,
        ((select next_expiry from private.stock_levels s join private.locations l on l.id = s.location_id
          where s.product_id = :'e' and l.code = 'shop')
         = (select expires_at from private.reservations where order_id = :'e_now'))::text],
  array['expired', '10/2', '0', 'true'],
  'next_expiry_fast_exact_expiry: the sale expires the lapsed reservation on its own row, no locked path');

select pg_temp.product('T-NEXT-F', 1000, 1900, 10, 10) as f \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'f', 1)), 'stripe', 'f-lapsed', 'hf1',
                        '{}', null, now() - interval '2 hours')) as f_lapsed \gset
select pg_temp.lock_stock_calls() as calls_before \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'f', 1)), 'sumup', 'f-now', 'hf2'))
  as f_now \gset
select is(
  array[(select status from private.reservations where order_id = :'f_lapsed'),
        pg_temp.stock(:'f', 'shop'), pg_temp.stock(:'f', 'warehouse'),
        (pg_temp.lock_stock_calls() - :calls_before)::text],
  array['expired', '10/1', '10/0', '1'],
  'next_expiry_locked_when_elsewhere: a lapsed reservation on a row the sale does not draw from: locked path');

-- A flash sale in progress: 10000 reservations of one product expire over the next hour (written straight into the
-- table, with the bound their UPDATEs would have left), and one has lapsed. The shop window and exact expiry read
-- the lapsed window, from the bound to now, not the 10000 behind it: with product_id as a range of one value the
-- upper bound on expires_at did not end the scan, which walked to the product's last reservation (~50 pages).
create function pg_temp.pages(p_index text) returns bigint language sql as $f$
  select pg_stat_get_xact_blocks_fetched(('private.' || p_index)::regclass) $f$;
select pg_temp.product('T-NEXT-SALE', 1000, 1900, 20000, 0) as sale \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'sale', 1)), 'sumup', 'sale-lapsed',
                        'hs1', '{}', null, now() - interval '1 hour')) as sale_lapsed \gset
insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
select :'sale_lapsed', :'sale', 1, 1, now() + make_interval(secs => n * 0.36) from generate_series(1, 10000) n;
update private.stock_levels set reserved = reserved + 10000 where product_id = :'sale' and location_id = 1;
select pg_temp.pages('open_reservations_product_idx') as pages_before \gset
select is(
  (select (i ->> 'available')::int from jsonb_array_elements(public.list_products('T-NEXT-RZ', 1) -> 'items') i
   where i ->> 'sku' = 'T-NEXT-SALE'),
  20000 - 10000,
  'next_expiry_window_listed: the shop window counts the lapsed unit as free');
select cmp_ok(pg_temp.pages('open_reservations_product_idx') - :pages_before, '<', 5::bigint,
  'next_expiry_window_bounded: reading it takes a few index pages, not the 10000 reservations after it');
-- lapsed units still count as available in the shop window while they wait for the sweep
select is(
  (select (i ->> 'available')::int from jsonb_array_elements(
     public.list_products('T-NEXT-', 1, :'t0'::timestamptz + interval '60 minutes') -> 'items') i
   where i ->> 'sku' = 'T-NEXT-A'),
  100,
  'next_expiry_shop_window: once the bounds have come, the shop window counts the lapsed units as free');

-- the rule itself, over every stock row of this database: no active reservation expires before its row's bound
select is(
  (select count(*) from private.open_reservations r
   join private.stock_levels s on s.product_id = r.product_id and s.location_id = r.location_id
   where r.expires_at < s.next_expiry),
  0::bigint,
  'next_expiry_bound_holds: no active reservation expires before its stock row''s next_expiry');

select * from finish();
rollback;

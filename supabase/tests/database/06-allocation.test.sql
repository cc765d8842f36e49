-- Reservation and allocation: an order reserves its stock at create time, drawing from the locations in the
-- channel's order (in store: shop first; online: warehouse first), for the payment method's TTL from p_now.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(17);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select '2030-01-01 12:00:00+00' as t0 \gset
select pg_temp.product('T-ALLOC-1', 1000, 1900, 3, 5) as p1 \gset
select pg_temp.product('T-ALLOC-2', 1000, 1900, 3, 5) as p2 \gset
select pg_temp.product('T-ALLOC-3', 1000, 1900, 3, 5) as p3 \gset

create function pg_temp.held(p_order uuid) returns text[] language sql as $f$
  select array_agg(format('%s:%s', l.code, r.quantity) order by l.code)
  from private.reservations r join private.locations l on l.id = r.location_id
  where r.order_id = p_order and r.status = 'active' $f$;

-- ---- in store: shop first --------------------------------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'p1', 2)), 'sumup', 'alloc-1', 'h', '{}', null, :'t0') as s1 \gset
select is(pg_temp.held(pg_temp.order_id(:'s1')), array['shop:2'],
  'allocation_instore_shop_first: an in-store order takes from the shop first');
select public.create_order(jsonb_build_array(pg_temp.line(:'p1', 4)), 'sumup', 'alloc-2', 'h', '{}', null, :'t0') as s2 \gset
select is(pg_temp.held(pg_temp.order_id(:'s2')), array['shop:1', 'warehouse:3'],
  'allocation_instore_spills_to_warehouse: when the shop runs out, an in-store order takes the rest from the warehouse');
select is(array[pg_temp.stock(:'p1', 'shop'), pg_temp.stock(:'p1', 'warehouse')], array['3/3', '5/3'],
  'allocation_reserved_levels: stock_levels.reserved grows by exactly what was reserved at each location');

-- ---- online: warehouse first -----------------------------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'p2', 4)), 'stripe', 'alloc-3', 'h', '{}', null, :'t0') as o1 \gset
select is(pg_temp.held(pg_temp.order_id(:'o1')), array['warehouse:4'],
  'allocation_online_warehouse_first: an online order takes from the warehouse first');
select public.create_order(jsonb_build_array(pg_temp.line(:'p2', 3)), 'stripe', 'alloc-4', 'h', '{}', null, :'t0') as o2 \gset
select is(pg_temp.held(pg_temp.order_id(:'o2')), array['shop:2', 'warehouse:1'],
  'allocation_online_spills_to_shop: when the warehouse runs out, an online order takes the rest from the shop');

-- ---- several products in one order ------------------------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'p3', 8), pg_temp.line(:'p2', 1)), 'sumup', 'alloc-5', 'h',
                           '{}', null, :'t0') as m \gset
select is(
  (select array_agg(format('%s@%s:%s', p.sku, l.code, r.quantity) order by p.sku, l.code)
   from private.reservations r join private.locations l on l.id = r.location_id join public.products p on p.id = r.product_id
   where r.order_id = pg_temp.order_id(:'m')),
  array['T-ALLOC-2@shop:1', 'T-ALLOC-3@shop:3', 'T-ALLOC-3@warehouse:5'],
  'allocation_multi_product: each line is allocated on its own, in the channel order');

-- ---- expiry time and status by payment method -------------------------------------------------------------------
select is(
  array[(:'s1'::jsonb -> 'order' ->> 'reservation_expires_at')::timestamptz,
        (select max(expires_at) from private.reservations where order_id = pg_temp.order_id(:'s1'))],
  array[:'t0'::timestamptz + interval '15 minutes', :'t0'::timestamptz + interval '15 minutes'],
  'allocation_sumup_ttl: an in-store reservation expires 15 minutes after p_now');
select is(
  array[(:'o1'::jsonb -> 'order' ->> 'reservation_expires_at')::timestamptz,
        (select max(expires_at) from private.reservations where order_id = pg_temp.order_id(:'o1'))],
  array[:'t0'::timestamptz + interval '35 minutes', :'t0'::timestamptz + interval '35 minutes'],
  'allocation_stripe_ttl: an online reservation expires 35 minutes after p_now, outliving a 30-minute Checkout Session');
select is(
  array[:'s1'::jsonb -> 'order' ->> 'status', :'o1'::jsonb -> 'order' ->> 'status'],
  array['awaiting_instore_payment', 'awaiting_payment'],
  'allocation_initial_status: an in-store order awaits payment at the till, an online order awaits the provider');
select is(
  (select array_agg(format('%s %s %s', m.reason, m.delta_on_hand, m.delta_reserved) order by m.delta_reserved)
   from private.stock_movements m join private.reservations r on r.id = m.reservation_id
   where r.order_id = pg_temp.order_id(:'s2')),
  array['reserve 0 1', 'reserve 0 3'],
  'allocation_ledger: each reservation writes one reserve ledger row with its quantity');
select is(
  (select format('%s -> %s (%s)', coalesce(h.from_status, 'null'), h.to_status, h.reason)
   from private.order_status_history h where h.order_id = pg_temp.order_id(:'s1')),
  'null -> awaiting_instore_payment (created)',
  'allocation_history: creating an order records its first status in the history');
select set_config('app.actor', 'staff:00000000-0000-4000-8000-00000000c0de', true),
       set_config('app.correlation_id', 'req-create-1', true) \gset ctx_
select public.create_order(jsonb_build_array(pg_temp.line(:'p1', 1)), 'sumup', 'alloc-ctx', 'h-ctx', '{}', null, :'t0')
  -> 'order' ->> 'id' as ctx_order \gset
select is(
  (select format('%s -> %s (%s) %s %s', coalesce(h.from_status, 'null'), h.to_status, h.reason, h.actor, h.correlation_id)
   from private.order_status_history h where h.order_id = :'ctx_order'),
  'null -> awaiting_instore_payment (created) staff:00000000-0000-4000-8000-00000000c0de req-create-1',
  'allocation_history_context: the creation row carries the request''s actor and correlation id');
select set_config('app.actor', '', true), set_config('app.correlation_id', '', true) \gset ctx_

-- ---- settings ------------------------------------------------------------------------------------------------------
select is(
  (select array_agg(format('%s %s', payment_method, reservation_ttl) order by payment_method) from private.settings),
  array['stripe 00:35:00', 'sumup 00:15:00'],
  'settings_defaults: reservations last 15 minutes in store and 35 minutes online');
select throws_ok(
  $$update private.settings set reservation_ttl = interval '30 minutes' where payment_method = 'stripe'$$,
  '23514', null,
  'settings_stripe_minimum: an online TTL under 31 minutes is refused (a Checkout Session lives at least 30)');
select throws_ok(
  $$update private.settings set reservation_ttl = interval '0' where payment_method = 'sumup'$$,
  '23514', null,
  'settings_positive_ttl: a TTL of zero is refused');
update private.settings set reservation_ttl = interval '5 minutes' where payment_method = 'sumup';
select is(
  (public.create_order(jsonb_build_array(pg_temp.line(:'p1', 1)), 'sumup', 'alloc-6', 'h', '{}', null, :'t0')
     -> 'order' ->> 'reservation_expires_at')::timestamptz,
  :'t0'::timestamptz + interval '5 minutes',
  'settings_configurable: a changed TTL applies to the next order');
select is(
  (select array_agg(format('%s %s/%s', code, instore_priority, online_priority) order by id) from private.locations),
  array['shop 1/2', 'warehouse 2/1'],
  'locations_priorities: the shop comes first in store and the warehouse first online');

select * from finish();
rollback;

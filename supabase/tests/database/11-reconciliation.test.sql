-- Reconciliation: after a mixed sequence of everything that moves stock (restock, orders in both channels,
-- payment, replayed payment, cancel, exact expiry, sweep, late payment, out-of-stock payment, adjustment,
-- fulfilment, refund), the stored stock equals its evidence and admin.stock_reconciliation reads zero.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(12);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select '2030-01-01 12:00:00+00' as t0 \gset
select pg_temp.product('T-REC-A', 1000, 1900, 4, 6) as a \gset
select pg_temp.product('T-REC-B', 250, 700, 2, 0) as b \gset

-- 1. an in-store order, paid (and the payment replayed)
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 5), pg_temp.line(:'b', 1)), 'sumup',
                                            'rec-1', 'h', '{}', null, :'t0')) as o1 \gset
select (select total from public.orders where id = :'o1') as o1_total \gset
select public.mark_paid(:'o1', 'sumup', 'tx-1', :o1_total, 'EUR', :'t0') ->> 'result' as r \gset
select public.mark_paid(:'o1', 'sumup', 'tx-1', :o1_total, 'EUR', :'t0') ->> 'result' as r \gset
select public.mark_fulfilled(:'o1', :'t0') ->> 'result' as r \gset
-- 2. an online order, cancelled
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 2)), 'stripe', 'rec-2', 'h',
                                            '{}', null, :'t0')) as o2 \gset
select public.cancel_order(:'o2', 'abandoned', :'t0') ->> 'result' as r \gset
-- 3. an in-store order that lapses; its unit is taken by a later order before any sweep (exact expiry)
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'b', 1)), 'sumup', 'rec-3', 'h',
                                            '{}', null, :'t0')) as o3 \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'b', 1)), 'sumup', 'rec-4', 'h',
                                            '{}', null, :'t0'::timestamptz + interval '20 minutes')) as o4 \gset
-- 4. the late payment of the lapsed order: nothing left, so paid_out_of_stock, then refunded
select public.mark_paid(:'o3', 'sumup', 'tx-3', 268, 'EUR', :'t0'::timestamptz + interval '21 minutes') ->> 'result' as o3_result \gset
select public.record_refund(:'o3', 'rf-3', 268, 'EUR') -> 'order' ->> 'refunded_amount' as r \gset
-- 5. an online order that lapses, swept, then paid late with stock left
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'stripe', 'rec-5', 'h',
                                            '{}', null, :'t0')) as o5 \gset
select public.expire_reservations(:'t0'::timestamptz + interval '40 minutes') as swept \gset
select public.mark_paid(:'o5', 'stripe', 'pi_5', 1190, 'eur', :'t0'::timestamptz + interval '41 minutes') ->> 'result' as o5_result \gset
-- 6. stock keeping, and one order left open
select public.adjust_stock(:'a', 'warehouse', -1, 'damaged') ->> 'on_hand' as r \gset
select public.restock(:'b', 'warehouse', 4, 'delivery') ->> 'on_hand' as r \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'a', 1), pg_temp.line(:'b', 3)), 'stripe',
                                            'rec-6', 'h', '{}', null, :'t0'::timestamptz + interval '50 minutes')) as o6 \gset

select is(array[:'o3_result', :'o5_result'], array['paid_out_of_stock', 'paid'],
  'reconcile_setup: the sequence went through the late-payment paths it meant to');

select is(
  (select array_agg(format('%s@%s %s/%s', sku, location, on_hand, reserved) order by sku, location)
   from admin.stock_reconciliation where product_id in (:'a', :'b')),
  array['T-REC-A@shop 0/0', 'T-REC-A@warehouse 3/1', 'T-REC-B@shop 1/0', 'T-REC-B@warehouse 4/3'],
  'reconcile_figures: the stock after the sequence is what the sequence implies');
select is(
  (select count(*)::int from admin.stock_reconciliation
   where product_id in (:'a', :'b')
     and (on_hand_difference <> 0 or reserved_ledger_difference <> 0 or reserved_difference <> 0)),
  0,
  'reconcile_zero: for the products of the sequence every difference column reads 0');
select is(
  (select array_agg(format('%s=%s %s=%s %s=%s', on_hand, ledger_on_hand, reserved, ledger_reserved, reserved, active_reserved)
                    order by sku, location)
   from admin.stock_reconciliation where product_id in (:'a', :'b')),
  (select array_agg(format('%s=%s %s=%s %s=%s', on_hand, on_hand, reserved, reserved, reserved, reserved) order by sku, location)
   from admin.stock_reconciliation where product_id in (:'a', :'b')),
  'reconcile_beside: stored on_hand equals the ledger sum, stored reserved equals the ledger sum and the active reservations');
select is(
  (select count(*)::int from admin.stock_reconciliation
   where on_hand_difference <> 0 or reserved_ledger_difference <> 0 or reserved_difference <> 0),
  0,
  'reconcile_whole_database: no product anywhere in the database is out of step with its ledger');

select is(
  (select array_agg(format('%s:%s:%s', o.idempotency_key, d.sku, -d.deducted) order by o.idempotency_key, d.sku)
   from public.orders o
   join lateral (select m.product_id, (select sku from public.products where id = m.product_id) as sku,
                        sum(m.delta_on_hand) as deducted
                 from private.reservations r join private.stock_movements m on m.reservation_id = r.id
                 where r.order_id = o.id and m.reason = 'fulfil' group by m.product_id) d on true
   where o.id in (:'o1', :'o2', :'o3', :'o5', :'o6')),
  array['rec-1:T-REC-A:5', 'rec-1:T-REC-B:1', 'rec-5:T-REC-A:1'],
  'reconcile_deducted_once: each paid order deducted each of its lines exactly once, and nothing else deducted');

-- ---- the other admin views ----------------------------------------------------------------------------------------
select is(
  (select array_agg(format('%s %s', kind, coalesce(to_status, reason)) order by at, entry_id, kind)
   from admin.order_timeline where order_id = :'o5'),
  array['status awaiting_payment', 'stock reserve', 'stock expire', 'status expired', 'stock reserve', 'stock fulfil',
        'status paid'],
  'timeline_story: an order''s timeline interleaves its status changes and its stock movements');
select is(
  (select array_agg(status order by ord) from (select status, row_number() over () as ord from admin.order_counts) c),
  array['awaiting_instore_payment', 'awaiting_payment', 'paid', 'paid_out_of_stock', 'fulfilled', 'cancelled', 'expired'],
  'order_counts_statuses: order_counts lists every status, zeros included, in lifecycle order');
select is(
  (select array_agg(c.orders order by c.status) from admin.order_counts c),
  (select array_agg(coalesce(x.n, 0) order by s.status)
   from unnest(array['awaiting_instore_payment', 'awaiting_payment', 'paid', 'paid_out_of_stock', 'fulfilled', 'cancelled',
                     'expired']) s (status)
   left join (select status, count(*) as n from public.orders group by status) x on x.status = s.status),
  'order_counts_numbers: order_counts agrees with the orders table');

select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'b', 1)), 'sumup', 'rec-soon', 'h', '{}', null,
                                            now() - interval '12 minutes')) as soon \gset
select is(
  (select format('%s %s lapsed=%s soon=%s', sku, quantity, lapsed, expiring_soon) from admin.active_reservations
   where order_id = :'soon'),
  'T-REC-B 1 lapsed=f soon=t',
  'active_reservations_soon: a reservation with three minutes left is flagged as expiring soon');
select is(
  (select array_agg(format('%s %s', sku, location) order by sku, location) from admin.active_reservations
   where order_id = :'o6'),
  array['T-REC-A warehouse', 'T-REC-B warehouse'],
  'active_reservations_lists: every active reservation of an open order is listed with its product and location');
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'b', 1)), 'sumup', 'rec-late', 'h', '{}', null,
                                            now() - interval '20 minutes')) as late \gset
select is(
  (select format('lapsed=%s soon=%s', lapsed, expiring_soon) from admin.active_reservations where order_id = :'late'),
  'lapsed=t soon=f',
  'active_reservations_lapsed: a reservation past expires_at that no sweep has released yet is flagged lapsed');

select * from finish();
rollback;

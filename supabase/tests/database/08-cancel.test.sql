-- cancel_order: an unpaid order gives its stock back at once; a second cancel changes nothing and says so; a
-- paid order cannot be cancelled (its money must be refunded instead).
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(15);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select '2030-01-01 12:00:00+00' as t0 \gset
select pg_temp.product('T-CANCEL', 1000, 1900, 2, 3) as p \gset

select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 4)), 'sumup', 'cancel-a', 'h',
                                            '{}', null, :'t0')) as a \gset
select is(array[pg_temp.stock(:'p', 'shop'), pg_temp.stock(:'p', 'warehouse')], array['2/2', '3/2'],
  'cancel_setup: the order holds stock at both locations');

select public.cancel_order(:'a', 'customer changed their mind', :'t0'::timestamptz + interval '2 minutes') as c1 \gset
select is(:'c1'::jsonb ->> 'result', 'cancelled', 'cancel_awaiting: an unpaid order is cancelled');
select is(
  (select format('%s %s', status, cancelled_at = :'t0'::timestamptz + interval '2 minutes') from public.orders where id = :'a'),
  'cancelled t',
  'cancel_records_time: the order is cancelled at p_now');
select is(array[pg_temp.stock(:'p', 'shop'), pg_temp.stock(:'p', 'warehouse')], array['2/0', '3/0'],
  'cancel_releases: every unit the order held is available again and on_hand is untouched');
select is(
  (select array_agg(format('%s %s', r.status, m.reason) order by r.id)
   from private.reservations r join private.stock_movements m on m.reservation_id = r.id and m.reason <> 'reserve'
   where r.order_id = :'a'),
  array['released release', 'released release'],
  'cancel_ledger: each reservation is released with one release ledger row');
select is(
  (select format('%s -> %s (%s)', from_status, to_status, reason) from private.order_status_history
   where order_id = :'a' and to_status = 'cancelled'),
  'awaiting_instore_payment -> cancelled (customer changed their mind)',
  'cancel_history: the cancellation and its reason are in the status history');

select is(public.cancel_order(:'a', 'again', :'t0') ->> 'result', 'already_cancelled',
  'cancel_twice: cancelling again reports already_cancelled');
select is(
  array[pg_temp.stock(:'p', 'shop'), pg_temp.stock(:'p', 'warehouse'),
        (select count(*)::text from private.order_status_history where order_id = :'a'),
        (select count(*)::text from private.stock_movements m join private.reservations r on r.id = m.reservation_id
         where r.order_id = :'a')],
  array['2/0', '3/0', '2', '4'],
  'cancel_twice_changes_nothing: the second cancel moves no stock and writes no ledger or history row');

-- ---- a paid order is not cancelled -------------------------------------------------------------------------------
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'cancel-b', 'h',
                                            '{}', null, :'t0')) as b \gset
select public.mark_paid(:'b', 'stripe', 'pi_b', 1190, 'eur', :'t0') ->> 'result' as b_paid \gset
select throws_ok(
  format($$select public.cancel_order(%L, 'too late', %L)$$, :'b', :'t0'),
  'SH410', 'invalid_transition: cannot cancel an order that is paid',
  'cancel_after_paid: cancelling a paid order raises SH410');
select is(
  pg_temp.error_of(format($$select public.cancel_order(%L, 'too late')$$, :'b')),
  '{"code": "SH410", "detail": {"status": "paid"}}'::jsonb,
  'cancel_after_paid_detail: SH410 names the order''s current status in DETAIL');
select throws_ok(
  $$select public.cancel_order('f0000000-0000-4000-8000-00000000dead', 'x')$$,
  'SH402', 'order_not_found: f0000000-0000-4000-8000-00000000dead',
  'cancel_unknown_order: cancelling an unknown order raises SH402');

-- ---- an expired order may still be cancelled ---------------------------------------------------------------------
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', 'cancel-c', 'h',
                                            '{}', null, :'t0')) as c \gset
select public.expire_reservations(:'t0'::timestamptz + interval '1 hour') >= 1 as swept \gset
select is(public.cancel_order(:'c', 'tidy up', :'t0'::timestamptz + interval '2 hours') -> 'order' ->> 'status', 'cancelled',
  'cancel_expired: an expired order can be cancelled (it holds nothing)');

-- ---- keep an order whose checkout was attached meanwhile (orders-create giving up after a Stripe failure) ----------
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'cancel-k', 'h'))
  as k \gset
select public.attach_checkout(:'k', 'stripe', 'cs_keep', 'https://checkout.test/cs_keep') is not null as attached \gset
select is(public.cancel_order(:'k', 'payment_provider_unavailable', now(), true) ->> 'result', 'kept_checkout',
  'cancel_keep_if_checkout: an order with a checkout attached is kept when asked to');
select is((select status from public.orders where id = :'k'), 'awaiting_payment',
  'cancel_keep_if_checkout_unchanged: it still awaits its payment, its stock still held');
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'cancel-n', 'h'))
  as n \gset
select is(public.cancel_order(:'n', 'payment_provider_unavailable', now(), true) ->> 'result', 'cancelled',
  'cancel_keep_if_checkout_none: without a checkout the same call cancels');

select * from finish();
rollback;

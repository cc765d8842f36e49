-- Expiry, by moving the clock argument (never sleeping): the sweep releases reservations at or past expires_at,
-- writes 'expire' ledger rows and expires their orders; and before any sweep runs, a lapsed reservation already
-- counts as free: list_products shows it and create_order takes it.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(27);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select '2030-01-01 12:00:00+00' as t0 \gset
-- The sweep is global; count what is due so that rows outside this test cannot skew the expected numbers.
create function pg_temp.due(p_now timestamptz) returns integer language sql as $f$
  select count(*)::int from private.reservations where status = 'active' and expires_at <= p_now $f$;

select pg_temp.product('T-EXP-P', 1000, 1900, 5, 0) as p \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'exp-a', 'h',
                                            '{}', null, :'t0')) as a \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'exp-b', 'h',
                                            '{}', null, :'t0')) as b \gset

-- ---- the sweep -------------------------------------------------------------------------------------------------
select pg_temp.due(:'t0'::timestamptz + interval '10 minutes') as due10 \gset
select is(public.expire_reservations(:'t0'::timestamptz + interval '10 minutes'), :due10,
  'expire_before_time: a sweep before expires_at releases none of the order''s reservations');
select is(
  (select array_agg(status::text order by payment_method desc) from public.orders where id in (:'a', :'b')),
  array['awaiting_instore_payment', 'awaiting_payment'],
  'expire_before_time_orders: both orders still await payment');

select pg_temp.due(:'t0'::timestamptz + interval '15 minutes') as due15 \gset
select ok(:due15 >= 1, 'expire_due_count: the in-store reservation is due exactly at expires_at');
select is(public.expire_reservations(:'t0'::timestamptz + interval '15 minutes'), :due15,
  'expire_at_time: the sweep returns how many reservations it released');
select is(
  (select format('%s %s', status, expired_at = :'t0'::timestamptz + interval '15 minutes') from public.orders where id = :'a'),
  'expired t',
  'expire_marks_order: the unpaid order is expired at p_now');
select is((select status from public.orders where id = :'b'), 'awaiting_payment',
  'expire_leaves_later_orders: an order whose reservation lasts longer is untouched');
select is(pg_temp.stock(:'p', 'shop'), '5/1',
  'expire_releases_stock: the expired units are available again and on_hand is untouched');
select is(
  (select array_agg(format('%s %s', r.status, m.reason) order by m.id)
   from private.reservations r join private.stock_movements m on m.reservation_id = r.id
   where r.order_id = :'a'),
  array['expired reserve', 'expired expire'],
  'expire_ledger: the reservation is expired with one expire ledger row');
select is(
  (select format('%s -> %s (%s)', from_status, to_status, reason) from private.order_status_history
   where order_id = :'a' and to_status = 'expired'),
  'awaiting_instore_payment -> expired (reservation expired)',
  'expire_history: the expiry is in the order''s status history');
select pg_temp.due(:'t0'::timestamptz + interval '15 minutes') as due15again \gset
select is(:due15again, 0, 'expire_idempotent_due: nothing is due any more at that time');
select is(public.expire_reservations(:'t0'::timestamptz + interval '15 minutes'), 0,
  'expire_twice: a second sweep at the same time releases nothing');

-- ---- exact expiry before the sweep ---------------------------------------------------------------------------------
select pg_temp.product('T-EXP-Q', 500, 1900, 1, 0) as q \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'q', 1)), 'sumup', 'exp-c', 'h',
                                            '{}', null, :'t0')) as c \gset
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'exp-d0', 'h', '{}', null, %L)$$,
         jsonb_build_array(pg_temp.line(:'q', 1)), :'t0'::timestamptz + interval '14 minutes'),
  'SH409', 'insufficient_stock: not enough stock for T-EXP-Q',
  'expire_not_early: while the reservation is live, the unit is not for sale');
select is(
  (select (x ->> 'available')::int from jsonb_array_elements(
     public.list_products('T-EXP-P', 10, :'t0'::timestamptz + interval '16 minutes') -> 'items') x
   where x ->> 'id' = :'q'),
  1,
  'expire_available_before_sweep: list_products counts a lapsed reservation as available before any sweep');
select is(
  public.create_order(jsonb_build_array(pg_temp.line(:'q', 1)), 'sumup', 'exp-d', 'h', '{}', null,
                      :'t0'::timestamptz + interval '16 minutes') -> 'order' ->> 'status',
  'awaiting_instore_payment',
  'expire_not_blocking: an expired reservation does not block a new order before the sweep has run');
select is(
  array[(select status from private.reservations where order_id = :'c'), pg_temp.stock(:'q', 'shop'),
        (select status from public.orders where id = :'c')],
  array['expired', '1/1', 'awaiting_instore_payment'],
  'expire_exact_by_create_order: create_order expired the lapsed reservation on the row it locked; the order waits for the sweep');
select is(
  (select m.reason from private.stock_movements m join private.reservations r on r.id = m.reservation_id
   where r.order_id = :'c' and m.reason <> 'reserve'),
  'expire',
  'expire_exact_ledger: that early release is an expire ledger row too');
select pg_temp.due(:'t0'::timestamptz + interval '16 minutes') as due16 \gset
select is(public.expire_reservations(:'t0'::timestamptz + interval '16 minutes'), :due16,
  'expire_sweep_after_exact: the sweep finds nothing more to release for that order');
select is((select status from public.orders where id = :'c'), 'expired',
  'expire_sweep_marks_emptied_orders: the sweep still expires the order whose reservations were taken back');

-- ---- batches, and who did it ---------------------------------------------------------------------------------------
select pg_temp.product('T-EXP-S', 100, 0, 10, 0) as s \gset
select count(public.create_order(jsonb_build_array(pg_temp.line(:'s', 1)), 'sumup', 'exp-batch-' || g, 'h', '{}', null, :'t0'))
  as made from generate_series(1, 5) g \gset
set local application_name = 'pg_cron';
select pg_temp.due(:'t0'::timestamptz + interval '20 minutes') as due20 \gset
select is(public.expire_reservations(:'t0'::timestamptz + interval '20 minutes', 2), :due20,
  'expire_batches: a batch size smaller than the backlog still releases everything due, batch after batch');
reset application_name;
select is(
  (select array_agg(distinct o.status::text) from public.orders o where o.idempotency_key like 'exp-batch-%'),
  array['expired'],
  'expire_batches_orders: every order of the backlog is expired');
select is(
  (select array_agg(distinct m.actor) from private.stock_movements m join private.reservations r on r.id = m.reservation_id
   join public.orders o on o.id = r.order_id where o.idempotency_key like 'exp-batch-%' and m.reason = 'expire')
  || (select array_agg(distinct h.actor) from private.order_status_history h join public.orders o on o.id = h.order_id
      where o.idempotency_key like 'exp-batch-%' and h.to_status = 'expired'),
  array['cron', 'cron'],
  'expire_actor_cron: rows written by the pg_cron job say actor cron, in the ledger and in the history');
select throws_ok(
  $$select public.expire_reservations(now(), 0)$$,
  'SH400', 'invalid_request: p_now is required, p_batch_size must be 1..100000 and p_max_batches at least 1',
  'expire_bad_batch: a batch size below 1 is refused');

-- ---- a bounded call ----------------------------------------------------------------------------------------------
select pg_temp.product('T-EXP-M', 100, 0, 10, 0) as m \gset
select count(public.create_order(jsonb_build_array(pg_temp.line(:'m', 1)), 'sumup', 'exp-max-' || g, 'h', '{}', null,
                                 :'t0'::timestamptz + interval '1 hour')) as made_m from generate_series(1, 5) g \gset
select pg_temp.due(:'t0'::timestamptz + interval '2 hours') as due2h \gset
select is(public.expire_reservations(:'t0'::timestamptz + interval '2 hours', 2, 1), 2,
  'expire_max_batches: with p_max_batches = 1 a call releases one batch and leaves the rest for the next call');
select is(public.expire_reservations(:'t0'::timestamptz + interval '2 hours', 2, 1)
          + public.expire_reservations(:'t0'::timestamptz + interval '2 hours', 2, 1)
          + public.expire_reservations(:'t0'::timestamptz + interval '2 hours', 2, 1), :due2h - 2,
  'expire_max_batches_progress: repeated bounded calls release the rest (as sweep_reservations does, committing in between)');
select is(pg_temp.stock(:'m', 'shop'), '10/0', 'expire_max_batches_stock: all of it is back on sale');

-- ---- the walk's position on ties ---------------------------------------------------------------------------------
-- Two online orders lapse together at t0 + 3h35; an in-store order placed ten minutes after them lapses earlier, at
-- t0 + 3h25, but has the largest id. In batches of 2 the first batch is the in-store order and the first online one,
-- so the walk must go on from that online order (its expiry and id), not from the batch's largest id: from there the
-- second online order, which lapses at the same moment with a smaller id, would be passed over.
select pg_temp.product('T-EXP-T', 100, 0, 10, 0) as tie \gset
select count(public.create_order(jsonb_build_array(pg_temp.line(:'tie', 1)), 'stripe', 'exp-tie-' || g, 'h', '{}', null,
                                 :'t0'::timestamptz + interval '3 hours')) as made_tie from generate_series(1, 2) g \gset
select count(public.create_order(jsonb_build_array(pg_temp.line(:'tie', 1)), 'sumup', 'exp-tie-3', 'h', '{}', null,
                                 :'t0'::timestamptz + interval '3 hours 10 minutes')) as made_tie3 \gset
select is(
  (select array_agg(format('%s %s', o.payment_method, r.expires_at - :'t0'::timestamptz) order by r.id)
   from private.open_reservations r join public.orders o on o.id = r.order_id
   where o.idempotency_key like 'exp-tie-%'),
  array['stripe 03:35:00', 'stripe 03:35:00', 'sumup 03:25:00'],
  'expire_keyset_fixture: the last-made reservation lapses first, the other two together after it');
select is(public.expire_reservations(:'t0'::timestamptz + interval '4 hours', 2), 3,
  'expire_keyset_ties: batches of 2 walk on from the last row of each batch and release all three');

select * from finish();
rollback;

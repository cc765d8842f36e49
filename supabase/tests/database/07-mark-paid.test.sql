-- mark_paid: the compare-and-set to paid that consumes the reservations and deducts on_hand exactly once;
-- replays report already_paid; a wrong amount or currency is recorded, not accepted; a late payment re-reserves
-- if it can and otherwise leaves the order paid_out_of_stock without ever driving stock negative.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(30);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of, moves from fixtures.psql.
\ir fixtures.psql

select '2030-01-01 12:00:00+00' as t0 \gset
select pg_temp.product('T-PAY-P', 1000, 1900, 5, 0) as p \gset

-- ============================================================================================================
-- Paying once, twice
-- ============================================================================================================
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'pay-a', 'h',
                                            '{}', null, :'t0')) as a \gset
select public.mark_paid(:'a', 'sumup', 'tx-a', 2380, 'EUR', :'t0'::timestamptz + interval '1 minute') as paid_a \gset

select is(:'paid_a'::jsonb ->> 'result', 'paid', 'mark_paid_once: the first payment of the full amount pays the order');
select is(
  (select format('%s %s %s', status, provider_payment_ref, paid_at = :'t0'::timestamptz + interval '1 minute')
   from public.orders where id = :'a'),
  'paid tx-a t',
  'mark_paid_records: the order is paid, with the provider reference and p_now as paid_at');
select is(pg_temp.stock(:'p', 'shop'), '3/0', 'mark_paid_deducts: on_hand drops by the quantity sold and the reservation is let go');
select is(
  (select array_agg(status::text) from private.reservations where order_id = :'a'),
  array['consumed'],
  'mark_paid_consumes: the order''s reservation is consumed');
select is(pg_temp.moves(:'a'), array['reserve 0 2', 'fulfil -2 -2'],
  'mark_paid_ledger: the deduction is one fulfil row per reservation');
select is(
  (select format('%s -> %s (%s)', from_status, to_status, reason) from private.order_status_history
   where order_id = :'a' and to_status = 'paid'),
  'awaiting_instore_payment -> paid (payment sumup tx-a)',
  'mark_paid_history: the transition to paid is in the status history with its reason');
select is(:'paid_a'::jsonb -> 'order' ->> 'status', 'paid', 'mark_paid_returns_order: the answer carries the paid order');

select is(
  public.mark_paid(:'a', 'sumup', 'tx-a', 2380, 'EUR') ->> 'result',
  'already_paid',
  'mark_paid_twice: paying a paid order again reports already_paid');
select is(
  public.mark_paid(:'a', 'sumup', 'tx-other', 999, 'USD') ->> 'result',
  'already_paid',
  'mark_paid_replay_any_body: a replay reports already_paid whatever it carries');
select is(
  array[pg_temp.stock(:'p', 'shop'), array_to_string(pg_temp.moves(:'a'), ','),
        (select count(*)::text from private.order_status_history where order_id = :'a')],
  array['3/0', 'reserve 0 2,fulfil -2 -2', '2'],
  'mark_paid_exactly_once: replays deduct nothing, write no ledger row and no history row');
select throws_ok(
  format($$insert into private.stock_movements (product_id, location_id, delta_on_hand, delta_reserved, reason,
                                                order_id, reservation_id)
           select product_id, location_id, -quantity, -quantity, 'fulfil', order_id, id
           from private.reservations where order_id = %L$$, :'a'),
  '23505', null,
  'mark_paid_unique_key: the ledger refuses a second closing row for the same reservation');

-- ============================================================================================================
-- Wrong amount, currency, provider; unknown order
-- ============================================================================================================
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', 'pay-b', 'h',
                                            '{}', null, :'t0')) as b \gset
select is(
  public.mark_paid(:'b', 'sumup', 'tx-b', 1000, 'EUR', :'t0') ->> 'result',
  'amount_mismatch',
  'mark_paid_amount_mismatch: a payment of another amount is answered amount_mismatch');
select is(
  public.mark_paid(:'b', 'sumup', 'tx-b', 1190, 'USD', :'t0') ->> 'result',
  'amount_mismatch',
  'mark_paid_currency_mismatch: a payment in another currency is answered amount_mismatch');
select is(
  array[(select status from public.orders where id = :'b'), pg_temp.stock(:'p', 'shop')],
  array['awaiting_instore_payment', '3/1'],
  'mark_paid_mismatch_changes_nothing: after a mismatch the order still awaits payment and its stock stays reserved');
select is(
  (select array_agg(reason order by id) from private.order_status_history
   where order_id = :'b' and from_status = to_status),
  array['amount_mismatch: expected 1190 EUR, got 1000 EUR (sumup tx-b)',
        'amount_mismatch: expected 1190 EUR, got 1190 USD (sumup tx-b)'],
  'mark_paid_mismatch_recorded: each refused payment is recorded in the status history');
select is(
  public.mark_paid(:'b', 'sumup', 'tx-b', 1190, 'eur', :'t0') ->> 'result',
  'paid',
  'mark_paid_currency_case: a currency in lower case (as Stripe sends it) is the same currency');
select throws_ok(
  format($$select public.mark_paid(%L, 'stripe', 'pi_1', 1190, 'EUR')$$, :'b'),
  'SH400', null,
  'mark_paid_wrong_provider: a payment from the other provider than the order''s method is refused');
select throws_ok(
  $$select public.mark_paid('f0000000-0000-4000-8000-00000000dead', 'sumup', 'tx', 1, 'EUR')$$,
  'SH402', 'order_not_found: f0000000-0000-4000-8000-00000000dead',
  'mark_paid_unknown_order: paying an unknown order raises SH402');

-- ============================================================================================================
-- Late payments
-- ============================================================================================================
-- after expiry, stock left: re-reserved and deducted
select pg_temp.product('T-PAY-LATE', 1000, 0, 3, 0) as late \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'late', 1)), 'sumup', 'pay-c', 'h',
                                            '{}', null, :'t0')) as c \gset
select public.expire_reservations(:'t0'::timestamptz + interval '16 minutes') >= 1 as swept \gset
select is((select status from public.orders where id = :'c'), 'expired', 'mark_paid_late_setup: the order has expired');
select is(
  public.mark_paid(:'c', 'sumup', 'tx-c', 1000, 'EUR', :'t0'::timestamptz + interval '20 minutes') ->> 'result',
  'paid',
  'mark_paid_after_expiry_with_stock: a payment after expiry is accepted when stock allows');
select is(
  array[pg_temp.stock(:'late', 'shop'), array_to_string(pg_temp.moves(:'c'), ',')],
  array['2/0', 'reserve 0 1,expire 0 -1,reserve 0 1,fulfil -1 -1'],
  'mark_paid_after_expiry_rereserves: the late payment re-reserves and deducts once, through the ledger');

-- after expiry, no stock left: paid_out_of_stock, nothing moves
select pg_temp.product('T-PAY-GONE', 1000, 0, 2, 0) as gone \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'gone', 2)), 'sumup', 'pay-d', 'h',
                                            '{}', null, :'t0')) as d \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'gone', 2)), 'sumup', 'pay-e', 'h',
                                            '{}', null, :'t0'::timestamptz + interval '16 minutes')) as e \gset
select public.mark_paid(:'e', 'sumup', 'tx-e', 2000, 'EUR', :'t0'::timestamptz + interval '17 minutes') ->> 'result' as e_paid \gset
select is(
  public.mark_paid(:'d', 'sumup', 'tx-d', 2000, 'EUR', :'t0'::timestamptz + interval '18 minutes') ->> 'result',
  'paid_out_of_stock',
  'mark_paid_after_expiry_no_stock: a late payment for stock sold to someone else leaves the order paid_out_of_stock');
select is(
  (select format('%s %s', status, paid_at is not null) from public.orders where id = :'d'),
  'paid_out_of_stock t',
  'mark_paid_out_of_stock_state: the order is in the distinct state for a person to resolve, with its payment time');
select is(pg_temp.stock(:'gone', 'shop'), '0/0',
  'mark_paid_out_of_stock_never_negative: stock stays at zero, never below');
select is(
  public.mark_paid(:'d', 'sumup', 'tx-d', 2000, 'EUR') ->> 'result',
  'already_paid',
  'mark_paid_out_of_stock_replay: a replay of that payment reports already_paid');

-- partially lapsed: one line still held, the other taken back by a later sale's exact expiry
select pg_temp.product('T-PAY-S', 100, 0, 1, 0) as s \gset
select pg_temp.product('T-PAY-T', 100, 0, 5, 0) as t \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'s', 1), pg_temp.line(:'t', 1)), 'sumup',
                                            'pay-f', 'h', '{}', null, :'t0')) as f \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'t', 1)), 'sumup', 'pay-g', 'h',
                                            '{}', null, :'t0'::timestamptz + interval '16 minutes')) as g \gset
select is(
  (select array_agg(format('%s %s', p.sku, r.status) order by p.sku) from private.reservations r
   join public.products p on p.id = r.product_id where r.order_id = :'f'),
  array['T-PAY-S active', 'T-PAY-T expired'],
  'mark_paid_partial_setup: a later sale of T expired the lapsed T reservation of the first order, not its S one');
select is(
  public.mark_paid(:'f', 'sumup', 'tx-f', 200, 'EUR', :'t0'::timestamptz + interval '17 minutes') ->> 'result',
  'paid',
  'mark_paid_partial_lapse: the payment consumes what is still held and re-reserves what lapsed');
select is(
  array[pg_temp.stock(:'s', 'shop'), pg_temp.stock(:'t', 'shop')],
  array['0/0', '4/1'],
  'mark_paid_partial_stock: both lines are deducted once; the other order''s reservation is untouched');

-- out of stock with one line still held: that reservation is handed back
select pg_temp.product('T-PAY-U', 100, 0, 1, 0) as u \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'u', 1), pg_temp.line(:'t', 1)), 'sumup',
                                            'pay-h', 'h', '{}', null, :'t0'::timestamptz + interval '20 minutes')) as h \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'u', 1)), 'sumup', 'pay-i', 'h', '{}', null,
                           :'t0'::timestamptz + interval '40 minutes') is not null as taken \gset
select is(
  public.mark_paid(:'h', 'sumup', 'tx-h', 200, 'EUR', :'t0'::timestamptz + interval '41 minutes') ->> 'result',
  'paid_out_of_stock',
  'mark_paid_out_of_stock_partial: a late payment missing one line cannot be completed');
select is(
  array[pg_temp.stock(:'u', 'shop'), pg_temp.stock(:'t', 'shop'),
        (select string_agg(format('%s:%s', p.sku, r.status), ',' order by p.sku) from private.reservations r
         join public.products p on p.id = r.product_id where r.order_id = :'h')],
  array['1/1', '4/1', 'T-PAY-T:released,T-PAY-U:expired'],
  'mark_paid_out_of_stock_releases: the line still held is released and nothing is deducted');

select * from finish();
rollback;

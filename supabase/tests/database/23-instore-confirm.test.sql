-- confirm_instore_payment: staff confirm an in-store payment with the receipt's transaction code. The order is paid
-- with its own total, the code is claimed as the payment event ('sumup', 'txn:<code>'), and a code pays one order:
-- one that another order carries (confirmed by staff, or reported by sumup-webhook) is refused with SH411 and
-- changes nothing.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(12);

\ir fixtures.psql

select pg_temp.product('T-TILL', 1000, 1900, 10, 0) as p \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', 'till-a', 'h')) as a \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'till-b', 'h')) as b \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', 'till-c', 'h')) as c \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'till-d', 'h')) as d \gset

select is(
  (select row(x ->> 'result', x -> 'order' ->> 'status', x -> 'order' ->> 'provider_payment_ref')::text
     from public.confirm_instore_payment(:'a', 'TX-ONE') x),
  row('paid', 'paid', 'TX-ONE')::text,
  'instore_confirm: the order is paid with its own total, the code as its payment reference');
select is(pg_temp.stock(:'p', 'shop'), '9/4', 'instore_confirm_stock: its unit is deducted once (b, c and d still hold 4)');
select is(
  (select order_id from private.payment_events where provider = 'sumup' and event_id = 'txn:TX-ONE'),
  :'a'::uuid,
  'instore_confirm_claim: the code is claimed for the order it paid');

select is(
  public.confirm_instore_payment(:'a', 'TX-ONE') ->> 'result', 'already_paid',
  'instore_confirm_again: the same order confirmed again with its code is already_paid');

select is(
  pg_temp.error_of(format($$select public.confirm_instore_payment(%L, 'TX-ONE')$$, :'b')),
  jsonb_build_object('code', 'SH411', 'detail', jsonb_build_object('transaction_code', 'TX-ONE', 'order_id', :'a'::uuid)),
  'instore_code_reused: the code that paid a is refused for b, naming a');
select throws_ok(
  format($$select public.confirm_instore_payment(%L, 'TX-ONE')$$, :'b'), 'SH411',
  'transaction_code_reused: this SumUp transaction code already paid another order; check the receipt',
  'instore_code_reused_state: SH411 with a message for the till');
select is(
  (select status from public.orders where id = :'b'), 'awaiting_instore_payment',
  'instore_code_reused_nothing: b is still unpaid');

-- a code SumUp reported for c through the webhook cannot pay b either
select public.mark_paid_for_event('sumup', 'co_c:PAID', 'CHECKOUT_STATUS_CHANGED', :'c', 'TX-HOOK', 1190, 'EUR')
  ->> 'result' as hooked \gset
select is(
  pg_temp.error_of(format($$select public.confirm_instore_payment(%L, 'TX-HOOK')$$, :'b')) -> 'detail' ->> 'order_id',
  :'c',
  'instore_code_from_webhook: a code the webhook set on c is refused for b');

-- a paid order confirmed with another code changes nothing and claims nothing
select is(
  public.confirm_instore_payment(:'a', 'TX-OTHER') ->> 'result', 'already_paid',
  'instore_paid_other_code: a paid order confirmed with another code is already_paid');
select is(
  (select count(*) from private.payment_events where event_id = 'txn:TX-OTHER'), 0::bigint,
  'instore_paid_other_code_claims_nothing: and that code stays free');

select throws_ok(
  format($$select public.confirm_instore_payment(%L, 'TX-D')$$, :'d'), 'SH400', null,
  'instore_wrong_channel: an online order cannot be confirmed at the till');
select throws_ok(
  $$select public.confirm_instore_payment('f0000000-0000-4000-8000-00000000dead', 'TX-X')$$, 'SH402', null,
  'instore_unknown_order: an unknown order is SH402');

select * from finish();
rollback;

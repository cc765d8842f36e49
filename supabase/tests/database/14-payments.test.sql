-- Payments around the order: webhook dedupe, checkout attachment, refunds, fulfilment, and get_order's shape.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(40);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select pg_temp.product('T-MISC', 1000, 1900, 10, 10) as p \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'stripe', 'misc-a', 'h', '{"email": "a@example.com", "name": "Ada"}')
  as created \gset
select pg_temp.order_id(:'created') as a \gset

-- ---- record_payment_event ----------------------------------------------------------------------------------------
select is(public.record_payment_event('stripe', 'evt_1', 'checkout.session.completed', :'a'), true,
  'payment_event_first: the first delivery of an event is new');
select is(public.record_payment_event('stripe', 'evt_1', 'checkout.session.completed', :'a'), false,
  'payment_event_again: a redelivery of the same event is recognised');
select is(public.record_payment_event('sumup', 'evt_1', 'CHECKOUT_STATUS_CHANGED'), true,
  'payment_event_per_provider: event ids are scoped by provider');
select throws_ok($$select public.record_payment_event('paypal', 'x', 'y')$$, 'SH400',
  'invalid_request: provider must be sumup or stripe',
  'payment_event_bad_provider: an unknown provider is refused');

-- ---- mark_paid_for_event: the event and its payment in one statement -----------------------------------------------
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', 'misc-e', 'h')) as e \gset
select is(
  public.mark_paid_for_event('sumup', 'co_e:PAID', 'CHECKOUT_STATUS_CHANGED', :'e', 'TX-E', 1190, 'EUR') ->> 'result',
  'paid',
  'paid_for_event_first: the first delivery records the event and pays the order');
select is(
  (select format('%s %s', count(*), min(m.delta_on_hand)) from private.stock_movements m
   where m.order_id = :'e' and m.reason = 'fulfil'),
  '1 -1',
  'paid_for_event_deducts: its stock is deducted once');
select is(
  public.mark_paid_for_event('sumup', 'co_e:PAID', 'CHECKOUT_STATUS_CHANGED', :'e', 'TX-E', 1190, 'EUR'),
  '{"duplicate": true}'::jsonb,
  'paid_for_event_duplicate: a redelivery answers duplicate and calls nothing');
select throws_ok(
  $$select public.mark_paid_for_event('sumup', 'co_x:PAID', 'x', 'f0000000-0000-4000-8000-00000000dead', 'TX', 1, 'EUR')$$,
  'SH402', 'order_not_found: f0000000-0000-4000-8000-00000000dead',
  'paid_for_event_unknown_order: mark_paid''s refusal ends the statement');
select is(
  (select count(*)::int from private.payment_events where provider = 'sumup' and event_id = 'co_x:PAID'),
  0,
  'paid_for_event_refused_unrecorded: a refused payment leaves its event unrecorded, so a redelivery is answered again');

-- ---- cancel_order_for_event ------------------------------------------------------------------------------------------
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'misc-c', 'h')) as c \gset
select is(
  public.cancel_order_for_event('stripe', 'evt_c', 'checkout.session.expired', :'c', 'stripe:expired') ->> 'result',
  'cancelled',
  'cancelled_for_event_first: the first delivery records the event and cancels the order');
select is(
  public.cancel_order_for_event('stripe', 'evt_c', 'checkout.session.expired', :'c', 'stripe:expired'),
  '{"duplicate": true}'::jsonb,
  'cancelled_for_event_duplicate: a redelivery answers duplicate and calls nothing');
select throws_ok(
  format($$select public.cancel_order_for_event('stripe', 'evt_c2', 'x', %L, 'late')$$, :'e'), 'SH410', null,
  'cancelled_for_event_refused: cancel_order''s refusal (a paid order) ends the statement');

-- ---- attach_checkout -----------------------------------------------------------------------------------------------
select is(
  public.attach_checkout(:'a', 'stripe', 'cs_test_1', 'https://checkout.stripe.com/c/cs_test_1')
    -> 'checkout_url',
  '"https://checkout.stripe.com/c/cs_test_1"'::jsonb,
  'attach_checkout_stores: the checkout id and URL are stored on the order and returned');
select is(
  (select provider_checkout_id from public.orders where id = :'a'),
  'cs_test_1',
  'attach_checkout_lookup: the order can be found by its checkout id');
select throws_ok(format($$select public.attach_checkout(%L, 'sumup', 'x')$$, :'a'), 'SH400', null,
  'attach_checkout_wrong_provider: a checkout from the other provider is refused');
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'misc-b', 'h')) as b \gset
select throws_ok(format($$select public.attach_checkout(%L, 'stripe', 'cs_test_1')$$, :'b'), '23505', null,
  'attach_checkout_unique: one checkout cannot belong to two orders');
select throws_ok($$select public.attach_checkout('f0000000-0000-4000-8000-00000000dead', 'stripe', 'cs_x')$$, 'SH402',
  'order_not_found: f0000000-0000-4000-8000-00000000dead',
  'attach_checkout_unknown: attaching to an unknown order raises SH402');

-- ---- get_order -----------------------------------------------------------------------------------------------------
select is(
  public.get_order(:'a') - 'provider_checkout_id' - 'checkout_url',
  (:'created'::jsonb -> 'order') - 'provider_checkout_id' - 'checkout_url',
  'get_order_shape: get_order returns the same order JSON as create_order');
select is(
  array(select jsonb_object_keys(public.get_order(:'a')) order by 1),
  array['cancelled_at', 'checkout_url', 'created_at', 'currency', 'customer_email', 'customer_id', 'customer_name',
        'expired_at', 'fulfilled_at', 'id', 'items', 'paid_at', 'payment_method', 'provider_checkout_id',
        'provider_payment_ref', 'refunded_amount', 'reservation_expires_at', 'status', 'subtotal', 'tax', 'total'],
  'get_order_keys: the order JSON has the contract''s fields');
select is(
  (select format('%s %s %s %s %s %s', jsonb_typeof(o -> 'total'), jsonb_typeof(o -> 'status'), jsonb_typeof(o -> 'paid_at'),
                 jsonb_typeof(o -> 'created_at'), jsonb_typeof(o -> 'items' -> 0 -> 'quantity'),
                 array(select jsonb_object_keys(o -> 'items' -> 0) order by 1))
   from (select public.get_order(:'a') as o) x),
  'number string null string number {line_subtotal,line_tax,line_total,name,product_id,quantity,sku,tax_rate_bp,unit_price}',
  'get_order_values: amounts and quantities are JSON numbers, statuses and times strings, and a line has its fields');
-- order_doc's attributes are declared in jsonb's key order (20261125000400_orders.sql): jsonb_object_keys lists
-- the keys as stored
select is(
  array(select a.attname::text from pg_attribute a
        where a.attrelid = 'public.order_doc'::regclass and a.attnum > 0 order by a.attnum),
  array(select jsonb_object_keys(public.get_order(:'a'))),
  'order_doc_key_order: order_doc declares the fields in the order jsonb stores them');
select is(
  array(select a.attname::text from pg_attribute a
        where a.attrelid = 'public.order_line_doc'::regclass and a.attnum > 0 order by a.attnum),
  array(select jsonb_object_keys(public.get_order(:'a') -> 'items' -> 0)),
  'order_line_doc_key_order: order_line_doc declares the fields in the order jsonb stores them');
select is(public.get_order('f0000000-0000-4000-8000-00000000dead'), null, 'get_order_unknown: an unknown order is null');

-- ---- refunds -------------------------------------------------------------------------------------------------------
select throws_ok(format($$select public.record_refund(%L, 're_1', 100, 'EUR')$$, :'a'), 'SH410',
  'invalid_transition: cannot refund an order that is awaiting_payment',
  'refund_unpaid: an unpaid order cannot be refunded');
select public.mark_paid(:'a', 'stripe', 'pi_a', 2380, 'eur') ->> 'result' as paid \gset
select is(public.record_refund(:'a', 're_1', 1000, 'eur') -> 'order' -> 'refunded_amount', '1000'::jsonb,
  'refund_partial: a partial refund adds to refunded_amount');
select is(public.record_refund(:'a', 're_2', 380, 'EUR') -> 'order' -> 'refunded_amount', '1380'::jsonb,
  'refund_again: a second refund adds again');
select throws_ok(format($$select public.record_refund(%L, 're_3', 1001, 'EUR')$$, :'a'), 'SH400', null,
  'refund_not_above_total: refunds never exceed what was paid');
select throws_ok(format($$select public.record_refund(%L, 're_3', 10, 'USD')$$, :'a'), 'SH400', null,
  'refund_currency: a refund in another currency is refused');
select is(
  (select row(x ->> 'result', x -> 'order' -> 'refunded_amount')::text from public.record_refund_total(:'a', 're_4', 2000, 'eur') x),
  row('refund_recorded', '2000')::text,
  'refund_total_raises: a cumulative total above what is recorded becomes the refunded amount');
select is(
  (select row(x ->> 'result', x -> 'order' -> 'refunded_amount')::text from public.record_refund_total(:'a', 're_1', 1000, 'eur') x),
  row('already_recorded', '2000')::text,
  'refund_total_late_event: an older, smaller cumulative total changes nothing, and says so');
select throws_ok(format($$select public.record_refund_total(%L, 're_5', 2381, 'EUR')$$, :'a'), 'SH400', null,
  'refund_total_not_above_total: a cumulative total above the order total is refused');

-- ---- record_refund_total_for_event: Stripe's charge.refunded and its effect in one statement ----------------------
select is(
  public.record_refund_total_for_event('stripe', 'evt_rf_1', 'charge.refunded', null, 'pi_a', 2100, 'eur')
    ->> 'result',
  'refund_recorded',
  'refund_event_by_payment: an event naming only the payment finds the order paid with it');
select is(
  public.record_refund_total_for_event('stripe', 'evt_rf_1', 'charge.refunded', null, 'pi_a', 2100, 'eur'),
  '{"duplicate": true}'::jsonb,
  'refund_event_duplicate: the same event again is a duplicate and changes nothing');
select is(
  (select row(refunded_amount, (select count(*) from private.payment_events where event_id = 'evt_rf_1'))::text
     from public.orders where id = :'a'),
  row(2100, 1)::text,
  'refund_event_once: one refund recorded, one event');
select throws_ok(
  $$select public.record_refund_total_for_event('stripe', 'evt_rf_2', 'charge.refunded', null, 'pi_nobody', 10, 'eur')$$,
  'SH402', null,
  'refund_event_unknown_payment: a payment no order was paid with is SH402');
select is(
  (select count(*) from private.payment_events where event_id = 'evt_rf_2'), 0::bigint,
  'refund_event_unknown_unrecorded: and the event stays unrecorded (the door records it alone, as ignored)');

-- ---- fulfilment ----------------------------------------------------------------------------------------------------
select throws_ok(format($$select public.mark_fulfilled(%L)$$, :'b'), 'SH410',
  'invalid_transition: cannot fulfil an order that is awaiting_payment',
  'fulfil_unpaid: an unpaid order cannot be fulfilled');
select is(public.mark_fulfilled(:'a') ->> 'result', 'fulfilled', 'fulfil_paid: a paid order is fulfilled');
select is(public.mark_fulfilled(:'a') ->> 'result', 'already_fulfilled', 'fulfil_twice: fulfilling again reports already_fulfilled');
select is(
  (select array_agg(to_status order by at, id) from private.order_status_history where order_id = :'a' and from_status is distinct from to_status),
  array['awaiting_payment', 'paid', 'fulfilled'],
  'fulfil_history: the order''s history reads created, paid, fulfilled');

select * from finish();
rollback;

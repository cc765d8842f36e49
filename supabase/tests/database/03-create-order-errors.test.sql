-- create_order's refusals: each bad request raises its SQLSTATE (docs/engine-contract.md, "Errors") with the
-- message and JSON DETAIL the doors map to an HTTP answer, and leaves nothing behind.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(28);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select pg_temp.product('T-ERR-EUR', 1000, 1900, 10, 10) as eur \gset
select pg_temp.product('T-ERR-GBP', 1000, 2000, 10, 10, 'GBP') as gbp \gset
select pg_temp.product('T-ERR-OFF', 1000, 1900, 10, 10, 'EUR', false) as off \gset
select 'f0000000-0000-4000-8000-00000000dead' as ghost \gset

create temp table before_counts on commit drop as
select (select count(*) from public.orders) as orders, (select count(*) from public.order_items) as items,
       (select count(*) from private.reservations) as reservations, (select count(*) from private.stock_movements) as moves;

-- ---- SH400 invalid_request ------------------------------------------------------------------------------------
select throws_ok(
  format($$select public.create_order(%L, 'paypal', 'err-1', 'h')$$, jsonb_build_array(pg_temp.line(:'eur', 1))),
  'SH400', 'invalid_request: payment method must be sumup or stripe, not paypal',
  'create_order_bad_method: create_order refuses a payment method other than sumup or stripe');
select throws_ok(
  format($$select public.create_order(%L, null, 'err-2', 'h')$$, jsonb_build_array(pg_temp.line(:'eur', 1))),
  'SH400', 'invalid_request: payment method must be sumup or stripe, not null',
  'create_order_no_method: create_order refuses a missing payment method');
select throws_ok(
  $$select public.create_order('{"product_id": "x"}', 'sumup', 'err-3', 'h')$$,
  'SH400', 'invalid_request: items must be an array',
  'create_order_items_not_array: create_order refuses items that are not a JSON array');
select throws_ok(
  $$select public.create_order('[]', 'sumup', 'err-4', 'h')$$,
  'SH400', 'invalid_request: an order needs at least one item',
  'create_order_empty: create_order refuses an empty order');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-5', 'h')$$, jsonb_build_array(pg_temp.line(:'eur', 0))),
  'SH400', 'invalid_request: item 1: quantity must be between 1 and 1000',
  'create_order_zero_quantity: create_order refuses a quantity of 0');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-6', 'h')$$, jsonb_build_array(pg_temp.line(:'eur', -2))),
  'SH400', 'invalid_request: item 1: quantity must be between 1 and 1000',
  'create_order_negative_quantity: create_order refuses a negative quantity');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-7', 'h')$$,
         jsonb_build_array(pg_temp.line(:'eur', 1), pg_temp.line(:'eur', 1001))),
  'SH400', 'invalid_request: item 2: quantity must be between 1 and 1000',
  'create_order_absurd_quantity: create_order refuses more than 1000 units on a line, naming the line');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-8', 'h')$$,
         jsonb_build_array(jsonb_build_object('product_id', :'eur', 'quantity', 1.5))),
  'SH400', 'invalid_request: item 1: quantity must be a whole number',
  'create_order_fractional_quantity: create_order refuses a fractional quantity');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-9', 'h')$$,
         jsonb_build_array(jsonb_build_object('product_id', :'eur', 'quantity', '2'))),
  'SH400', 'invalid_request: item 1: quantity must be a whole number',
  'create_order_string_quantity: create_order refuses a quantity sent as a string');
select throws_ok(
  $$select public.create_order('[{"product_id": "mug", "quantity": 1}]', 'sumup', 'err-10', 'h')$$,
  'SH400', 'invalid_request: item 1: product_id must be a uuid',
  'create_order_bad_product_id: create_order refuses a product id that is not a uuid');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-11', 'h')$$, jsonb_build_array(pg_temp.line(:'eur', 1), 7)),
  'SH400', 'invalid_request: item 2: must be an object',
  'create_order_item_not_object: create_order refuses an item that is not an object');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-12', 'h')$$,
         jsonb_build_array(pg_temp.line(:'eur', 600), pg_temp.line(:'eur', 600))),
  'SH400', 'invalid_request: at most 1000 units of a product per order',
  'create_order_summed_quantity: create_order refuses lines of one product that add up to more than 1000');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-13', 'h')$$,
         (select jsonb_agg(pg_temp.line(:'eur', 1)) from generate_series(1, 101))),
  'SH400', 'invalid_request: at most 100 items per order',
  'create_order_too_many_items: create_order refuses more than 100 items');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-14', 'h')$$,
         jsonb_build_array(pg_temp.line(:'eur', 1), pg_temp.line(:'gbp', 1))),
  'SH400', 'invalid_request: an order is in one currency, these items are in EUR, GBP',
  'create_order_mixed_currencies: create_order refuses items in different currencies');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-15', 'h', '{"email": 42}')$$,
         jsonb_build_array(pg_temp.line(:'eur', 1))),
  'SH400', 'invalid_request: customer must be {"email"?: text, "name"?: text}',
  'create_order_bad_customer: create_order refuses customer details that are not text');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', %L, 'h')$$, jsonb_build_array(pg_temp.line(:'eur', 1)), repeat('k', 256)),
  'SH400', 'invalid_request: idempotency key longer than 255 characters',
  'create_order_long_key: create_order refuses an idempotency key longer than 255 characters');
-- one statement reads every item and the catalogue (create_order, step 3); the refusals still come in a fixed
-- order: the first bad item, a product over 1000 units, the customer, then unknown products
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-20', 'h')$$,
         jsonb_build_array(pg_temp.line(:'ghost', 1), pg_temp.line(:'eur', 1),
                           jsonb_build_object('product_id', :'eur', 'quantity', '2'), 7)),
  'SH400', 'invalid_request: item 3: quantity must be a whole number',
  'create_order_first_bad_item: a bad item is refused before an unknown product, naming the first bad item');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-21', 'h')$$,
         jsonb_build_array(pg_temp.line(:'ghost', 1), pg_temp.line(:'eur', 600), pg_temp.line(:'eur', 600))),
  'SH400', 'invalid_request: at most 1000 units of a product per order',
  'create_order_sum_before_unknown: lines of one product over 1000 units are refused before an unknown product');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-22', 'h', '[]')$$,
         jsonb_build_array(pg_temp.line(:'ghost', 1))),
  'SH400', 'invalid_request: customer must be {"email"?: text, "name"?: text}',
  'create_order_customer_before_unknown: bad customer details are refused before an unknown product');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-23', 'h')$$,
         jsonb_build_array(pg_temp.line(:'ghost', 1), pg_temp.line(:'gbp', 1), pg_temp.line(:'eur', 1))),
  'SH401', 'product_not_found: unknown or inactive product(s) f0000000-0000-4000-8000-00000000dead',
  'create_order_unknown_before_currency: an unknown product is refused before mixed currencies');
select is(
  pg_temp.error_of($$select public.create_order('[]', 'sumup', 'err-16', 'h')$$),
  '{"code": "SH400", "detail": {"reason": "empty order"}}'::jsonb,
  'create_order_reason_detail: an SH400 carries {"reason": ...} as its DETAIL');

-- ---- SH401 product_not_found ----------------------------------------------------------------------------------
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-17', 'h')$$, jsonb_build_array(pg_temp.line(:'ghost', 1))),
  'SH401', 'product_not_found: unknown or inactive product(s) f0000000-0000-4000-8000-00000000dead',
  'create_order_unknown_product: create_order refuses an unknown product, naming it');
select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'err-18', 'h')$$, jsonb_build_array(pg_temp.line(:'off', 1))),
  'SH401', format('product_not_found: unknown or inactive product(s) %s', :'off'),
  'create_order_inactive_product: create_order refuses a product taken off sale, naming it');
select is(
  pg_temp.error_of(format($$select public.create_order(%L, 'sumup', 'err-19', 'h')$$,
    jsonb_build_array(pg_temp.line(:'off', 1), pg_temp.line(:'eur', 1), pg_temp.line(:'ghost', 2)))),
  jsonb_build_object('code', 'SH401', 'detail', jsonb_build_object('product_ids', jsonb_build_array(:'off', :'ghost'))),
  'create_order_names_all_missing: one SH401 names every unknown or inactive product in DETAIL.product_ids');

-- ---- nothing is left behind -----------------------------------------------------------------------------------
select is(
  (select count(*)::int from public.orders where idempotency_key like 'err-%'),
  0,
  'create_order_error_writes_no_order: no refused request leaves an order');
select is(
  (select count(*) from public.orders),
  (select b.orders from before_counts b),
  'create_order_error_orders_unchanged: the number of orders is unchanged');
select is(
  (select (select count(*) from private.reservations) - b.reservations
        + (select count(*) from private.stock_movements) - b.moves
        + (select count(*) from public.order_items) - b.items
   from before_counts b)::int,
  0,
  'create_order_error_writes_nothing: no line, reservation or ledger row is left by a refused request');
select is(
  pg_temp.stock(:'eur', 'shop') || ' ' || pg_temp.stock(:'eur', 'warehouse'),
  '10/0 10/0',
  'create_order_error_stock_unchanged: the stock of a product in refused orders is untouched');

select * from finish();
rollback;

-- The CHECK constraints are the last line of defence: whatever a function (or a person with SQL) does, stock
-- cannot go negative or be reserved beyond what is on hand, and an order's arithmetic cannot be wrong.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(40);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select pg_temp.product('T-CHECK', 1000, 1900, 3, 0) as p \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'check-a', 'h')) as a \gset

-- ---- stock_levels ----------------------------------------------------------------------------------------------
select throws_ok(format($$update private.stock_levels set on_hand = -1, reserved = 0 where product_id = %L$$, :'p'),
  '23514', 'value for domain unit_count violates check constraint "unit_count_check"',
  'check_on_hand: on_hand can never be negative');
select throws_ok(format($$update private.stock_levels set reserved = -1 where product_id = %L$$, :'p'),
  '23514', 'value for domain unit_count violates check constraint "unit_count_check"',
  'check_reserved: reserved can never be negative');
select throws_ok(format($$update private.stock_levels set reserved = on_hand + 1 where product_id = %L$$, :'p'),
  '23514', 'new row for relation "stock_levels" violates check constraint "stock_levels_reserved_within_on_hand"',
  'check_reserved_within_on_hand: more can never be reserved than is on hand');
select throws_ok(format($$update private.stock_levels set on_hand = 1 where product_id = %L$$, :'p'),
  '23514', 'new row for relation "stock_levels" violates check constraint "stock_levels_reserved_within_on_hand"',
  'check_on_hand_below_reserved: on_hand can never drop below what is reserved');

-- ---- products ------------------------------------------------------------------------------------------------------
select throws_ok($$insert into public.products (sku, name, unit_price) values ('T-CHECK-NEG', 'x', -1)$$, '23514', null,
  'check_price: a negative price is refused');
select throws_ok($$insert into public.products (sku, name, unit_price, currency) values ('T-CHECK-CUR', 'x', 1, 'eu')$$,
  '23514', null, 'check_currency: a currency must be three capital letters');
select throws_ok($$insert into public.products (sku, name, unit_price, tax_rate_bp) values ('T-CHECK-TAX', 'x', 1, 10001)$$,
  '23514', null, 'check_tax_rate: a tax rate above 100 % is refused');
select throws_ok($$insert into public.products (sku, name, unit_price) values ('bad sku!', 'x', 1)$$, '23514', null,
  'check_sku: a sku is letters, digits, dot, dash and underscore');
select throws_ok($$insert into public.products (sku, name, unit_price) values ('T-CHECK', 'again', 1)$$, '23505', null,
  'check_sku_unique: a sku names one product');

-- ---- orders and lines ------------------------------------------------------------------------------------------------
select throws_ok(format($$update public.orders set total = total + 1 where id = %L$$, :'a'), '23514',
  'value for domain private.order_row violates check constraint "orders_total_is_sum"',
  'check_order_total: an order total is always subtotal plus tax');
select throws_ok(format($$update public.orders set refunded_amount = total + 1 where id = %L$$, :'a'), '23514',
  'value for domain private.order_row violates check constraint "orders_refund_within_total"',
  'check_refund: refunds never exceed the order total');
select throws_ok(format($$update public.orders set idempotency_key = null, request_hash = 'h' where id = %L$$, :'a'),
  '23514', 'value for domain private.order_row violates check constraint "orders_key_has_hash"',
  'check_key_hash: an order has a request hash exactly when it has an idempotency key');
select throws_ok(format($$update public.orders set status = 'shipped' where id = %L$$, :'a'), '23514', null,
  'check_status: an order status is one of the contract''s statuses');
select throws_ok(format($$update public.orders set status = 'paid' where id = %L$$, :'a'), '23514',
  'value for domain private.order_row violates check constraint "orders_paid_has_time"',
  'check_paid_time: a paid order has its payment time');
select throws_ok(format($$update public.order_items set line_tax = line_tax + 1 where order_id = %L$$, :'a'), '23514',
  'value for domain private.order_item_row violates check constraint "order_items_total"',
  'check_line_total: a line total is always subtotal plus tax');
select throws_ok(format($$update public.order_items set quantity = quantity + 1 where order_id = %L$$, :'a'), '23514',
  'value for domain private.order_item_row violates check constraint "order_items_subtotal"',
  'check_line_subtotal: a line subtotal is always price times quantity');

select throws_ok(format($$update public.order_items set line_no = 0 where order_id = %L$$, :'a'), '23514',
  'value for domain line_number violates check constraint "line_number_check"',
  'check_line_no: lines are numbered from 1');
select throws_ok($$insert into private.payment_events (provider, event_id) values ('stripe', '')$$, '23514',
  'value for domain private.provider_event_id violates check constraint "provider_event_id_check"',
  'check_event_id: a payment event has an id');
select throws_ok($$insert into private.rate_limits (bucket, hits, window_started_at, resets_at)
                   values ('', 0, now(), now() + interval '1 minute')$$, '23514',
  'value for domain private.rate_limit_bucket violates check constraint "rate_limit_bucket_check"',
  'check_bucket: a rate-limit bucket has a name');
select throws_ok($$insert into private.rate_limits (bucket, hits, window_started_at, resets_at)
                   values ('t:check', -1, now(), now() + interval '1 minute')$$, '23514',
  'value for domain private.hit_count violates check constraint "hit_count_check"',
  'check_hits: a rate-limit count is never negative');

select throws_ok(format($$delete from public.orders where id = %L$$, :'a'), '23001',
  'public.orders rows are named by other rows without a foreign key: DELETE is refused',
  'keep_orders: an order is never deleted (it ends as cancelled or expired)');
select throws_ok(format($$update public.orders set id = gen_random_uuid() where id = %L$$, :'a'), '23001',
  'public.orders rows are named by other rows without a foreign key: changing the key is refused',
  'keep_order_ids: an order''s id never changes');
select is(
  (select count(*)::int from pg_constraint where conrelid = 'private.open_reservations'::regclass and contype = 'f'),
  0,
  'reservation_order_no_fk: reservations name their order without a foreign key (one check query per line)');
-- ---- reservations -------------------------------------------------------------------------------------------------
select throws_ok(format($$insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
                           select order_id, product_id, location_id, 0, expires_at
                           from private.open_reservations where order_id = %L$$, :'a'), '23514', null,
  'check_reservation_quantity: a reservation holds at least one unit');
select throws_ok(format($$update private.open_reservations set expires_at = expires_at where order_id = %L$$, :'a'),
  '23001', 'private.open_reservations rows are never updated: UPDATE is refused',
  'reservations_never_updated: a reservation is opened and closed, never changed (SKIP LOCKED relies on it)');
select throws_ok(format($$update private.reservations set status = 'consumed' where order_id = %L$$, :'a'), '55000',
  null, 'private.reservations is read-only: a reservation closes only through the engine, with its ledger row');

-- ---- domains: one rule per kind of value, wherever it is stored ----------------------------------------------------
select throws_ok(format($$update public.orders set currency = 'eur' where id = %L$$, :'a'), '23514',
  'value for domain currency_code violates check constraint "currency_code_check"',
  'domain_currency: an order''s currency follows the same rule as a product''s');
select throws_ok($$update private.settings set payment_method = 'paypal' where payment_method = 'sumup'$$, '23514',
  'value for domain payment_method violates check constraint "payment_method_check"',
  'domain_payment_method: the settings know the same payment methods as orders');
select throws_ok(format($$update public.order_items set quantity = 1001, line_subtotal = unit_price * 1001,
                            line_total = unit_price * 1001 + line_tax where order_id = %L$$, :'a'), '23514',
  'value for domain order_quantity violates check constraint "order_quantity_check"',
  'domain_order_quantity: a line holds at most 1000 units');
select is(
  (select c.collname::text from pg_type t join pg_collation c on c.oid = t.typcollation
   where t.oid = 'public.idempotency_key'::regtype),
  'C',
  'domain_idempotency_key: keys compare bytewise (collation "C"), whatever the database''s locale');

-- ---- referenced rows stay (order lines, reservations and the ledger name them without foreign keys) ----------------
select throws_ok(format($$delete from public.products where id = %L$$, :'p'), '23001',
  'public.products rows are named by other rows without a foreign key: DELETE is refused',
  'keep_products: a product that was sold is never deleted (it is taken off sale instead)');
select throws_ok(format($$update public.products set id = gen_random_uuid() where id = %L$$, :'p'), '23001',
  'public.products rows are named by other rows without a foreign key: changing the key is refused',
  'keep_product_id: a product keeps its id');
select lives_ok(format($$update public.products set id = id, name = 'Renamed' where id = %L$$, :'p'),
  'keep_product_id: an update that leaves the id alone goes through');
select throws_ok('truncate public.products cascade', '23001', null, 'keep_products: the catalogue cannot be truncated');
select throws_ok(format($$delete from private.stock_levels where product_id = %L$$, :'p'), '23001',
  'private.stock_levels rows are named by other rows without a foreign key: DELETE is refused',
  'keep_stock_levels: a stock level is never deleted');
select throws_ok(format($$update private.stock_levels set location_id = 3 - location_id where product_id = %L$$, :'p'),
  '23001', 'private.stock_levels rows are named by other rows without a foreign key: changing the key is refused',
  'keep_stock_level_key: a stock level keeps its product and location');
select is(
  (select count(*)::int from pg_constraint where conrelid = 'private.stock_levels'::regclass and contype = 'f'),
  0,
  'stock_level_no_fk: stock levels name their product and location without foreign keys (checked on every second '
  || 'update of a row in a transaction, with a lock on the product and the location)');
select throws_ok($$delete from private.locations where code = 'warehouse'$$, '23001',
  'private.locations rows are named by other rows without a foreign key: DELETE is refused',
  'keep_locations: a location is never deleted');
select is(
  (select count(*)::int from pg_trigger
   where tgrelid in ('private.stock_levels'::regclass, 'public.orders'::regclass) and not tgisinternal
     and tgtype & (1 | 2 | 16) = (1 | 2 | 16)), -- ROW, BEFORE, UPDATE
  0,
  'keep_rows_per_statement: no BEFORE ROW UPDATE trigger on stock levels or orders (it would lock every row first)');
select results_eq(
  $$select conrelid::regclass::text collate "C", conname::text collate "C" from pg_constraint
    where contype = 'c' and conrelid in ('public.orders'::regclass, 'public.order_items'::regclass,
                                         'private.stock_movements'::regclass)
    order by 1$$,
  $$values ('order_items' collate "C", 'order_items_rules' collate "C"), ('orders', 'orders_rules'),
           ('private.stock_movements', 'stock_movements_rules')$$,
  'rules_in_domains: orders, lines and the ledger have one table CHECK each, a cast to the domain holding their rules');

select * from finish();
rollback;

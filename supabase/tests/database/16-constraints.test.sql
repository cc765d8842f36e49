-- The CHECK constraints are the last line of defence: whatever a function (or a person with SQL) does, stock
-- cannot go negative or be reserved beyond what is on hand, and an order's arithmetic cannot be wrong.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(17);

-- Fixtures (rolled back with the test): products stocked through restock, so the ledger matches from the start.
create function pg_temp.product(p_sku text, p_price bigint, p_tax integer, p_shop integer, p_warehouse integer,
                                p_currency text default 'EUR', p_active boolean default true)
returns uuid language plpgsql as $f$
declare v_id uuid;
begin
  insert into public.products (sku, name, unit_price, currency, tax_rate_bp, active)
  values (p_sku, 'Test ' || p_sku, p_price, p_currency, p_tax, p_active) returning id into v_id;
  if p_shop > 0 then perform public.restock(v_id, 'shop', p_shop, 'test fixture'); end if;
  if p_warehouse > 0 then perform public.restock(v_id, 'warehouse', p_warehouse, 'test fixture'); end if;
  return v_id;
end $f$;
create function pg_temp.line(p_product uuid, p_quantity integer) returns jsonb language sql as $f$
  select jsonb_build_object('product_id', p_product, 'quantity', p_quantity) $f$;
create function pg_temp.stock(p_product uuid, p_location text) returns text language sql as $f$
  select format('%s/%s', s.on_hand, s.reserved) from private.stock_levels s
  join private.locations l on l.id = s.location_id where s.product_id = p_product and l.code = p_location $f$;
create function pg_temp.order_id(p_result jsonb) returns uuid language sql as $f$
  select (p_result -> 'order' ->> 'id')::uuid $f$;
-- The SQLSTATE and DETAIL an engine call raises (null when it succeeds): throws_ok checks code and message,
-- this reads the JSON detail the doors rely on.
create function pg_temp.error_of(p_sql text) returns jsonb language plpgsql as $f$
declare v_state text; v_detail text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail;
  return jsonb_build_object('code', v_state, 'detail', case when v_detail like '{%' then v_detail::jsonb end);
end $f$;

select pg_temp.product('T-CHECK', 1000, 1900, 3, 0) as p \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'check-a', 'h')) as a \gset

-- ---- stock_levels ----------------------------------------------------------------------------------------------
select throws_ok(format($$update private.stock_levels set on_hand = -1, reserved = 0 where product_id = %L$$, :'p'),
  '23514', 'new row for relation "stock_levels" violates check constraint "stock_levels_on_hand_not_negative"',
  'check_on_hand: on_hand can never be negative');
select throws_ok(format($$update private.stock_levels set reserved = -1 where product_id = %L$$, :'p'),
  '23514', 'new row for relation "stock_levels" violates check constraint "stock_levels_reserved_not_negative"',
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
  'new row for relation "orders" violates check constraint "orders_total_is_sum"',
  'check_order_total: an order total is always subtotal plus tax');
select throws_ok(format($$update public.orders set refunded_amount = total + 1 where id = %L$$, :'a'), '23514',
  'new row for relation "orders" violates check constraint "orders_refund_within_total"',
  'check_refund: refunds never exceed the order total');
select throws_ok(format($$update public.orders set status = 'shipped' where id = %L$$, :'a'), '23514', null,
  'check_status: an order status is one of the contract''s statuses');
select throws_ok(format($$update public.orders set status = 'paid' where id = %L$$, :'a'), '23514',
  'new row for relation "orders" violates check constraint "orders_paid_has_time"',
  'check_paid_time: a paid order has its payment time');
select throws_ok(format($$update public.order_items set line_tax = line_tax + 1 where order_id = %L$$, :'a'), '23514',
  'new row for relation "order_items" violates check constraint "order_items_total"',
  'check_line_total: a line total is always subtotal plus tax');
select throws_ok(format($$update public.order_items set quantity = quantity + 1 where order_id = %L$$, :'a'), '23514',
  'new row for relation "order_items" violates check constraint "order_items_subtotal"',
  'check_line_subtotal: a line subtotal is always price times quantity');

-- ---- reservations -------------------------------------------------------------------------------------------------
select throws_ok(format($$update private.reservations set quantity = 0 where order_id = %L$$, :'a'), '23514', null,
  'check_reservation_quantity: a reservation holds at least one unit');
select throws_ok(format($$update private.reservations set status = 'consumed' where order_id = %L$$, :'a'), '23514',
  'new row for relation "reservations" violates check constraint "reservations_closed_has_time"',
  'check_reservation_closed: a closed reservation records when it closed');

select * from finish();
rollback;

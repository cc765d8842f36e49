-- Idempotency: the same Idempotency-Key with the same request returns the first order (replayed) and writes
-- nothing; the same key with another request is refused (SH422). A retry is answered before anything else is
-- checked, so it still finds its order after the product went off sale or was paid.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(14);

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

select pg_temp.product('T-IDEM', 1000, 1900, 5, 0) as p \gset

select public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'idem-1', 'hash-1') as first \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'idem-1', 'hash-1') as again \gset

select is((:'first'::jsonb ->> 'replayed')::boolean, false, 'idempotency_first: the first request is not a replay');
select is((:'again'::jsonb ->> 'replayed')::boolean, true, 'idempotency_replay: the same key and hash is answered as a replay');
select is(:'again'::jsonb -> 'order', :'first'::jsonb -> 'order',
  'idempotency_same_order: the replay returns the first order unchanged');
select is((select count(*)::int from public.orders where idempotency_key = 'idem-1'), 1,
  'idempotency_one_order: the replay creates no second order');
select is(pg_temp.stock(:'p', 'shop'), '5/2', 'idempotency_reserved_once: the replay reserves nothing more');
select is(
  (select count(*)::int from private.stock_movements m join private.reservations r on r.id = m.reservation_id
   where r.order_id = pg_temp.order_id(:'first')),
  1,
  'idempotency_one_ledger_row: the ledger holds one reserve row for the order, not two');

select throws_ok(
  format($$select public.create_order(%L, 'sumup', 'idem-1', 'hash-2')$$, jsonb_build_array(pg_temp.line(:'p', 3))),
  'SH422', 'idempotency_key_reused: this idempotency key was used for a different request',
  'idempotency_other_body: the same key with another request hash is refused with SH422');

update public.products set active = false where id = :'p';
select is(
  pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'idem-1', 'hash-1')),
  pg_temp.order_id(:'first'),
  'idempotency_before_validation: a retry finds its order even after the product went off sale');
update public.products set active = true where id = :'p';

select public.mark_paid(pg_temp.order_id(:'first'), 'sumup', 'tx-idem', 2380, 'EUR') is not null as paid \gset
select is(
  public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'idem-1', 'hash-1') -> 'order' ->> 'status',
  'paid',
  'idempotency_current_state: a retry after payment returns the order as it is now');

-- ---- without a request hash the engine hashes the request itself -----------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'idem-2', null) as nohash \gset
select is(
  pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'stripe', 'idem-2', null)),
  pg_temp.order_id(:'nohash'),
  'idempotency_engine_hash_replay: without a hash, the same key and body still replays');
select throws_ok(
  format($$select public.create_order(%L, 'stripe', 'idem-2', null)$$, jsonb_build_array(pg_temp.line(:'p', 2))),
  'SH422', 'idempotency_key_reused: this idempotency key was used for a different request',
  'idempotency_engine_hash_other_body: without a hash, the same key with another body is refused');
select is(
  (select request_hash from public.orders where id = pg_temp.order_id(:'nohash')) ~ '^[0-9a-f]{64}$',
  true,
  'idempotency_engine_hash_stored: the engine stores a sha256 of the canonical request');

-- ---- without a key every call is a new order -----------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', null, null) as k1 \gset
select public.create_order(jsonb_build_array(pg_temp.line(:'p', 1)), 'sumup', null, null) as k2 \gset
select isnt(pg_temp.order_id(:'k1'), pg_temp.order_id(:'k2'),
  'idempotency_no_key: without an idempotency key two calls make two orders');
select is(
  (select count(*)::int from public.orders where id in (pg_temp.order_id(:'k1'), pg_temp.order_id(:'k2'))
     and idempotency_key is null and request_hash is null),
  2,
  'idempotency_no_key_stored: an order without a key stores neither key nor hash');

select * from finish();
rollback;

-- Idempotency: the same Idempotency-Key with the same request returns the first order (replayed) and writes
-- nothing; the same key with another request is refused (SH422). A retry is answered before anything else is
-- checked, so it still finds its order after the product went off sale or was paid.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(14);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

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

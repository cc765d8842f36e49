-- A small shop's catalogue is where the planner liked a hash join: create_order's check for lapsed reservations on
-- the products' stock rows (next_expiry come), once flattened into a join, read every stock row of the shop on
-- every order while there were up to ~1500 of them (at 1000 products: 2.98 M instructions an order instead of
-- 2.21 M, callgrind); only larger catalogues got index probes. This holds every order to its own products' rows:
-- 1200 stock rows, analysed, and orders of one and of three products, checked through this transaction's count of
-- rows returned by sequential scans of stock_levels (pg_stat_get_xact_tuples_returned).
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(6);

\ir fixtures.psql

-- 600 products stocked at both locations, written straight into the tables (only how many there are matters here),
-- and statistics that say so, before this session plans create_order
with p as (
  insert into public.products (sku, name, unit_price, currency, tax_rate_bp)
  select 'T-CAT-' || n, 'Catalogue ' || n, 1000, 'EUR', 1900 from generate_series(1, 600) n
  returning id
)
insert into private.stock_levels (product_id, location_id, on_hand)
select p.id, l.id, 10 from p cross join private.locations l;
analyze public.products, private.stock_levels;

create function pg_temp.stock_rows_scanned() returns bigint language sql as $f$
  select pg_stat_get_xact_tuples_returned('private.stock_levels'::regclass) $f$;
-- the status of an in-store order of p_quantity of the product p_sku
create function pg_temp.instore_order(p_sku text, p_quantity integer, p_key text) returns text language sql as $f$
  select public.create_order(
    jsonb_build_array(pg_temp.line((select id from public.products where sku = p_sku), p_quantity)),
    'sumup', p_key, 'h') -> 'order' ->> 'status' $f$;

select pg_temp.stock_rows_scanned() as before_one \gset
select is(pg_temp.instore_order('T-CAT-300', 2, 'catalogue-one'), 'awaiting_instore_payment',
  'catalogue_order: an order of one product is placed');
select ok(pg_temp.stock_rows_scanned() - :before_one <= 10,
  format('catalogue_one_product: it reads its product''s stock rows, not the catalogue''s 1200 (scanned %s)',
         pg_temp.stock_rows_scanned() - :before_one));

select pg_temp.stock_rows_scanned() as before_three \gset
select is(
  jsonb_array_length(public.create_order(
    (select jsonb_agg(pg_temp.line(id, 1)) from public.products where sku in ('T-CAT-1', 'T-CAT-2', 'T-CAT-3')),
    'stripe', 'catalogue-three', 'h') -> 'order' -> 'items'),
  3,
  'catalogue_order_lines: an order of three products is placed');
select ok(pg_temp.stock_rows_scanned() - :before_three <= 10,
  format('catalogue_three_products: it reads those products'' stock rows only (scanned %s)',
         pg_temp.stock_rows_scanned() - :before_three));

-- an order that meets a lapsed reservation on its product's row expires it first (exact expiry): the lookup of its
-- rows' bounds probes them too; its two UPDATE ... FROM statements (closing the reservation, raising the bound)
-- still read the catalogue's stock rows when it is this small (BENCHMARKS.md, session 12)
select pg_temp.order_id(public.create_order(
  jsonb_build_array(pg_temp.line((select id from public.products where sku = 'T-CAT-400'), 1)),
  'sumup', 'catalogue-lapsed', 'h', '{}', null, now() - interval '1 hour')) as lapsed \gset
select count(*) as stock_rows from private.stock_levels \gset
select pg_temp.stock_rows_scanned() as before_expiry \gset
select is(pg_temp.instore_order('T-CAT-400', 1, 'catalogue-after-lapse'), 'awaiting_instore_payment',
  'catalogue_exact_expiry: an order of a product with a lapsed reservation is placed');
select ok(pg_temp.stock_rows_scanned() - :before_expiry < 2 * :stock_rows + 10,
  format('catalogue_exact_expiry_reads: it reads the catalogue''s stock rows at most twice, not three times '
         || '(scanned %s)', pg_temp.stock_rows_scanned() - :before_expiry));

select * from finish();
rollback;

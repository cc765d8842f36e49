-- Pricing: prices, tax and totals come from the catalogue and are computed in SQL (docs/engine-contract.md,
-- "Money and tax"): per line, tax = round(subtotal * rate / 10000) half away from zero; the order sums its lines.
-- Lines keep the price, tax rate and name they were sold at.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(15);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select pg_temp.product('T-PRICE-A', 1000, 1900, 50, 0) as a \gset
select pg_temp.product('T-PRICE-B', 25, 1900, 50, 0) as b \gset
select pg_temp.product('T-PRICE-C', 50, 700, 50, 0) as c \gset
select pg_temp.product('T-PRICE-D', 10, 500, 50, 0) as d \gset
select pg_temp.product('T-PRICE-D2', 10, 500, 50, 0) as d2 \gset
select pg_temp.product('T-PRICE-E', 1, 1900, 50, 0) as e \gset

-- ---- one line ---------------------------------------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'a', 2)), 'sumup', 'price-1', 'h1') -> 'order' as o1 \gset

select is(
  jsonb_build_object('subtotal', :'o1'::jsonb -> 'subtotal', 'tax', :'o1'::jsonb -> 'tax', 'total', :'o1'::jsonb -> 'total',
                     'currency', :'o1'::jsonb -> 'currency'),
  '{"subtotal": 2000, "tax": 380, "total": 2380, "currency": "EUR"}'::jsonb,
  'pricing_one_line: 2 x 10.00 at 19 % is 20.00 + 3.80 = 23.80 EUR');
select is(
  (:'o1'::jsonb -> 'items' -> 0) - 'product_id',
  '{"sku": "T-PRICE-A", "name": "Test T-PRICE-A", "quantity": 2, "unit_price": 1000, "tax_rate_bp": 1900,
    "line_subtotal": 2000, "line_tax": 380, "line_total": 2380}'::jsonb,
  'pricing_line_shape: the line carries sku, name, quantity, unit price, tax rate and its three amounts');

-- ---- rounding ---------------------------------------------------------------------------------------------
select public.create_order(
  jsonb_build_array(pg_temp.line(:'b', 1), pg_temp.line(:'c', 1), pg_temp.line(:'d', 1), pg_temp.line(:'e', 1),
                    pg_temp.line(:'a', 1)),
  'stripe', 'price-2', 'h2') -> 'order' as o2 \gset

select is(
  array(select (x ->> 'line_tax')::int from jsonb_array_elements(:'o2'::jsonb -> 'items') x),
  array[5, 4, 1, 0, 190],
  'pricing_tax_rounding: 4.75 -> 5, 3.5 -> 4, 0.5 -> 1, 0.19 -> 0 (half away from zero), 190 exact');
select is(
  array[(:'o2'::jsonb ->> 'subtotal')::int, (:'o2'::jsonb ->> 'tax')::int, (:'o2'::jsonb ->> 'total')::int],
  array[1086, 200, 1286],
  'pricing_multi_line: the order subtotal, tax and total are the sums of its lines');
select is(
  array(select x ->> 'sku' from jsonb_array_elements(:'o2'::jsonb -> 'items') x),
  array['T-PRICE-B', 'T-PRICE-C', 'T-PRICE-D', 'T-PRICE-E', 'T-PRICE-A'],
  'pricing_line_order: lines come back in the order they were sent');

select is(
  (public.create_order(jsonb_build_array(pg_temp.line(:'d', 3)), 'sumup', 'price-3', 'h3') -> 'order' ->> 'tax')::int,
  2,
  'pricing_half_away_from_zero: 3 x 0.10 at 5 % = 0.015 rounds to 0.02');
select is(
  (public.create_order(jsonb_build_array(pg_temp.line(:'d', 1), pg_temp.line(:'d2', 1)), 'sumup', 'price-4', 'h4')
     -> 'order' ->> 'tax')::int,
  2,
  'pricing_round_per_line: two lines of 0.005 tax each round to 0.01 each, so the order tax is 0.02, not 0.01');

-- ---- the same product twice is one line ---------------------------------------------------------------------
select public.create_order(jsonb_build_array(pg_temp.line(:'a', 1), pg_temp.line(:'b', 2), pg_temp.line(:'a', 3)),
                           'sumup', 'price-5', 'h5') -> 'order' as o5 \gset
select is(
  array(select format('%s x%s', x ->> 'sku', x ->> 'quantity') from jsonb_array_elements(:'o5'::jsonb -> 'items') x),
  array['T-PRICE-A x4', 'T-PRICE-B x2'],
  'pricing_duplicates_summed: a product sent twice becomes one line with the summed quantity, where it first appeared');
select is(
  array(select format('%s x%s', x ->> 'sku', x ->> 'quantity')
        from jsonb_array_elements(public.create_order(
          jsonb_build_array(pg_temp.line(:'b', 1), pg_temp.line(:'a', 2), pg_temp.line(:'b', 3)),
          'sumup', 'price-5b', 'h5b') -> 'order' -> 'items') x),
  array['T-PRICE-B x4', 'T-PRICE-A x2'],
  'pricing_lines_in_first_order: lines follow the order products first appear in, whichever id sorts first');

-- ---- stored lines ---------------------------------------------------------------------------------------------
select is(
  (select count(*)::int from public.order_items i
   where i.order_id = (:'o2'::jsonb ->> 'id')::uuid
     and i.line_subtotal = i.unit_price * i.quantity and i.line_total = i.line_subtotal + i.line_tax),
  5,
  'pricing_stored_lines: every stored line satisfies subtotal = price x quantity and total = subtotal + tax');
select is(
  (select o.total from public.orders o where o.id = (:'o2'::jsonb ->> 'id')::uuid),
  (select sum(i.line_total) from public.order_items i where i.order_id = (:'o2'::jsonb ->> 'id')::uuid)::bigint,
  'pricing_stored_total: the stored order total equals the sum of its stored lines');

-- ---- a later catalogue change does not reach placed orders ------------------------------------------------------
update public.products set unit_price = 5000, tax_rate_bp = 700, name = 'Renamed mug' where id = :'a';

select is(
  public.get_order((:'o1'::jsonb ->> 'id')::uuid) -> 'items' -> 0 -> 'unit_price',
  '1000'::jsonb,
  'pricing_copied_price: an order keeps the unit price it was sold at after the catalogue price changes');
select is(
  (select format('%s|%s|%s', i.name, i.tax_rate_bp, i.line_total) from public.order_items i
   where i.order_id = (:'o1'::jsonb ->> 'id')::uuid),
  'Test T-PRICE-A|1900|2380',
  'pricing_copied_line: the stored line keeps its name, tax rate and total');
select is(
  (select o.total from public.orders o where o.id = (:'o1'::jsonb ->> 'id')::uuid),
  2380::bigint,
  'pricing_copied_total: the order total does not move with the catalogue');
select is(
  (public.create_order(jsonb_build_array(pg_temp.line(:'a', 1)), 'sumup', 'price-6', 'h6') -> 'order' ->> 'total')::int,
  5350,
  'pricing_new_price: a new order is priced from the changed catalogue (50.00 + 7 % = 53.50)');

select * from finish();
rollback;

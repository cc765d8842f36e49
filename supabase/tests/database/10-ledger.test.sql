-- The stock ledger is append-only for every role, superusers included; restock and adjust_stock change stock
-- only through it, stamped with the request's actor and correlation id.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(27);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select pg_temp.product('T-LEDGER', 1000, 1900, 0, 0) as p \gset

-- ---- restock ---------------------------------------------------------------------------------------------------
select set_config('app.actor', 'staff:00000000-0000-4000-8000-00000000beef', true),
       set_config('app.correlation_id', 'req-ledger-1', true) \gset ctx_
select public.restock(:'p', 'shop', 7, 'delivery 42') as r1 \gset
select is(
  :'r1'::jsonb - 'updated_at',
  jsonb_build_object('product_id', :'p', 'sku', 'T-LEDGER', 'location', 'shop', 'on_hand', 7, 'reserved', 0, 'available', 7),
  'restock_returns_row: restock returns the stock row it changed');
select is(
  (select format('%s %s %s|%s|%s|%s', reason, delta_on_hand, delta_reserved, note, actor, correlation_id)
   from private.stock_movements where product_id = :'p' order by id desc limit 1),
  'restock 7 0|delivery 42|staff:00000000-0000-4000-8000-00000000beef|req-ledger-1',
  'restock_ledger: a restock writes one restock row with the note, the actor and the correlation id');
select is(
  public.restock(:'p', 'warehouse', 3) ->> 'on_hand', '3',
  'restock_new_location: restocking a location for the first time creates its stock row');
select throws_ok(format($$select public.restock(%L, 'cellar', 1)$$, :'p'), 'SH400', 'invalid_request: unknown location cellar',
  'restock_unknown_location: restock refuses an unknown location');
select throws_ok(format($$select public.restock(%L, 'shop', 0)$$, :'p'), 'SH400',
  'invalid_request: restock quantity must be between 1 and 1000000',
  'restock_bad_quantity: restock refuses a quantity below 1');
select throws_ok($$select public.restock('f0000000-0000-4000-8000-00000000dead', 'shop', 1)$$, 'SH401',
  'product_not_found: f0000000-0000-4000-8000-00000000dead',
  'restock_unknown_product: restock refuses an unknown product');

-- ---- adjust_stock --------------------------------------------------------------------------------------------------
select is(public.adjust_stock(:'p', 'shop', -2, 'two broken in the stockroom') ->> 'on_hand', '5',
  'adjust_down: an adjustment takes units away');
select is(public.adjust_stock(:'p', 'shop', 1, 'found one behind the counter') ->> 'on_hand', '6',
  'adjust_up: an adjustment adds units');
select is(
  (select array_agg(format('%s %s', reason, delta_on_hand) order by id) from private.stock_movements
   where product_id = :'p' and reason = 'adjust'),
  array['adjust -2', 'adjust 1'],
  'adjust_ledger: each adjustment is one adjust row with its signed delta');
select throws_ok(format($$select public.adjust_stock(%L, 'shop', -1, '  ')$$, :'p'), 'SH400',
  'invalid_request: an adjustment needs a note saying why',
  'adjust_needs_note: an adjustment without a note is refused');
select throws_ok(format($$select public.adjust_stock(%L, 'shop', 0, 'nothing')$$, :'p'), 'SH400',
  'invalid_request: an adjustment moves between 1 and 1000000 units',
  'adjust_zero: an adjustment of zero units is refused (a zero movement writes nothing)');

select public.create_order(jsonb_build_array(pg_temp.line(:'p', 4)), 'sumup', 'ledger-held', 'h') is not null as held \gset
select is(
  pg_temp.error_of(format($$select public.adjust_stock(%L, 'shop', -3, 'count')$$, :'p')),
  jsonb_build_object('code', 'SH409', 'detail', jsonb_build_object('items', jsonb_build_array(
    jsonb_build_object('product_id', :'p', 'sku', 'T-LEDGER', 'requested', 3, 'available', 2)))),
  'adjust_below_reserved: an adjustment may not take units that reservations hold (SH409 with the free count)');
select is(pg_temp.stock(:'p', 'shop'), '6/4', 'adjust_refused_changes_nothing: the refused adjustment moved nothing');

-- a reservation that has lapsed (by the real clock adjust_stock uses) no longer holds its units
select public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'stripe', 'ledger-lapsed', 'h', '{}', null,
                           now() - interval '2 hours') is not null as lapsed \gset
select is(public.adjust_stock(:'p', 'warehouse', -3, 'water damage') ->> 'on_hand', '0',
  'adjust_frees_lapsed: lapsed reservations are expired first, so their units can be adjusted away');

-- ---- append-only, for everyone ---------------------------------------------------------------------------------------
select throws_ok(
  format($$update private.stock_movements set delta_on_hand = 100 where product_id = %L$$, :'p'),
  '23001', 'private.stock_movements is append-only: UPDATE is refused',
  'ledger_refuses_update: the ledger refuses UPDATE, even for its owner and a superuser');
select throws_ok(
  $$update private.stock_movements set note = 'x' where false$$,
  '23001', 'private.stock_movements is append-only: UPDATE is refused',
  'ledger_refuses_update_attempt: even an UPDATE that matches no row is refused');
select throws_ok(
  format($$delete from private.stock_movements where product_id = %L$$, :'p'),
  '23001', 'private.stock_movements is append-only: DELETE is refused',
  'ledger_refuses_delete: the ledger refuses DELETE');
select throws_ok(
  $$truncate private.stock_movements$$,
  '23001', 'private.stock_movements is append-only: TRUNCATE is refused',
  'ledger_refuses_truncate: the ledger refuses TRUNCATE');
select throws_ok(
  $$update private.order_status_history set reason = 'rewritten'$$,
  '23001', 'private.order_status_history is append-only: UPDATE is refused',
  'history_refuses_update: the status history refuses UPDATE');
select throws_ok(
  $$delete from private.order_status_history$$,
  '23001', 'private.order_status_history is append-only: DELETE is refused',
  'history_refuses_delete: the status history refuses DELETE');
select throws_ok(
  $$truncate private.order_status_history$$,
  '23001', 'private.order_status_history is append-only: TRUNCATE is refused',
  'history_refuses_truncate: the status history refuses TRUNCATE');

-- ---- what a movement may be -----------------------------------------------------------------------------------------
select throws_ok(
  format($$insert into private.stock_movements (product_id, location_id, delta_on_hand, delta_reserved, reason)
           values (%L, 1, 0, 0, 'adjust')$$, :'p'),
  '23514', 'value for domain private.movement_shape violates check constraint "stock_movements_shape"',
  'ledger_no_zero_movement: a movement that moves nothing is refused');
select throws_ok(
  format($$insert into private.stock_movements (product_id, location_id, delta_on_hand, delta_reserved, reason)
           values (%L, 1, -5, 0, 'restock')$$, :'p'),
  '23514', 'value for domain private.movement_shape violates check constraint "stock_movements_shape"',
  'ledger_signed_by_reason: a restock that takes units away is refused');
select throws_ok(
  format($$insert into private.stock_movements (product_id, location_id, delta_on_hand, delta_reserved, reason)
           values (%L, 1, 0, 1, 'reserve')$$, :'p'),
  '23514', 'value for domain private.movement_shape violates check constraint "stock_movements_shape"',
  'ledger_reservation_reference: a reserve movement must name its reservation and order');
select throws_ok(
  format($$insert into private.stock_movements (product_id, location_id, delta_on_hand, reason, order_id)
           values (%L, 1, 5, 'restock', gen_random_uuid())$$, :'p'),
  '23514', 'value for domain private.movement_shape violates check constraint "stock_movements_shape"',
  'ledger_stock_keeping_names_nothing: a restock names no order');
-- every reason against every direction of each delta and every count of references: exactly eight shapes pass
create temp table accepted_shapes (shape text collate "C");
do $$
declare r text; o integer; d integer; n integer;
begin
  foreach r in array array['reserve', 'release', 'expire', 'fulfil', 'restock', 'adjust'] loop
    foreach o in array array[-3, 0, 5] loop
      foreach d in array array[-2, 0, 4] loop
        foreach n in array array[0, 1, 2] loop
          begin
            perform row(r, o, d, n)::private.movement_shape;
            insert into accepted_shapes values (format('(%s,%s,%s,%s)', r, sign(o), sign(d), n));
          exception when check_violation then null;
          end;
        end loop;
      end loop;
    end loop;
  end loop;
end $$;
select results_eq(
  'select shape from accepted_shapes order by 1',
  $$values ('(adjust,-1,0,0)' collate "C"), ('(adjust,1,0,0)'), ('(expire,0,-1,2)'), ('(fulfil,-1,-1,2)'),
           ('(fulfil,-1,0,2)'), ('(release,0,-1,2)'), ('(reserve,0,1,2)'), ('(restock,1,0,0)')$$,
  'ledger_shapes: of 162 combinations of reason, delta directions and references, exactly the eight shapes pass');
select lives_ok(
  format($$insert into private.stock_movements (product_id, location_id, delta_on_hand, reason, note)
           values (%L, 1, -1, 'adjust', 'counted one fewer')$$, :'p'),
  'ledger_adjust_either_way: an adjust may take units away');

select * from finish();
rollback;

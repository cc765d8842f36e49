-- Security as each caller sees it: anon, a signed-in customer, staff and service_role, with the JWT claims set as
-- PostgREST (and the doors) set them. pgTAP's own functions are not executable by the API roles (EXECUTE is
-- revoked by default), so each probe runs under the role and records what happened; the assertions run as the
-- test's owner afterwards.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(23);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of from fixtures.psql.
\ir fixtures.psql

select 'a0000000-0000-4000-8000-00000000000a' as alice, 'b0000000-0000-4000-8000-00000000000b' as bob,
       '5aff0000-0000-4000-8000-0000000005aa' as staff \gset
select pg_temp.product('T-SEC-ON', 1000, 1900, 10, 0) as on_sale \gset
select pg_temp.product('T-SEC-OFF', 1000, 1900, 10, 0, 'EUR', false) as off_sale \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'on_sale', 1)), 'stripe', 'sec-alice', 'h',
                        '{"email": "alice@example.com"}', :'alice')) as alice_order \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'on_sale', 2)), 'stripe', 'sec-bob', 'h',
                        '{"email": "bob@example.com"}', :'bob')) as bob_order \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'on_sale', 1)), 'sumup', 'sec-till', 'h'))
  as till_order \gset

-- probe(sql): 'rows=<n>' when it runs, else the SQLSTATE it raised (42501 = insufficient privilege)
create temp table probes (who text, what text, outcome text) on commit drop;
grant insert, select on probes to public;
create function pg_temp.probe(p_what text, p_sql text) returns void language plpgsql as $f$
declare v_rows bigint;
begin
  execute format('with x as (%s) select count(*) from x', p_sql) into v_rows;
  insert into probes values (current_user, p_what, 'rows=' || v_rows);
exception when others then
  insert into probes values (current_user, p_what, sqlstate);
end $f$;
grant execute on function pg_temp.probe(text, text) to public;
create function pg_temp.outcomes(p_who text) returns text[] language sql as $f$
  select array_agg(format('%s %s', what, outcome) order by what) from probes where who = p_who $f$;

-- The probes every caller runs (ids interpolated now, as the owner)
create temp table script (what text, sql text) on commit drop;
insert into script values
  ('catalogue', format($$select 1 from public.products where id in (%L, %L)$$, :'on_sale', :'off_sale')),
  ('orders', format($$select 1 from public.orders where id in (%L, %L, %L)$$, :'alice_order', :'bob_order', :'till_order')),
  ('items', format($$select 1 from public.order_items where order_id in (%L, %L, %L)$$, :'alice_order', :'bob_order', :'till_order')),
  ('get_alice', format($$select 1 where public.get_order(%L) is not null$$, :'alice_order')),
  ('get_bob', format($$select 1 where public.get_order(%L) is not null$$, :'bob_order')),
  ('list_products', $$select public.list_products(null, 5)$$),
  ('create_order', format($$select public.create_order(%L, 'sumup', null, null)$$, jsonb_build_array(pg_temp.line(:'on_sale', 1)))),
  ('mark_paid', format($$select public.mark_paid(%L, 'stripe', 'pi', 1190, 'EUR')$$, :'alice_order')),
  ('mark_paid_for_event', format($$select public.mark_paid_for_event('stripe', 'evt_probe', 'x', %L, 'pi', 1190, 'EUR')$$,
                                 :'alice_order')),
  ('cancel_order', format($$select public.cancel_order(%L, 'x')$$, :'bob_order')),
  -- (an unknown order: service_role gets SH402, proof of its grant, and nothing changes)
  ('confirm_instore_payment', $$select public.confirm_instore_payment('f0000000-0000-4000-8000-00000000dead', 'TX-PROBE')$$),
  ('cancel_order_for_event', format($$select public.cancel_order_for_event('stripe', 'evt_probe_c', 'x', %L, 'x')$$,
                                    :'bob_order')),
  ('expire_reservations', $$select public.expire_reservations()$$),
  ('restock', format($$select public.restock(%L, 'shop', 100)$$, :'on_sale')),
  ('update_order', format($$update public.orders set total = 0 where id = %L returning 1$$, :'alice_order')),
  ('insert_product', $$insert into public.products (sku, name, unit_price) values ('T-SEC-NEW', 'x', 1) returning 1$$),
  ('private_stock', $$select 1 from private.stock_levels$$),
  ('private_ledger', $$select 1 from private.stock_movements$$),
  ('admin_view', $$select 1 from admin.stock_reconciliation$$);

create function pg_temp.run_script() returns void language plpgsql as $f$
declare s record;
begin
  for s in select * from script loop perform pg_temp.probe(s.what, s.sql); end loop;
end $f$;
grant execute on function pg_temp.run_script() to public;
grant select on script to public;

-- ---- anon --------------------------------------------------------------------------------------------------------
set local role anon;
select set_config('request.jwt.claims', '{"role": "anon"}', true) is not null as claims \gset
select pg_temp.run_script();
reset role;

-- ---- a signed-in customer (alice) -----------------------------------------------------------------------------------
set local role authenticated;
select set_config('request.jwt.claims', format('{"sub": "%s", "role": "authenticated"}', :'alice'), true) is not null as c \gset
select pg_temp.run_script();
reset role;
update probes set who = 'alice' where who = 'authenticated';

-- ---- staff ----------------------------------------------------------------------------------------------------------
set local role authenticated;
select set_config('request.jwt.claims',
  format('{"sub": "%s", "role": "authenticated", "app_metadata": {"role": "staff"}}', :'staff'), true) is not null as c \gset
select pg_temp.run_script();
reset role;
update probes set who = 'staff' where who = 'authenticated';

-- ---- service_role ---------------------------------------------------------------------------------------------------
set local role service_role;
select set_config('request.jwt.claims', '{"role": "service_role"}', true) is not null as c \gset
select pg_temp.run_script();
reset role;

-- ============================================================================================================
-- anon
-- ============================================================================================================
select is(
  (select array_agg(outcome order by what) from probes where who = 'anon' and what in ('catalogue', 'list_products')),
  array['rows=1', 'rows=1'],
  'rls_anon_catalogue: anon reads the product on sale, not the one taken off sale, and may call list_products');
select is(
  (select array_agg(outcome order by what) from probes where who = 'anon' and what in ('orders', 'items', 'get_alice')),
  array['rows=0', 'rows=0', 'rows=0'],
  'rls_anon_orders: anon sees no order and no line, and get_order answers null');
select is(
  (select array_agg(distinct outcome) from probes where who = 'anon'
   and what in ('create_order', 'mark_paid', 'mark_paid_for_event', 'cancel_order', 'cancel_order_for_event',
                'confirm_instore_payment', 'expire_reservations', 'restock')),
  array['42501'],
  'grants_anon_functions: anon may not call any engine function that changes data');
select is(
  (select array_agg(distinct outcome) from probes where who = 'anon'
   and what in ('update_order', 'insert_product', 'private_stock', 'private_ledger', 'admin_view')),
  array['42501'],
  'grants_anon_tables: anon may not write tables, nor read private or admin');

-- ============================================================================================================
-- a signed-in customer
-- ============================================================================================================
select is(
  (select array_agg(outcome order by what) from probes where who = 'alice' and what in ('orders', 'items', 'get_alice')),
  array['rows=1', 'rows=1', 'rows=1'],
  'rls_customer_own: a signed-in customer sees their own order, its line, and gets it from get_order');
select is(
  (select outcome from probes where who = 'alice' and what = 'get_bob'),
  'rows=0',
  'rls_customer_stranger: someone else''s order is invisible to get_order (null, as if it did not exist)');
select is(
  (select outcome from probes where who = 'alice' and what = 'catalogue'),
  'rows=1',
  'rls_customer_catalogue: a customer reads only the product on sale');
select is(
  (select array_agg(distinct outcome) from probes where who = 'alice'
   and what in ('create_order', 'mark_paid', 'mark_paid_for_event', 'cancel_order', 'cancel_order_for_event',
                'confirm_instore_payment', 'expire_reservations', 'restock')),
  array['42501'],
  'grants_customer_functions: a signed-in customer may not call any engine function that changes data');
select is(
  (select array_agg(distinct outcome) from probes where who = 'alice'
   and what in ('update_order', 'insert_product', 'private_stock', 'private_ledger', 'admin_view')),
  array['42501'],
  'grants_customer_tables: a signed-in customer may not write tables, nor read private or admin');

-- ============================================================================================================
-- staff
-- ============================================================================================================
select is(
  (select array_agg(outcome order by what) from probes where who = 'staff'
   and what in ('catalogue', 'get_alice', 'get_bob', 'items', 'orders')),
  array['rows=2', 'rows=1', 'rows=1', 'rows=3', 'rows=3'],
  'rls_staff: staff read every order and line, and the products taken off sale too');
select is(
  (select array_agg(distinct outcome) from probes where who = 'staff'
   and what in ('create_order', 'mark_paid', 'mark_paid_for_event', 'confirm_instore_payment', 'restock',
                'update_order', 'private_stock', 'admin_view')),
  array['42501'],
  'grants_staff: staff read more, but write nothing and reach neither private nor admin directly');

-- ============================================================================================================
-- service_role
-- ============================================================================================================
select is(
  (select array_agg(outcome order by what) from probes where who = 'service_role'
   and what in ('admin_view', 'catalogue', 'confirm_instore_payment', 'create_order', 'get_bob', 'orders', 'restock')),
  array['rows=' || (select count(*) from admin.stock_reconciliation), 'rows=2', 'SH402', 'rows=1', 'rows=1', 'rows=3',
        'rows=1'],
  'grants_service_role: service_role calls the engine (an unknown order''s confirmation reaches it: SH402), reads '
    || 'every order and product, and reads the admin views');
select is(
  (select array_agg(outcome order by what) from probes where who = 'service_role'
   and what in ('private_ledger', 'private_stock', 'update_order')),
  array['42501', '42501', '42501'],
  'grants_service_role_private: service_role changes orders only through the engine and cannot read private tables');

-- ---- the service_role calls really happened as the engine (definer), and stamped the request context -------------
select is(
  (select array_agg(format('%s %s', who, outcome) order by who) from probes where what = 'insert_product'),
  array['alice 42501', 'anon 42501', 'service_role rows=1', 'staff 42501'],
  'grants_catalogue_writers: only service_role (the back office) may add products');
select is(
  (select total from public.orders where id = :'alice_order'),
  1190::bigint,
  'grants_no_update_leak: no probe managed to change an order');
select is(
  pg_temp.stock(:'on_sale', 'shop'),
  '109/' || (select sum(quantity) from private.reservations where product_id = :'on_sale' and status = 'active'),
  'grants_only_service_wrote: stock moved exactly by service_role''s calls (restock +100, a payment -1, its order held)');

-- ---- JWT helpers behave like Supabase's ------------------------------------------------------------------------------
select set_config('request.jwt.claims', format('{"sub": "%s", "role": "authenticated"}', :'alice'), true) is not null as c \gset
select is(auth.uid(), :'alice'::uuid, 'auth_uid: auth.uid() reads the sub claim');
select is(auth.role(), 'authenticated', 'auth_role: auth.role() reads the role claim');
select set_config('request.jwt.claims', '', true) is not null as c \gset
select is(auth.uid(), null, 'auth_uid_none: without claims there is no user');

select is(
  (select count(*)::int from probes),
  (select count(*)::int * 4 from script),
  'probes_complete: every probe ran for every caller');

-- ---- the back office edits products but never their id (order lines and the ledger name products by id) ----------
select column_privs_are('public', 'products', 'name', 'service_role', array['SELECT', 'INSERT', 'UPDATE'],
  'grants_catalogue_edit: service_role may rename a product');
select column_privs_are('public', 'products', 'id', 'service_role', array['SELECT', 'INSERT'],
  'grants_catalogue_id: service_role may not change a product''s id');

-- The durability barrier forces a WAL flush per call: only the functions' service role may call it.
select is(
  array[has_function_privilege('anon', 'public.wait_for_flush()', 'execute'),
        has_function_privilege('authenticated', 'public.wait_for_flush()', 'execute'),
        has_function_privilege('service_role', 'public.wait_for_flush()', 'execute')],
  array[false, false, true],
  'grants_wait_for_flush: only service_role may call the durability barrier');

select * from finish();
rollback;

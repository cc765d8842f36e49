-- Structure and privileges: the tables exist where the design puts them, RLS is on everywhere, the API roles can
-- reach only what the contract grants them, and every function pins its search_path.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(50);

-- ============================================================================================================
-- Schemas and tables
-- ============================================================================================================
select has_schema('private', 'schema private exists');
select has_schema('admin', 'schema admin exists');

select has_table('public', 'products', 'public.products exists');
select has_table('public', 'orders', 'public.orders exists');
select has_table('public', 'order_items', 'public.order_items exists');
select has_table('private', 'locations', 'private.locations exists');
select has_table('private', 'stock_levels', 'private.stock_levels exists');
select has_table('private', 'open_reservations', 'private.open_reservations exists');
select has_view('private', 'reservations', 'private.reservations (every reservation with its outcome) exists');
select has_table('private', 'stock_movements', 'private.stock_movements exists');
select has_table('private', 'order_status_history', 'private.order_status_history exists');
select has_table('private', 'payment_events', 'private.payment_events exists');
select has_table('private', 'settings', 'private.settings exists');
select has_table('private', 'rate_limits', 'private.rate_limits exists');

select has_view('admin', 'stock_reconciliation', 'admin.stock_reconciliation exists');
select has_view('admin', 'active_reservations', 'admin.active_reservations exists');
select has_view('admin', 'order_timeline', 'admin.order_timeline exists');
select has_view('admin', 'order_counts', 'admin.order_counts exists');

select is(
  array(select c.oid::regclass::text
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('public', 'private') and c.relkind in ('r', 'p') and not c.relrowsecurity
        order by 1),
  '{}'::text[],
  'every table in public and private has row level security enabled');

select is(
  (select count(*)::int from pg_policies where schemaname = 'private'),
  0,
  'no policy opens a private table to anyone');

select policies_are('public', 'products',
  array['Anyone reads the active catalogue', 'Staff read the whole catalogue'],
  'products has exactly the catalogue policies');
select policies_are('public', 'orders',
  array['Customers read their own orders', 'Staff read all orders'],
  'orders has exactly the owner and staff policies');
select policies_are('public', 'order_items',
  array['Lines are visible with their order'],
  'order_items has exactly the follow-the-order policy');

select has_index('private', 'open_reservations', 'open_reservations_expiry_idx',
  'the sweep walks open reservations in expiry order');
select hasnt_column('private', 'open_reservations', 'status',
  'a closed reservation is deleted from open_reservations, not kept there with a status');
select ok(
  (select i.indisunique from pg_index i where i.indexrelid = 'private.stock_movements_reservation_once_idx'::regclass),
  'the ledger has a unique key per reservation opening and closing');

-- ============================================================================================================
-- Schema and table privileges
-- ============================================================================================================
select schema_privs_are('private', 'anon', '{}'::text[], 'anon has no privilege on schema private');
select schema_privs_are('private', 'authenticated', '{}'::text[], 'authenticated has no privilege on schema private');
select schema_privs_are('private', 'service_role', '{}'::text[], 'service_role has no privilege on schema private');
select schema_privs_are('admin', 'anon', '{}'::text[], 'anon has no privilege on schema admin');
select schema_privs_are('admin', 'authenticated', '{}'::text[], 'authenticated has no privilege on schema admin');
select schema_privs_are('admin', 'service_role', array['USAGE'], 'service_role may use schema admin');

select table_privs_are('public', 'products', 'anon', array['SELECT'], 'anon may only read products');
select table_privs_are('public', 'orders', 'anon', array['SELECT'], 'anon holds only SELECT on orders (RLS shows it nothing)');
select table_privs_are('public', 'orders', 'authenticated', array['SELECT'], 'authenticated may only read orders');
select table_privs_are('public', 'order_items', 'authenticated', array['SELECT'], 'authenticated may only read order items');
select table_privs_are('public', 'orders', 'service_role', array['SELECT'],
  'service_role reads orders but changes them only through the engine functions');

-- ============================================================================================================
-- Function privileges and settings
-- ============================================================================================================
create temp table engine_writers (sig text) on commit drop;
insert into engine_writers values
  ('public.create_order(jsonb, text, text, text, jsonb, uuid, timestamptz)'),
  ('public.attach_checkout(uuid, text, text, text)'),
  ('public.mark_paid(uuid, text, text, bigint, text, timestamptz)'),
  ('public.confirm_instore_payment(uuid, text, timestamptz)'),
  ('public.allocate_paid_order(uuid, text, timestamptz)'),
  ('public.cancel_order(uuid, text, timestamptz, boolean)'),
  ('public.record_payment_event(text, text, text, uuid)'),
  ('public.record_refund(uuid, text, bigint, text)'),
  ('public.record_refund_total(uuid, text, bigint, text)'),
  ('public.record_refund_total_for_event(text, text, text, uuid, text, bigint, text)'),
  ('public.mark_fulfilled(uuid, timestamptz)'),
  ('public.expire_reservations(timestamptz, integer, integer)'),
  ('public.sweep_reservations(integer)'),
  ('public.restock(uuid, text, integer, text)'),
  ('public.adjust_stock(uuid, text, integer, text)'),
  ('public.rate_limit_hit(text, integer, integer, timestamptz)');

select is(
  array(select sig from engine_writers
        where has_function_privilege('anon', sig, 'execute') or has_function_privilege('authenticated', sig, 'execute')
        order by 1),
  '{}'::text[],
  'anon and authenticated may execute no data-changing function');
select is(
  array(select w.sig from engine_writers w
        where exists (select 1 from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                      where p.oid = w.sig::regprocedure and a.grantee = 0 and a.privilege_type = 'EXECUTE')
        order by 1),
  '{}'::text[],
  'no data-changing function is executable by PUBLIC');
select is(
  array(select sig from engine_writers where not has_function_privilege('service_role', sig, 'execute') order by 1),
  '{}'::text[],
  'service_role may execute every data-changing function');

select ok(
  has_function_privilege('anon', 'public.list_products(text, integer, timestamptz)', 'execute')
  and has_function_privilege('authenticated', 'public.list_products(text, integer, timestamptz)', 'execute'),
  'anon and authenticated may call list_products');
select ok(
  has_function_privilege('anon', 'public.get_order(uuid)', 'execute')
  and has_function_privilege('authenticated', 'public.get_order(uuid)', 'execute'),
  'anon and authenticated may call get_order');

select is(
  array(select p.oid::regprocedure::text
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'private'
          and (has_function_privilege('anon', p.oid, 'execute')
               or has_function_privilege('authenticated', p.oid, 'execute')
               or has_function_privilege('service_role', p.oid, 'execute'))
        order by 1),
  '{}'::text[],
  'no API role may execute a private helper');

select is(
  array(select p.oid::regprocedure::text
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'private') and p.prokind = 'f'
          and not coalesce(p.proconfig @> array['search_path=""'], false)
        order by 1),
  '{}'::text[],
  'every engine function runs with an empty search_path');

-- an order's first history row is written by create_order in the statement that inserts the order (no trigger),
-- so no other function may insert orders
select is(
  array(select p.oid::regprocedure::text
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'private', 'admin') and p.prosrc ~* 'insert\s+into\s+public\.orders\M'
        order by 1),
  array['create_order(jsonb,text,text,text,jsonb,uuid,timestamp with time zone)'],
  'orders_created_in_one_place: create_order is the only function that inserts orders');

select is(
  array(select p.proname::text
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'private') and p.prosecdef
        order by 1),
  array['adjust_stock', 'allocate_paid_order', 'attach_checkout', 'cancel_order', 'confirm_instore_payment', 'create_order',
        'expire_reservations', 'list_products',
        'mark_fulfilled', 'mark_paid', 'rate_limit_hit', 'record_payment_event', 'record_refund',
        'record_refund_total', 'restock', 'wait_for_flush'],
  'only the public entry points that reach private tables are security definer');

select isnt_definer('public', 'get_order', array['uuid'], 'get_order runs as its caller, so RLS decides');

select function_returns('public', 'create_order',
  array['jsonb', 'text', 'text', 'text', 'jsonb', 'uuid', 'timestamp with time zone'], 'jsonb',
  'create_order returns jsonb');
select function_returns('public', 'expire_reservations', array['timestamp with time zone', 'integer', 'integer'],
  'integer', 'expire_reservations returns the number of reservations released');
select is(
  (select format('%s %s %s', p.prokind, p.prosecdef, p.proconfig is null) from pg_proc p
   where p.oid = 'public.sweep_reservations(integer)'::regprocedure),
  'p f t',
  'sweep_reservations is a procedure running as its caller without SET (so it may commit after each batch)');

select * from finish();
rollback;

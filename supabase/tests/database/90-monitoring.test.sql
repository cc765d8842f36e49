-- Monitoring (20261125009000_monitoring.sql): the operator views and functions in schema admin, and the alert
-- rules they implement. Time is passed as p_now; pg_cron runs are written into cron.job_run_details by hand
-- for a job scheduled inside this transaction, so nothing waits for the clock or for the real scheduler.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(52);

-- ============================================================================================================
-- Structure and privileges
-- ============================================================================================================
select has_view('admin', 'reservations_expiring_soon', 'admin.reservations_expiring_soon exists');
select has_view('admin', 'sweep_health', 'admin.sweep_health exists');
select has_view('admin', 'reconciliation_differences', 'admin.reconciliation_differences exists');
select has_view('admin', 'paid_out_of_stock_orders', 'admin.paid_out_of_stock_orders exists');
select has_view('admin', 'active_alerts', 'admin.active_alerts exists');
select has_function('admin', 'reservations_expiring', array['interval', 'timestamp with time zone'],
  'admin.reservations_expiring(interval, timestamptz) exists');
select has_function('admin', 'sweep_runs', array['timestamp with time zone'], 'admin.sweep_runs(timestamptz) exists');
select has_function('admin', 'sweep_status', array['timestamp with time zone', 'interval'],
  'admin.sweep_status(timestamptz, interval) exists');
select has_function('admin', 'alerts', array['timestamp with time zone', 'interval'],
  'admin.alerts(timestamptz, interval) exists');

create temp table monitoring_views (name text) on commit drop;
insert into monitoring_views values
  ('admin.reservations_expiring_soon'), ('admin.sweep_health'), ('admin.reconciliation_differences'),
  ('admin.paid_out_of_stock_orders'), ('admin.active_alerts');
create temp table monitoring_functions (sig text) on commit drop;
insert into monitoring_functions values
  ('admin.reservations_expiring(interval, timestamptz)'), ('admin.sweep_runs(timestamptz)'),
  ('admin.sweep_status(timestamptz, interval)'), ('admin.alerts(timestamptz, interval)');

select is(
  (select count(*)::int from monitoring_views where has_table_privilege('service_role', name, 'select')), 5,
  'service_role may select every monitoring view');
select is(
  (select count(*)::int from monitoring_views
    where has_table_privilege('anon', name, 'select') or has_table_privilege('authenticated', name, 'select')), 0,
  'anon and authenticated may select no monitoring view');
select is(
  (select count(*)::int from monitoring_functions where has_function_privilege('service_role', sig, 'execute')), 4,
  'service_role may execute every monitoring function');
select is(
  (select count(*)::int from monitoring_functions
    where has_function_privilege('anon', sig, 'execute') or has_function_privilege('authenticated', sig, 'execute')
       or has_function_privilege('public', sig, 'execute')), 0,
  'anon, authenticated and public may execute no monitoring function');
select ok(
  (select bool_and(p.prosecdef) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'admin' and p.proname in ('reservations_expiring', 'sweep_runs', 'sweep_status', 'alerts')),
  'the monitoring functions run as their owner (security definer), so service_role needs no private grants');

-- Read for real under each role. pgTAP's own functions are not executable by the API roles, so each probe
-- runs under the role and records what happened; the assertions run as the test's owner afterwards.
create temp table role_probe (who text, what text, outcome text, row_count bigint);
grant insert on role_probe to public;
create function pg_temp.probe(p_sql text, p_what text) returns void language plpgsql as $f$
declare
  v_rows bigint;
begin
  execute format('select count(*) from (%s) x', p_sql) into v_rows;
  insert into role_probe values (current_user, p_what, 'ok', v_rows);
exception when insufficient_privilege then
  insert into role_probe values (current_user, p_what, 'denied', null);
end
$f$;
grant execute on function pg_temp.probe(text, text) to public;
set local role service_role;
do $$ begin
  perform pg_temp.probe('select * from admin.active_alerts', 'active_alerts');
  perform pg_temp.probe('select * from admin.reservations_expiring_soon', 'reservations_expiring_soon');
  perform pg_temp.probe('select * from admin.sweep_health', 'sweep_health');
end $$;
reset role;
set local role anon;
do $$ begin perform pg_temp.probe('select * from admin.active_alerts', 'active_alerts'); end $$;
reset role;
set local role authenticated;
do $$ begin perform pg_temp.probe('select * from admin.alerts()', 'alerts()'); end $$;
reset role;

select results_eq(
  $$ select what, outcome from role_probe where who = 'service_role' order by what $$,
  $$ values ('active_alerts', 'ok'), ('reservations_expiring_soon', 'ok'), ('sweep_health', 'ok') $$,
  'service_role reads the monitoring views');
select ok(
  (select row_count from role_probe where who = 'service_role' and what = 'sweep_health')
    = (select count(*) from cron.job where command ~* '(expire|sweep)_reservations\(')
  and (select count(*) from cron.job where command ~* '(expire|sweep)_reservations\(') > 0,
  'through sweep_health, service_role sees the sweep jobs that pg_cron''s row security would hide from it');
select is(
  (select outcome from role_probe where who = 'anon'), 'denied', 'anon cannot read admin.active_alerts');
select is(
  (select outcome from role_probe where who = 'authenticated'), 'denied', 'authenticated cannot call admin.alerts()');

-- ============================================================================================================
-- Fixtures: products and orders made by the engine
-- ============================================================================================================
create temp table fx (name text primary key, id uuid, sku text) on commit drop;

insert into public.products (sku, name, unit_price, currency, tax_rate_bp, active)
values ('MON-EXPIRY', 'Monitoring expiry', 1000, 'EUR', 1900, true),
       ('MON-LATE', 'Monitoring late payment', 500, 'EUR', 1900, true),
       ('MON-TAMPER', 'Monitoring tampered stock', 700, 'EUR', 1900, true),
       ('MON-LAPSED', 'Monitoring lapsed reservation', 300, 'EUR', 1900, true);
insert into fx (name, id, sku) select lower(substr(sku, 5)), id, sku from public.products where sku like 'MON-%';
do $$ begin
  perform public.restock(id, 'shop', 5, 'monitoring test') from fx where name in ('expiry', 'tamper', 'lapsed');
  perform public.restock(id, 'shop', 1, 'monitoring test') from fx where name = 'late';
end $$;

-- An in-store order (held 15 minutes) and an online one (held 35 minutes), both made now.
insert into fx (name, id)
select 'order_instore', (public.create_order(jsonb_build_array(jsonb_build_object('product_id', id, 'quantity', 2)),
                          'sumup', 'mon-instore', 'h1') -> 'order' ->> 'id')::uuid
from fx where name = 'expiry';
insert into fx (name, id)
select 'order_online', (public.create_order(jsonb_build_array(jsonb_build_object('product_id', id, 'quantity', 1)),
                         'stripe', 'mon-online', 'h2') -> 'order' ->> 'id')::uuid
from fx where name = 'expiry';

-- ============================================================================================================
-- reservations_expiring
-- ============================================================================================================
select is(
  (select array_agg(order_id order by expires_at) from admin.reservations_expiring(interval '10 minutes', now() + interval '10 minutes')
    where sku = 'MON-EXPIRY'),
  array[(select id from fx where name = 'order_instore')],
  'reservations_expiring lists the reservation that ends inside the window (in-store, 15 min) and not the online one (35 min)');
select is(
  (select row(quantity, location, order_status, expires_in)::text from admin.reservations_expiring(interval '10 minutes', now() + interval '10 minutes')
    where sku = 'MON-EXPIRY'),
  row(2, 'shop', 'awaiting_instore_payment', interval '5 minutes')::text,
  'reservations_expiring says how many units, where, the order''s status and the time left');
select is_empty(
  $$ select * from admin.reservations_expiring(interval '10 minutes', now()) where sku = 'MON-EXPIRY' $$,
  'reservations_expiring shows nothing for MON-EXPIRY when nothing of it ends in the next 10 minutes');
select is(
  (select count(*)::int from admin.reservations_expiring(interval '1 hour', now() + interval '16 minutes') where sku = 'MON-EXPIRY'),
  1,
  'a reservation already past expires_at is no longer "expiring" (only the online one is left within the hour)');

-- ============================================================================================================
-- sweep_runs, sweep_status
-- ============================================================================================================
select isnt_empty($$ select * from admin.sweep_status() where active $$,
  'the migrations schedule an active sweep job that the monitoring recognises');

-- A second sweep job of our own, whose run log we write. T0 is far from any real run.
create temp table sweep_fx as
select cron.schedule('monitoring-test-sweep', '* * * * *', 'select public.expire_reservations()') as jobid,
       timestamptz '2030-01-01 12:00:00+00' as t0;

select is(
  (select row(stale, failing, last_status)::text from admin.sweep_status((select t0 from sweep_fx))
    where jobname = 'monitoring-test-sweep'),
  row(true, false, null::text)::text,
  'a sweep that never ran is stale, not failing');

insert into cron.job_run_details (jobid, status, return_message, start_time, end_time, database, username, command)
select jobid, 'succeeded', '1 row', t0 - interval '2 minutes', t0 - interval '2 minutes' + interval '40 ms',
       'postgres', 'postgres', 'select public.expire_reservations()'
from sweep_fx;

select is(
  (select row(stale, failing, last_status, runs_in_window)::text from admin.sweep_status((select t0 from sweep_fx))
    where jobname = 'monitoring-test-sweep'),
  row(false, false, 'succeeded', 1)::text,
  'a sweep that succeeded 2 minutes ago is healthy');
select is(
  (select stale from admin.sweep_status((select t0 + interval '10 minutes' from sweep_fx)) where jobname = 'monitoring-test-sweep'),
  true,
  'the same sweep is stale when nothing has started for 5 minutes (checked 10 minutes on)');
select is(
  (select stale from admin.sweep_status((select t0 + interval '10 minutes' from sweep_fx), interval '15 minutes')
    where jobname = 'monitoring-test-sweep'),
  false,
  'the window is a parameter: with 15 minutes the same sweep is not stale');

insert into cron.job_run_details (jobid, status, return_message, start_time, end_time, database, username, command)
select jobid, 'failed', 'ERROR: deadlock detected', t0 - interval '1 minute', t0 - interval '1 minute' + interval '1 s',
       'postgres', 'postgres', 'select public.expire_reservations()'
from sweep_fx;

select is(
  (select row(failing, failures_in_window, last_status, last_message)::text
     from admin.sweep_status((select t0 from sweep_fx)) where jobname = 'monitoring-test-sweep'),
  row(true, 1, 'failed', 'ERROR: deadlock detected')::text,
  'a sweep whose latest run failed is failing, with the failure''s message');
select is(
  (select array_agg(status order by start_time) from admin.sweep_runs((select t0 - interval '1 hour' from sweep_fx))
    where jobname = 'monitoring-test-sweep'),
  array['succeeded', 'failed'],
  'sweep_runs lists the sweep''s runs since p_since');
select is(
  (select duration from admin.sweep_runs((select t0 - interval '1 hour' from sweep_fx))
    where jobname = 'monitoring-test-sweep' and status = 'succeeded'),
  interval '40 ms',
  'sweep_runs says how long each run took');

insert into cron.job_run_details (jobid, status, return_message, start_time, end_time, database, username, command)
select jobid, 'succeeded', '0 rows', t0 + interval '1 minute', t0 + interval '1 minute' + interval '30 ms',
       'postgres', 'postgres', 'select public.expire_reservations()'
from sweep_fx;

select is(
  (select row(failing, failures_in_window, last_status)::text
     from admin.sweep_status((select t0 + interval '2 minutes' from sweep_fx)) where jobname = 'monitoring-test-sweep'),
  row(true, 1, 'succeeded')::text,
  'a failure within the last 5 minutes keeps the sweep failing although a later run succeeded');
select is(
  (select row(failing, stale)::text
     from admin.sweep_status((select t0 + interval '5 minutes' from sweep_fx)) where jobname = 'monitoring-test-sweep'),
  row(false, false)::text,
  'once the failure is older than 5 minutes and the latest run succeeded, the sweep is healthy again');

-- pg_cron logs a run it could not start (e.g. it could not connect) with no start_time.
insert into cron.job_run_details (jobid, status, return_message, database, username, command)
select jobid, 'failed', 'connection failed', 'postgres', 'postgres', 'select public.expire_reservations()'
from sweep_fx;

select is(
  (select row(failing, last_status, last_message, last_started_at = t0 + interval '1 minute')::text
     from admin.sweep_status((select t0 + interval '3 minutes' from sweep_fx)), sweep_fx
    where jobname = 'monitoring-test-sweep'),
  row(true, 'failed', 'connection failed', true)::text,
  'a run that could not even start (no start_time) is the latest run and a failure, but not a run that happened');

-- ============================================================================================================
-- alerts: the sweep rules
-- ============================================================================================================
select is(
  (select array_agg(alert order by alert) from admin.alerts((select t0 + interval '3 minutes' from sweep_fx))
    where subject = 'monitoring-test-sweep'),
  array['sweep_failed'],
  'alerts: a failing sweep raises sweep_failed (and, having run 2 minutes ago, not sweep_stale)');
select is(
  (select array_agg(alert order by alert) from admin.alerts((select t0 + interval '30 minutes' from sweep_fx))
    where subject = 'monitoring-test-sweep'),
  array['sweep_failed', 'sweep_stale'],
  'alerts: the same sweep silent for 29 minutes raises sweep_stale too');
select is(
  (select severity from admin.alerts((select t0 + interval '30 minutes' from sweep_fx))
    where subject = 'monitoring-test-sweep' and alert = 'sweep_stale'),
  'critical',
  'alerts: a stale sweep is critical');

do $$ begin perform cron.alter_job((select jobid from sweep_fx), active := false); end $$;
select is_empty(
  $$ select * from admin.alerts((select t0 + interval '30 minutes' from sweep_fx)) where subject = 'monitoring-test-sweep' $$,
  'alerts: a sweep job switched off raises nothing of its own');

update cron.job set active = false where command ~* '(expire|sweep)_reservations\(';
select is(
  (select count(*)::int from admin.alerts() where alert = 'sweep_missing'),
  1,
  'alerts: with no active sweep job at all, sweep_missing fires');
update cron.job set active = true where command ~* '(expire|sweep)_reservations\(' and jobname <> 'monitoring-test-sweep';
select is(
  (select count(*)::int from admin.alerts() where alert = 'sweep_missing'),
  0,
  'alerts: sweep_missing clears once a sweep job is active');

-- ============================================================================================================
-- reconciliation_differences
-- ============================================================================================================
select is_empty(
  $$ select * from admin.reconciliation_differences where sku = 'MON-TAMPER' $$,
  'stock written only by the engine shows no reconciliation difference');
-- A write that bypasses the engine (and its ledger): exactly what the proof exists to catch.
update private.stock_levels set on_hand = on_hand + 2 where product_id = (select id from fx where name = 'tamper');
select is(
  (select row(location, on_hand, ledger_on_hand, on_hand_difference, reserved_difference)::text
     from admin.reconciliation_differences where sku = 'MON-TAMPER'),
  row('shop', 7, 5, 2, 0)::text,
  'a stock level changed behind the ledger''s back appears in reconciliation_differences');
select is(
  (select row(severity, detail ->> 'on_hand', detail ->> 'ledger_on_hand')::text
     from admin.alerts() where alert = 'reconciliation_difference' and subject = 'MON-TAMPER@shop'),
  row('critical', '7', '5')::text,
  'alerts: the difference raises a critical reconciliation_difference naming the product and location');
-- A reservation closed behind the stock level's back: reserved no longer matches the open reservations.
delete from private.open_reservations where order_id = (select id from fx where name = 'order_online');
select is(
  (select reserved_difference from admin.reconciliation_differences where sku = 'MON-EXPIRY'),
  1::bigint,
  'reserved units that no active reservation holds appear as a reserved difference');
-- A bound written behind the engine's back, later than an active reservation's expiry: sales would not expire it.
select public.create_order(jsonb_build_array(jsonb_build_object('product_id', id, 'quantity', 1)), 'sumup',
                           'mon-bound', 'h-bound') is not null as bound_order
from fx where name = 'tamper' \gset
update private.stock_levels set next_expiry = 'infinity'
 where product_id = (select id from fx where name = 'tamper') and location_id = 1;
select is(
  (select row(d.next_expiry_late, a.severity, a.detail ->> 'next_expiry')::text
     from admin.reconciliation_differences d
     join admin.alerts() a on a.alert = 'reconciliation_difference' and a.subject = d.sku || '@' || d.location
    where d.sku = 'MON-TAMPER'),
  row(true, 'critical', 'infinity')::text,
  'a next_expiry later than an active reservation''s expiry appears in reconciliation_differences and its alert');

-- ============================================================================================================
-- paid_out_of_stock_orders
-- ============================================================================================================
-- The late payment: order A's reservation lapsed an hour ago, B bought the last unit, then A's money arrives.
insert into fx (name, id)
select 'order_late', (public.create_order(jsonb_build_array(jsonb_build_object('product_id', id, 'quantity', 1)),
                       'sumup', 'mon-late-a', 'h3', '{"email": "late@example.com"}'::jsonb, null,
                       now() - interval '1 hour') -> 'order' ->> 'id')::uuid
from fx where name = 'late';
do $$ begin
  perform public.create_order(jsonb_build_array(jsonb_build_object('product_id', id, 'quantity', 1)), 'sumup',
                              'mon-late-b', 'h4')
  from fx where name = 'late';
end $$;

select is_empty(
  $$ select * from admin.paid_out_of_stock_orders where order_id = (select id from fx where name = 'order_late') $$,
  'an unpaid order is not in paid_out_of_stock_orders');
select is(
  (select public.mark_paid(id, 'sumup', 'TX-LATE', 595, 'EUR') ->> 'result' from fx where name = 'order_late'),
  'paid_out_of_stock',
  'fixture: the late payment finds no stock left (engine)');
select is(
  (select row(payment_method, provider_payment_ref, total, unrefunded_amount, resolved, items)::text
     from admin.paid_out_of_stock_orders where order_id = (select id from fx where name = 'order_late')),
  row('sumup', 'TX-LATE', 595::bigint, 595::bigint, false, '[{"sku": "MON-LATE", "quantity": 1}]'::jsonb)::text,
  'paid_out_of_stock_orders shows the order, its payment, what it bought and what is unrefunded');
select is(
  (select row(severity, detail ->> 'unrefunded_amount')::text from admin.alerts()
    where alert = 'paid_out_of_stock' and subject = (select id::text from fx where name = 'order_late')),
  row('critical', '595')::text,
  'alerts: an unresolved paid_out_of_stock order is critical');
do $$ begin perform public.record_refund(id, 'TX-LATE', 595, 'EUR') from fx where name = 'order_late'; end $$;
select is(
  (select resolved from admin.paid_out_of_stock_orders where order_id = (select id from fx where name = 'order_late')),
  true,
  'a full refund resolves it');
select is_empty(
  $$ select * from admin.alerts() where alert = 'paid_out_of_stock' and subject = (select id::text from fx where name = 'order_late') $$,
  'alerts: a refunded paid_out_of_stock order no longer alerts');

-- ============================================================================================================
-- alerts: reservations the sweep should have released
-- ============================================================================================================
insert into fx (name, id)
select 'order_lapsed', (public.create_order(jsonb_build_array(jsonb_build_object('product_id', id, 'quantity', 3)),
                         'sumup', 'mon-lapsed', 'h5', '{}'::jsonb, null, now() - interval '1 hour') -> 'order' ->> 'id')::uuid
from fx where name = 'lapsed';
select cmp_ok(
  (select (detail ->> 'units')::int from admin.alerts() where alert = 'reservations_unswept'),
  '>=', 3,
  'alerts: a reservation lapsed 45 minutes ago and still active raises reservations_unswept with its units');
select is_empty(
  $$ select * from admin.alerts(now() - interval '44 minutes')
      where alert = 'reservations_unswept' and (detail ->> 'oldest_expires_at')::timestamptz >= now() - interval '45 minutes' $$,
  'alerts: one minute after it lapsed, within the 5-minute grace, the same reservation raises nothing');

select * from finish();
rollback;

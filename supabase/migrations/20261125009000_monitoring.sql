-- Monitoring: what an operator watches, and the alert rules the README states, as SQL an operator (or a
-- scheduled check) can run with the service_role key. Builds on the engine's admin views (admin_views
-- migration): admin.order_counts answers "orders by status", admin.stock_reconciliation the stock proof.
-- Everything here is read-only, lives in schema admin and is granted to service_role only.
-- Time is an argument (p_now) wherever "now" matters, so the rules are tested without waiting.

-- ============================================================================================================
-- reservations_expiring
-- ============================================================================================================
-- Why: stock that is about to come back on sale (or is about to be lost to a buyer who is still paying):
-- every active reservation whose expires_at falls within p_within after p_now, soonest first. Security definer
-- because reservations are private; it returns nothing but what the engine's own admin views show.
create function admin.reservations_expiring(
  p_within interval default interval '10 minutes',
  p_now timestamptz default now()
)
returns table (
  reservation_id bigint,
  order_id uuid,
  order_status text,
  payment_method text,
  sku text,
  location text,
  quantity integer,
  expires_at timestamptz,
  expires_in interval
)
language sql
stable
security definer
set search_path = ''
as $$
  select r.id, r.order_id, o.status, o.payment_method, p.sku, loc.code, r.quantity, r.expires_at,
         r.expires_at - p_now
  from private.open_reservations r
  join public.orders o on o.id = r.order_id
  join public.products p on p.id = r.product_id
  join private.locations loc on loc.id = r.location_id
  where r.expires_at > p_now
    and r.expires_at <= p_now + p_within
  order by r.expires_at, r.id
$$;

comment on function admin.reservations_expiring(interval, timestamptz) is
  'Active reservations that expire within p_within after p_now (default: the next 10 minutes), soonest first.';

-- Why: the same for a dashboard that can only select from a relation: the next 10 minutes from now.
create view admin.reservations_expiring_soon as
select * from admin.reservations_expiring();

comment on view admin.reservations_expiring_soon is 'Active reservations expiring in the next 10 minutes.';

-- ============================================================================================================
-- sweep_runs
-- ============================================================================================================
-- Why: the reservation sweep (pg_cron job calling public.sweep_reservations) is what returns lapsed stock to
-- sale and expires unpaid orders; its runs are in cron.job_run_details. pg_cron's row-level security shows a
-- role only the jobs it scheduled (username = current_user), so this reads them as its owner, the role that
-- applied the migrations and scheduled the job, and gives service_role the sweep's rows and nothing else.
-- The sweep is recognised by its command, not its name, so a renamed job is still watched.
create function admin.sweep_runs(p_since timestamptz default now() - interval '1 hour')
returns table (
  jobid bigint,
  jobname text,
  runid bigint,
  status text,
  return_message text,
  start_time timestamptz,
  end_time timestamptz,
  duration interval
)
language sql
stable
security definer
set search_path = ''
as $$
  select d.jobid, j.jobname, d.runid, d.status, d.return_message, d.start_time, d.end_time,
         d.end_time - d.start_time
  from cron.job_run_details d
  join cron.job j on j.jobid = d.jobid
  where j.command ~* '(expire|sweep)_reservations\('
    and d.start_time >= p_since
  order by d.start_time desc, d.runid desc
$$;

comment on function admin.sweep_runs(timestamptz) is
  'Runs of the reservation sweep (pg_cron jobs calling sweep_reservations or expire_reservations) since p_since, newest first.';

-- ============================================================================================================
-- sweep_status
-- ============================================================================================================
-- Why: one line per sweep job saying whether it is healthy. failing: its latest run failed, or a run failed
-- within p_window before p_now; stale: no run has started within p_window (or none ever), so lapsed
-- reservations pile up unswept. A run pg_cron could not even start (e.g. "connection failed") is logged with
-- no start_time: it counts as the latest run (runid order) and as a failure, never as a run that happened.
-- The README's alert rules read these flags with p_window = 5 minutes.
create function admin.sweep_status(
  p_now timestamptz default now(),
  p_window interval default interval '5 minutes'
)
returns table (
  jobid bigint,
  jobname text,
  schedule text,
  active boolean,
  last_started_at timestamptz,
  last_status text,
  last_message text,
  last_success_at timestamptz,
  last_failure_at timestamptz,
  runs_in_window integer,
  failures_in_window integer,
  stale boolean,
  failing boolean
)
language sql
stable
security definer
set search_path = ''
as $$
  select j.jobid, j.jobname, j.schedule, j.active,
         started.at, last_run.status, last_run.return_message,
         started.succeeded_at, started.failed_at,
         w.runs, w.failures,
         started.at is null or started.at <= p_now - p_window,
         coalesce(last_run.status = 'failed', false) or w.failures > 0
  from cron.job j
  left join lateral (
    -- the latest run pg_cron logged up to p_now; runs that never started (start_time null) included
    select d.status, d.return_message from cron.job_run_details d
    where d.jobid = j.jobid and (d.start_time is null or d.start_time <= p_now)
    order by d.runid desc limit 1
  ) last_run on true
  cross join lateral (
    select max(d.start_time) as at,
           max(d.start_time) filter (where d.status = 'succeeded') as succeeded_at,
           max(d.start_time) filter (where d.status = 'failed') as failed_at
    from cron.job_run_details d
    where d.jobid = j.jobid and d.start_time <= p_now
  ) started
  cross join lateral (
    select count(*)::integer as runs, (count(*) filter (where d.status = 'failed'))::integer as failures
    from cron.job_run_details d
    where d.jobid = j.jobid and d.start_time > p_now - p_window and d.start_time <= p_now
  ) w
  where j.command ~* '(expire|sweep)_reservations\('
  order by j.jobid
$$;

comment on function admin.sweep_status(timestamptz, interval) is
  'Health of each reservation sweep job: latest run, runs and failures within p_window, stale and failing flags.';

-- Why: the same, now, with the README's 5-minute window, for dashboards.
create view admin.sweep_health as
select * from admin.sweep_status();

comment on view admin.sweep_health is 'Health of the reservation sweep now (5-minute window).';

-- ============================================================================================================
-- reconciliation_differences
-- ============================================================================================================
-- Why: the stock proof, reduced to what needs a person: the rows of admin.stock_reconciliation where the
-- stored figures disagree with the ledger or with the active reservations, or whose next_expiry lies after an
-- active reservation's expiry (sales would not expire it). Empty is the only healthy answer.
create view admin.reconciliation_differences as
select r.*
from admin.stock_reconciliation r
where r.on_hand_difference <> 0
   or r.reserved_ledger_difference <> 0
   or r.reserved_difference <> 0
   or r.next_expiry_late;

comment on view admin.reconciliation_differences is
  'Stock rows whose stored figures differ from the ledger or the active reservations, or whose next_expiry is late; must be empty.';

-- ============================================================================================================
-- paid_out_of_stock_orders
-- ============================================================================================================
-- Why: money was taken but the goods were gone (a payment after the reservation lapsed and the stock was sold):
-- a person must refund, or restock and give the order its goods (public.allocate_paid_order, after which it is paid
-- and leaves this view). Each such order with what it bought and how much is still unrefunded; resolved =
-- refunded in full.
create view admin.paid_out_of_stock_orders as
select o.id as order_id,
       o.payment_method,
       o.provider_payment_ref,
       o.currency,
       o.total,
       o.refunded_amount,
       o.total - o.refunded_amount as unrefunded_amount,
       o.refunded_amount >= o.total as resolved,
       o.customer_email,
       o.customer_name,
       o.created_at,
       o.paid_at,
       (select jsonb_agg(jsonb_build_object('sku', i.sku, 'quantity', i.quantity) order by i.line_no)
        from public.order_items i where i.order_id = o.id) as items
from public.orders o
where o.status = 'paid_out_of_stock';

comment on view admin.paid_out_of_stock_orders is
  'Orders paid after their stock was gone; unresolved until refunded in full or given their stock (allocate_paid_order).';

-- ============================================================================================================
-- alerts
-- ============================================================================================================
-- Why: the README's alert rules in one place, so a scheduled check (or a person) asks one question: "is
-- anything wrong?" One row per firing alert; no rows means healthy. Rules:
--   reconciliation_difference  any row of admin.reconciliation_differences                 critical
--   sweep_missing              no active sweep job exists                                   critical
--   sweep_failed               the latest sweep run failed, or one failed within p_window   critical
--   sweep_stale                a sweep job has not started a run within p_window            critical
--   reservations_unswept       an active reservation lapsed more than p_window ago          warning
--   paid_out_of_stock          an order paid after its stock was gone, not yet refunded     critical
create function admin.alerts(
  p_now timestamptz default now(),
  p_window interval default interval '5 minutes'
)
returns table (alert text, severity text, subject text, detail jsonb, since timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select 'reconciliation_difference', 'critical', d.sku || '@' || d.location,
         jsonb_build_object('product_id', d.product_id, 'on_hand', d.on_hand, 'ledger_on_hand', d.ledger_on_hand,
                            'reserved', d.reserved, 'ledger_reserved', d.ledger_reserved,
                            'active_reserved', d.active_reserved, 'next_expiry', d.next_expiry,
                            'first_active_expiry', d.first_active_expiry),
         null::timestamptz
  from admin.reconciliation_differences d
  union all
  select 'sweep_missing', 'critical', 'expire_reservations',
         jsonb_build_object('hint', 'no active pg_cron job runs public.sweep_reservations() or public.expire_reservations()'), null
  where not exists (select 1 from admin.sweep_status(p_now, p_window) s where s.active)
  union all
  select 'sweep_failed', 'critical', coalesce(s.jobname, s.jobid::text),
         jsonb_build_object('jobid', s.jobid, 'failures_in_window', s.failures_in_window,
                            'last_status', s.last_status, 'last_message', s.last_message),
         s.last_failure_at
  from admin.sweep_status(p_now, p_window) s
  where s.active and s.failing
  union all
  select 'sweep_stale', 'critical', coalesce(s.jobname, s.jobid::text),
         jsonb_build_object('jobid', s.jobid, 'schedule', s.schedule, 'last_status', s.last_status),
         s.last_started_at
  from admin.sweep_status(p_now, p_window) s
  where s.active and s.stale
  union all
  select 'reservations_unswept', 'warning', count(*)::text || ' reservations',
         jsonb_build_object('units', sum(r.quantity), 'oldest_expires_at', min(r.expires_at)),
         min(r.expires_at)
  from private.open_reservations r
  where r.expires_at < p_now - p_window
  having count(*) > 0
  union all
  select 'paid_out_of_stock', 'critical', o.order_id::text,
         jsonb_build_object('payment_method', o.payment_method, 'provider_payment_ref', o.provider_payment_ref,
                            'unrefunded_amount', o.unrefunded_amount, 'currency', o.currency, 'items', o.items),
         o.paid_at
  from admin.paid_out_of_stock_orders o
  where not o.resolved
$$;

comment on function admin.alerts(timestamptz, interval) is
  'Firing alerts (reconciliation, sweep missing/failed/stale, unswept reservations, paid_out_of_stock); empty = healthy.';

-- Why: "is anything wrong right now?" for dashboards and uptime checks.
create view admin.active_alerts as
select * from admin.alerts();

comment on view admin.active_alerts is 'Alerts firing now; no rows means healthy.';

-- ============================================================================================================
-- Grants: operators (service_role) only
-- ============================================================================================================
-- Views read what their owner may read; functions are security definer. Nothing here is for anon or
-- authenticated, which also lack USAGE on schema admin.
revoke all on admin.reservations_expiring_soon, admin.sweep_health, admin.reconciliation_differences,
  admin.paid_out_of_stock_orders, admin.active_alerts from public, anon, authenticated;
grant select on admin.reservations_expiring_soon, admin.sweep_health, admin.reconciliation_differences,
  admin.paid_out_of_stock_orders, admin.active_alerts to service_role;

revoke all on function admin.reservations_expiring(interval, timestamptz), admin.sweep_runs(timestamptz),
  admin.sweep_status(timestamptz, interval), admin.alerts(timestamptz, interval) from public, anon, authenticated;
grant execute on function admin.reservations_expiring(interval, timestamptz), admin.sweep_runs(timestamptz),
  admin.sweep_status(timestamptz, interval), admin.alerts(timestamptz, interval) to service_role;

-- pg_cron: the sweep is scheduled every minute under a fixed name, old run details are pruned, and scheduling
-- by name is an upsert, so applying the cron migration twice leaves one job of each.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(8);

select is(
  (select format('%s | %s | %s | %s', schedule, command, database, active) from cron.job
   where jobname = 'stockhold-expire-reservations'),
  '* * * * * | call public.sweep_reservations() | postgres | t',
  'cron_sweep_registered: the reservation sweep runs every minute in the postgres database');
select is(
  (select count(*)::int from cron.job where command ilike '%sweep_reservations%'),
  1,
  'cron_sweep_once: exactly one job runs the sweep');
select is(
  (select format('%s | %s', schedule, command) from cron.job where jobname = 'stockhold-prune-cron-run-details'),
  $$17 3 * * * | delete from cron.job_run_details where end_time < now() - interval '7 days'$$,
  'cron_prune_registered: a daily job deletes pg_cron run details older than seven days');
select is(
  (select format('%s | %s', schedule, command) from cron.job where jobname = 'stockhold-prune-rate-limits'),
  $$*/10 * * * * | delete from private.rate_limits where resets_at < now() - interval '1 hour'$$,
  'cron_rate_limits_registered: a job drops rate-limit windows that ended over an hour ago');

-- applying the migration's statement again is an upsert by name
select jobid as sweep_job from cron.job where jobname = 'stockhold-expire-reservations' \gset
select cron.schedule('stockhold-expire-reservations', '* * * * *', 'call public.sweep_reservations()') as again \gset
select is(:again::bigint, :sweep_job::bigint, 'cron_schedule_upsert: scheduling the sweep again by name returns the same job');
select is(
  (select count(*)::int from cron.job
   where jobname in ('stockhold-expire-reservations', 'stockhold-prune-cron-run-details', 'stockhold-prune-rate-limits')),
  3,
  'cron_no_duplicates: after scheduling again there is still exactly one job of each name');

-- the jobs' commands run as written (rolled back with the test). The sweep job CALLs a procedure that commits
-- after each batch, which cannot run inside this test's transaction: what it runs per batch is tested instead
-- (the procedure itself under pg_cron: concurrency/sweep.test.ts, and npm test's pg-cron-sweep gate).
select lives_ok(
  $$select public.expire_reservations(now(), 1000, 1)$$,
  'cron_sweep_command_runs: one batch of the sweep job''s procedure runs');
select lives_ok(
  (select command from cron.job where jobname = 'stockhold-prune-cron-run-details'),
  'cron_prune_command_runs: the pruning job''s command runs');

select * from finish();
rollback;

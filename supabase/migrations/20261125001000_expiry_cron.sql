-- pg_cron schedules: the reservation sweep every minute, and the housekeeping that keeps pg_cron's own run log
-- and the rate-limit counters small. cron.schedule with a job name replaces the job of that name, so applying
-- this migration twice leaves exactly one job each.

-- Why: releases lapsed reservations and expires unpaid orders within a minute of their time (sales do not wait
-- for it: availability already treats lapsed reservations as free). Its runs appear in cron.job_run_details,
-- and the rows it writes carry actor 'cron' (pg_cron connects with application_name 'pg_cron').
-- It CALLs the procedure, which commits after every batch: a large backlog (after downtime, after a flash sale)
-- then locks each stock row for one batch, not for the whole sweep, so buyers are never held up by it.
select cron.schedule(
  'stockhold-expire-reservations',
  '* * * * *',
  'call public.sweep_reservations()'
);

-- Why: the sweep runs 1440 times a day; keep a week of its run details for diagnosis, no more.
select cron.schedule(
  'stockhold-prune-cron-run-details',
  '17 3 * * *',
  $$delete from cron.job_run_details where end_time < now() - interval '7 days'$$
);

-- Why: a rate-limit bucket whose window ended is worth nothing; drop it so the table holds only live windows.
select cron.schedule(
  'stockhold-prune-rate-limits',
  '*/10 * * * *',
  $$delete from private.rate_limits where resets_at < now() - interval '1 hour'$$
);

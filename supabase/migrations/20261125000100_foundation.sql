-- Foundation of the engine: the schemas, the default privileges every later migration relies on, and the
-- request-context readers (actor, correlation id) that the ledger and the audit trail stamp on every row.

-- ============================================================================================================
-- Default privileges
-- ============================================================================================================
-- Why: Postgres grants EXECUTE on every new function to PUBLIC, and Supabase (and scripts/sql/bootstrap.sql)
-- grants all on new public tables and functions to anon, authenticated and service_role. An engine function
-- that moves stock or money must never become callable by a browser by accident, so nothing is granted by
-- default; every object below is granted explicitly, right after it is defined.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;
alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;

-- ============================================================================================================
-- Schemas
-- ============================================================================================================
-- Why: stock, reservations, the ledger and the audit trail live where the API (PostgREST, `schemas =
-- ["public"]`) cannot see them; only the entry-point functions in public reach them, as their owner.
create schema if not exists private;
revoke all on schema private from public;
comment on schema private is
  'Engine internals (stock, reservations, ledger, audit, settings). Not exposed; reached only through public functions.';

-- Why: operators read reconciliation and timelines through views that only service_role may select.
create schema if not exists admin;
revoke all on schema admin from public;
grant usage on schema admin to service_role;
comment on schema admin is 'Read-only operator views (service_role only).';

-- ============================================================================================================
-- Request context
-- ============================================================================================================
-- Why: every ledger row and status change says who caused it. The edge functions set app.actor per
-- transaction. A pg_cron job is recorded as 'cron': pg_cron either connects with application_name 'pg_cron'
-- (the default) or runs the job in a background worker whose backend_type is 'pg_cron'
-- (cron.use_background_workers). Anything else (psql, a migration) is recorded by its database login, so no
-- row is ever anonymous. Callers that write many rows read it once per statement.
-- The backend type cannot change during a session, so it is looked up (pg_stat_activity builds a snapshot of
-- every backend: the most expensive step of a whole create_order when app.actor is unset) once per session and
-- remembered in the session setting stockhold.backend_is_pg_cron.
create function private.current_actor()
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_actor text := current_setting('app.actor', true);
  v_is_cron text;
begin
  if v_actor <> '' then
    return v_actor;
  end if;
  if current_setting('application_name', true) = 'pg_cron' then
    return 'cron';
  end if;
  v_is_cron := current_setting('stockhold.backend_is_pg_cron', true);
  if v_is_cron is null or v_is_cron = '' then
    v_is_cron := case when exists (select 1 from pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a
                                   where a.backend_type = 'pg_cron') then 'yes' else 'no' end;
    perform pg_catalog.set_config('stockhold.backend_is_pg_cron', v_is_cron, false);
  end if;
  return case when v_is_cron = 'yes' then 'cron' else 'db:' || session_user end;
end
$$;

-- Why: one correlation id ties a request's log lines to the ledger and status rows it wrote.
-- PL/pgSQL, like the readers below: a SQL function with SET search_path is parsed and planned again on every
-- call (create_order and the sweep call these on every order).
create function private.correlation_id()
returns text
language plpgsql
stable
set search_path = ''
as $$
begin
  return nullif(pg_catalog.current_setting('app.correlation_id', true), '');
end
$$;

-- Why: statement-level triggers cannot take arguments from the statement that fired them, so the functions
-- that change an order's status put the reason in a transaction-local setting just before the UPDATE.
create function private.status_reason()
returns text
language plpgsql
stable
set search_path = ''
as $$
begin
  return nullif(pg_catalog.current_setting('stockhold.status_reason', true), '');
end
$$;

-- Why: a status change is only ever requested with its reason; this keeps the set/clear pair in one place.
create function private.set_status_reason(p_reason text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform set_config('stockhold.status_reason', coalesce(p_reason, ''), true);
end
$$;

-- Why: early lock release. A stock row's lock is held until its transaction ends, and a synchronous commit ends
-- only after its WAL flush; so every buyer of one hot product would queue on the disk, one flush each. The edge
-- functions therefore commit create_order (and payments and cancels) with synchronous_commit off (the lock goes as
-- soon as the commit record is written) and then call this, in a transaction of its own, before they answer. WAL
-- is flushed in order, and this transaction's commit waits for the flush up to its own commit record: when it
-- returns, every earlier commit of the cluster is on disk. A crash in between can only lose a commit nobody was
-- told about. Run it in its own transaction with synchronous_commit on (the default), or it waits for nothing.
-- A commit waits for its flush only if the transaction has an xid and wrote WAL (an xid alone does not do it).
-- setval on a sequence of its own does both: it takes an xid and is logged on every call, it touches no table row
-- (nothing to lock, nothing to vacuum), and logical decoding (Realtime, replication) does not see it, as it would
-- a logical message.
-- Security definer: the sequence is private.
create sequence private.wait_for_flush_seq;
revoke all on sequence private.wait_for_flush_seq from public, anon, authenticated, service_role;

create function public.wait_for_flush()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  perform pg_catalog.setval('private.wait_for_flush_seq'::regclass, 1);
end
$$;

revoke all on function public.wait_for_flush() from public, anon, authenticated;
grant execute on function public.wait_for_flush() to service_role;

-- Why: append-only tables (the stock ledger, the status history) refuse UPDATE, DELETE and TRUNCATE
-- for every role, the owner and superusers included, so history cannot be rewritten. Other tables refuse some
-- changes the same way with their own words: the trigger's arguments, what the rows are and what to do instead.
create function private.refuse_change()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception using
    errcode = 'restrict_violation',
    message = format('%s.%s %s: %s is refused', tg_table_schema, tg_table_name,
                     coalesce(tg_argv[0], 'is append-only'), tg_op),
    hint = coalesce(tg_argv[1],
                    'Write a compensating row instead (for stock: an adjust movement through public.adjust_stock).');
end
$$;

-- Expiry: the sweep that gives back the stock of orders nobody paid for in time. pg_cron runs it every minute
-- (20261125001000_expiry_cron.sql); sales never wait for it, because availability and create_order already treat
-- a reservation past expires_at as free.

-- ============================================================================================================
-- expire_batch
-- ============================================================================================================
-- Why: one batch of the sweep. Takes the next p_batch_size due reservations in (expires_at, id) order after the
-- keyset position (p_after_at, p_after_id), reading the expiry index of open reservations without locking,
-- then locks in the engine's order, never waiting for anyone:
--   1. their stock rows through lock_stock with SKIP LOCKED: a row a buyer holds is left to that buyer, who
--      expires the lapsed reservations on it itself (exact expiry). The sweep locks a reservation only once it
--      holds the reservation's stock row, so it never keeps a lapsed unit from a buyer who holds that row;
--   2. the reservations on the rows it holds, FOR NO KEY UPDATE SKIP LOCKED (one a payment or a cancel holds is
--      theirs), re-checked as still open and due;
--   3. their orders, SKIP LOCKED, expired once they hold nothing.
-- Returns how many it released, how many it looked at, and the keyset position to continue from.
-- SKIP LOCKED does not quite mean "never waits": when the row's last updater commits while PostgreSQL is looking
-- at it, the lock follows the update chain and waits, unconditionally, for whoever locked the newer version
-- (heap_lock_updated_tuple). A payment that holds that version and queues for a stock row this sweep holds closes
-- a cycle, and its client got 40P01 (seen once in the lock-order test). So steps 1-3 run in a block of their own,
-- under expire_reservations' short lock_timeout: a batch that would wait gives way instead. It is rolled back
-- whole, its locks with it, and its reservations stay due for the next batch or run (released 0).
-- Generic plans (plan_cache_mode, for this call and the close_reservations it makes): every statement here is
-- driven by the batch's arrays of ids. A custom plan sees the real array length (thousands) and picks sequential
-- scans and hash joins over the whole reservations and orders tables, so a batch cost as much as the tables were
-- big (the 100k sweep: ~10 s); the generic plan probes the primary keys and open_reservations_order_idx once per id,
-- so a batch costs what it releases (~2x faster on the bench data, and it no longer grows with history).
create function private.expire_batch(
  p_now timestamptz,
  p_batch_size integer,
  p_after_at timestamptz,
  p_after_id bigint,
  out released integer,
  out fetched integer,
  out last_at timestamptz,
  out last_id bigint
)
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  v_ids bigint[];
  v_product_ids uuid[];
  v_location_ids smallint[];
  v_on_held bigint[];
  v_close bigint[];
  v_order_ids uuid[];
begin
  released := 0;

  -- (the arrays come from one aggregation pass, so their elements correspond whatever their order; the keyset
  -- position is the row with nothing after it in the batch's order, which the index scan already delivers. With an
  -- ordered aggregate per array the batch was sorted four times: a 10k sweep 1.045 G -> 1.011 G instructions.)
  select array_agg(c.id), array_agg(c.product_id), array_agg(c.location_id), count(*),
         max(c.expires_at) filter (where c.is_last), max(c.id) filter (where c.is_last)
  into v_ids, v_product_ids, v_location_ids, fetched, last_at, last_id
  from (
    select b.*, lead(b.id) over (order by b.expires_at, b.id) is null as is_last
    from (
      select r.id, r.expires_at, r.product_id, r.location_id
      from private.open_reservations r
      where r.expires_at <= p_now
        and (r.expires_at, r.id) > (p_after_at, p_after_id)
      order by r.expires_at, r.id
      limit p_batch_size
    ) b
  ) c;

  if fetched = 0 then
    return;
  end if;

  begin
    -- 1. the stock rows of the batch that nobody else holds
    select array_agg(b.id)
    into v_on_held
    from unnest(v_ids, v_product_ids, v_location_ids) as b (id, product_id, location_id)
    join private.lock_stock(v_product_ids, v_location_ids, true) h
      on h.product_id = b.product_id and h.location_id = b.location_id;

    -- 2. the reservations on those rows still open. Locking statements keep to cheap conditions: a row changed by
    -- a concurrent transaction is re-checked (EvalPlanQual) with every condition of the statement (one closed
    -- meanwhile is gone).
    select array_agg(r.id), array_agg(distinct r.order_id)
    into v_close, v_order_ids
    from (
      select r.id, r.order_id
      from private.open_reservations r
      where r.id = any (v_on_held)
        and r.expires_at <= p_now
      for no key update of r skip locked
    ) r;

    released := private.close_reservations(v_close, 'expired');

    -- 3. their orders, now holding nothing, expire with them (locked first, then checked; an order being paid or
    -- cancelled right now is skipped)
    select array_agg(e.id)
    into v_order_ids
    from (
      select e.id
      from public.orders e
      where e.id = any (v_order_ids)
        and e.status in ('awaiting_instore_payment', 'awaiting_payment')
      for no key update skip locked
    ) e;

    update public.orders o
    set status = 'expired', expired_at = p_now
    where o.id = any (v_order_ids)
      and o.reservation_expires_at <= p_now
      and not exists (select 1 from private.open_reservations r where r.order_id = o.id);
  exception when lock_not_available or deadlock_detected then
    released := 0;
    raise log 'stockhold sweep: a batch of % reservations gave way to a lock holder and stays due (%)',
      fetched, sqlerrm;
  end;
end
$$;

-- ============================================================================================================
-- expire_emptied_orders
-- ============================================================================================================
-- Why: unpaid orders whose time is up and that hold nothing although no sweep batch released them: a
-- create_order expired their reservations on the rows it locked. Keyset walk over the partial index of awaiting
-- orders, p_batch_size at a time; an order being paid or cancelled right now (locked) is skipped. Stops after
-- p_max_batches batches (null: when done). Returns how many orders it expired.
create function private.expire_emptied_orders(p_now timestamptz, p_batch_size integer, p_max_batches integer)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_after_at timestamptz := '-infinity'::timestamptz;
  v_after_id uuid := '00000000-0000-0000-0000-000000000000'::uuid;
  v_order_ids uuid[];
  v_locked uuid[];
  v_expiries timestamptz[];
  v_fetched integer;
  v_updated integer;
  v_expired integer := 0;
  v_batches integer := 0;
begin
  loop
    -- candidates, read without locks (the full condition, including the anti-join, is cheap here)
    select array_agg(e.id order by e.reservation_expires_at, e.id),
           array_agg(e.reservation_expires_at order by e.reservation_expires_at, e.id),
           count(*)
    into v_order_ids, v_expiries, v_fetched
    from (
      select o.id, o.reservation_expires_at
      from public.orders o
      where o.status in ('awaiting_instore_payment', 'awaiting_payment')
        and o.reservation_expires_at <= p_now
        and (o.reservation_expires_at, o.id) > (v_after_at, v_after_id)
        and not exists (select 1 from private.open_reservations r where r.order_id = o.id)
      order by o.reservation_expires_at, o.id
      limit p_batch_size
    ) e;

    exit when v_fetched = 0;

    -- then lock with cheap conditions only (a concurrently changed row is re-checked with all of them), skip
    -- what a payment or a cancel holds, and re-check before the update
    select array_agg(e.id) into v_locked
    from (
      select o.id from public.orders o
      where o.id = any (v_order_ids) and o.status in ('awaiting_instore_payment', 'awaiting_payment')
      for no key update skip locked
    ) e;

    update public.orders o
    set status = 'expired', expired_at = p_now
    where o.id = any (v_locked)
      and not exists (select 1 from private.open_reservations r where r.order_id = o.id);
    get diagnostics v_updated = row_count;
    v_expired := v_expired + v_updated;
    v_batches := v_batches + 1;

    exit when v_fetched < p_batch_size or v_batches >= coalesce(p_max_batches, v_batches + 1);
    v_after_at := v_expiries[v_fetched];
    v_after_id := v_order_ids[v_fetched];
  end loop;

  return v_expired;
end
$$;

-- ============================================================================================================
-- expire_reservations
-- ============================================================================================================
-- Why: releases the active reservations whose expires_at has passed (at p_now; tests pass the clock, never
-- sleep), writes their 'expire' ledger rows, lowers stock_levels.reserved, and expires the unpaid orders left
-- holding nothing. Returns how many reservations it released.
-- It walks the expiry index of open reservations in expiry order, p_batch_size rows per batch (expire_batch),
-- so its cost follows the rows it releases, not the size of the table, and it never waits for a lock (SKIP
-- LOCKED throughout). p_max_batches (null: until nothing is due) bounds one call: it is ONE transaction, and
-- every stock row it changed stays locked until it returns, so a caller that must not hold buyers up for long
-- takes a few batches per call, or uses the procedure sweep_reservations, which commits after every batch.
-- lock_timeout 50ms: where SKIP LOCKED would still wait (expire_batch), the sweep gives way instead of holding up
-- a buyer or a payment. A client's own deadlock check runs only after it has waited deadlock_timeout (1 s) on
-- one lock, so while the sweep's transactions are shorter than that (sweep_reservations: one batch, ~70 ms) a
-- cycle through the sweep is always broken on the sweep's side. (Each batch that writes is a subtransaction: a
-- call of more than 64 such batches overflows the backend's cache of subtransaction ids, which slows every other
-- session's snapshots until it commits. sweep_reservations makes one per transaction.)
-- Rows written by the pg_cron job carry actor 'cron'.
create function public.expire_reservations(
  p_now timestamptz default now(),
  p_batch_size integer default 5000,
  p_max_batches integer default null
)
returns integer
language plpgsql
security definer
set search_path = ''
set lock_timeout = '50ms'
as $$
declare
  v_batch record;
  v_after_at timestamptz := '-infinity'::timestamptz;
  v_after_id bigint := 0;
  v_released integer := 0;
  v_batches integer := 0;
begin
  if p_now is null or p_batch_size is null or p_batch_size < 1 or p_batch_size > 100000
     or p_max_batches < 1 then
    raise exception using errcode = 'SH400',
      message = 'invalid_request: p_now is required, p_batch_size must be 1..100000 and p_max_batches at least 1',
      detail = jsonb_build_object('reason', 'bad sweep arguments')::text;
  end if;

  perform private.set_status_reason('reservation expired');

  loop
    select * into v_batch from private.expire_batch(p_now, p_batch_size, v_after_at, v_after_id);
    v_released := v_released + v_batch.released;
    v_batches := v_batches + 1;
    exit when v_batch.fetched < p_batch_size or v_batches >= coalesce(p_max_batches, v_batches + 1);
    v_after_at := v_batch.last_at;
    v_after_id := v_batch.last_id;
  end loop;

  -- Orders emptied by buyers' exact expiry, once the due reservations are all walked: while batches remain (a
  -- call cut short by p_max_batches, as sweep_reservations makes them), the orders still holding lapsed units
  -- would be re-read by every call, which made a large backlog's sweep grow faster than its size.
  if v_batch.fetched < p_batch_size then
    begin
      perform private.expire_emptied_orders(p_now, p_batch_size, p_max_batches);
    exception when lock_not_available or deadlock_detected then
      -- (it locks orders while this transaction holds the last batch's stock rows: it gives way like a batch)
      raise log 'stockhold sweep: expiring emptied orders gave way to a lock holder (%)', sqlerrm;
    end;
  end if;
  perform private.set_status_reason(null);

  return v_released;
end
$$;

revoke all on function public.expire_reservations(timestamptz, integer, integer) from public, anon, authenticated;
grant execute on function public.expire_reservations(timestamptz, integer, integer) to service_role;

-- ============================================================================================================
-- sweep_reservations
-- ============================================================================================================
-- Why: the sweep for a large backlog (after downtime, after a flash sale) without holding buyers up: one batch
-- per transaction, COMMIT after each, so a stock row the sweep touched is locked for one batch, not for the whole
-- sweep. Loops until a batch releases nothing. A procedure, because only a procedure can commit; for the same
-- reason it cannot carry SET search_path or SECURITY DEFINER: it runs as its caller (service_role, or the pg_cron
-- job's owner), uses only schema-qualified names, and does its work through expire_reservations, which is both.
-- CALL it at top level, outside an explicit transaction block.
-- Batches of 5000 (~70 ms each on the bench machine): a buyer whose stock row is in a batch waits at most that
-- long, and the per-batch work (a stock row is locked and updated once per batch however many of its reservations
-- the batch releases, one commit) is spread over five times as many rows as with 1000 (100k: ~2.3 s -> ~1.7 s).
create procedure public.sweep_reservations(p_batch_size integer default 5000)
language plpgsql
as $$
declare
  v_released integer;
begin
  loop
    v_released := public.expire_reservations(pg_catalog.now(), p_batch_size, 1);
    commit;
    exit when v_released = 0;
  end loop;
end
$$;

revoke all on procedure public.sweep_reservations(integer) from public, anon, authenticated;
grant execute on procedure public.sweep_reservations(integer) to service_role;

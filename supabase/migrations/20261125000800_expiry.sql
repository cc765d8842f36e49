-- Expiry: the sweep that gives back the stock of orders nobody paid for in time. pg_cron runs it every minute
-- (20261125001000_expiry_cron.sql); sales never wait for it, because availability and create_order already treat
-- a reservation past expires_at as free.

-- ============================================================================================================
-- expire_reservations
-- ============================================================================================================
-- Why: releases every active reservation whose expires_at has passed, writes its 'expire' ledger row, lowers
-- stock_levels.reserved, and marks the unpaid orders left with nothing reserved as expired. Returns how many
-- reservations it released.
-- How it stays out of the buyers' way:
--   * it walks the partial index of active reservations in expiry order, p_batch_size rows at a time, so each
--     statement's work is bounded and its cost follows the rows released, not the size of the table;
--   * FOR UPDATE SKIP LOCKED: a reservation that a payment, a cancel or a second sweep holds is left to them;
--   * the stock rows of a batch are locked through lock_stock, in the engine's fixed order, skipping rows a
--     buyer holds (that buyer expires those reservations itself), so the sweep never waits for a buyer;
--   * orders are marked with SKIP LOCKED too: an order being paid right now is the payment's to decide.
-- p_now is the clock (tests pass it; never sleep). Rows written by the pg_cron job carry actor 'cron'.
create function public.expire_reservations(p_now timestamptz default now(), p_batch_size integer default 5000)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids bigint[];
  v_expiries timestamptz[];
  v_order_ids uuid[];
  v_close bigint[];
  v_product_ids uuid[];
  v_location_ids smallint[];
  v_after_at timestamptz := '-infinity'::timestamptz;
  v_after_id bigint := 0;
  v_after_order uuid := '00000000-0000-0000-0000-000000000000'::uuid;
  v_released integer := 0;
  v_batch integer;
begin
  if p_now is null or p_batch_size is null or p_batch_size < 1 or p_batch_size > 100000 then
    raise exception using errcode = 'SH400', message = 'invalid_request: p_now is required and p_batch_size must be 1..100000',
      detail = jsonb_build_object('reason', 'bad sweep arguments')::text;
  end if;

  perform private.set_status_reason('reservation expired');

  -- 1. reservations, batch by batch. Keyset on (expires_at, id): a batch starts where the last one ended, so
  -- it never re-reads the index entries of rows this transaction has just closed (they stay in the partial
  -- index until vacuum), and rows skipped as busy are not fetched again. The stock rows are taken with SKIP
  -- LOCKED: from the second batch on, the sweep already holds stock rows, and waiting for another one out of
  -- order could deadlock with a buyer. Reservations on a row a buyer holds are left to that buyer, who expires
  -- them itself, or to the next sweep.
  loop
    select array_agg(c.id order by c.expires_at, c.id),
           array_agg(c.expires_at order by c.expires_at, c.id),
           array_agg(c.product_id order by c.expires_at, c.id),
           array_agg(c.location_id order by c.expires_at, c.id),
           array_agg(distinct c.order_id),
           count(*)
    into v_ids, v_expiries, v_product_ids, v_location_ids, v_order_ids, v_batch
    from (
      select r.id, r.expires_at, r.product_id, r.location_id, r.order_id
      from private.reservations r
      where r.status = 'active'
        and r.expires_at <= p_now
        and (r.expires_at, r.id) > (v_after_at, v_after_id)
      order by r.expires_at, r.id
      limit p_batch_size
      for no key update skip locked
    ) c;

    exit when v_batch = 0;

    select array_agg(b.id)
    into v_close
    from unnest(v_ids, v_product_ids, v_location_ids) as b (id, product_id, location_id)
    join private.lock_stock(
           array(select distinct u from unnest(v_product_ids) u),
           array(select distinct u from unnest(v_location_ids) u),
           true) h
      on h.product_id = b.product_id and h.location_id = b.location_id;

    v_released := v_released + private.close_reservations(v_close, 'expired', p_now);

    -- their orders, now holding nothing, expire with them (those being paid or cancelled right now are skipped)
    -- (two statements: an IN (subquery) UPDATE is planned as a scan of all orders)
    select array_agg(e.id)
    into v_order_ids
    from (
      select e.id
      from public.orders e
      where e.id = any (v_order_ids)
        and e.status in ('awaiting_instore_payment', 'awaiting_payment')
        and e.reservation_expires_at <= p_now
        and not exists (select 1 from private.reservations r where r.order_id = e.id and r.status = 'active')
      for no key update skip locked
    ) e;

    update public.orders o
    set status = 'expired', expired_at = p_now
    where o.id = any (v_order_ids);

    exit when v_batch < p_batch_size;
    v_after_at := v_expiries[v_batch];
    v_after_id := v_ids[v_batch];
  end loop;

  -- 2. unpaid orders whose time is up and that hold nothing any more although no batch above released them:
  -- create_order expired their reservations on the rows it locked. Keyset walk over the partial index of
  -- awaiting orders; an order being paid or cancelled right now (locked) is skipped.
  v_after_at := '-infinity'::timestamptz;
  loop
    select array_agg(e.id order by e.reservation_expires_at, e.id),
           array_agg(e.reservation_expires_at order by e.reservation_expires_at, e.id),
           count(*)
    into v_order_ids, v_expiries, v_batch
    from (
      select o.id, o.reservation_expires_at
      from public.orders o
      where o.status in ('awaiting_instore_payment', 'awaiting_payment')
        and o.reservation_expires_at <= p_now
        and (o.reservation_expires_at, o.id) > (v_after_at, v_after_order)
        and not exists (select 1 from private.reservations r where r.order_id = o.id and r.status = 'active')
      order by o.reservation_expires_at, o.id
      limit p_batch_size
      for no key update skip locked
    ) e;

    exit when v_batch = 0;

    update public.orders o
    set status = 'expired', expired_at = p_now
    where o.id = any (v_order_ids);

    exit when v_batch < p_batch_size;
    v_after_at := v_expiries[v_batch];
    v_after_order := v_order_ids[v_batch];
  end loop;
  perform private.set_status_reason(null);

  return v_released;
end
$$;

revoke all on function public.expire_reservations(timestamptz, integer) from public, anon, authenticated;
grant execute on function public.expire_reservations(timestamptz, integer) to service_role;

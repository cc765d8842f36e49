-- Reservations: stock held back for an unpaid order until it is paid, cancelled or lapses. The settings that
-- say how long, the helpers that open and close reservations (always with their ledger rows), and the entry
-- points that create and cancel orders.

-- ============================================================================================================
-- settings
-- ============================================================================================================
-- Why: how long an unpaid order holds its stock, per payment method. In store (SumUp) the customer stands at
-- the till: 15 minutes. Online (Stripe Checkout) the session must live at least 30 minutes (Stripe's minimum),
-- and the reservation must outlive it, or a payment completed at the session's last second would find its
-- stock gone: hence >= 31 minutes, 35 by default.
create table private.settings (
  payment_method public.payment_method primary key,
  reservation_ttl interval not null,
  updated_at timestamptz not null default now(),
  constraint settings_ttl_range check (reservation_ttl > interval '0' and reservation_ttl <= interval '1 day'),
  constraint settings_stripe_ttl_outlives_checkout
    check (payment_method <> 'stripe' or reservation_ttl >= interval '31 minutes')
);
comment on table private.settings is
  'Reservation TTL per payment method (stripe >= 31 min: a Checkout Session lives >= 30 min).';

alter table private.settings enable row level security;
revoke all on private.settings from public, anon, authenticated, service_role;

insert into private.settings (payment_method, reservation_ttl) values
  ('sumup', interval '15 minutes'),
  ('stripe', interval '35 minutes');

-- ============================================================================================================
-- reservations
-- ============================================================================================================
-- Why: the units an unpaid order holds at one location, while it holds them: counted in stock_levels.reserved.
-- Closing one (consumed by payment, released by cancel, expired by time) deletes it here and writes its ledger row
-- (fulfil, release or expire), which gives the units back or turns them into a deduction; its 'reserve' row and
-- that closing row are its whole story (private.reservations shows every reservation, open and closed). Closed
-- rows are not kept here because they cost the sweep a fifth of its work: an UPDATE to a closed status could not
-- be HOT (the status was in the indexes' predicates), so every close wrote a new row version and a new primary-key
-- entry; a DELETE writes neither (callgrind, one sweep batch of 5000: 666 M -> 547 M instructions; a 100k sweep's WAL
-- 94-98 MB -> 66-72 MB).
-- This table also stays the size of what is held now, not of all history. All open reservations of an order share
-- its reservation_expires_at.
create table private.open_reservations (
  id bigint generated always as identity primary key,
  -- (no foreign key: orders are never deleted nor re-keyed (orders_keep_rows), and the check, one query per
  -- reservation, cost every order line ~33 k instructions, 1.5 % of a one-line create_order; the checker's
  -- references_exist proves the rule)
  order_id uuid not null,
  product_id uuid not null,
  location_id smallint not null,
  -- (part or all of one order line's units)
  quantity public.order_quantity not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now()
  -- (product_id, location_id) names a stock level, without a foreign key: stock levels are never deleted nor
  -- re-keyed (keep_referenced_rows), and the check would lock the hot stock row of every order a second time
);
comment on table private.open_reservations is
  'Stock held for an unpaid order at one location; deleted when consumed (paid), released (cancelled) or expired.';

-- Why: the sweep walks open reservations in expiry order; its cost follows the rows it releases.
create index open_reservations_expiry_idx on private.open_reservations (expires_at, id);
-- Why: create_order releases lapsed reservations of exactly the products it locks, and list_products counts
-- them as free.
create index open_reservations_product_idx on private.open_reservations (product_id, expires_at);
-- Why: payment, cancellation and the sweep find an order's open reservations.
create index open_reservations_order_idx on private.open_reservations (order_id);

alter table private.open_reservations enable row level security;
revoke all on private.open_reservations from public, anon, authenticated, service_role;

-- Why: a reservation is opened (INSERT) and closed (DELETE), never changed, and the engine relies on it. Buyers
-- (exact expiry) and the sweep lock other orders' reservations with SKIP LOCKED, and SKIP LOCKED can still wait
-- when it meets a row whose update has just committed: it follows the update chain and waits for whoever locked
-- the newer version (see private.expire_batch). A row that is never updated has no such chain, so a buyer holding
-- stock rows never waits here. Per statement: the engine never updates the table, so it costs nothing.
create trigger open_reservations_never_updated
  before update on private.open_reservations
  for each statement execute function private.refuse_change(
    'rows are never updated',
    'Close the reservation through the engine (cancel_order, mark_paid, expire_reservations) and open another.');

-- Why: every reservation, open or closed, with its outcome, for a person (or a test) reading what happened to an
-- order's stock: open ones from open_reservations, closed ones from their two ledger rows ('reserve', then
-- fulfil / release / expire). The engine never reads it. A closed reservation's expires_at is its order's
-- reservation_expires_at, its closed_at the time its closing ledger row was written.
create view private.reservations as
select r.id, r.order_id, r.product_id, r.location_id, r.quantity::integer as quantity,
       'active'::text as status, r.expires_at, r.created_at, null::timestamptz as closed_at
from private.open_reservations r
union all
select o.reservation_id, o.order_id, o.product_id, o.location_id, o.delta_reserved,
       case c.reason when 'fulfil' then 'consumed' when 'release' then 'released' else 'expired' end,
       ord.reservation_expires_at, o.created_at, c.created_at
from private.stock_movements o
join private.stock_movements c on c.reservation_id = o.reservation_id and c.reason <> 'reserve'
join public.orders ord on ord.id = o.order_id
where o.reason = 'reserve';
comment on view private.reservations is
  'Every reservation, open (status active) or closed (consumed, released, expired, from the ledger); read-only.';

revoke all on private.reservations from public, anon, authenticated, service_role;

-- ============================================================================================================
-- close_reservations
-- ============================================================================================================
-- Why: the single way a reservation ends. In one statement it deletes the ones among p_ids still open, writes
-- one ledger row each (consumed -> fulfil, which also deducts on_hand; released -> release; expired -> expire)
-- and moves the cached stock levels by the same amounts. The caller holds the reservation rows and has locked
-- the stock rows with lock_stock. A second close of the same reservation finds nothing to delete, and the ledger's
-- unique key would refuse its second closing row anyway.
-- Returns how many reservations it closed.
create function private.close_reservations(p_ids bigint[], p_to text)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_reason text := case p_to when 'consumed' then 'fulfil' when 'released' then 'release' when 'expired' then 'expire' end;
  -- read once, not once per ledger row through the column defaults (the sweep closes thousands per call)
  v_actor text := private.current_actor();
  v_correlation_id text := private.correlation_id();
  v_count integer;
begin
  if v_reason is null then
    raise exception using errcode = 'SH400', message = format('cannot close a reservation as %L', p_to),
      detail = jsonb_build_object('reason', 'bad reservation status')::text;
  end if;
  if p_ids is null or cardinality(p_ids) = 0 then
    return 0;
  end if;

  with closed as (
    delete from private.open_reservations r
    where r.id = any (p_ids)
    returning r.id, r.order_id, r.product_id, r.location_id, r.quantity
  ), moved as (
    insert into private.stock_movements
      (product_id, location_id, delta_on_hand, delta_reserved, reason, order_id, reservation_id, actor, correlation_id)
    select c.product_id, c.location_id,
           case when p_to = 'consumed' then -c.quantity else 0 end,
           -c.quantity, v_reason, c.order_id, c.id, v_actor, v_correlation_id
    from closed c
  ), per_level as (
    select c.product_id, c.location_id, sum(c.quantity)::integer as quantity
    from closed c
    group by c.product_id, c.location_id
  ), levels as (
    update private.stock_levels s
    set reserved = s.reserved - l.quantity,
        on_hand = s.on_hand - case when p_to = 'consumed' then l.quantity else 0 end,
        updated_at = now()
    from per_level l
    where s.product_id = l.product_id and s.location_id = l.location_id
  )
  select count(*) into v_count from closed;

  return v_count;
end
$$;

-- ============================================================================================================
-- expire_lapsed_on
-- ============================================================================================================
-- Why: exact expiry without waiting for the sweep. A rule that holds stock rows expires the active reservations on
-- them whose time has passed, so their units are free for this sale. With p_location_ids null the caller has locked
-- every stock row of p_product_ids (lock_stock; the locked path, payments, adjustments) and the products are
-- looked at whole; otherwise exactly the rows (p_product_ids[i], p_location_ids[i]), which the caller holds (the
-- fast path, which has just updated them).
-- Only rows whose next_expiry has come are looked at (on the others nothing can have lapsed), and only from their
-- lowest next_expiry on, past the dead index entries of everything closed before it. Their next_expiry is then
-- raised to the earliest expiry still active on them (the caller holds them, so no reservation can open on them
-- meanwhile; one opened by a create_order still waiting for a row lowers it again in its own UPDATE), so the sales
-- after this one take the fast path again.
-- SKIP LOCKED: a lapsed reservation held by someone else (the sweep, a payment) is theirs to close; waiting
-- for it while holding stock rows could deadlock (and reservations are never updated, so it never waits: see
-- open_reservations_never_updated). p_except_order keeps the caller's own reservations.
create function private.expire_lapsed_on(
  p_product_ids uuid[],
  p_now timestamptz,
  p_except_order uuid default null,
  p_location_ids smallint[] default null
)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_due uuid[];
  v_locations smallint[];
  v_floors timestamptz[];
  v_ids bigint[];
  v_closed integer;
begin
  -- what is due: each product with a row whose bound has come, with its rows' lowest bound (location null: all
  -- of its rows), or each given row whose bound has come, with its own
  select array_agg(d.product_id), array_agg(d.location_id), array_agg(d.floor)
  into v_due, v_locations, v_floors
  from (
    select p.id as product_id, null::smallint as location_id,
           (select min(s.next_expiry) from private.stock_levels s where s.product_id = p.id) as floor
    from unnest(p_product_ids) as p (id)
    where p_location_ids is null
    union all
    select h.product_id, h.location_id, s.next_expiry
    from unnest(p_product_ids, p_location_ids) as h (product_id, location_id)
    cross join lateral (
      select s.next_expiry from private.stock_levels s
      where s.product_id = h.product_id and s.location_id = h.location_id
      offset 0 -- (one probe per row, whatever the catalogue's size: see create_order's check for lapsed reservations)
    ) s
    where p_location_ids is not null
  ) d
  where d.floor <= p_now;
  if v_due is null then
    return 0;
  end if;

  -- (one product per probe, and an equality on it: only then do both bounds on expires_at end the scan of
  -- open_reservations_product_idx, at the bound and at p_now; with product_id = any (...) instead, once the
  -- statistics said one product held most reservations, the plan read every lapsed reservation of every product
  -- through open_reservations_expiry_idx)
  select array_agg(r.id) into v_ids
  from unnest(v_due, v_locations, v_floors) as d (product_id, location_id, floor)
  cross join lateral (
    select r.id
    from private.open_reservations r
    where r.product_id = d.product_id
      and r.expires_at >= d.floor and r.expires_at <= p_now
      and (d.location_id is null or r.location_id = d.location_id)
      and (p_except_order is null or r.order_id <> p_except_order)
    for no key update of r skip locked
  ) r;

  v_closed := private.close_reservations(v_ids, 'expired');

  -- the earliest expiry still active on each (its own lapsed ones skipped above included), read through
  -- open_reservations_product_idx in its own order, LIMIT 1 ending the scan. The product is a range of one value
  -- (product_id >= x and product_id <= x), not an equality: once the statistics said one product held most
  -- reservations (a flash sale), a cached plan for "the earliest of product x" walked open_reservations_expiry_idx
  -- in expiry order filtering on the product (~50 ms an order on the bench). The range is neither folded into a
  -- constant nor estimated as all rows, and (product_id, expires_at) is the product index's own order, which no
  -- other path gives without sorting.
  update private.stock_levels s
  set next_expiry = coalesce(e.first_expiry, 'infinity')
  from unnest(v_due, v_locations, v_floors) as d (product_id, location_id, floor)
  left join lateral (
    select r.expires_at as first_expiry
    from private.open_reservations r
    where r.product_id >= d.product_id and r.product_id <= d.product_id
      and r.expires_at >= d.floor and (d.location_id is null or r.location_id = d.location_id)
    order by r.product_id, r.expires_at
    limit 1
  ) e on true
  where s.product_id = d.product_id and (d.location_id is null or s.location_id = d.location_id);

  return v_closed;
end
$$;

-- ============================================================================================================
-- allocation
-- ============================================================================================================
-- Why: the one statement of the allocation rule. Each line is drawn from its product's locations in the channel's
-- priority order (in store, sumup: shop first; online, stripe: warehouse first), as much as each holds free
-- (on_hand - reserved), until the line is covered. A line that cannot be covered yields less than it asked for;
-- the callers compare. It reads, it locks nothing: reserve_stock calls it under the stock-row locks, create_order's
-- fast path before them (and then re-checks each row with a conditional UPDATE). PL/pgSQL with a generic plan, so
-- it is planned once per session: a custom plan for each call (what the plan cache chose) cost more than the
-- query itself. Written as one index probe of stock_levels per line (LATERAL), so the generic plan never scans
-- the whole table, however large the catalogue.
create function private.allocation(p_product_ids uuid[], p_quantities integer[], p_payment_method text)
returns table (product_id uuid, location_id smallint, quantity integer)
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
  select n.product_id, t.location_id, t.quantity
  from unnest(p_product_ids, p_quantities) as n (product_id, quantity)
  cross join lateral (
    select r.location_id, least(r.free, n.quantity - r.taken_before)::integer as quantity
    from (
      select s.location_id, s.on_hand - s.reserved as free,
             coalesce(sum(s.on_hand - s.reserved) over (
               order by case when p_payment_method = 'sumup' then l.instore_priority else l.online_priority end
               rows between unbounded preceding and 1 preceding
             ), 0) as taken_before
      from private.stock_levels s
      join private.locations l on l.id = s.location_id
      where s.product_id = n.product_id and s.on_hand > s.reserved
    ) r
    where r.taken_before < n.quantity
  ) t;
end
$$;

revoke all on function private.allocation(uuid[], integer[], text) from public, anon, authenticated, service_role;

-- ============================================================================================================
-- reserve_stock
-- ============================================================================================================
-- Why: allocation. Checks every line against what is free (on_hand - reserved, summed over locations) first;
-- if anything is short it writes nothing and returns the short lines
-- ([{product_id, sku, requested, available}], the SH409 detail) so the caller can raise once, naming them all.
-- Otherwise it draws each line from the locations in the channel's priority order (in store: shop first; online:
-- warehouse first), inserts the reservations, their 'reserve' ledger rows and the reserved increments in one
-- statement, and returns null. The caller has locked the stock rows (lock_stock) and passes each product once.
create function private.reserve_stock(
  p_order_id uuid,
  p_product_ids uuid[],
  p_quantities integer[],
  p_payment_method text,
  p_expires_at timestamptz
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_short jsonb;
begin
  with need as (
    select n.product_id, n.quantity
    from unnest(p_product_ids, p_quantities) as n (product_id, quantity)
  ), free as (
    select s.product_id, sum(s.on_hand - s.reserved)::integer as available
    from private.stock_levels s
    where s.product_id = any (p_product_ids)
    group by s.product_id
  )
  select jsonb_agg(jsonb_build_object(
           'product_id', n.product_id,
           'sku', p.sku,
           'requested', n.quantity,
           'available', coalesce(f.available, 0)
         ) order by p.sku)
  into v_short
  from need n
  join public.products p on p.id = n.product_id
  left join free f on f.product_id = n.product_id
  where n.quantity > coalesce(f.available, 0);

  if v_short is not null then
    return v_short;
  end if;

  with take as (
    select t.product_id, t.location_id, t.quantity
    from private.allocation(p_product_ids, p_quantities, p_payment_method) t
  ), opened as (
    insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
    select p_order_id, t.product_id, t.location_id, t.quantity, p_expires_at
    from take t
    returning id, product_id, location_id, quantity
  ), moved as (
    insert into private.stock_movements
      (product_id, location_id, delta_reserved, reason, order_id, reservation_id, actor, correlation_id)
    select o.product_id, o.location_id, o.quantity, 'reserve', p_order_id, o.id,
           private.current_actor(), private.correlation_id()
    from opened o
  ), levels as (
    update private.stock_levels s
    set reserved = s.reserved + o.quantity, next_expiry = least(s.next_expiry, p_expires_at), updated_at = now()
    from opened o
    where s.product_id = o.product_id and s.location_id = o.location_id
  )
  select null into v_short;

  return null;
end
$$;

-- ============================================================================================================
-- raise_if_short
-- ============================================================================================================
-- Why: the one form of SH409 insufficient_stock for an order's lines: given reserve_stock's short lines
-- ([{product_id, sku, requested, available}]), raises naming every short product, with the lines as its detail;
-- given null (nothing short), returns. create_order and allocate_paid_order raise through it.
create function private.raise_if_short(p_short jsonb)
returns void
language plpgsql
set search_path = ''
as $$
begin
  if p_short is not null then
    raise exception using errcode = 'SH409',
      message = format('insufficient_stock: not enough stock for %s',
                       (select string_agg(x ->> 'sku', ', ') from jsonb_array_elements(p_short) x)),
      detail = jsonb_build_object('items', p_short)::text;
  end if;
end
$$;

revoke all on function private.raise_if_short(jsonb) from public, anon, authenticated, service_role;

-- ============================================================================================================
-- create_order
-- ============================================================================================================
-- Why: the one call that turns a basket into an order holding its stock. Prices, tax and totals come from the
-- catalogue (the client sends only ids and quantities). Same idempotency key + same hash returns the first
-- order; another hash is refused (SH422). The order and its lines are written before any stock row is locked,
-- and the order JSON is built then too. Short stock raises SH409 once, naming every short product, and the
-- whole call writes nothing.
-- The stock row lock is held until commit, so one hot product sells at most one order per lock hold: the
-- common case takes it as the very last statement (the fast path, step 5a): the allocation is computed from an
-- unlocked read, the reservations and their ledger rows are inserted, and only then is `reserved` moved by one
-- conditional UPDATE per stock row (`on_hand - reserved >= quantity`, re-checked on the row's newest version
-- when it waits), one row at a time in (product_id, location_id) order, lock_stock's order, so no deadlock (a
-- multi-row UPDATE locks in no guaranteed order). Nothing else locks the product or stock row (no foreign keys
-- point at them). Lapsed reservations on the rows it draws whole lines from it expires itself, once it holds
-- them (exact expiry could not change what it takes there). Whenever the fast path cannot be sure (the unlocked
-- read shows too little free stock, or lapsed reservations may sit on a row it does not draw a whole line from,
-- so freeing them first could change the allocation, or a conditional UPDATE finds the units gone), its sub-block
-- is rolled back (a subtransaction: its row locks and rows go with it) and the locked path (5b) decides as it
-- always did: lock every stock row of the products in order, expire what lapsed, check every line, reserve or
-- raise SH409.
-- Generic plans (plan_cache_mode): every statement here reads a handful of rows by key, so it is planned once per
-- session; the plan cache had kept re-planning several statements on every call (a custom plan sees the array
-- lengths), which cost more than running them. The joins to the catalogue are index probes per line (LATERAL),
-- so a generic plan never scans the catalogue.
create function public.create_order(
  p_items jsonb,
  p_payment_method text,
  p_idempotency_key text,
  p_request_hash text,
  p_customer jsonb default '{}'::jsonb,
  p_customer_id uuid default null,
  p_now timestamptz default now()
)
returns jsonb
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  v_key text := nullif(p_idempotency_key, '');
  v_hash text := nullif(p_request_hash, '');
  v_customer jsonb := coalesce(p_customer, '{}'::jsonb);
  v_existing record;
  v_bad text;
  v_product_ids uuid[];
  v_quantities integer[];
  v_missing uuid[];
  v_currencies text[];
  v_ttl interval;
  v_order_id uuid;
  v_order jsonb;
  v_max_quantity integer;
  v_expires_at timestamptz;
  v_take_products uuid[];
  v_take_locations smallint[];
  v_take_quantities integer[];
  v_fast boolean;
  v_expire_held boolean;
  v_row_due boolean;
  v_actor text;
  v_correlation_id text;
begin
  -- 1. payment method and idempotency key (a retry is answered before anything else is looked at)
  if p_payment_method is null or p_payment_method not in ('sumup', 'stripe') then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: payment method must be sumup or stripe, not %s', coalesce(p_payment_method, 'null')),
      detail = jsonb_build_object('reason', 'bad payment method')::text;
  end if;
  if length(v_key) > 255 then
    raise exception using errcode = 'SH400', message = 'invalid_request: idempotency key longer than 255 characters',
      detail = jsonb_build_object('reason', 'idempotency key too long')::text;
  end if;

  -- A key without a hash: hash the canonical request here so the key still tells a retry from a new request.
  if v_key is not null and v_hash is null then
    v_hash := encode(extensions.digest(
      jsonb_build_array(p_items, p_payment_method, v_customer, p_customer_id)::text, 'sha256'), 'hex');
  end if;

  if v_key is not null then
    select o.id, o.request_hash into v_existing from public.orders o where o.idempotency_key = v_key;
    if found then
      if v_existing.request_hash = v_hash then
        return jsonb_build_object('order', public.get_order(v_existing.id), 'replayed', true);
      end if;
      raise exception using errcode = 'SH422',
        message = 'idempotency_key_reused: this idempotency key was used for a different request';
    end if;
  end if;

  -- 2. shape of the request
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    raise exception using errcode = 'SH400', message = 'invalid_request: items must be an array',
      detail = jsonb_build_object('reason', 'items must be an array')::text;
  end if;
  if jsonb_array_length(p_items) = 0 then
    raise exception using errcode = 'SH400', message = 'invalid_request: an order needs at least one item',
      detail = jsonb_build_object('reason', 'empty order')::text;
  end if;
  if jsonb_array_length(p_items) > 100 then
    raise exception using errcode = 'SH400', message = 'invalid_request: at most 100 items per order',
      detail = jsonb_build_object('reason', 'too many items')::text;
  end if;

  -- 3. the items, their lines and what the catalogue says of them, in one statement (every statement a PL/pgSQL
  -- function runs pays for its executor's set-up, the largest single cost of a create_order): every item is checked,
  -- the items of one product become one line with the summed quantity, in the position the product first appeared,
  -- and each line's product is looked up (known and on sale, its currency), with the channel's reservation TTL. The
  -- refusals are raised below in a fixed order: the first bad item, a product over 1000 units, the customer,
  -- unknown products, mixed currencies.
  -- An item's problem is a CASE, not an OR: its branches run in order, so a quantity is cast only once it is known
  -- to be a JSON number; a bad item joins no line (its group is the null one) and is never cast to a uuid.
  select max(g.bad),
         array_agg(g.product_id order by g.first_n) filter (where g.product_id is not null),
         array_agg(g.quantity order by g.first_n) filter (where g.product_id is not null),
         max(g.quantity),
         array_agg(g.product_id order by g.first_n) filter (where g.product_id is not null and p.id is null),
         array_agg(distinct p.currency::text) filter (where p.id is not null),
         (select s.reservation_ttl from private.settings s where s.payment_method = p_payment_method)
  into v_bad, v_product_ids, v_quantities, v_max_quantity, v_missing, v_currencies, v_ttl
  from (
    select case when e.problem is null then (e.item ->> 'product_id')::uuid end as product_id,
           sum(case when e.problem is null then (e.item ->> 'quantity')::numeric end)::integer as quantity,
           min(e.n) as first_n,
           (array_agg(format('item %s: %s', e.n, e.problem) order by e.n)
              filter (where e.problem is not null))[1] as bad
    from (
      select e.n, e.item, case
               when jsonb_typeof(e.item) <> 'object' then 'must be an object'
               when jsonb_typeof(e.item -> 'product_id') is distinct from 'string'
                 or (e.item ->> 'product_id') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                 then 'product_id must be a uuid'
               when jsonb_typeof(e.item -> 'quantity') is distinct from 'number' then 'quantity must be a whole number'
               when (e.item ->> 'quantity')::numeric <> trunc((e.item ->> 'quantity')::numeric)
                 then 'quantity must be a whole number'
               when (e.item ->> 'quantity')::numeric not between 1 and 1000 then 'quantity must be between 1 and 1000'
             end as problem
      from jsonb_array_elements(p_items) with ordinality as e (item, n)
      offset 0 -- (evaluated once per item, not once per use of problem)
    ) e
    group by 1
  ) g
  -- (one index probe per line: LIMIT 1 keeps the planner from flattening it into a hash join over the catalogue)
  left join lateral (select p.id, p.currency from public.products p where p.id = g.product_id and p.active limit 1) p
    on true;

  if v_bad is not null then
    raise exception using errcode = 'SH400', message = 'invalid_request: ' || v_bad,
      detail = jsonb_build_object('reason', v_bad)::text;
  end if;
  if v_max_quantity > 1000 then
    raise exception using errcode = 'SH400', message = 'invalid_request: at most 1000 units of a product per order',
      detail = jsonb_build_object('reason', 'quantity must be between 1 and 1000')::text;
  end if;

  if jsonb_typeof(v_customer) <> 'object'
     or jsonb_typeof(coalesce(v_customer -> 'email', 'null')) not in ('string', 'null')
     or jsonb_typeof(coalesce(v_customer -> 'name', 'null')) not in ('string', 'null')
     or length(v_customer ->> 'email') > 320
     or length(v_customer ->> 'name') > 200 then
    raise exception using errcode = 'SH400', message = 'invalid_request: customer must be {"email"?: text, "name"?: text}',
      detail = jsonb_build_object('reason', 'bad customer')::text;
  end if;

  if v_missing is not null then
    raise exception using errcode = 'SH401',
      message = format('product_not_found: unknown or inactive product(s) %s', array_to_string(v_missing, ', ')),
      detail = jsonb_build_object('product_ids', to_jsonb(v_missing))::text;
  end if;
  if cardinality(v_currencies) > 1 then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: an order is in one currency, these items are in %s', array_to_string(v_currencies, ', ')),
      detail = jsonb_build_object('reason', 'mixed currencies')::text;
  end if;
  if v_ttl is null then
    raise exception 'no reservation_ttl in private.settings for %', p_payment_method;
  end if;
  v_expires_at := p_now + v_ttl;

  -- 4. the order, its lines and its first history row (the only place an order is made: see
  -- private.order_status_history), priced here; no stock row is locked yet. Who and which request, read once for
  -- the history row and the ledger rows.
  v_actor := private.current_actor();
  v_correlation_id := private.correlation_id();
  with lines as (
    select l.ord::smallint as line_no, p.id as product_id, p.sku, p.name, l.quantity, p.unit_price, p.tax_rate_bp,
           p.unit_price * l.quantity as line_subtotal,
           round((p.unit_price * l.quantity)::numeric * p.tax_rate_bp / 10000)::bigint as line_tax
    from unnest(v_product_ids, v_quantities) with ordinality as l (product_id, quantity, ord)
    cross join lateral (select p.* from public.products p where p.id = l.product_id limit 1) p
  ), totals as (
    select sum(line_subtotal)::bigint as subtotal, sum(line_tax)::bigint as tax from lines
  ), new_order as (
    insert into public.orders (
      status, payment_method, currency, subtotal, tax, total, idempotency_key, request_hash,
      customer_id, customer_email, customer_name, reservation_expires_at, created_at
    )
    select case p_payment_method when 'sumup' then 'awaiting_instore_payment' else 'awaiting_payment' end,
           p_payment_method, v_currencies[1], t.subtotal, t.tax, t.subtotal + t.tax, v_key, v_hash,
           p_customer_id, nullif(btrim(v_customer ->> 'email'), ''), nullif(btrim(v_customer ->> 'name'), ''),
           v_expires_at, p_now
    from totals t
    on conflict (idempotency_key) do nothing
    returning id, status
  ), created as (
    insert into private.order_status_history (order_id, from_status, to_status, actor, correlation_id, reason)
    select o.id, null, o.status, v_actor, v_correlation_id, 'created'
    from new_order o
  ), new_lines as (
    insert into public.order_items (
      order_id, line_no, product_id, sku, name, quantity, unit_price, tax_rate_bp, line_subtotal, line_tax, line_total
    )
    select o.id, l.line_no, l.product_id, l.sku, l.name, l.quantity, l.unit_price, l.tax_rate_bp,
           l.line_subtotal, l.line_tax, l.line_subtotal + l.line_tax
    from lines l cross join new_order o
  )
  select o.id into v_order_id from new_order o;

  if v_order_id is null then
    -- Lost the race: a concurrent first request with the same key committed between our lookup and our insert
    -- (ON CONFLICT waited for it). Answer as the replay we now are.
    select o.id, o.request_hash into v_existing from public.orders o where o.idempotency_key = v_key;
    if v_existing.request_hash = v_hash then
      return jsonb_build_object('order', public.get_order(v_existing.id), 'replayed', true);
    end if;
    raise exception using errcode = 'SH422',
      message = 'idempotency_key_reused: this idempotency key was used for a different request';
  end if;

  v_order := public.get_order(v_order_id);

  -- 5a. the fast path: allocate from an unlocked read (as reserve_stock does under the lock), write the
  -- reservations and their ledger rows, then take the stock rows last, each with a conditional UPDATE.
  with take as (
    select t.product_id, t.location_id, t.quantity
    from private.allocation(v_product_ids, v_quantities, p_payment_method) t
  )
  select array_agg(t.product_id order by t.product_id, t.location_id),
         array_agg(t.location_id order by t.product_id, t.location_id),
         array_agg(t.quantity order by t.product_id, t.location_id),
         -- every line covered in full, and exact expiry (which must come first: lapsed units are free for this
         -- sale) unable to change what it takes: a reservation can have lapsed only on a stock row whose
         -- next_expiry has come (a lower bound on its active reservations' expiry), and every such row of these
         -- products is one this sale draws a whole line from, so freeing more units there changes nothing drawn.
         -- Exact expiry then runs on those rows once they are held (below). Otherwise the locked path frees first,
         -- then allocates. (While the bounds lie ahead the reservations are not read at all: behind the earliest
         -- active one lies a dead index entry for every reservation of the product closed since the last VACUUM.)
         coalesce(sum(t.quantity), 0) = (select sum(q) from unnest(v_quantities) q)
           and not exists (select 1
                           from unnest(v_product_ids, v_quantities) as p (id, quantity)
                           cross join lateral (
                             select s.location_id from private.stock_levels s
                             where s.product_id = p.id and s.next_expiry <= p_now
                             -- (one index probe per product: flattened into a join, a catalogue of up to ~1500
                             -- stock rows got a hash join reading all of them on every order)
                             offset 0
                           ) due
                           where not exists (select 1 from take w
                                             where w.product_id = p.id and w.location_id = due.location_id
                                               and w.quantity = p.quantity))
  into v_take_products, v_take_locations, v_take_quantities, v_fast
  from take t;

  if v_fast then
    begin
      with opened as (
        insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
        select v_order_id, t.product_id, t.location_id, t.quantity, v_expires_at
        from unnest(v_take_products, v_take_locations, v_take_quantities) as t (product_id, location_id, quantity)
        returning id, product_id, location_id, quantity
      )
      insert into private.stock_movements
        (product_id, location_id, delta_reserved, reason, order_id, reservation_id, actor, correlation_id)
      select o.product_id, o.location_id, o.quantity, 'reserve', v_order_id, o.id, v_actor, v_correlation_id
      from opened o;

      v_expire_held := false;
      for i in 1 .. cardinality(v_take_products) loop
        update private.stock_levels s
        set reserved = s.reserved + v_take_quantities[i], next_expiry = least(s.next_expiry, v_expires_at),
            updated_at = now()
        where s.product_id = v_take_products[i] and s.location_id = v_take_locations[i]
          and s.on_hand - s.reserved >= v_take_quantities[i]
        -- (the row's newest bound, still due only if it had come: this order's own expiry lies ahead)
        returning s.next_expiry <= p_now into v_row_due;
        if not found then
          -- the units went to someone else since the unlocked read: undo this sub-block, take the locked path
          raise exception using errcode = 'SHF01', message = 'fast path: stock changed';
        end if;
        v_expire_held := v_expire_held or v_row_due;
      end loop;
      -- exact expiry on the rows now held whose next_expiry has come (see the check above), judged on their newest
      -- versions: a buyer just before may have expired them and raised it already
      if v_expire_held then
        perform private.expire_lapsed_on(v_take_products, p_now, null, v_take_locations);
      end if;

      return jsonb_build_object('order', v_order, 'replayed', false);
    exception when sqlstate 'SHF01' then
      null;
    end;
  end if;

  -- 5b. the locked path: lock in one fixed order; free what has lapsed; check everything; reserve
  perform private.lock_stock(v_product_ids);
  perform private.expire_lapsed_on(v_product_ids, p_now);
  perform private.raise_if_short(
    private.reserve_stock(v_order_id, v_product_ids, v_quantities, p_payment_method, v_expires_at));

  return jsonb_build_object('order', v_order, 'replayed', false);
end
$$;

revoke all on function public.create_order(jsonb, text, text, text, jsonb, uuid, timestamptz)
  from public, anon, authenticated;
grant execute on function public.create_order(jsonb, text, text, text, jsonb, uuid, timestamptz) to service_role;

-- ============================================================================================================
-- attach_checkout
-- ============================================================================================================
-- Why: remembers the provider's checkout (Stripe session id and URL, SumUp checkout id) on the unpaid order, so
-- a webhook carrying that id finds the order and a retried request can hand back the same checkout URL.
create function public.attach_checkout(
  p_order_id uuid,
  p_provider text,
  p_checkout_id text,
  p_checkout_url text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
begin
  if p_checkout_id is null or p_checkout_id = '' or length(p_checkout_id) > 255 then
    raise exception using errcode = 'SH400', message = 'invalid_request: checkout id is required',
      detail = jsonb_build_object('reason', 'bad checkout id')::text;
  end if;

  v_order := private.lock_order(p_order_id);
  if p_provider is distinct from v_order.payment_method then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: order %s is paid with %s, not %s', p_order_id, v_order.payment_method, p_provider),
      detail = jsonb_build_object('reason', 'provider does not match the payment method')::text;
  end if;
  if v_order.status not in ('awaiting_instore_payment', 'awaiting_payment') then
    raise exception using errcode = 'SH410',
      message = format('invalid_transition: cannot attach a checkout to an order that is %s', v_order.status),
      detail = jsonb_build_object('status', v_order.status)::text;
  end if;

  update public.orders o
  set provider_checkout_id = p_checkout_id, checkout_url = p_checkout_url
  where o.id = p_order_id;

  return public.get_order(p_order_id);
end
$$;

revoke all on function public.attach_checkout(uuid, text, text, text) from public, anon, authenticated;
grant execute on function public.attach_checkout(uuid, text, text, text) to service_role;

-- ============================================================================================================
-- cancel_order
-- ============================================================================================================
-- Why: gives an unpaid order's stock back at once (customer abandons, staff voids the till). Idempotent: a
-- second cancel reports already_cancelled. A paid order is never cancelled here (money was taken: refund).
-- p_keep_if_checkout: cancel only if no provider checkout is attached (result kept_checkout otherwise). For
-- orders-create giving up after its Stripe call failed: a concurrent retry with the same key may have opened and
-- attached the session meanwhile, and that order must stand; deciding under the order's lock closes the race.
-- Locks in the engine's order: the order row, its reservations, then the stock rows (lock_stock).
create function public.cancel_order(
  p_order_id uuid,
  p_reason text,
  p_now timestamptz default now(),
  p_keep_if_checkout boolean default false
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
  v_res_ids bigint[];
  v_product_ids uuid[];
  v_location_ids smallint[];
begin
  v_order := private.lock_order(p_order_id);
  if v_order.status = 'cancelled' then
    return jsonb_build_object('result', 'already_cancelled', 'order', public.get_order(p_order_id));
  end if;
  if p_keep_if_checkout and v_order.provider_checkout_id is not null then
    return jsonb_build_object('result', 'kept_checkout', 'order', public.get_order(p_order_id));
  end if;
  if v_order.status not in ('awaiting_instore_payment', 'awaiting_payment', 'expired') then
    raise exception using errcode = 'SH410',
      message = format('invalid_transition: cannot cancel an order that is %s', v_order.status),
      detail = jsonb_build_object('status', v_order.status)::text;
  end if;

  select array_agg(r.id), array_agg(r.product_id), array_agg(r.location_id)
  into v_res_ids, v_product_ids, v_location_ids
  from (
    select r.id, r.product_id, r.location_id
    from private.open_reservations r
    where r.order_id = p_order_id
    order by r.id
    for no key update
  ) r;

  if v_res_ids is not null then
    perform private.lock_stock(v_product_ids, v_location_ids);
    perform private.close_reservations(v_res_ids, 'released');
  end if;

  perform private.set_status_reason(coalesce(nullif(p_reason, ''), 'cancelled'));
  update public.orders o
  set status = 'cancelled', cancelled_at = p_now
  where o.id = p_order_id and o.status = v_order.status;
  perform private.set_status_reason(null);

  return jsonb_build_object('result', 'cancelled', 'order', public.get_order(p_order_id));
end
$$;

revoke all on function public.cancel_order(uuid, text, timestamptz, boolean) from public, anon, authenticated;
grant execute on function public.cancel_order(uuid, text, timestamptz, boolean) to service_role;

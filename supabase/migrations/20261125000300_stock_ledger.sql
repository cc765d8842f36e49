-- The stock ledger: every change of on_hand or reserved, signed and typed, written in the same statement that
-- changes the cached stock level. Append-only for everyone. Plus the one helper that locks stock rows.

-- ============================================================================================================
-- movement_reason
-- ============================================================================================================
-- Why: what moved the stock: a reservation opened (reserve) or closed (release, expire, fulfil), or stock-keeping
-- (restock, adjust). A domain, like the catalogue's single-value rules (20261125000200_catalogue.sql).
create domain private.movement_reason as text
  check (value in ('reserve', 'release', 'expire', 'fulfil', 'restock', 'adjust'));

-- ============================================================================================================
-- movement_shape
-- ============================================================================================================
-- Why: the shapes a movement may take: for each reason, which way it moves on_hand and reserved (never by zero
-- where it moves them) and whether it names its reservation and order (reservation movements) or neither
-- (stock-keeping). A domain's CHECK, not the table's: a domain's is parsed and planned once per session and kept
-- in the type cache, while a table's CHECK is parsed back from its stored text and planned again by every
-- statement that writes the table (as a table CHECK this rule cost each create_order 45 k instructions, 2.2 %,
-- callgrind; see private.order_row). Every ledger row is cast to it (stock_movements_rules). Its size is no longer
-- paid per statement, so it is a CASE per reason over integers, what the sweep's thousands of rows per statement
-- test fastest: 10k sweep 938 M -> 920 M instructions against a lookup of the row's text in an array literal
-- (create_order +9.6 k, 0.5 %: the CASE's executor state is still built per statement).
create type private.movement_shape_fields as (
  reason private.movement_reason,
  delta_on_hand integer,
  delta_reserved integer,
  refs integer -- how many of order_id and reservation_id it names
);
create domain private.movement_shape as private.movement_shape_fields
  constraint stock_movements_shape check (case (value).reason
    when 'reserve' then (value).delta_on_hand = 0 and (value).delta_reserved > 0 and (value).refs = 2
    when 'release' then (value).delta_on_hand = 0 and (value).delta_reserved < 0 and (value).refs = 2
    when 'expire' then (value).delta_on_hand = 0 and (value).delta_reserved < 0 and (value).refs = 2
    when 'fulfil' then (value).delta_on_hand < 0 and (value).delta_reserved <= 0 and (value).refs = 2
    when 'restock' then (value).delta_on_hand > 0 and (value).delta_reserved = 0 and (value).refs = 0
    when 'adjust' then (value).delta_on_hand <> 0 and (value).delta_reserved = 0 and (value).refs = 0
    else false
  end);
comment on domain private.movement_shape is
  'A ledger movement''s reason, deltas and number of references, in one of the shapes its reason allows.';

-- ============================================================================================================
-- stock_movements
-- ============================================================================================================
-- Why: the cached stock_levels can be proven right at any moment: on_hand is the sum of delta_on_hand and
-- reserved the sum of delta_reserved for that product and location (admin.stock_reconciliation shows both).
-- No foreign keys on purpose: a foreign key check locks the referenced row (KEY SHARE) for every insert, and the
-- sweep inserts thousands of rows per batch; the engine functions are the only writers and keep the references.
create table private.stock_movements (
  id bigint generated always as identity primary key,
  product_id uuid not null,
  location_id smallint not null,
  delta_on_hand integer not null default 0,
  delta_reserved integer not null default 0,
  reason private.movement_reason not null,
  order_id uuid,
  reservation_id bigint,
  actor text not null default private.current_actor(),
  correlation_id text default private.correlation_id(),
  note text,
  -- clock time, not transaction time, so the movements of one transaction keep their order in a timeline
  created_at timestamptz not null default clock_timestamp(),
  -- its shape (private.movement_shape, above)
  constraint stock_movements_rules check (
    (row(reason, delta_on_hand, delta_reserved, num_nonnulls(order_id, reservation_id))::private.movement_shape)
      is distinct from null
  )
);
comment on table private.stock_movements is
  'Append-only stock ledger: signed deltas of on_hand and reserved per product and location, with reason, actor, correlation id.';

-- Why: a reservation is opened once (reserve) and closed once (fulfil, release or expire). A replayed webhook,
-- a second worker or a sweep racing a payment therefore cannot deduct or release the same units twice: the
-- second insert fails on this key instead of moving stock again.
-- Leaf pages half full (fillfactor 50): entries arrive in two waves, a reservation's 'reserve' entry at the right
-- edge when it opens, its closing entry later just before it, in the middle of the index. Full leaves would split
-- under the second wave about once per page's worth of closes; half-full ones take it in place (the sweep: -1.6 %
-- instructions, callgrind, 10 000 reservations; 2 page splits of this index in a sweep of 20 000).
create unique index stock_movements_reservation_once_idx
  on private.stock_movements (reservation_id, (reason = 'reserve')) with (fillfactor = 50)
  where reservation_id is not null;

-- Why: an order's movements are found through its reservations (every movement that names an order names one of
-- them): this finds the order's 'reserve' rows, and the unique index above the rest of each reservation's rows.
-- Only 'reserve' rows: the order's timeline needs no more, and the sweep's thousands of closing rows per batch pay
-- no entry here.
create index stock_movements_order_reserve_idx on private.stock_movements (order_id) where reason = 'reserve';

alter table private.stock_movements enable row level security;
revoke all on private.stock_movements from public, anon, authenticated, service_role;

-- Why: the ledger is evidence; nobody (postgres and superusers included) may rewrite or empty it. Statement-level
-- BEFORE triggers fire even when no row matches, so the attempt itself is refused.
create trigger stock_movements_append_only
  before update or delete on private.stock_movements
  for each statement execute function private.refuse_change();

create trigger stock_movements_no_truncate
  before truncate on private.stock_movements
  for each statement execute function private.refuse_change();

-- ============================================================================================================
-- lock_stock
-- ============================================================================================================
-- Why: the one place stock rows are locked. Every rule that changes stock_levels calls it first, and it always
-- locks in (product_id, location_id) order, so two transactions can never hold each other's rows: no deadlock.
-- FOR NO KEY UPDATE is enough to serialise writers (and is what an UPDATE of the figures takes anyway).
-- Callers take it as late as they can: the lock lasts until commit.
-- p_location_ids null: every location of the products; otherwise the rows (p_product_ids[i], p_location_ids[i]),
-- exactly (a release at the shop does not hold up online buyers drawing from the warehouse).
-- p_skip_locked (the sweep, which may already hold stock rows from an earlier batch and so must never wait)
-- skips rows that another transaction holds (where SKIP LOCKED itself would still wait, the sweep's lock_timeout
-- makes it give way: see private.expire_batch). Returns the rows it locked.
create function private.lock_stock(
  p_product_ids uuid[],
  p_location_ids smallint[] default null,
  p_skip_locked boolean default false
)
returns table (product_id uuid, location_id smallint)
language plpgsql
set search_path = ''
as $$
begin
  if p_skip_locked then
    return query
      with wanted as (
        select s.product_id, s.location_id from private.stock_levels s
        where p_location_ids is null and s.product_id = any (p_product_ids)
        union
        select u.product_id, u.location_id from unnest(p_product_ids, p_location_ids) as u (product_id, location_id)
        where p_location_ids is not null
      )
      select s.product_id, s.location_id
      from private.stock_levels s
      join wanted w on w.product_id = s.product_id and w.location_id = s.location_id
      order by s.product_id, s.location_id
      for no key update of s skip locked;
  else
    return query
      with wanted as (
        select s.product_id, s.location_id from private.stock_levels s
        where p_location_ids is null and s.product_id = any (p_product_ids)
        union
        select u.product_id, u.location_id from unnest(p_product_ids, p_location_ids) as u (product_id, location_id)
        where p_location_ids is not null
      )
      select s.product_id, s.location_id
      from private.stock_levels s
      join wanted w on w.product_id = s.product_id and w.location_id = s.location_id
      order by s.product_id, s.location_id
      for no key update of s;
  end if;
end
$$;

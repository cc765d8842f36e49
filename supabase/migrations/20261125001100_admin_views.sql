-- Operator views (schema admin, service_role only): is the stock right, what is held and for how long, what
-- happened to an order, how many orders are in each state. Plain views owned by the migration role, so they read
-- the private tables without granting them to anyone.

-- ============================================================================================================
-- stock_reconciliation
-- ============================================================================================================
-- Why: proves the cached stock against its evidence. Per product and location: the stored on_hand beside the
-- ledger's sum of delta_on_hand, the stored reserved beside the ledger's sum of delta_reserved and beside the
-- quantity of active reservations; and the row's next_expiry beside the earliest expiry of its active reservations
-- (the bound may lie before it, never after: sales trust it to know that nothing on the row has lapsed). Every
-- *_difference column must read 0 and next_expiry_late false; anything else is a bug to chase.
create view admin.stock_reconciliation as
with ledger as (
  select m.product_id, m.location_id,
         sum(m.delta_on_hand)::bigint as ledger_on_hand,
         sum(m.delta_reserved)::bigint as ledger_reserved
  from private.stock_movements m
  group by m.product_id, m.location_id
), held as (
  select r.product_id, r.location_id, sum(r.quantity)::bigint as active_reserved,
         min(r.expires_at) as first_active_expiry
  from private.open_reservations r
  group by r.product_id, r.location_id
), keys as (
  select s.product_id, s.location_id from private.stock_levels s
  union
  select l.product_id, l.location_id from ledger l
  union
  select h.product_id, h.location_id from held h
)
select k.product_id,
       p.sku,
       loc.code as location,
       coalesce(s.on_hand, 0) as on_hand,
       coalesce(s.reserved, 0) as reserved,
       coalesce(s.on_hand - s.reserved, 0) as available,
       coalesce(l.ledger_on_hand, 0) as ledger_on_hand,
       coalesce(l.ledger_reserved, 0) as ledger_reserved,
       coalesce(h.active_reserved, 0) as active_reserved,
       coalesce(s.on_hand, 0) - coalesce(l.ledger_on_hand, 0) as on_hand_difference,
       coalesce(s.reserved, 0) - coalesce(l.ledger_reserved, 0) as reserved_ledger_difference,
       coalesce(s.reserved, 0) - coalesce(h.active_reserved, 0) as reserved_difference,
       s.next_expiry,
       h.first_active_expiry,
       coalesce(h.first_active_expiry < s.next_expiry, false) as next_expiry_late
from keys k
left join private.stock_levels s on s.product_id = k.product_id and s.location_id = k.location_id
left join ledger l on l.product_id = k.product_id and l.location_id = k.location_id
left join held h on h.product_id = k.product_id and h.location_id = k.location_id
left join public.products p on p.id = k.product_id
left join private.locations loc on loc.id = k.location_id;

comment on view admin.stock_reconciliation is
  'Stored stock beside the ledger sums and the active reservations; every *_difference column must be 0, next_expiry_late false.';

-- ============================================================================================================
-- active_reservations
-- ============================================================================================================
-- Why: what is held right now, for which order, and for how long; lapsed rows (waiting for the sweep) and those
-- expiring within five minutes are flagged, so an operator sees stock about to come back.
create view admin.active_reservations as
select r.id as reservation_id,
       r.order_id,
       o.status as order_status,
       o.payment_method,
       p.sku,
       loc.code as location,
       r.quantity,
       r.created_at,
       r.expires_at,
       r.expires_at - now() as expires_in,
       r.expires_at <= now() as lapsed,
       r.expires_at > now() and r.expires_at <= now() + interval '5 minutes' as expiring_soon
from private.open_reservations r
join public.orders o on o.id = r.order_id
join public.products p on p.id = r.product_id
join private.locations loc on loc.id = r.location_id;

comment on view admin.active_reservations is 'Active reservations with time left; lapsed = waiting for the sweep.';

-- ============================================================================================================
-- order_timeline
-- ============================================================================================================
-- Why: the whole story of one order in time order: each status change (and refused payment or refund) from the
-- status history, interleaved with each stock movement made for it. Filter by order_id.
create view admin.order_timeline as
select h.order_id,
       h.at,
       'status'::text as kind,
       h.from_status,
       h.to_status,
       null::text as sku,
       null::text as location,
       null::integer as delta_on_hand,
       null::integer as delta_reserved,
       h.reason,
       h.actor,
       h.correlation_id,
       h.id as entry_id
from private.order_status_history h
union all
select r.order_id,
       m.created_at,
       'stock'::text,
       null,
       null,
       p.sku,
       loc.code,
       m.delta_on_hand,
       m.delta_reserved,
       m.reason,
       m.actor,
       m.correlation_id,
       m.id
from private.stock_movements r
join private.stock_movements m on m.reservation_id = r.reservation_id
left join public.products p on p.id = m.product_id
left join private.locations loc on loc.id = m.location_id
where r.reason = 'reserve';

comment on view admin.order_timeline is
  'Status history and stock movements of each order, one row per event; order by at, kind, entry_id.';

-- ============================================================================================================
-- order_counts
-- ============================================================================================================
-- Why: the dashboard's first question: how many orders (and how much money) sit in each state, zeros included.
create view admin.order_counts as
select s.status,
       count(o.id) as orders,
       coalesce(sum(o.total), 0)::bigint as total_amount
from unnest(array[
  'awaiting_instore_payment', 'awaiting_payment', 'paid', 'paid_out_of_stock', 'fulfilled', 'cancelled', 'expired'
]) with ordinality as s (status, ord)
left join public.orders o on o.status = s.status
group by s.status, s.ord
order by s.ord;

comment on view admin.order_counts is 'Number and total amount of orders per status.';

-- Why: operators only. anon and authenticated have no USAGE on schema admin either.
revoke all on admin.stock_reconciliation, admin.active_reservations, admin.order_timeline, admin.order_counts
  from public, anon, authenticated;
grant select on admin.stock_reconciliation, admin.active_reservations, admin.order_timeline, admin.order_counts
  to service_role;

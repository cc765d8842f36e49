-- Orders, their lines (prices copied at order time), the status history (each change written by a trigger), and
-- the order's JSON shape shared by every entry point (docs/engine-contract.md, "Order JSON").

-- ============================================================================================================
-- Domains
-- ============================================================================================================
-- Why: the single-value rules of orders and their lines, written once as domains (see
-- 20261125000200_catalogue.sql): the statuses and payment methods (also used by settings and payment events),
-- quantities, and the limits on the texts an order carries.
create domain public.order_status as text check (value in (
  'awaiting_instore_payment', 'awaiting_payment', 'paid', 'paid_out_of_stock', 'fulfilled', 'cancelled', 'expired'
));
comment on domain public.order_status is 'Where an order stands (docs/engine-contract.md, "Order JSON").';

create domain public.payment_method as text check (value in ('sumup', 'stripe'));
comment on domain public.payment_method is 'sumup: in store, card terminal. stripe: online, Stripe Checkout.';

create domain public.order_quantity as integer check (value between 1 and 1000);
comment on domain public.order_quantity is 'Units of one product in one order: 1..1000.';

create domain public.line_number as smallint check (value >= 1);
comment on domain public.line_number is 'A line''s position in its order, from 1.';

-- (collation "C": a key is opaque bytes, compared bytewise in the unique index, not by a language's rules)
create domain public.idempotency_key as text collate "C" check (length(value) between 1 and 255);
create domain public.request_hash as text check (length(value) between 1 and 128);
create domain public.email_address as text check (length(value) <= 320);
create domain public.person_name as text check (length(value) <= 200);
-- a payment provider's id for a checkout or a payment
create domain public.provider_ref as text check (length(value) <= 255);
create domain public.web_url as text check (length(value) <= 2048);

-- ============================================================================================================
-- orders
-- ============================================================================================================
-- Why: one row per checkout attempt. Totals are computed by create_order from the catalogue, never taken from
-- the client. Every status change is a compare-and-set by an engine function, and the trigger below records it.
-- idempotency_key is unique so a retried request (same key) finds the first order instead of creating another;
-- request_hash tells a true retry from a different request that reuses the key.
create table public.orders (
  id uuid primary key default gen_random_uuid(),
  status public.order_status not null,
  payment_method public.payment_method not null,
  currency public.currency_code not null,
  subtotal public.minor_units not null,
  tax public.minor_units not null,
  total bigint not null,
  refunded_amount bigint not null default 0,
  idempotency_key public.idempotency_key unique,
  request_hash public.request_hash,
  customer_id uuid,
  customer_email public.email_address,
  customer_name public.person_name,
  provider_checkout_id public.provider_ref,
  checkout_url public.web_url,
  provider_payment_ref public.provider_ref,
  reservation_expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  paid_at timestamptz,
  cancelled_at timestamptz,
  expired_at timestamptz,
  fulfilled_at timestamptz
);
comment on table public.orders is
  'Orders: totals computed in SQL, status changed only by engine functions (compare-and-set), audited by trigger.';

-- Why: the rules that tie an order's columns together, each under its own name (a violation names it), written as
-- the CHECKs of a domain over the order's row type, which every order row is checked as (orders_rules, below).
-- Where a domain's CHECKs are compiled once per session and kept in the type cache, a table's CHECKs are parsed
-- back from their stored text and planned again by every statement that writes the table: as four table CHECKs
-- these cost every create_order 97 k instructions (4.6 %, callgrind), and a rule about one value was already a
-- domain for that reason (20261125000200_catalogue.sql, Domains). The sweep, which expires thousands of orders per
-- statement, pays per row instead: ~12 k instructions more per order (the row built whole and read field by field),
-- +1.3 % of a 10k sweep.
create domain private.order_row as public.orders
  constraint orders_total_is_sum check ((value).total = (value).subtotal + (value).tax)
  constraint orders_refund_within_total check ((value).refunded_amount between 0 and (value).total)
  constraint orders_key_has_hash check (((value).idempotency_key is null) = ((value).request_hash is null))
  constraint orders_paid_has_time
    check ((value).status <> all ('{paid, paid_out_of_stock, fulfilled}') or (value).paid_at is not null);
comment on domain private.order_row is 'An order row that keeps the rules tying its columns together (orders_rules).';

-- Why: every order row written is cast to private.order_row, which applies its CHECKs; IS DISTINCT FROM NULL holds
-- for any row, so the cast is the whole test. Stored as one whole-row reference, the table's only CHECK is short to
-- parse. While it stands, no column's type can be altered (PostgreSQL refuses: drop it, alter, add it again).
alter table public.orders add constraint orders_rules check ((orders::private.order_row) is distinct from null);

create index orders_customer_idx on public.orders (customer_id) where customer_id is not null;
-- Why: lets a provider's checkout id find its order (webhooks) and refuses the same checkout on two orders.
create unique index orders_provider_checkout_idx
  on public.orders (payment_method, provider_checkout_id) where provider_checkout_id is not null;
-- Why: the sweep finds unpaid orders whose reservations lapsed without scanning paid history.
create index orders_awaiting_expiry_idx
  on public.orders (reservation_expires_at, id)
  where status in ('awaiting_instore_payment', 'awaiting_payment');

-- Why: reservations, the ledger, the status history and payment events name their order without a foreign key;
-- what one would guard holds here instead: an order, once created, is never deleted nor re-keyed, for every role,
-- the owner included (as products and stock levels: keep_referenced_rows, 20261125000200_catalogue.sql).
-- Per statement, as stock levels (see there): an UPDATE that names id is refused, whatever the values.
create trigger orders_keep_rows
  before delete or truncate or update of id on public.orders
  for each statement execute function private.keep_referenced_rows('An order ends as cancelled or expired.');

alter table public.orders enable row level security;

-- Why: a signed-in customer sees their own orders, nobody else's.
create policy "Customers read their own orders"
  on public.orders for select
  to authenticated
  using (customer_id = (select auth.uid()));

-- Why: staff (app_metadata.role staff or admin, set only by the service) serve every customer.
create policy "Staff read all orders"
  on public.orders for select
  to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') in ('staff', 'admin'));

-- anon holds SELECT so get_order (security invoker) answers null instead of failing; no policy lets it see a row.
revoke all on public.orders from public, anon, authenticated, service_role;
grant select on public.orders to anon, authenticated, service_role;

-- ============================================================================================================
-- order_items
-- ============================================================================================================
-- Why: the lines as sold. Name, price and tax rate are copied from the catalogue at order time so the order
-- keeps its price whatever happens to the product later; order_items_rules pins the arithmetic of the contract.
create table public.order_items (
  order_id uuid not null references public.orders (id),
  line_no public.line_number not null,
  -- no foreign key: products are never deleted nor re-keyed (keep_referenced_rows), and a foreign key check would
  -- lock the product row of every line sold (see 20261125000200_catalogue.sql)
  product_id uuid not null,
  sku text not null,
  name text not null,
  quantity public.order_quantity not null,
  unit_price public.minor_units not null,
  tax_rate_bp public.basis_points not null,
  line_subtotal bigint not null,
  line_tax public.minor_units not null,
  line_total bigint not null,
  primary key (order_id, line_no),
  constraint order_items_one_line_per_product unique (order_id, product_id)
);
comment on table public.order_items is 'Order lines with name, unit price and tax rate copied at order time.';

-- Why: a line's arithmetic, as orders' rules are kept (private.order_row, above).
create domain private.order_item_row as public.order_items
  constraint order_items_subtotal check ((value).line_subtotal = (value).unit_price * (value).quantity)
  constraint order_items_total check ((value).line_total = (value).line_subtotal + (value).line_tax);
comment on domain private.order_item_row is 'An order line whose subtotal and total add up (order_items_rules).';

alter table public.order_items add constraint order_items_rules
  check ((order_items::private.order_item_row) is distinct from null);

alter table public.order_items enable row level security;

-- Why: a line is visible exactly when its order is (the orders policies apply inside the subquery).
create policy "Lines are visible with their order"
  on public.order_items for select
  to authenticated
  using (exists (select 1 from public.orders o where o.id = order_items.order_id));

revoke all on public.order_items from public, anon, authenticated, service_role;
grant select on public.order_items to anon, authenticated, service_role;

-- ============================================================================================================
-- order_status_history
-- ============================================================================================================
-- Why: the audit trail of every order: each status change (and each refused payment) with who, why and the
-- request's correlation id. Changes are written by the trigger below, so no code path can change a status
-- unrecorded. An order's first row (from no status, reason 'created') is written by create_order in the statement
-- that inserts the order, the one place an order is made (pgTAP 01-structure holds that; the checker's
-- creation_recorded reports an order without it): a statement-level insert trigger cost each order a trigger call,
-- three context reads and a statement of its own (create_order -3.8 % instructions).
-- No foreign key: the sweep writes thousands of rows per batch and the trigger only ever names real orders.
create table private.order_status_history (
  id bigint generated always as identity primary key,
  order_id uuid not null,
  from_status text,
  to_status text not null,
  actor text not null default private.current_actor(),
  correlation_id text default private.correlation_id(),
  reason text,
  -- clock time, so a timeline orders the steps of one transaction (created, reserved, paid) as they happened
  at timestamptz not null default clock_timestamp()
);
comment on table private.order_status_history is
  'Append-only audit of order status changes (from, to, actor, correlation id, reason): '
  'creation by create_order, every change by trigger.';

create index order_status_history_order_idx on private.order_status_history (order_id, id);

alter table private.order_status_history enable row level security;
revoke all on private.order_status_history from public, anon, authenticated, service_role;

create trigger order_status_history_append_only
  before update or delete on private.order_status_history
  for each statement execute function private.refuse_change();

create trigger order_status_history_no_truncate
  before truncate on private.order_status_history
  for each statement execute function private.refuse_change();

-- Why: records every status change, whoever made it. Statement-level so the sweep's set-based UPDATE of
-- thousands of orders writes its history in one INSERT instead of one trigger call per row.
create function private.record_order_status_change()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  -- read once per statement, not per row: the sweep expires thousands of orders in one UPDATE
  v_actor text := private.current_actor();
  v_correlation_id text := private.correlation_id();
  v_reason text := private.status_reason();
begin
  insert into private.order_status_history (order_id, from_status, to_status, actor, correlation_id, reason)
  select n.id, o.status, n.status, v_actor, v_correlation_id, v_reason
  from new_orders n
  join old_orders o on o.id = n.id
  where n.status is distinct from o.status;
  return null;
end
$$;

create trigger orders_status_changed
  after update on public.orders
  referencing old table as old_orders new table as new_orders
  for each statement execute function private.record_order_status_change();

-- ============================================================================================================
-- Order JSON
-- ============================================================================================================
-- ============================================================================================================
-- order_doc, order_line_doc
-- ============================================================================================================
-- Why: the shape of the order JSON every entry point returns (docs/engine-contract.md, "Order JSON"): its fields,
-- their names and types. get_order fills one and turns it into jsonb with to_jsonb. The attributes are declared in
-- jsonb's own key order (shorter keys first, then bytewise), which is the order the JSON is stored and printed in
-- whatever order it is built: so the sort every jsonb object goes through finds them in place. Built this way
-- rather than with jsonb_build_object, whose every key is a value to convert and every value's type is looked up
-- again on each call: get_order 245 k -> 162 k instructions (callgrind), create_order -3.6 %.
-- Base types, not the tables' domains: a domain costs one more catalogue lookup per value when the JSON is built.
create type public.order_line_doc as (
  sku text,
  name text,
  line_tax bigint,
  quantity integer,
  line_total bigint,
  product_id uuid,
  unit_price bigint,
  tax_rate_bp integer,
  line_subtotal bigint
);

create type public.order_doc as (
  id uuid,
  tax bigint,
  items public.order_line_doc[],
  total bigint,
  status text,
  paid_at timestamptz,
  currency text,
  subtotal bigint,
  created_at timestamptz,
  expired_at timestamptz,
  customer_id uuid,
  cancelled_at timestamptz,
  checkout_url text,
  fulfilled_at timestamptz,
  customer_name text,
  customer_email text,
  payment_method text,
  refunded_amount bigint,
  provider_checkout_id text,
  provider_payment_ref text,
  reservation_expires_at timestamptz
);

-- (explicit, as every grant here: the roles that may call get_order may use the types it builds)
revoke all on type public.order_line_doc, public.order_doc from public;
grant usage on type public.order_line_doc, public.order_doc to anon, authenticated, service_role;

-- ============================================================================================================
-- get_order
-- ============================================================================================================
-- Why: the read path for customers and staff. Security invoker: the orders and order_items policies decide,
-- so a stranger's order (or any order, for anon) comes back as null, indistinguishable from a missing one.
-- It is also the one shape of every engine entry point that returns an order (create_order, mark_paid,
-- cancel_order, ...): called from them, which run as the tables' owner, it sees every order (RLS binds only the
-- API roles that call get_order directly).
-- PL/pgSQL rather than SQL: a SQL function with SET search_path is never inlined and sets its query up again on
-- every call (~0.2 ms, the largest single step of a create_order, which returns this shape); PL/pgSQL keeps the
-- plan for the session (~0.05 ms).
create function public.get_order(p_order_id uuid)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_order jsonb;
begin
  -- (the fields in order_doc's order; the lines as an ARRAY sub-select read in line order from the primary key:
  -- no aggregate and no sort to set up)
  select to_jsonb(row(
           o.id, o.tax,
           array(select row(i.sku, i.name, i.line_tax, i.quantity, i.line_total, i.product_id, i.unit_price,
                            i.tax_rate_bp, i.line_subtotal)::public.order_line_doc
                 from public.order_items i
                 where i.order_id = o.id
                 order by i.line_no),
           o.total, o.status, o.paid_at, o.currency, o.subtotal, o.created_at, o.expired_at, o.customer_id,
           o.cancelled_at, o.checkout_url, o.fulfilled_at, o.customer_name, o.customer_email, o.payment_method,
           o.refunded_amount, o.provider_checkout_id, o.provider_payment_ref, o.reservation_expires_at
         )::public.order_doc)
  into v_order
  from public.orders o
  where o.id = p_order_id;
  return v_order;
end
$$;

revoke all on function public.get_order(uuid) from public, anon, authenticated, service_role;
grant execute on function public.get_order(uuid) to anon, authenticated, service_role;

-- ============================================================================================================
-- lock_order
-- ============================================================================================================
-- Why: the first step of every transition on an order (attach a checkout, pay, cancel, refund, fulfil): lock its
-- row, so the status compare-and-set that follows happens once, and refuse an unknown order with SH402.
create function private.lock_order(p_order_id uuid)
returns public.orders
language plpgsql
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
begin
  select * into v_order from public.orders o where o.id = p_order_id for no key update;
  if not found then
    raise exception using errcode = 'SH402', message = format('order_not_found: %s', p_order_id);
  end if;
  return v_order;
end
$$;

revoke all on function private.lock_order(uuid) from public, anon, authenticated, service_role;

-- The catalogue and where its stock sits: products (public, readable by shoppers), locations and the cached
-- stock levels per product and location (private; changed only together with a ledger row).

-- ============================================================================================================
-- Domains
-- ============================================================================================================
-- Why: a rule about one value is written once, as a domain, and holds wherever the value is stored: a currency
-- code in products and orders, money in products, order lines and orders. (Rules that tie columns together stay
-- table CHECKs.) A domain is also the cheaper place for such a rule: its CHECK is kept compiled in the type
-- cache, while a table's CHECK constraints are parsed back from their stored text and planned again by every
-- statement that writes the table. create_order writes five tables, and with every single-column rule a table
-- CHECK, a third of its instructions went to exactly that.
create domain public.currency_code as char(3) check (value ~ '^[A-Z]{3}$');
comment on domain public.currency_code is 'ISO 4217 currency code: three capital letters.';

-- Why: money is an integer count of the currency's minor units (cents), never a float, never negative.
create domain public.minor_units as bigint check (value >= 0);
comment on domain public.minor_units is 'A non-negative amount of money in minor units (cents) of its row''s currency.';

-- Why: a count of units on a shelf or held back for buyers is never negative: whatever the code does, a deduction
-- or a release below zero aborts its transaction.
create domain public.unit_count as integer check (value >= 0);
comment on domain public.unit_count is 'A number of units, never negative.';

-- Why: tax rates in basis points (1900 = 19 %), from 0 to 100 %.
create domain public.basis_points as integer check (value between 0 and 10000);
comment on domain public.basis_points is 'A rate in basis points: 0..10000 (1900 = 19 %).';

-- ============================================================================================================
-- Products
-- ============================================================================================================
-- Why: the single source of prices. create_order copies unit_price and tax_rate_bp into the order lines, so a
-- later price change never alters an order already placed. Money is integer minor units (cents) of `currency`;
-- unit_price is net and tax_rate_bp is in basis points (1900 = 19 %).
create table public.products (
  id uuid primary key default gen_random_uuid(),
  sku text not null unique check (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  name text not null check (length(btrim(name)) between 1 and 200),
  unit_price public.minor_units not null,
  currency public.currency_code not null default 'EUR',
  tax_rate_bp public.basis_points not null default 0,
  active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.products is 'Catalogue: net unit price in minor units, tax rate in basis points. Prices are copied into order lines.';

alter table public.products enable row level security;

-- Why: the shop window is public: anyone, signed in or not, may read products that are on sale.
create policy "Anyone reads the active catalogue"
  on public.products for select
  to anon, authenticated
  using (active);

-- Why: staff also see products taken off sale (to answer questions about older orders).
create policy "Staff read the whole catalogue"
  on public.products for select
  to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') in ('staff', 'admin'));

revoke all on public.products from public, anon, authenticated, service_role;
grant select on public.products to anon, authenticated;
-- Why: the back office (service key) maintains the catalogue; stock is never written here but via restock. It may
-- change everything but the id: order lines, reservations and the ledger name products by id.
grant select, insert on public.products to service_role;
grant update (sku, name, unit_price, currency, tax_rate_bp, active) on public.products to service_role;

-- Why: keeps updated_at honest when the back office edits a product.
create function private.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger products_touch_updated_at
  before update on public.products
  for each row execute function private.touch_updated_at();

-- Why: order lines, reservations and the ledger name products and stock levels without foreign keys (a foreign
-- key check locks the parent row FOR KEY SHARE: on a product selling hundreds of times a second, every order
-- would create a multixact on that one row and on its stock row, ~15 % of the hot product's rate). What a foreign
-- key guarded instead holds here: a product, location or stock level, once created, is never deleted nor re-keyed,
-- for every role, the owner included. A product is taken off sale with active = false. Orders are kept the same way
-- (20261125000400_orders.sql). The trigger's argument, if any, is the hint: what to do instead.
create function private.keep_referenced_rows()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception using
    errcode = 'restrict_violation',
    message = format('%s.%s rows are named by other rows without a foreign key: %s is refused',
                     tg_table_schema, tg_table_name, case when tg_op = 'UPDATE' then 'changing the key' else tg_op end),
    hint = coalesce(tg_argv[0], 'Take a product off sale with active = false.');
end
$$;

create trigger products_never_deleted
  before delete or truncate on public.products
  for each statement execute function private.keep_referenced_rows();

-- (per row, unlike stock levels and orders below: touch_updated_at locks each updated product row anyway, and an
-- edit that repeats the id goes through)
create trigger products_id_fixed
  before update of id on public.products
  for each row when (old.id is distinct from new.id) execute function private.keep_referenced_rows();

-- ============================================================================================================
-- Locations
-- ============================================================================================================
-- Why: stock sits in the shop and in the warehouse; each sales channel draws from them in its own order
-- (in store, the shop's shelf first; online, the warehouse first) so the shop keeps its shelf for walk-ins.
create table private.locations (
  id smallint primary key,
  code text not null unique check (code ~ '^[a-z][a-z0-9_]{0,31}$'),
  name text not null,
  instore_priority smallint not null unique,
  online_priority smallint not null unique
);
comment on table private.locations is 'Stock locations. Lower priority = drawn from first (in store: sumup; online: stripe).';
comment on column private.locations.instore_priority is 'Allocation order for in-store (sumup) orders; lower first.';
comment on column private.locations.online_priority is 'Allocation order for online (stripe) orders; lower first.';

alter table private.locations enable row level security;
revoke all on private.locations from public, anon, authenticated, service_role;

insert into private.locations (id, code, name, instore_priority, online_priority) values
  (1, 'shop', 'Shop floor', 1, 2),
  (2, 'warehouse', 'Warehouse', 2, 1);

-- (stock levels, reservations and the ledger name locations without foreign keys: see private.stock_levels)
create trigger locations_keep_rows
  before delete or truncate or update of id on private.locations
  for each statement execute function private.keep_referenced_rows('Stock levels name their location: it stays.');

-- ============================================================================================================
-- Stock levels
-- ============================================================================================================
-- Why: the cached figure every sale checks and locks. on_hand is what physically sits at the location,
-- reserved what active reservations hold back; available = on_hand - reserved. The unit_count domain and the
-- CHECK make overselling impossible whatever the code does: a reservation beyond on_hand, or a deduction below
-- zero, aborts the transaction. Only engine functions change these rows, always together with a stock_movements row.
create table private.stock_levels (
  -- (no foreign keys: products and locations are never deleted nor re-keyed (keep_referenced_rows). PostgreSQL checks
  -- a row's foreign keys again whenever a transaction updates a version of it that the transaction wrote itself, and
  -- exact expiry and the locked path update a stock row two or three times: each such order ran the checks and took
  -- FOR KEY SHARE on the product's row and on the location's, one row shared by every such transaction (an order
  -- that expires a lapsed reservation: -162 k instructions, 4.4 %, without them). Only restock and adjust_stock
  -- create stock rows, for a product and a location they have looked up; the checker's references_exist proves it.)
  product_id uuid not null,
  location_id smallint not null,
  on_hand public.unit_count not null default 0,
  reserved public.unit_count not null default 0,
  -- No active reservation on this row expires before this moment ('infinity': none is active). A lower bound, not
  -- the minimum: whatever opens a reservation lowers it in the UPDATE that moves reserved, and only exact expiry
  -- (expire_lapsed_on, holding the row) raises it, to the earliest active expiry it finds; payments, cancels and
  -- the sweep close reservations without raising it (too low costs one sale a look at the reservations, never a
  -- missed lapse). So while it lies ahead, no reservation on the row has lapsed, and a sale need not look at the
  -- reservations at all. Why: a closed reservation leaves a dead entry at the head of its product's range in
  -- open_reservations_product_idx until VACUUM removes it, and "the earliest active reservation of this product",
  -- asked by every order, walked all of them (117 000 expired since the last vacuum: 624 index pages an order).
  next_expiry timestamptz not null default 'infinity',
  updated_at timestamptz not null default now(),
  primary key (product_id, location_id),
  constraint stock_levels_reserved_within_on_hand check (reserved <= on_hand)
);
comment on table private.stock_levels is
  'Cached stock per product and location; equals the ledger sum (on_hand) and the active reservations (reserved).';

-- (no index on location_id alone: it served the foreign key to locations, gone since locations keep their rows by
-- trigger, and no query reads a location's stock rows without their products)

-- (reservations and the ledger name these rows without foreign keys: see keep_referenced_rows above)
-- Per statement, not per row: any BEFORE ROW UPDATE trigger, whatever its column list and WHEN, makes every UPDATE
-- lock the row it is about to change first (one more WAL record, on the hot stock row, while its lock is held).
-- So an UPDATE that names product_id or location_id is refused whatever the values; the engine never names them.
create trigger stock_levels_keep_rows
  before delete or truncate or update of product_id, location_id on private.stock_levels
  for each statement execute function private.keep_referenced_rows();

alter table private.stock_levels enable row level security;
revoke all on private.stock_levels from public, anon, authenticated, service_role;

-- Stock keeping and the shop window: restock and adjust (through the ledger), and list_products, which tells a
-- shopper what can be bought right now.

-- ============================================================================================================
-- stock_row_json
-- ============================================================================================================
-- Why: the stock row shape returned by restock and adjust_stock.
create function private.stock_row_json(p_product_id uuid, p_location_id smallint)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'product_id', s.product_id,
    'sku', p.sku,
    'location', l.code,
    'on_hand', s.on_hand,
    'reserved', s.reserved,
    'available', s.on_hand - s.reserved,
    'updated_at', s.updated_at
  )
  from private.stock_levels s
  join public.products p on p.id = s.product_id
  join private.locations l on l.id = s.location_id
  where s.product_id = p_product_id and s.location_id = p_location_id
$$;

-- ============================================================================================================
-- stock_location, move_on_hand
-- ============================================================================================================
-- Why: what restock and adjust_stock share. stock_location checks the location (SH400) and the product (SH401),
-- creates the stock row the first time a product is kept at a location, and returns the location's id.
create function private.stock_location(p_product_id uuid, p_location text)
returns smallint
language plpgsql
set search_path = ''
as $$
declare
  v_location_id smallint;
begin
  select l.id into v_location_id from private.locations l where l.code = p_location;
  if not found then
    raise exception using errcode = 'SH400', message = format('invalid_request: unknown location %s', coalesce(p_location, 'null')),
      detail = jsonb_build_object('reason', 'unknown location')::text;
  end if;
  if not exists (select 1 from public.products p where p.id = p_product_id) then
    raise exception using errcode = 'SH401', message = format('product_not_found: %s', p_product_id),
      detail = jsonb_build_object('product_ids', jsonb_build_array(p_product_id))::text;
  end if;
  insert into private.stock_levels (product_id, location_id) values (p_product_id, v_location_id)
  on conflict (product_id, location_id) do nothing;
  return v_location_id;
end
$$;

-- move_on_hand: moves on_hand by p_delta with its ledger row ('restock' or 'adjust') and returns the stock row. The
-- caller has locked the row (lock_stock) and checked that the move is allowed.
create function private.move_on_hand(p_product_id uuid, p_location_id smallint, p_delta integer, p_reason text,
                                     p_note text)
returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  insert into private.stock_movements (product_id, location_id, delta_on_hand, reason, note)
  values (p_product_id, p_location_id, p_delta, p_reason, p_note);
  update private.stock_levels s
  set on_hand = s.on_hand + p_delta, updated_at = now()
  where s.product_id = p_product_id and s.location_id = p_location_id;
  return private.stock_row_json(p_product_id, p_location_id);
end
$$;

revoke all on function private.stock_location(uuid, text) from public, anon, authenticated, service_role;
revoke all on function private.move_on_hand(uuid, smallint, integer, text, text)
  from public, anon, authenticated, service_role;

-- ============================================================================================================
-- restock
-- ============================================================================================================
-- Why: goods arrive (a delivery, a return): on_hand grows by p_quantity at one location, with a 'restock'
-- ledger row. Creates the stock row the first time a product is stocked at a location.
create function public.restock(p_product_id uuid, p_location text, p_quantity integer, p_note text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_location_id smallint;
begin
  if p_quantity is null or p_quantity < 1 or p_quantity > 1000000 then
    raise exception using errcode = 'SH400', message = 'invalid_request: restock quantity must be between 1 and 1000000',
      detail = jsonb_build_object('reason', 'bad quantity')::text;
  end if;
  v_location_id := private.stock_location(p_product_id, p_location);
  perform private.lock_stock(array[p_product_id], array[v_location_id]);
  return private.move_on_hand(p_product_id, v_location_id, p_quantity, 'restock', p_note);
end
$$;

revoke all on function public.restock(uuid, text, integer, text) from public, anon, authenticated;
grant execute on function public.restock(uuid, text, integer, text) to service_role;

-- ============================================================================================================
-- adjust_stock
-- ============================================================================================================
-- Why: a stock count found more or fewer units than the books say (breakage, theft, miscount). Moves on_hand by
-- p_delta with an 'adjust' ledger row and a mandatory note. It may not take away units that active
-- reservations hold (SH409: cancel those orders first); lapsed reservations on the row are expired first.
create function public.adjust_stock(p_product_id uuid, p_location text, p_delta integer, p_note text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_location_id smallint;
  v_level private.stock_levels%rowtype;
  v_sku text;
begin
  if p_delta is null or p_delta = 0 or abs(p_delta) > 1000000 then
    raise exception using errcode = 'SH400', message = 'invalid_request: an adjustment moves between 1 and 1000000 units',
      detail = jsonb_build_object('reason', 'bad delta')::text;
  end if;
  if p_note is null or btrim(p_note) = '' then
    raise exception using errcode = 'SH400', message = 'invalid_request: an adjustment needs a note saying why',
      detail = jsonb_build_object('reason', 'note required')::text;
  end if;
  v_location_id := private.stock_location(p_product_id, p_location);
  -- All of the product's rows: expiring lapsed reservations may touch any location.
  perform private.lock_stock(array[p_product_id]);
  perform private.expire_lapsed_on(array[p_product_id], now());

  select * into strict v_level from private.stock_levels s
  where s.product_id = p_product_id and s.location_id = v_location_id;
  if v_level.on_hand + p_delta < v_level.reserved then
    select p.sku into v_sku from public.products p where p.id = p_product_id;
    raise exception using errcode = 'SH409',
      message = format('insufficient_stock: %s at %s has %s units not held by reservations', v_sku, p_location,
                       v_level.on_hand - v_level.reserved),
      detail = jsonb_build_object('items', jsonb_build_array(jsonb_build_object(
        'product_id', p_product_id, 'sku', v_sku, 'requested', -p_delta,
        'available', v_level.on_hand - v_level.reserved)))::text;
  end if;

  return private.move_on_hand(p_product_id, v_location_id, p_delta, 'adjust', p_note);
end
$$;

revoke all on function public.adjust_stock(uuid, text, integer, text) from public, anon, authenticated;
grant execute on function public.adjust_stock(uuid, text, integer, text) to service_role;

-- ============================================================================================================
-- list_products
-- ============================================================================================================
-- Why: the shop window. Active products by sku, keyset-paginated (p_after = the last sku seen), each with what
-- can be bought now: on_hand - reserved over all locations, plus reservations already past expires_at, which
-- count as free even before the sweep has run. Security definer only to read the private stock figures; it
-- returns nothing that is not on sale. Reads without locks: a hint for shoppers, create_order decides.
create function public.list_products(p_after text default null, p_limit integer default 50, p_now timestamptz default now())
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 50), 1), 200);
  v_items jsonb;
  v_count integer;
begin
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', x.id, 'sku', x.sku, 'name', x.name, 'unit_price', x.unit_price, 'currency', x.currency,
           'tax_rate_bp', x.tax_rate_bp, 'available', x.available
         ) order by x.sku), '[]'::jsonb),
         count(*)
  into v_items, v_count
  from (
    select p.id, p.sku, p.name, p.unit_price, p.currency, p.tax_rate_bp,
           f.free
           -- Lapsed units, only for a product with a stock row whose next_expiry has come (on the others none has
           -- lapsed), read from its lowest next_expiry on (no active reservation of it expires earlier; before it
           -- lie the dead index entries of the reservations closed since the last VACUUM) up to p_now, through
           -- open_reservations_product_idx: with product_id = p.id both bounds on expires_at end the scan there
           -- (a range of one value on product_id would leave the upper one unenforced: the scan would walk the
           -- product's reservations up to the last one, a flash sale's tens of thousands). Both bounds also keep a
           -- plan skewed by a flash sale off open_reservations_expiry_idx: through it, the same time window holds
           -- every product's reservations, through the product index only this one's. (create_order's exact
           -- expiry, expire_lapsed_on, reads a product's lapsed reservations the same way.)
           + case when f.floor <= p_now
                  then coalesce((select sum(r.quantity) from private.open_reservations r
                                 where r.product_id = p.id
                                   and r.expires_at >= f.floor and r.expires_at <= p_now), 0)
                  else 0 end
             as available
    from public.products p
    cross join lateral (
      select coalesce(sum(s.on_hand - s.reserved), 0) as free, min(s.next_expiry) as floor
      from private.stock_levels s
      where s.product_id = p.id
    ) f
    where p.active and (p_after is null or p.sku > p_after)
    order by p.sku
    limit v_limit
  ) x;

  return jsonb_build_object(
    'items', v_items,
    'next_cursor', case when v_count = v_limit
                        and exists (select 1 from public.products p
                                    where p.active and p.sku > (v_items -> (v_count - 1) ->> 'sku'))
                        then v_items -> (v_count - 1) ->> 'sku' end
  );
end
$$;

revoke all on function public.list_products(text, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.list_products(text, integer, timestamptz) to anon, authenticated, service_role;

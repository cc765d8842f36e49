/**
 * The invariant checker: reads a stockhold database and reports every broken invariant of ARCHITECTURE.md
 * ("Invariants the tests hold") that can be seen in the data at rest: stock never negative nor over-reserved
 * (1); cached stock equal to its ledger and to the active reservations, and no active reservation expiring before
 * its stock row's next_expiry (2); each order paid at most once and
 * deducted exactly once (3), its creation recorded once; reservations consistent with their orders, orders whole
 * (no half-written order);
 * and the API roles' privileges (6). Invariants 4 and 5 are about requests, not rows: the suites test them.
 * The concurrency, fault and end-to-end suites call {@link checkInvariants} after they have run; operators run
 * it from the command line:
 *
 *   npm run check                              # SUPABASE_DB_URL, else the local dev database
 *   npm run check -- postgresql://...          # another database
 *
 * Exit code 0 and "all invariants hold" when nothing is wrong; 1 and one line per problem otherwise; 2 when the
 * database cannot be read.
 * Read-only: every query runs in one REPEATABLE READ, READ ONLY transaction, so the checks see one snapshot
 * even while the shop keeps selling.
 */
import postgres from "postgres";

/** One broken invariant, on one row (a stock level, a reservation, an order). */
export interface Problem {
  /** Which rule: a short stable name (see {@link CHECKS}). */
  invariant: string;
  /** What is wrong, with the ids and figures needed to find it. */
  message: string;
}

/** Options for {@link checkInvariants}. */
export interface CheckOptions {
  /**
   * Only look at these products, their stock, their ledger, and the orders that contain them (a test checking
   * its own fixtures after every step). Default: the whole database.
   */
  productIds?: string[];
  /** At most this many problems reported per invariant (the rest are counted in one extra line). Default 50. */
  limitPerCheck?: number;
}

/**
 * What a run looks at: every row (both null), or the given products (their stock and ledger) and the orders
 * with a line on one of them.
 */
interface Scope {
  products: string[] | null;
  orders: string[] | null;
}

/** A check: its name, the rule it holds, and a query returning one `detail` text per offending row. */
interface Check {
  invariant: string;
  rule: string;
  query: (sql: postgres.TransactionSql, scope: Scope) => postgres.PendingQuery<postgres.Row[]>;
}

// Stock and ledger queries filter with `(${scope.products}::uuid[] is null or product_id = any (...))`, planned
// with the value, so the OR folds away. The orders in scope are looked up once per run and passed as a list, so
// that the planner sees how few orders a scoped check is about.

/** The orders in scope: all of them, or the listed ones. */
function scopedOrders(sql: postgres.TransactionSql, orders: string[] | null) {
  return orders === null
    ? sql`select o.* from public.orders o`
    : sql`select o.* from public.orders o where o.id = any (${orders}::uuid[])`;
}

/** The invariants, in the order of ARCHITECTURE.md. */
export const CHECKS: Check[] = [
  // ---- 1. never negative, never more reserved than on hand -------------------------------------------------
  {
    invariant: "stock_bounds",
    rule: "on_hand >= 0, reserved >= 0, reserved <= on_hand",
    query: (sql, scope) =>
      sql`
      select format('%s at %s: on_hand %s, reserved %s', p.sku, l.code, s.on_hand, s.reserved) as detail
      from private.stock_levels s
      join public.products p on p.id = s.product_id
      join private.locations l on l.id = s.location_id
      where (s.on_hand < 0 or s.reserved < 0 or s.reserved > s.on_hand)
        and (${scope.products}::uuid[] is null or s.product_id = any (${scope.products}::uuid[]))
      order by p.sku, l.code`,
  },
  // ---- 2. cached figures equal their evidence ---------------------------------------------------------------
  {
    invariant: "reserved_equals_active_reservations",
    rule: "stock_levels.reserved = sum of active reservations per product and location",
    query: (sql, scope) =>
      sql`
      with held as (
        select r.product_id, r.location_id, sum(r.quantity)::bigint as qty
        from private.open_reservations r
        where (${scope.products}::uuid[] is null or r.product_id = any (${scope.products}::uuid[]))
        group by 1, 2
      ), levels as (
        select s.product_id, s.location_id, s.reserved::bigint as reserved
        from private.stock_levels s
        where (${scope.products}::uuid[] is null or s.product_id = any (${scope.products}::uuid[]))
      )
      select format('%s at %s: reserved %s, active reservations %s', coalesce(p.sku, k.product_id::text),
                    coalesce(l.code, k.location_id::text), coalesce(v.reserved, 0), coalesce(h.qty, 0)) as detail
      from (select product_id, location_id from levels union select product_id, location_id from held) k
      left join levels v on v.product_id = k.product_id and v.location_id = k.location_id
      left join held h on h.product_id = k.product_id and h.location_id = k.location_id
      left join public.products p on p.id = k.product_id
      left join private.locations l on l.id = k.location_id
      where coalesce(v.reserved, 0) <> coalesce(h.qty, 0) or v.product_id is null
      order by 1`,
  },
  {
    invariant: "next_expiry_bounds_reservations",
    rule: "no active reservation expires before its stock row's next_expiry (sales read that bound instead of the " +
      "reservations to know that nothing on the row has lapsed)",
    query: (sql, scope) =>
      sql`
      with first as (
        select r.product_id, r.location_id, min(r.expires_at) as first_expiry
        from private.open_reservations r
        where (${scope.products}::uuid[] is null or r.product_id = any (${scope.products}::uuid[]))
        group by 1, 2
      )
      select format('%s at %s: next_expiry %s, but an active reservation expires at %s', p.sku, l.code,
                    s.next_expiry, f.first_expiry) as detail
      from first f
      join private.stock_levels s on s.product_id = f.product_id and s.location_id = f.location_id
      join public.products p on p.id = s.product_id
      join private.locations l on l.id = s.location_id
      where f.first_expiry < s.next_expiry
      order by p.sku, l.code`,
  },
  {
    invariant: "stock_equals_ledger",
    rule: "stock_levels.on_hand (and reserved) = the ledger's sum for that product and location",
    query: (sql, scope) =>
      sql`
      with ledger as (
        select m.product_id, m.location_id, sum(m.delta_on_hand)::bigint as on_hand,
               sum(m.delta_reserved)::bigint as reserved
        from private.stock_movements m
        where (${scope.products}::uuid[] is null or m.product_id = any (${scope.products}::uuid[]))
        group by 1, 2
      ), levels as (
        select s.product_id, s.location_id, s.on_hand::bigint as on_hand, s.reserved::bigint as reserved
        from private.stock_levels s
        where (${scope.products}::uuid[] is null or s.product_id = any (${scope.products}::uuid[]))
      )
      select format('%s at %s: stored on_hand %s / reserved %s, ledger sums %s / %s%s',
                    coalesce(p.sku, k.product_id::text), coalesce(l.code, k.location_id::text),
                    coalesce(v.on_hand, 0), coalesce(v.reserved, 0), coalesce(g.on_hand, 0), coalesce(g.reserved, 0),
                    case when v.product_id is null then ' (ledger rows without a stock row)' else '' end) as detail
      from (select product_id, location_id from levels union select product_id, location_id from ledger) k
      left join levels v on v.product_id = k.product_id and v.location_id = k.location_id
      left join ledger g on g.product_id = k.product_id and g.location_id = k.location_id
      left join public.products p on p.id = k.product_id
      left join private.locations l on l.id = k.location_id
      where v.product_id is null
         or coalesce(v.on_hand, 0) <> coalesce(g.on_hand, 0)
         or coalesce(v.reserved, 0) <> coalesce(g.reserved, 0)
      order by 1`,
  },
  {
    invariant: "reservation_ledger",
    rule: "each reservation has one 'reserve' row; an open one matches it and has no closing row; a closed one (no " +
      "longer open) has exactly one closing row (fulfil, release or expire) giving back the reserved quantity of the " +
      "same product, location and order, fulfil also deducting it from on_hand",
    query: (sql, scope) =>
      sql`
      with open as (
        select r.id, r.order_id, r.product_id, r.location_id, r.quantity::integer as quantity
        from private.open_reservations r
        where (${scope.orders}::uuid[] is null or r.order_id = any (${scope.orders}::uuid[]))
          and (${scope.products}::uuid[] is null or r.product_id = any (${scope.products}::uuid[]))
      ), moves as (
        select m.* from private.stock_movements m
        where m.reservation_id is not null
          and (${scope.orders}::uuid[] is null or m.order_id = any (${scope.orders}::uuid[]))
          and (${scope.products}::uuid[] is null or m.product_id = any (${scope.products}::uuid[]))
      ), story as (
        select m.reservation_id as id,
               count(*) filter (where m.reason = 'reserve') as reserves,
               min(m.id) filter (where m.reason = 'reserve') as reserve_row,
               count(*) filter (where m.reason <> 'reserve') as closes,
               min(m.id) filter (where m.reason <> 'reserve') as close_row
        from moves m
        group by 1
      )
      select format('reservation %s (order %s, %s): %s', k.id, coalesce(o.order_id, r.order_id, c.order_id),
                    coalesce(p.sku, coalesce(o.product_id, r.product_id, c.product_id)::text), x.problem) as detail
      from (select id from open union select id from story) k
      left join open o on o.id = k.id
      left join story t on t.id = k.id
      left join private.stock_movements r on r.id = t.reserve_row
      left join private.stock_movements c on c.id = t.close_row
      left join public.products p on p.id = coalesce(o.product_id, r.product_id, c.product_id)
      cross join lateral (
        select case
          when coalesce(t.reserves, 0) <> 1 then format('%s reserve row(s)', coalesce(t.reserves, 0))
          when o.id is not null and t.closes <> 0 then format('open, but with %s closing row(s)', t.closes)
          when o.id is null and t.closes = 0 then 'neither open nor closed: its units are nowhere'
          when t.closes > 1 then format('%s closing rows', t.closes)
          when o.id is not null
           and (r.delta_reserved, r.delta_on_hand, r.product_id, r.location_id, r.order_id)
               is distinct from (o.quantity, 0, o.product_id, o.location_id, o.order_id)
            then format('open x%s, but its reserve row (%s) says x%s', o.quantity, r.id, r.delta_reserved)
          when o.id is null
           and (c.delta_reserved, c.delta_on_hand, c.product_id, c.location_id, c.order_id)
               is distinct from (-r.delta_reserved, case when c.reason = 'fulfil' then -r.delta_reserved else 0 end,
                                 r.product_id, r.location_id, r.order_id)
            then format('reserved x%s (row %s), but its closing row %s (%s) moves on_hand %s, reserved %s',
                        r.delta_reserved, r.id, c.id, c.reason, c.delta_on_hand, c.delta_reserved)
        end as problem
      ) x
      where x.problem is not null
      order by 1`,
  },
  // ---- 3. paid at most once, deducted exactly once ----------------------------------------------------------
  {
    invariant: "deducted_exactly_once",
    rule: "a paid or fulfilled order's 'fulfil' ledger rows deduct exactly its items' quantities, once; any other " +
      "order deducts nothing",
    query: (sql, scope) =>
      sql`
      with ords as (
        ${scopedOrders(sql, scope.orders)}
      ), deducted as (
        select m.order_id, m.product_id, (-sum(m.delta_on_hand))::bigint as qty, count(*) as rows
        from private.stock_movements m
        join ords o on o.id = m.order_id
        -- "is not null" lets the planner use the partial index on order_id for a scoped check
        where m.reason = 'fulfil' and m.order_id is not null
        group by 1, 2
      ), wanted as (
        select i.order_id, i.product_id, i.quantity::bigint as qty
        from public.order_items i
        join ords o on o.id = i.order_id
        where o.status in ('paid', 'fulfilled')
      )
      select format('order %s (%s), product %s: deducted %s, should be %s', o.id, o.status,
                    coalesce(p.sku, k.product_id::text), coalesce(d.qty, 0), coalesce(w.qty, 0)) as detail
      from (select order_id, product_id from deducted union select order_id, product_id from wanted) k
      join ords o on o.id = k.order_id
      left join deducted d on d.order_id = k.order_id and d.product_id = k.product_id
      left join wanted w on w.order_id = k.order_id and w.product_id = k.product_id
      left join public.products p on p.id = k.product_id
      where coalesce(d.qty, 0) <> coalesce(w.qty, 0)
      order by 1`,
  },
  {
    invariant: "paid_at_most_once",
    rule: "an order moves into paid (or paid_out_of_stock) at most once, and a paid order did so exactly once",
    query: (sql, scope) =>
      sql`
      with ords as (
        ${scopedOrders(sql, scope.orders)}
      )
      select format('order %s (%s): %s transition(s) into a paid state', o.id, o.status, count(h.id)) as detail
      from ords o
      left join private.order_status_history h
        on h.order_id = o.id and h.to_status in ('paid', 'paid_out_of_stock')
       and h.from_status is distinct from h.to_status
       and coalesce(h.from_status, '') not in ('paid', 'paid_out_of_stock', 'fulfilled')
      group by o.id, o.status
      having count(h.id) > 1
          or (o.status in ('paid', 'paid_out_of_stock', 'fulfilled') and count(h.id) <> 1)
      order by 1`,
  },
  {
    invariant: "creation_recorded",
    rule: "every order's history begins with exactly one creation row, from no status to its first (create_order " +
      "writes it in the statement that inserts the order; there is no trigger to fall back on)",
    query: (sql, scope) =>
      sql`
      with ords as (
        ${scopedOrders(sql, scope.orders)}
      ), firsts as (
        select o.id, o.status::text as status,
               case o.payment_method when 'sumup' then 'awaiting_instore_payment' else 'awaiting_payment' end as first
        from ords o
      )
      select format('order %s (%s): %s creation row(s)%s', f.id, f.status, count(h.id),
                    case when count(h.id) = 1 and min(h.to_status) <> f.first
                         then format(', to %s', min(h.to_status)) else '' end) as detail
      from firsts f
      left join private.order_status_history h on h.order_id = f.id and h.from_status is null
      group by f.id, f.status, f.first
      having count(h.id) <> 1 or min(h.to_status) <> f.first
      order by 1`,
  },
  // ---- reservations agree with their order -------------------------------------------------------------------
  {
    invariant: "reservations_match_order",
    rule: "no active reservation on an order that is not awaiting payment; an awaiting order holds (or held, " +
      "until expiry) exactly its items; a paid order consumed exactly its items; no other order consumed any",
    query: (sql, scope) =>
      sql`
      with ords as (${scopedOrders(sql, scope.orders)}),
      per_product as (
        select r.order_id, r.product_id,
               coalesce(sum(r.quantity) filter (where r.status = 'active'), 0)::bigint as active,
               coalesce(sum(r.quantity) filter (where r.status = 'consumed'), 0)::bigint as consumed,
               coalesce(sum(r.quantity) filter (where r.status in ('active', 'expired')), 0)::bigint as held_or_lapsed,
               count(*) filter (where r.status in ('consumed', 'released')) as closed_by_hand
        from private.reservations r
        join ords o on o.id = r.order_id
        group by 1, 2
      ), lines as (
        select i.order_id, i.product_id, i.quantity::bigint as qty
        from public.order_items i join ords o on o.id = i.order_id
      ), bad as (
        select o.id, o.status, coalesce(r.product_id, i.product_id) as product_id, i.qty,
               coalesce(r.active, 0) as active, coalesce(r.consumed, 0) as consumed
        from per_product r
        full join lines i on i.order_id = r.order_id and i.product_id = r.product_id
        join ords o on o.id = coalesce(r.order_id, i.order_id)
        where i.order_id is null
           or case
                when o.status in ('awaiting_instore_payment', 'awaiting_payment') then
                  coalesce(r.held_or_lapsed, 0) <> i.qty or coalesce(r.closed_by_hand, 0) <> 0
                when o.status in ('paid', 'fulfilled') then
                  coalesce(r.active, 0) <> 0 or coalesce(r.consumed, 0) <> i.qty
                else
                  coalesce(r.active, 0) <> 0 or coalesce(r.consumed, 0) <> 0
              end
      )
      select format('order %s (%s), product %s: ordered %s, active %s, consumed %s%s', b.id, b.status,
                    coalesce(p.sku, b.product_id::text), coalesce(b.qty, 0), b.active, b.consumed,
                    case when b.qty is null then ' (reservation for a product not in the order)' else '' end) as detail
      from bad b
      left join public.products p on p.id = b.product_id
      order by 1`,
  },
  // ---- orders are whole --------------------------------------------------------------------------------------
  {
    invariant: "order_whole",
    rule: "every order has lines; each line's arithmetic holds; subtotal, tax and total are the sums of the lines; " +
      "each status carries its timestamp",
    query: (sql, scope) =>
      sql`
      with ords as (
        ${scopedOrders(sql, scope.orders)}
      ), sums as (
        select i.order_id, count(*) as lines, sum(i.line_subtotal)::bigint as subtotal, sum(i.line_tax)::bigint as tax,
               sum(i.line_total)::bigint as total,
               count(*) filter (where i.line_subtotal <> i.unit_price * i.quantity
                                   or i.line_tax <> round((i.unit_price * i.quantity)::numeric * i.tax_rate_bp / 10000)
                                   or i.line_total <> i.line_subtotal + i.line_tax) as bad_lines
        from public.order_items i
        join ords o on o.id = i.order_id
        group by 1
      )
      select format('order %s (%s): %s', o.id, o.status, case
               when s.order_id is null then 'has no items'
               when s.bad_lines > 0 then format('%s line(s) with wrong arithmetic', s.bad_lines)
               when (o.subtotal, o.tax, o.total) is distinct from (s.subtotal, s.tax, s.subtotal + s.tax)
                 or o.total <> s.total
                 then format('totals %s/%s/%s but lines sum to %s/%s/%s', o.subtotal, o.tax, o.total,
                             s.subtotal, s.tax, s.total)
               else 'status without its timestamp'
             end) as detail
      from ords o
      left join sums s on s.order_id = o.id
      where s.order_id is null
         or s.bad_lines > 0
         or (o.subtotal, o.tax, o.total) is distinct from (s.subtotal, s.tax, s.subtotal + s.tax)
         or o.total <> s.total
         or (o.status in ('paid', 'paid_out_of_stock', 'fulfilled') and o.paid_at is null)
         or (o.status = 'fulfilled' and o.fulfilled_at is null)
         or (o.status = 'cancelled' and o.cancelled_at is null)
         or (o.status = 'expired' and o.expired_at is null)
      order by 1`,
  },
  // ---- references without foreign keys (products, locations and stock levels are never deleted; this proves it)
  {
    invariant: "references_exist",
    rule: "every order line names a product, every stock level a product and a location, every reservation and " +
      "ledger row a stock level, every reservation an order",
    query: (sql, scope) =>
      sql`
      select format('%s %s names %s, which does not exist', r.kind, r.id, r.target) as detail
      from (
        select 'order line' as kind, i.order_id || '/' || i.line_no as id, 'product ' || i.product_id as target
        from public.order_items i
        where not exists (select 1 from public.products p where p.id = i.product_id)
          and (${scope.products}::uuid[] is null or i.product_id = any (${scope.products}::uuid[]))
        union all
        select 'stock level', s.product_id || '/' || s.location_id, m.target
        from private.stock_levels s
        cross join lateral (
          select case when not exists (select 1 from public.products p where p.id = s.product_id)
                        then 'product ' || s.product_id
                      when not exists (select 1 from private.locations l where l.id = s.location_id)
                        then 'location ' || s.location_id end as target
        ) m
        where m.target is not null
          and (${scope.products}::uuid[] is null or s.product_id = any (${scope.products}::uuid[]))
        union all
        select x.kind, x.id, format('stock level %s/%s', x.product_id, x.location_id)
        from (
          select 'reservation' as kind, r.id::text as id, r.product_id, r.location_id from private.open_reservations r
          union all
          select 'ledger row', m.id::text, m.product_id, m.location_id from private.stock_movements m
        ) x
        where not exists (select 1 from private.stock_levels s
                          where s.product_id = x.product_id and s.location_id = x.location_id)
          and (${scope.products}::uuid[] is null or x.product_id = any (${scope.products}::uuid[]))
        union all
        select 'reservation', r.id::text, 'order ' || r.order_id
        from private.open_reservations r
        where not exists (select 1 from public.orders o where o.id = r.order_id)
          and (${scope.products}::uuid[] is null or r.product_id = any (${scope.products}::uuid[]))
      ) r
      order by 1`,
  },
  // ---- 6. the browser's keys reach only what they may -------------------------------------------------------
  {
    invariant: "api_privileges",
    rule: "anon and authenticated may execute only get_order and list_products, cannot reach the private and " +
      "admin schemas, cannot write orders, lines or products, and row-level security is on for those tables " +
      "(whole-database runs only)",
    query: (sql, scope) =>
      sql`
      with api_roles (role) as (values ('anon'), ('authenticated'))
      select format('%s may execute %s.%s(%s)', a.role, n.nspname, p.proname,
                    pg_get_function_identity_arguments(p.oid)) as detail
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace
      cross join api_roles a
      where n.nspname in ('public', 'private', 'admin')
        and p.proname not in ('get_order', 'list_products')
        and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
        and has_function_privilege(a.role, p.oid, 'execute')
        and ${scope.products}::uuid[] is null
      union all
      select format('%s may use schema %s', a.role, s.nspname)
      from pg_namespace s cross join api_roles a
      where s.nspname in ('private', 'admin') and has_schema_privilege(a.role, s.oid, 'usage')
        and ${scope.products}::uuid[] is null
      union all
      select format('%s may %s %s', a.role, w.privilege, t.oid::regclass)
      from pg_class t
      cross join api_roles a
      cross join (values ('insert'), ('update'), ('delete'), ('truncate')) w (privilege)
      where t.oid in ('public.orders'::regclass, 'public.order_items'::regclass, 'public.products'::regclass)
        and has_table_privilege(a.role, t.oid, w.privilege)
        and ${scope.products}::uuid[] is null
      union all
      select format('row-level security is off on %s', t.oid::regclass)
      from pg_class t
      where t.oid in ('public.orders'::regclass, 'public.order_items'::regclass, 'public.products'::regclass)
        and not t.relrowsecurity
        and ${scope.products}::uuid[] is null
      order by 1`,
  },
];

/**
 * Runs every check and returns the problems found (empty when every invariant holds). `sql` is any postgres.js
 * client with read access to the private schema (the database owner, as tests and operators connect).
 */
export async function checkInvariants(
  sql: postgres.Sql | postgres.TransactionSql,
  options: CheckOptions = {},
): Promise<Problem[]> {
  const products = options.productIds ?? null;
  const limit = options.limitPerCheck ?? 50;
  const problems: Problem[] = [];
  const run = async (tx: postgres.TransactionSql) => {
    const scope: Scope = { products, orders: null };
    if (products !== null) {
      // A scoped check reads a few rows by index: starting parallel workers would cost more than the query.
      await tx`set local max_parallel_workers_per_gather = 0`;
      const [row] = await tx`select coalesce(array_agg(distinct i.order_id), '{}') as ids
                             from public.order_items i where i.product_id = any (${products}::uuid[])`;
      scope.orders = row.ids as string[];
    }
    for (const check of CHECKS) {
      const rows = await check.query(tx, scope);
      for (const row of rows.slice(0, limit)) problems.push({ invariant: check.invariant, message: row.detail });
      if (rows.length > limit) {
        problems.push({ invariant: check.invariant, message: `... and ${rows.length - limit} more` });
      }
    }
  };
  if ("savepoint" in sql) {
    // Already inside the caller's transaction (a test that breaks data on purpose and rolls back).
    await run(sql);
  } else {
    // One snapshot for all checks: a sale committing between two checks cannot look like a broken invariant.
    await sql.begin("isolation level repeatable read read only", async (tx) => {
      // The whole-database checks hash the ledger against the reservations; let them do it in memory.
      await tx`set local work_mem = '64MB'`;
      await run(tx);
    });
  }
  return problems;
}

/** The problems as readable lines, or "all invariants hold". */
export function formatProblems(problems: Problem[]): string {
  if (problems.length === 0) return "all invariants hold";
  const rules = new Map(CHECKS.map((c) => [c.invariant, c.rule]));
  const lines: string[] = [`${problems.length} problem(s):`];
  let last = "";
  for (const p of problems) {
    if (p.invariant !== last) {
      lines.push(`\n${p.invariant}: ${rules.get(p.invariant) ?? ""}`);
      last = p.invariant;
    }
    lines.push(`  - ${p.message}`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  // The dev database of the local stack (README, "Local keys") unless told otherwise.
  const url = Deno.args.find((a) => !a.startsWith("-")) ?? Deno.env.get("SUPABASE_DB_URL") ??
    "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.error(
      "usage: deno run -A scripts/check.ts [postgresql://...]   (default: SUPABASE_DB_URL, else the dev database)",
    );
    Deno.exit(0);
  }
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  let code = 0;
  try {
    const started = performance.now();
    const problems = await checkInvariants(sql);
    const where = new URL(url.replace(/^postgres(ql)?:/, "http:"));
    console.log(formatProblems(problems));
    console.error(
      `checked ${where.hostname}:${where.port}${where.pathname} in ${Math.round(performance.now() - started)} ms`,
    );
    code = problems.length === 0 ? 0 : 1;
  } catch (err) {
    console.error(`check failed: ${err instanceof Error ? err.message : String(err)}`);
    code = 2;
  } finally {
    await sql.end({ timeout: 5 });
  }
  Deno.exit(code);
}

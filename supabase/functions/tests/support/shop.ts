/**
 * Test fixtures against the real database: products with stock (unique SKUs, so tests never collide), orders
 * made through the engine, stock and history read back, and JWTs signed like Supabase's (HS256, local secret).
 */
import postgres from "postgres";
import { SignJWT } from "jose";
import { closeDb } from "../../_shared/db.ts";
import { JWT_SECRET } from "./keys.ts";

/** A direct connection for fixtures and assertions (service-level, outside the functions' pool). */
export function testSql(): postgres.Sql {
  const url = Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL must point at a database with the migrations applied");
  return postgres(url, { max: 2, prepare: false, onnotice: () => {} });
}

/** A SKU no other test run uses. */
export function uniqueSku(prefix = "T"): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 12)}`;
}

/** Creates an active product and puts `stock` units on the shop floor; returns its id and sku. */
export async function makeProduct(
  sql: postgres.Sql,
  opts: { price?: number; taxBp?: number; stock?: number; name?: string; sku?: string; active?: boolean } = {},
): Promise<{ id: string; sku: string }> {
  const sku = opts.sku ?? uniqueSku();
  const [row] = await sql`
    insert into public.products (sku, name, unit_price, currency, tax_rate_bp, active)
    values (${sku}, ${opts.name ?? `Test ${sku}`}, ${opts.price ?? 1000}, 'EUR', ${opts.taxBp ?? 1900},
            ${opts.active ?? true})
    returning id`;
  if ((opts.stock ?? 10) > 0) {
    await sql`select public.restock(${row.id}::uuid, 'shop', ${opts.stock ?? 10}::int, 'test fixture')`;
  }
  return { id: row.id as string, sku };
}

/** An order made by the engine (as orders-create would), returned as the engine's order JSON. */
export async function makeOrder(
  sql: postgres.Sql,
  items: { product_id: string; quantity: number }[],
  opts: { method?: "sumup" | "stripe"; customerId?: string | null } = {},
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const [{ result }] = await sql`
    select public.create_order(${sql.json(items)}::jsonb, ${opts.method ?? "sumup"}, ${crypto.randomUUID()},
                               null, '{}'::jsonb, ${opts.customerId ?? null}::uuid) as result`;
  return result.order;
}

/** Stock of a product summed over locations. */
export async function stockOf(sql: postgres.Sql, productId: string): Promise<{ onHand: number; reserved: number }> {
  const [row] = await sql`
    select coalesce(sum(on_hand), 0)::int as on_hand, coalesce(sum(reserved), 0)::int as reserved
    from private.stock_levels where product_id = ${productId}::uuid`;
  return { onHand: row.on_hand, reserved: row.reserved };
}

/** Stock movements (the ledger) of a product, oldest first. */
export async function movementsOf(sql: postgres.Sql, productId: string): Promise<Record<string, unknown>[]> {
  return await sql`select * from private.stock_movements where product_id = ${productId}::uuid order by id`;
}

/** The order's status and payment reference straight from the table. */
export async function orderRow(sql: postgres.Sql, orderId: string): Promise<Record<string, unknown>> {
  const [row] = await sql`select * from public.orders where id = ${orderId}::uuid`;
  return row;
}

/** The order's status history (audit), oldest first. */
export async function historyOf(sql: postgres.Sql, orderId: string): Promise<Record<string, unknown>[]> {
  return await sql`select * from private.order_status_history where order_id = ${orderId}::uuid order by id`;
}

/** A Supabase-style access token for a signed-in user; `staffRole` puts staff/admin into app_metadata.role. */
export async function userJwt(
  opts: { sub?: string; staffRole?: "staff" | "admin"; expiresIn?: string } = {},
): Promise<{ token: string; sub: string }> {
  const sub = opts.sub ?? crypto.randomUUID();
  const token = await new SignJWT({
    role: "authenticated",
    aud: "authenticated",
    app_metadata: opts.staffRole ? { provider: "email", role: opts.staffRole } : { provider: "email" },
  })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? "1h")
    .sign(new TextEncoder().encode(JWT_SECRET));
  return { token, sub };
}

/** Runs `fn` with environment variables set (undefined = unset), restoring the previous values afterwards. */
export async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

/**
 * A Deno test with a fixture connection, quiet logs and `env` set for its duration, that closes both its connection
 * and the functions' pool afterwards (postgres.js keeps idle timers between queries, so the per-test leak checks
 * are off).
 */
export function dbTest(
  name: string,
  fn: (sql: postgres.Sql) => Promise<void>,
  env: Record<string, string | undefined> = {},
): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = testSql();
      try {
        await withEnv({ LOG_LEVEL: "silent", ...env }, () => fn(sql));
      } finally {
        await sql.end();
        await closeDb();
      }
    },
  });
}

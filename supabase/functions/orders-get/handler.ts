/**
 * orders-get: a signed-in customer reads their own order (e.g. on the page Stripe returns them to); staff read
 * any. The engine's get_order runs as the caller's database role with the caller's JWT claims, so row-level
 * security alone decides what is visible; an order the caller may not see answers exactly like one that does
 * not exist (404), so ids cannot be probed.
 */
import { authenticate } from "../_shared/auth.ts";
import { withTx } from "../_shared/db.ts";
import { getOrder } from "../_shared/engine.ts";
import { AppError } from "../_shared/errors.ts";
import { json, readJson, serve } from "../_shared/http.ts";
import { parseOrThrow } from "../_shared/validate.ts";
import { orderGetInput } from "./schema.ts";

const framed = serve({ name: "orders-get", methods: ["GET", "POST"] }, async (req, ctx) => {
  const caller = await authenticate(req, ctx.log);
  const raw = req.method === "GET" ? Object.fromEntries(new URL(req.url).searchParams) : await readJson(req);
  const { id } = parseOrThrow(orderGetInput, raw);

  const order = await withTx(
    { correlationId: ctx.correlationId, actor: caller.actor, role: caller.role, claims: caller.claims },
    (tx) => getOrder(tx, id),
  );
  if (!order) throw new AppError(404, "order_not_found", "The order does not exist.");
  // Private, per-user data: no shared cache may keep it.
  return json({ order }, 200, { "Cache-Control": "no-store" });
});

/** Answers GET `?id=<uuid>` or POST `{ id }` with `{ order }`, or 404 `order_not_found`. */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

/**
 * orders-instore: staff confirm an in-store card payment by hand (with the SumUp transaction code from the
 * receipt) or cancel an order. Both run in one transaction whose actor is `staff:<uid>` and whose correlation
 * id is the request's, so the engine's status history records who did it. The engine decides whether the
 * transition is allowed (409 `invalid_transition` otherwise); this door only checks who is asking.
 */
import { authenticate, requireStaff } from "../_shared/auth.ts";
import { withTx } from "../_shared/db.ts";
import { cancelOrder, getOrder, markPaid } from "../_shared/engine.ts";
import { AppError } from "../_shared/errors.ts";
import { json, readJson, serve } from "../_shared/http.ts";
import { parseOrThrow } from "../_shared/validate.ts";
import { instoreInput } from "./schema.ts";

const framed = serve({ name: "orders-instore", methods: ["POST"] }, async (req, ctx) => {
  // Who first: a customer learns nothing about the body's validity or the order's existence.
  const caller = requireStaff(await authenticate(req, ctx.log));
  const input = parseOrThrow(instoreInput, await readJson(req));
  const log = ctx.log.child({ action: input.action, order_id: input.order_id, actor: caller.actor });

  const outcome = await withTx({ correlationId: ctx.correlationId, actor: caller.actor }, async (tx) => {
    if (input.action === "cancel") return await cancelOrder(tx, input.order_id, input.reason ?? "cancelled by staff");
    // Staff attest that the terminal took the order's total: the amount passed is the order's own, read in
    // the same transaction. The engine still guards the transition (once only, and only from an unpaid state).
    const order = await getOrder(tx, input.order_id);
    if (!order) throw new AppError(404, "order_not_found", "The order does not exist.");
    return await markPaid(tx, input.order_id, {
      provider: "sumup",
      ref: input.transaction_code,
      amount: order.total,
      currency: order.currency,
    });
  });
  log.info("in-store action", { result: outcome.result });
  return json(outcome, 200);
});

/**
 * POST `{ action: "confirm", order_id, transaction_code }` or `{ action: "cancel", order_id, reason? }`;
 * staff or admin JWT only (403 `forbidden`). Answers `{ result, order }`.
 */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

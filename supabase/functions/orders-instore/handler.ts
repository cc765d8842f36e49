/**
 * orders-instore: staff confirm an in-store card payment by hand (with the SumUp transaction code from the
 * receipt), cancel an order, or give an order paid while its stock was gone its goods once stock is back
 * (allocate). Each runs in one transaction whose actor is `staff:<uid>` and whose correlation
 * id is the request's, so the engine's status history records who did it. The engine decides whether the
 * transition is allowed (409 `invalid_transition` otherwise) and that a SumUp transaction code pays one order only
 * (409 `transaction_code_reused`, confirm_instore_payment); this door checks who is asking and the request's shape.
 */
import { authenticate, requireStaff } from "../_shared/auth.ts";
import { callOnceEarlyRelease, withTxEarlyRelease } from "../_shared/db.ts";
import { allocatePaidOrder, cancelOrder, confirmInstorePaymentCall, type MarkPaidResult } from "../_shared/engine.ts";
import { json, readJson, serve } from "../_shared/http.ts";
import { parseOrThrow } from "../_shared/validate.ts";
import { instoreInput } from "./schema.ts";

const framed = serve({ name: "orders-instore", methods: ["POST"] }, async (req, ctx) => {
  // Who first: a customer learns nothing about the body's validity or the order's existence.
  const caller = requireStaff(await authenticate(req, ctx.log));
  const input = parseOrThrow(instoreInput, await readJson(req));
  const log = ctx.log.child({ action: input.action, order_id: input.order_id, actor: caller.actor });

  // Early lock release (as orders-create): the till hears the outcome only once it is on disk. A confirmation is
  // one statement (the payment and the claim of its code), as the webhooks' payments are.
  const context = { correlationId: ctx.correlationId, actor: caller.actor };
  const outcome = input.action === "confirm"
    ? await callOnceEarlyRelease<MarkPaidResult>(
      context,
      (sql) => confirmInstorePaymentCall(sql, input.order_id, input.transaction_code),
    )
    : await withTxEarlyRelease(context, async (tx) => {
      if (input.action === "cancel") return await cancelOrder(tx, input.order_id, input.reason ?? "cancelled by staff");
      return await allocatePaidOrder(tx, input.order_id, input.note ?? null);
    });
  log.info("in-store action", { result: outcome.result });
  return json(outcome, 200);
});

/**
 * POST `{ action: "confirm", order_id, transaction_code }`, `{ action: "cancel", order_id, reason? }` or
 * `{ action: "allocate", order_id, note? }`; staff or admin JWT only (403 `forbidden`). Answers `{ result, order }`.
 */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

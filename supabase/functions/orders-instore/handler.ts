/**
 * orders-instore: staff confirm an in-store card payment by hand (with the SumUp transaction code from the
 * receipt), cancel an order, or give an order paid while its stock was gone its goods once stock is back
 * (allocate). Each runs in one transaction whose actor is `staff:<uid>` and whose correlation
 * id is the request's, so the engine's status history records who did it. The engine decides whether the
 * transition is allowed (409 `invalid_transition` otherwise); this door checks who is asking, and that a SumUp
 * transaction code pays one order only (409 `transaction_code_reused`).
 */
import { authenticate, requireStaff } from "../_shared/auth.ts";
import { type Tx, withTxEarlyRelease } from "../_shared/db.ts";
import {
  allocatePaidOrder,
  cancelOrder,
  getOrder,
  markPaid,
  type MarkPaidResult,
  recordPaymentEvent,
} from "../_shared/engine.ts";
import { AppError } from "../_shared/errors.ts";
import { json, readJson, serve } from "../_shared/http.ts";
import { parseOrThrow } from "../_shared/validate.ts";
import { instoreInput } from "./schema.ts";

/** Another SumUp order that this transaction code already paid (staff-confirmed or via the webhook), or null. */
async function otherOrderPaidBy(tx: Tx, code: string, orderId: string): Promise<string | null> {
  // The order's payment reference is the transaction code on both paths (orders_provider_payment_ref_idx).
  const rows = await tx`select id from public.orders
    where payment_method = 'sumup' and provider_payment_ref = ${code} and id <> ${orderId}::uuid limit 1`;
  return (rows[0]?.id as string | undefined) ?? null;
}

function codeReused(code: string, otherOrderId: string | null): AppError {
  return new AppError(
    409,
    "transaction_code_reused",
    "This SumUp transaction code already paid another order; check the receipt.",
    { details: { transaction_code: code, ...(otherOrderId ? { order_id: otherOrderId } : {}) } },
  );
}

/**
 * Marks the order paid with the receipt's transaction code, which may pay one order only: the code is refused when
 * another order carries it, and is recorded once (`record_payment_event('sumup', 'txn:<code>')`) in the same
 * transaction as the payment, so two staff confirming two orders with one code at once cannot both succeed: the
 * second insert waits for the first transaction and then finds the key taken. The same order confirmed again with
 * its code is `already_paid`, as before.
 */
async function confirmPayment(tx: Tx, orderId: string, code: string): Promise<MarkPaidResult> {
  // Staff attest that the terminal took the order's total: the amount passed is the order's own, read in the same
  // transaction. The engine still guards the transition (once only, and only from an unpaid state).
  const order = await getOrder(tx, orderId);
  if (!order) throw new AppError(404, "order_not_found", "The order does not exist.");
  const other = await otherOrderPaidBy(tx, code, orderId);
  if (other) throw codeReused(code, other);
  const paid = await markPaid(tx, orderId, {
    provider: "sumup",
    ref: code,
    amount: order.total,
    currency: order.currency,
  });
  // Only a payment this call made claims the code: already_paid (or a mismatch) changed nothing, so records nothing.
  if (paid.result === "paid" || paid.result === "paid_out_of_stock") {
    const fresh = await recordPaymentEvent(tx, {
      provider: "sumup",
      id: `txn:${code}`,
      type: "instore.confirm",
      orderId,
    });
    // Taken meanwhile by a concurrent confirmation that has committed since: throwing rolls this payment back.
    if (!fresh) throw codeReused(code, await otherOrderPaidBy(tx, code, orderId));
  }
  return paid;
}

const framed = serve({ name: "orders-instore", methods: ["POST"] }, async (req, ctx) => {
  // Who first: a customer learns nothing about the body's validity or the order's existence.
  const caller = requireStaff(await authenticate(req, ctx.log));
  const input = parseOrThrow(instoreInput, await readJson(req));
  const log = ctx.log.child({ action: input.action, order_id: input.order_id, actor: caller.actor });

  // Early lock release (as orders-create): the till hears the outcome only once it is on disk.
  const outcome = await withTxEarlyRelease({ correlationId: ctx.correlationId, actor: caller.actor }, async (tx) => {
    if (input.action === "cancel") return await cancelOrder(tx, input.order_id, input.reason ?? "cancelled by staff");
    if (input.action === "allocate") return await allocatePaidOrder(tx, input.order_id, input.note ?? null);
    return await confirmPayment(tx, input.order_id, input.transaction_code);
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

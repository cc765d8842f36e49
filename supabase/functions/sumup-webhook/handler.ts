/**
 * sumup-webhook (verify_jwt = false): SumUp posts `{ event_type, id }` when a checkout changes. The notification
 * is unsigned, so anyone could send one: it is only a hint of which checkout to look at. The function fetches
 * that checkout from SumUp's API with our key and marks the order paid only when SumUp itself says PAID for a
 * checkout whose reference is one of our orders; mark_paid compares amount and currency with the order.
 *
 * The payment is recorded once (payment event `<checkout id>:PAID`) in the same statement as mark_paid
 * (mark_paid_for_event), so a retried or repeated notification changes nothing, and the order's stock rows are
 * free again as soon as that statement commits. Answers: 2xx whenever retrying cannot change the outcome
 * (irrelevant event, unknown checkout, not paid, unknown order, duplicate); 400 for a body that is not a
 * notification; 502 when SumUp's API cannot be reached, so SumUp delivers the notification again later.
 */
import { callOnceEarlyRelease } from "../_shared/db.ts";
import { markPaidForEventCall, type MarkPaidForEventResult } from "../_shared/engine.ts";
import { sumupConfig } from "../_shared/env.ts";
import { engineErrorCode, invalidRequest } from "../_shared/errors.ts";
import { json, readJson, serve } from "../_shared/http.ts";
import { getCheckout, isCheckoutId } from "../_shared/sumup.ts";
import { parseOrThrow } from "../_shared/validate.ts";
import { CHECKOUT_EVENT_TYPES, type SumUpNotification, sumupNotification, type SumUpWebhookOutcome } from "./schema.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function ack(outcome: SumUpWebhookOutcome): Response {
  return json({ received: true, outcome }, 200);
}

/** The checkout a notification is about, or null when the event is not about a checkout's status. */
function checkoutIdOf(note: SumUpNotification): string | null {
  if (!(CHECKOUT_EVENT_TYPES as readonly string[]).includes(note.event_type)) return null;
  // Newer format: `id` is the event's, the checkout is in the payload. Legacy: `id` is the checkout's.
  return note.payload?.checkout_id ?? note.id;
}

const framed = serve({ name: "sumup-webhook", methods: ["POST"] }, async (req, ctx) => {
  const note = parseOrThrow(sumupNotification, await readJson(req));
  const checkoutId = checkoutIdOf(note);
  if (checkoutId === null) {
    // SumUp may introduce events without notice; its advice is to acknowledge and ignore them.
    ctx.log.info("sumup event ignored", { event_type: note.event_type });
    return ack("ignored_event");
  }
  if (!isCheckoutId(checkoutId)) {
    throw invalidRequest("The notification does not name a SumUp checkout.", [
      { path: note.payload?.checkout_id ? "payload.checkout_id" : "id", message: "Not a SumUp checkout id." },
    ]);
  }
  const log = ctx.log.child({ checkout_id: checkoutId });

  // The only source of truth: SumUp's API, called with our key. Unreachable -> 502 (from getCheckout) -> retry.
  const checkout = await getCheckout(checkoutId);
  if (!checkout) {
    log.warn("sumup notification for a checkout SumUp does not know");
    return ack("unknown_checkout");
  }
  if (checkout.status !== "PAID") {
    log.info("sumup checkout not paid", { status: checkout.status });
    return ack("not_paid");
  }
  const merchantCode = sumupConfig()?.merchantCode;
  if (checkout.merchantCode && merchantCode && checkout.merchantCode !== merchantCode) {
    log.warn("sumup checkout paid to another merchant", { merchant_code: checkout.merchantCode });
    return ack("foreign_merchant");
  }
  const orderId = checkout.checkoutReference;
  if (!orderId || !UUID.test(orderId)) {
    log.warn("paid sumup checkout without an order reference", { checkout_reference: orderId });
    return ack("unknown_reference");
  }
  if (checkout.amount === null || !checkout.currency) {
    // Not a whole number of minor units: never an amount we asked for. Left for a person, with the figures.
    log.error("paid sumup checkout with an unusable amount", {
      order_id: orderId,
      amount: checkout.amountMajor,
      currency: checkout.currency,
    });
    return ack("amount_mismatch");
  }
  const amount = checkout.amount;
  const currency = checkout.currency;
  // What staff would type from the receipt; the id otherwise, so the order always names its payment.
  const paymentRef = checkout.transactionCode ?? checkout.transactionId ?? checkout.id;

  let outcome: SumUpWebhookOutcome;
  try {
    // Early lock release (as orders-create): SumUp hears 200 only once the payment is on disk. Keyed by checkout
    // and status, whichever event format brought it: one paid checkout, one payment.
    const paid = await callOnceEarlyRelease<MarkPaidForEventResult>(
      { correlationId: ctx.correlationId, actor: "sumup" },
      (sql) =>
        markPaidForEventCall(sql, {
          provider: "sumup",
          id: `${checkout.id}:PAID`,
          type: note.event_type,
          orderId,
          ref: paymentRef,
          amount,
          currency,
        }),
    );
    outcome = "duplicate" in paid ? "duplicate" : paid.result;
  } catch (err) {
    const code = engineErrorCode(err);
    // mark_paid found no such order; the payment event is not recorded either (one statement).
    if (code === "order_not_found") {
      log.warn("paid sumup checkout references no order", { order_id: orderId });
      return ack("unknown_reference");
    }
    if (code !== null) {
      // The engine refused (e.g. the order's state allows no payment): SumUp retrying cannot change that, and
      // money was taken, so it is logged loudly for a person rather than bounced back to SumUp for days.
      log.error("engine refused a paid sumup checkout", { order_id: orderId, engine_error: code });
      return ack("refused");
    }
    throw err;
  }
  const level = outcome === "amount_mismatch" || outcome === "paid_out_of_stock" ? "error" : "info";
  log[level]("sumup payment processed", { order_id: orderId, outcome });
  return ack(outcome);
});

/** POST from SumUp; answers `{ received: true, outcome }` (200), 400 for a malformed body, 502 if SumUp is down. */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

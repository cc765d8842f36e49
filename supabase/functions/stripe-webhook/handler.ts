/**
 * stripe-webhook: Stripe's events about our Checkout Sessions and charges. The signature is checked on the raw
 * body first (400 and nothing changed when it fails); then the event is recorded and its effect applied in ONE
 * transaction, so an event is acted on exactly once however often Stripe delivers it, and in whatever order. Each is
 * that transaction as one statement (mark_paid_for_event, cancel_order_for_event, record_refund_total_for_event, or
 * record_payment_event alone), so the stock rows a payment or a cancel changes are free at its commit instead of
 * waiting on this function's next round trips.
 */
import { callOnceEarlyRelease, type Fragment, type Sql, type TxContext } from "../_shared/db.ts";
import {
  cancelOrderForEventCall,
  type CancelResult,
  type ForEvent,
  markPaidForEventCall,
  type MarkPaidResult,
  recordPaymentEventCall,
  recordRefundTotalForEventCall,
  type RefundResult,
} from "../_shared/engine.ts";
import { AppError, engineErrorCode } from "../_shared/errors.ts";
import { json, serve } from "../_shared/http.ts";
import type { Logger } from "../_shared/log.ts";
import { Stripe, verifyStripeEvent } from "../_shared/stripe.ts";
import type { StripeWebhookResponse } from "./schema.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What an event does to its order as one engine call that records the event too (an `..._for_event` function). */
type EventCall = (sql: Sql) => Fragment;

/** An event's order (if it names one) and its one-statement call (none: recorded only). */
interface Plan {
  orderId: string | null;
  call?: EventCall;
  /** Why there is no call, for the log and the answer. */
  skip?: string;
}

function uuidOrNull(value: unknown): string | null {
  return typeof value === "string" && UUID.test(value) ? value.toLowerCase() : null;
}

function idOf(ref: string | { id: string } | null | undefined): string | null {
  return typeof ref === "string" ? ref : ref?.id ?? null;
}

/** Our order id on a session: metadata first (we always set it), then client_reference_id. */
function sessionOrderId(session: Stripe.Checkout.Session): string | null {
  return uuidOrNull(session.metadata?.order_id) ?? uuidOrNull(session.client_reference_id);
}

/** Pays the session's order; the engine checks amount and currency against the order. */
function payCall(event: Stripe.Event, orderId: string, session: Stripe.Checkout.Session): EventCall {
  return (sql) =>
    markPaidForEventCall(sql, {
      provider: "stripe",
      id: event.id,
      type: event.type,
      orderId,
      // The PaymentIntent is what later charge and refund events point to.
      ref: idOf(session.payment_intent) ?? session.id,
      amount: session.amount_total ?? -1,
      currency: (session.currency ?? "").toUpperCase(),
    });
}

function cancelCall(event: Stripe.Event, orderId: string): EventCall {
  return (sql) =>
    cancelOrderForEventCall(sql, {
      provider: "stripe",
      id: event.id,
      type: event.type,
      orderId,
      reason: `stripe:${event.type}`,
    });
}

/**
 * Records the refunded total a charge.refunded reports (Stripe's cumulative amount_refunded; the engine keeps the
 * larger of it and what is recorded, so a late or replayed event changes nothing). The order from the charge's
 * metadata (copied from our PaymentIntent), else the engine finds it by the PaymentIntent it was paid with.
 */
function refundCall(event: Stripe.Event, charge: Stripe.Charge): EventCall {
  return (sql) =>
    recordRefundTotalForEventCall(sql, {
      provider: "stripe",
      id: event.id,
      type: event.type,
      orderId: uuidOrNull(charge.metadata?.order_id),
      ref: idOf(charge.payment_intent) ?? charge.id,
      refundedTotal: charge.amount_refunded,
      currency: charge.currency.toUpperCase(),
    });
}

/** Decides, from the verified event alone, what it means for which order. */
function plan(event: Stripe.Event): Plan {
  switch (event.type) {
    case "checkout.session.completed": {
      const session = event.data.object;
      const orderId = sessionOrderId(session);
      if (!orderId) return { orderId, skip: "not_our_session" };
      // Delayed methods (SEPA, bank transfer) complete the session unpaid; their outcome comes as
      // async_payment_succeeded / _failed.
      if (session.payment_status !== "paid") return { orderId, skip: "payment_pending" };
      return { orderId, call: payCall(event, orderId, session) };
    }
    case "checkout.session.async_payment_succeeded": {
      const session = event.data.object;
      const orderId = sessionOrderId(session);
      return orderId ? { orderId, call: payCall(event, orderId, session) } : { orderId, skip: "not_our_session" };
    }
    case "checkout.session.async_payment_failed":
    case "checkout.session.expired": {
      const orderId = sessionOrderId(event.data.object);
      return orderId ? { orderId, call: cancelCall(event, orderId) } : { orderId, skip: "not_our_session" };
    }
    case "charge.refunded": {
      const charge = event.data.object;
      return { orderId: uuidOrNull(charge.metadata?.order_id), call: refundCall(event, charge) };
    }
    default:
      return { orderId: null, skip: "unhandled_type" };
  }
}

/**
 * The engine's refusal as the `ignored` reason when redelivering the event cannot change it (the order is already
 * paid when a late "expired" arrives, it is not ours, it is an in-store order); rethrows anything else.
 */
function notApplicable(err: unknown, log: Logger): string {
  const code = engineErrorCode(err);
  if (code === "invalid_transition" || code === "order_not_found") {
    log.warn("event not applicable to the order", { reason: code });
    return code;
  }
  if (code === "invalid_request") {
    // The event can never apply (e.g. it names an in-store order): redelivery would not help, so record it,
    // and log loudly since it may as well be our bug.
    log.error("engine refused the event", { reason: (err as Error).message });
    return code;
  }
  throw err;
}

/**
 * An event whose effect is one statement that records it too (an `..._for_event` call). A refusal that redelivery
 * cannot change rolls that statement back; the event is then recorded on its own and answered 200, so Stripe stops
 * redelivering. Anything else leaves the event unrecorded for a retry.
 */
async function applyEventCall(
  ctx: TxContext,
  event: Stripe.Event,
  orderId: string | null,
  call: EventCall,
  log: Logger,
): Promise<Record<string, unknown>> {
  try {
    const done = await callOnceEarlyRelease<ForEvent<MarkPaidResult | CancelResult | RefundResult>>(ctx, call);
    if ("duplicate" in done) return { duplicate: true };
    if (done.result === "already_recorded") return { ignored: "refund_already_recorded" };
    if (done.result === "refund_recorded") {
      return { result: done.result, order_id: done.order.id, refunded_amount: done.order.refunded_amount };
    }
    return { result: done.result, status: done.order.status };
  } catch (err) {
    return await recordOnly(ctx, event, orderId, notApplicable(err, log));
  }
}

/**
 * An event that changes nothing (not ours, payment pending, unhandled, or refused by the engine for good): recorded
 * on its own, so a redelivery is a duplicate.
 */
async function recordOnly(
  ctx: TxContext,
  event: Stripe.Event,
  orderId: string | null,
  skip: string | undefined,
): Promise<Record<string, unknown>> {
  const first = await callOnceEarlyRelease<boolean>(
    ctx,
    (sql) => recordPaymentEventCall(sql, { provider: "stripe", id: event.id, type: event.type, orderId }),
  );
  return first ? { ignored: skip } : { duplicate: true };
}

function badSignature(): AppError {
  return new AppError(400, "invalid_signature", "The Stripe-Signature header is missing, invalid or too old.");
}

const framed = serve({ name: "stripe-webhook", methods: ["POST"] }, async (req, ctx) => {
  // The signature covers the exact bytes Stripe sent: read them as text before anything parses them.
  const raw = await req.text();
  const signature = req.headers.get("stripe-signature");
  if (!signature) throw badSignature();
  let event: Stripe.Event;
  try {
    event = await verifyStripeEvent(raw, signature);
  } catch (err) {
    if (!(err instanceof Stripe.errors.StripeSignatureVerificationError)) throw err;
    // Logged without the body or the header: only that verification failed and roughly why.
    ctx.log.warn("stripe signature rejected", { reason: err.message.slice(0, 120) });
    throw badSignature();
  }

  const log = ctx.log.child({ event_id: event.id, event_type: event.type });
  const { orderId, call, skip } = plan(event);
  // Early lock release (as orders-create): the stock rows a payment or a cancel changes are free at its commit;
  // Stripe hears 200 only once that commit is on disk.
  const txCtx: TxContext = { correlationId: ctx.correlationId, actor: "stripe" };
  const outcome = call
    ? await applyEventCall(txCtx, event, orderId, call, log)
    : await recordOnly(txCtx, event, orderId, skip);
  log.info("stripe event processed", { order_id: orderId, ...outcome });
  const answer: StripeWebhookResponse = { received: true, ...outcome };
  return json(answer);
});

/** POST from Stripe: 200 `{ received: true, ... }` once recorded (also for duplicates and unknown types). */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

/**
 * stripe-webhook: Stripe's events about our Checkout Sessions and charges. The signature is checked on the raw
 * body first (400 and nothing changed when it fails); then the event is recorded and its effect applied in ONE
 * transaction, so an event is acted on exactly once however often Stripe delivers it, and in whatever order. A
 * payment or a cancel is that transaction as one statement (mark_paid_for_event, cancel_order_for_event), so the
 * stock rows it changes are free at its commit instead of waiting on this function's next round trips.
 */
import {
  callOnce,
  callOnceEarlyRelease,
  type Fragment,
  type Sql,
  type Tx,
  type TxContext,
  withTxEarlyRelease,
} from "../_shared/db.ts";
import {
  cancelOrderForEventCall,
  type CancelResult,
  type ForEvent,
  markPaidForEventCall,
  type MarkPaidResult,
  recordPaymentEvent,
  recordPaymentEventCall,
  recordRefund,
} from "../_shared/engine.ts";
import { AppError, engineErrorCode } from "../_shared/errors.ts";
import { json, serve } from "../_shared/http.ts";
import type { Logger } from "../_shared/log.ts";
import { Stripe, verifyStripeEvent } from "../_shared/stripe.ts";
import type { StripeWebhookResponse } from "./schema.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What an event does to its order, run inside the event's transaction. */
type Effect = (tx: Tx) => Promise<Record<string, unknown>>;

/**
 * What an event does to its order as one engine call that records the event too (an `..._for_event` function):
 * a payment or a cancel, whose stock rows must not wait on this function's round trips.
 */
type EventCall = (sql: Sql) => Fragment;

/** An event's order (if it names one) and its effect, or its one-statement call (neither: recorded only). */
interface Plan {
  orderId: string | null;
  effect?: Effect;
  call?: EventCall;
  /** Why there is no effect, for the log and the answer. */
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

/** A refunded charge's order: its metadata (copied from our PaymentIntent), else the stored payment ref. */
async function chargeOrderId(tx: Tx, charge: Stripe.Charge): Promise<string | null> {
  const fromMetadata = uuidOrNull(charge.metadata?.order_id);
  if (fromMetadata) return fromMetadata;
  const intent = idOf(charge.payment_intent);
  if (!intent) return null;
  const rows = await tx`select id from public.orders
    where payment_method = 'stripe' and provider_payment_ref = ${intent} limit 1`;
  return (rows[0]?.id as string | undefined) ?? null;
}

/**
 * What a charge.refunded event adds: Stripe reports the charge's cumulative amount_refunded, the engine's
 * record_refund adds an increment. The difference to what the order already shows is new; zero or less means
 * an older event arriving late. One Checkout payment is one charge, so the order's figure is the charge's.
 * The advisory lock serialises two refund events of one order, so both cannot read the same starting figure.
 */
async function newlyRefunded(tx: Tx, orderId: string, cumulative: number): Promise<number> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${`stripe-refund:${orderId}`}, 0))`;
  const rows = await tx`select refunded_amount from public.orders where id = ${orderId}::uuid`;
  return rows[0] ? cumulative - Number(rows[0].refunded_amount) : 0;
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
      // The order may only be found through the database, so the lookup is part of the effect.
      return {
        orderId: uuidOrNull(charge.metadata?.order_id),
        effect: async (tx) => {
          const orderId = await chargeOrderId(tx, charge);
          if (!orderId) return { ignored: "order_not_found" };
          const amount = await newlyRefunded(tx, orderId, charge.amount_refunded);
          if (amount <= 0) return { ignored: "refund_already_recorded" };
          const order = await recordRefund(tx, orderId, {
            ref: idOf(charge.payment_intent) ?? charge.id,
            amount,
            currency: charge.currency.toUpperCase(),
          });
          return { result: "refund_recorded", order_id: orderId, refunded_amount: order.refunded_amount };
        },
      };
    }
    default:
      return { orderId: null, skip: "unhandled_type" };
  }
}

/**
 * Applies the effect (a refund) under a savepoint: the engine refusing it for a reason that a retry cannot change
 * keeps the event recorded and answers 200, so Stripe stops redelivering; anything else rolls the whole event back
 * for Stripe to retry.
 */
async function applyEffect(tx: Tx, effect: Effect, log: Logger): Promise<Record<string, unknown>> {
  try {
    return await tx.savepoint((sp) => effect(sp)) as Record<string, unknown>;
  } catch (err) {
    return { ignored: notApplicable(err, log) };
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
 * cannot change rolls that statement back; the event is then recorded on its own and answered 200, as applyEffect
 * does under its savepoint, so Stripe stops redelivering. Anything else leaves the event unrecorded for a retry.
 */
async function applyEventCall(
  ctx: TxContext,
  event: Stripe.Event,
  orderId: string | null,
  call: EventCall,
  log: Logger,
): Promise<Record<string, unknown>> {
  try {
    const done = await callOnceEarlyRelease<ForEvent<MarkPaidResult | CancelResult>>(ctx, call);
    if ("duplicate" in done) return { duplicate: true };
    return { result: done.result, status: done.order.status };
  } catch (err) {
    const ignored = notApplicable(err, log);
    const first = await callOnce<boolean>(
      ctx,
      (sql) => recordPaymentEventCall(sql, { provider: "stripe", id: event.id, type: event.type, orderId }),
    );
    return first ? { ignored } : { duplicate: true };
  }
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
  const { orderId, effect, call, skip } = plan(event);
  // Early lock release (as orders-create): the stock rows a payment or a cancel changes are free at its commit;
  // Stripe hears 200 only once that commit is on disk.
  const txCtx: TxContext = { correlationId: ctx.correlationId, actor: "stripe" };
  const outcome = call
    ? await applyEventCall(txCtx, event, orderId, call, log)
    : await withTxEarlyRelease(txCtx, async (tx) => {
      const first = await recordPaymentEvent(tx, { provider: "stripe", id: event.id, type: event.type, orderId });
      if (!first) return { duplicate: true };
      if (!effect) return { ignored: skip };
      return await applyEffect(tx, effect, log);
    });
  log.info("stripe event processed", { order_id: orderId, ...outcome });
  const answer: StripeWebhookResponse = { received: true, ...outcome };
  return json(answer);
});

/** POST from Stripe: 200 `{ received: true, ... }` once recorded (also for duplicates and unknown types). */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

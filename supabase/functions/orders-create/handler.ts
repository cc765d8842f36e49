/**
 * orders-create: validates the order request, applies the rate limits, has the engine reserve stock and
 * price the order in one call, then opens the payment: a Stripe Checkout Session (online) or, when SumUp is
 * configured, a SumUp checkout (in store). The same Idempotency-Key and body always lead to the same order.
 */
import { authenticate, type Caller } from "../_shared/auth.ts";
import { callOnce, callOnceEarlyRelease, withTx } from "../_shared/db.ts";
import {
  attachCheckout,
  cancelOrderCall,
  cancelReason,
  type CancelResult,
  type CreatedOrder,
  createOrderCall,
  type Order,
  rateLimitCall,
} from "../_shared/engine.ts";
import { orderRateLimit, stripeConfig, sumupConfig } from "../_shared/env.ts";
import { AppError } from "../_shared/errors.ts";
import { clientAddress, json, readJson, type RequestContext, serve } from "../_shared/http.ts";
import { describeError } from "../_shared/log.ts";
import { callStripe, stripeRefusalCode } from "../_shared/stripe.ts";
import { type FieldError, parseOrThrow } from "../_shared/validate.ts";
import { sessionIdempotencyKey, sessionParams } from "./checkout.ts";
import { requestHash } from "./request-hash.ts";
import { idempotencyKeyHeader, type OrderCreateBody, orderCreateBody } from "./schema.ts";
import { openSumupCheckout } from "./sumup-checkout.ts";

/**
 * 429 when the client's address or the signed-in user is over the limit (counted in Postgres, so all instances
 * share it). Staff tills and the service key are trusted callers and not limited.
 */
async function enforceRateLimit(req: Request, caller: Caller, ctx: RequestContext): Promise<void> {
  if (caller.kind === "staff" || caller.kind === "service") return;
  const limits = orderRateLimit();
  const buckets = [{ name: `orders-create:addr:${clientAddress(req)}`, limit: limits.perAddress }];
  if (caller.userId) buckets.push({ name: `orders-create:user:${caller.userId}`, limit: limits.perUser });
  // One statement (the bucket row is not held across a round trip), and not durable: a counter lost in a crash
  // lets a client through a few requests early, and this commit would otherwise wait for a WAL flush of its own
  // before the order's (an extra fsync per order, and the bucket row stays locked through it, so one busy address
  // queues on that flush).
  const txCtx = { correlationId: ctx.correlationId, actor: caller.actor, durable: false };
  const retryAfter = Number(await callOnce(txCtx, (sql) => rateLimitCall(sql, buckets, limits.windowSeconds)));
  if (retryAfter > 0) {
    throw new AppError(429, "rate_limited", "Too many orders; retry later.", {
      details: { retry_after_seconds: retryAfter },
      headers: { "Retry-After": String(retryAfter) },
    });
  }
}

function providerUnavailable(order: Order): AppError {
  return new AppError(
    502,
    "payment_provider_unavailable",
    "The payment provider could not be reached; the order was cancelled and its stock released. " +
      "Retry with a new Idempotency-Key.",
    { details: { order_id: order.id, provider: order.payment_method } },
  );
}

/** The cancel reason recorded when Stripe itself refused the session; its code follows the colon. */
const REFUSED = "payment_provider_refused";

function providerRefused(order: Order, providerCode: string): AppError {
  return new AppError(
    422,
    "payment_provider_refused",
    `The payment provider refused to open a payment for this order (${providerCode}); the order was cancelled ` +
      "and its stock released. Retrying the same order will not help.",
    { details: { order_id: order.id, provider: order.payment_method, provider_code: providerCode } },
  );
}

/**
 * The answer for an order cancelled because its checkout could not be opened, from the reason recorded with the
 * cancel: the first attempt and every replay with the same key read it the same way.
 */
function checkoutFailure(order: Order, reason: string | null): AppError {
  return reason?.startsWith(`${REFUSED}:`)
    ? providerRefused(order, reason.slice(REFUSED.length + 1))
    : providerUnavailable(order);
}

/** Opens (or, on a replay whose first attempt died early, reopens) the Stripe session; cancels the order on failure. */
async function openStripeCheckout(
  order: Order,
  body: OrderCreateBody,
  caller: Caller,
  ctx: RequestContext,
): Promise<Order> {
  const txCtx = { correlationId: ctx.correlationId, actor: caller.actor };
  let session: { id: string; url: string };
  try {
    // Stripe keeps its first answer per idempotency key, so racing replays all get one and the same session.
    const created = await callStripe(
      (stripe) =>
        stripe.checkout.sessions.create(
          sessionParams(order, { successUrl: body.success_url!, cancelUrl: body.cancel_url! }),
          { idempotencyKey: sessionIdempotencyKey(order.id) },
        ),
      { idempotent: true },
    );
    if (!created.url) throw new Error("Stripe returned a session without a URL");
    session = { id: created.id, url: created.url };
  } catch (err) {
    // Stripe refusing the session itself (e.g. a total under its minimum charge) is not an outage: say so, so
    // the client does not retry what cannot succeed.
    const refusal = stripeRefusalCode(err);
    const reason = refusal ? `${REFUSED}:${refusal}` : "payment_provider_unavailable";
    // Release the stock now rather than leave it reserved until the sweep; but a concurrent request with the same
    // Idempotency-Key may have opened and attached its session meanwhile: that order stands. The engine decides
    // under the order's lock, so the two cannot cross.
    const cancelled = await callOnceEarlyRelease<CancelResult>(
      txCtx,
      (sql) => cancelOrderCall(sql, order.id, reason, { keepIfCheckout: true }),
    )
      .catch((cancelErr) => {
        ctx.log.error("cancelling after a provider failure failed", {
          order_id: order.id,
          error: describeError(cancelErr),
        });
        return null;
      });
    if (cancelled?.result === "kept_checkout") return cancelled.order;
    ctx.log.warn(refusal ? "stripe refused the checkout; order cancelled" : "stripe checkout failed; order cancelled", {
      order_id: order.id,
      error: describeError(err),
    });
    throw checkoutFailure(order, reason);
  }
  // If this fails the session still exists; a replay gets it back from Stripe and stores it then.
  return await withTx(txCtx, (tx) => attachCheckout(tx, order.id, { provider: "stripe", ...session }));
}

/** The 201 body: the order, when its stock is held until, and how to pay. */
function answer(order: Order): Record<string, unknown> {
  const out: Record<string, unknown> = { order, reservation_expires_at: order.reservation_expires_at };
  if (order.payment_method === "stripe" && order.checkout_url) out.checkout_url = order.checkout_url;
  if (order.payment_method === "sumup" && order.provider_checkout_id) {
    out.sumup_checkout_id = order.provider_checkout_id;
  }
  return out;
}

const framed = serve(
  { name: "orders-create", methods: ["POST"] },
  async (req, ctx) => {
    const caller = await authenticate(req, ctx.log);
    const key = idempotencyKeyHeader.safeParse(req.headers.get("idempotency-key") ?? undefined);
    // Header and body errors are reported together, so one round trip shows the client everything to fix.
    const headerErrors: FieldError[] = key.success
      ? []
      : key.error.issues.map((issue) => ({ path: "header:Idempotency-Key", message: issue.message }));
    const body = parseOrThrow(orderCreateBody, await readJson(req), headerErrors);
    // A missing Stripe key is a deployment error (500): find out before any stock is reserved.
    if (body.payment_method === "stripe") stripeConfig();

    await enforceRateLimit(req, caller, ctx);

    const requestHashHex = await requestHash(body, caller.userId ?? caller.kind);
    // One statement with early lock release: the stock rows this order locks are free once it commits on the
    // server, not after another round trip nor once the disk has the commit; the answer (and the Stripe session)
    // still waits until the disk has it.
    const created = await callOnceEarlyRelease<CreatedOrder>(
      { correlationId: ctx.correlationId, actor: caller.actor },
      (sql) =>
        createOrderCall(sql, {
          items: body.items,
          paymentMethod: body.payment_method,
          idempotencyKey: key.data!,
          requestHash: requestHashHex,
          customer: body.customer,
          // Staff ringing up a walk-in customer are not that order's customer.
          customerId: caller.kind === "user" ? caller.userId : null,
        }),
    );
    let order = created.order;
    ctx.log.info(created.replayed ? "order replayed" : "order created", {
      order_id: order.id,
      status: order.status,
      total: order.total,
    });

    if (order.payment_method === "stripe") {
      if (order.status === "awaiting_payment" && !order.checkout_url) {
        order = await openStripeCheckout(order, body, caller, ctx);
      } else if (created.replayed && order.status === "cancelled" && !order.provider_checkout_id) {
        // The first attempt could not open the checkout and cancelled the order: the same key gives the same
        // answer (502 unavailable, or 422 refused), told apart by the reason it recorded.
        const reason = await withTx(
          { correlationId: ctx.correlationId, actor: caller.actor },
          (tx) => cancelReason(tx, order.id),
        );
        throw checkoutFailure(order, reason);
      }
    } else if (order.status === "awaiting_instore_payment" && !order.provider_checkout_id && sumupConfig()) {
      order = await openSumupCheckout(order, caller, ctx);
    }

    return json(answer(order), 201, created.replayed ? { "Idempotent-Replayed": "true" } : {});
  },
);

/** POST /orders-create: answers 201 `{ order, reservation_expires_at, checkout_url?, sumup_checkout_id? }`. */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}

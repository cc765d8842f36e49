/**
 * The Stripe Checkout Session for an order, built only from what the database priced. Kept apart from the
 * handler so its rules (total, expiry window, idempotency key) read in one place.
 */
import type { Stripe } from "../_shared/stripe.ts";
import type { Order } from "../_shared/engine.ts";

/** Stripe accepts a session expiry from 30 minutes to 24 hours ahead. */
const MIN_TTL_SECONDS = 30 * 60;
const MAX_TTL_SECONDS = 24 * 60 * 60;
// Headroom for clock skew and the request's own travel time, so Stripe never sees a value just outside its window.
const SLACK_SECONDS = 60;

/**
 * When the session expires (unix seconds): the reservation's end, but within Stripe's window: at most
 * 24 h after the order was made and at least 30 min from now. Derived from the order rather than from "now"
 * where possible, so a replay sends Stripe the same parameters under the same idempotency key.
 */
export function sessionExpiresAt(order: Order, nowMs = Date.now()): number {
  const created = Math.floor(Date.parse(order.created_at) / 1000);
  const now = Math.floor(nowMs / 1000);
  const reservationEnd = order.reservation_expires_at
    ? Math.floor(Date.parse(order.reservation_expires_at) / 1000)
    : created + MAX_TTL_SECONDS;
  // created <= now, so this also keeps the expiry under now + 24 h.
  const latest = Math.min(reservationEnd, created + MAX_TTL_SECONDS - SLACK_SECONDS);
  const earliest = now + MIN_TTL_SECONDS + SLACK_SECONDS;
  return Math.max(latest, earliest);
}

/** The Stripe idempotency key of an order's session: a replay gets Stripe's first session back. */
export function sessionIdempotencyKey(orderId: string): string {
  return `stockhold-order-${orderId}-checkout`;
}

/** Session parameters: one line per order line at the database's net price, tax as its own line. */
export function sessionParams(
  order: Order,
  urls: { successUrl: string; cancelUrl: string },
  nowMs = Date.now(),
): Stripe.Checkout.SessionCreateParams {
  const currency = order.currency.toLowerCase();
  const lineItems: Stripe.Checkout.SessionCreateParams.LineItem[] = order.items.map((item) => ({
    quantity: item.quantity,
    price_data: {
      currency,
      unit_amount: item.unit_price,
      product_data: { name: item.name, metadata: { product_id: item.product_id, sku: item.sku } },
    },
  }));
  // Net lines plus one tax line make the session total equal order.total to the cent; per-line gross unit
  // prices would not divide evenly after the engine's per-line rounding.
  if (order.tax > 0) {
    lineItems.push({ quantity: 1, price_data: { currency, unit_amount: order.tax, product_data: { name: "Tax" } } });
  }
  return {
    mode: "payment",
    line_items: lineItems,
    client_reference_id: order.id,
    metadata: { order_id: order.id },
    // Copied onto the PaymentIntent so that charge and refund events can be traced back to the order.
    payment_intent_data: { metadata: { order_id: order.id } },
    ...(order.customer_email ? { customer_email: order.customer_email } : {}),
    success_url: urls.successUrl,
    cancel_url: urls.cancelUrl,
    expires_at: sessionExpiresAt(order, nowMs),
  };
}

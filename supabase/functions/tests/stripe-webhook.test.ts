/**
 * stripe-webhook against the real database. Events are built as Stripe sends them and signed with the real
 * SDK's generateTestHeaderString, so the handler's constructEventAsync checks real signatures.
 */
import assert from "node:assert/strict";
import Stripe from "stripe";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { closeDb } from "../_shared/db.ts";
import { handler as rawHandler } from "../stripe-webhook/handler.ts";
import { historyOf, makeOrder, makeProduct, orderRow, stockOf, testSql } from "./support/shop.ts";
import { stripeEvent } from "./support/stripe-events.ts";
import { contractFetch, withContract } from "./support/contract.ts";

// Every answer these tests receive is checked against docs/openapi.json (a mismatch throws).
const handler = withContract("stripe-webhook", rawHandler);

const sql = testSql();
const SECRET = "whsec_stockhold_test_secret";

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false }, async () => {
    Deno.env.set("STRIPE_WEBHOOK_SECRET", SECRET);
    Deno.env.set("LOG_LEVEL", "silent");
    await fn();
  });
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** A Stripe order as orders-create leaves it: stock reserved, a session attached. */
async function stripeOrder(opts: { stock?: number; quantity?: number } = {}) {
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: opts.stock ?? 5 });
  const order = await makeOrder(sql, [{ product_id: product.id, quantity: opts.quantity ?? 2 }], { method: "stripe" });
  const sessionId = `cs_test_${crypto.randomUUID().replaceAll("-", "")}`;
  await sql`select public.attach_checkout(${order.id}::uuid, 'stripe', ${sessionId}, ${`https://checkout.test/${sessionId}`})`;
  return { product, order, sessionId, paymentIntent: `pi_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}` };
}

type Fixture = Awaited<ReturnType<typeof stripeOrder>>;

/** A checkout.session.* event for the fixture's session. */
function sessionEvent(type: string, f: Fixture, session: Record<string, unknown> = {}): Json {
  return stripeEvent(type, {
    id: f.sessionId,
    object: "checkout.session",
    mode: "payment",
    client_reference_id: f.order.id,
    metadata: { order_id: f.order.id },
    amount_total: f.order.total,
    currency: "eur",
    payment_status: "paid",
    status: "complete",
    payment_intent: f.paymentIntent,
    ...session,
  });
}

/** A charge.refunded event; `metadata: false` leaves the order to be found by the payment intent. */
function refundEvent(f: Fixture, amountRefunded: number, opts: { metadata?: boolean } = {}): Json {
  return stripeEvent("charge.refunded", {
    id: `ch_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`,
    object: "charge",
    amount: f.order.total,
    amount_refunded: amountRefunded,
    currency: "eur",
    refunded: amountRefunded === f.order.total,
    payment_intent: f.paymentIntent,
    metadata: opts.metadata === false ? {} : { order_id: f.order.id },
  });
}

/** Posts `event` signed as Stripe would (or with another secret / an old timestamp). */
async function deliver(
  event: Json,
  opts: { secret?: string; timestamp?: number; signature?: string | null; body?: string } = {},
): Promise<{ status: number; body: Json }> {
  const payload = JSON.stringify(event);
  const signature = opts.signature !== undefined
    ? opts.signature
    : await Stripe.webhooks.generateTestHeaderStringAsync({
      payload,
      secret: opts.secret ?? SECRET,
      timestamp: opts.timestamp,
      cryptoProvider: Stripe.createSubtleCryptoProvider(),
    });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (signature !== null) headers["stripe-signature"] = signature;
  const res = await handler(
    new Request("http://functions.local/functions/v1/stripe-webhook", {
      method: "POST",
      headers,
      body: opts.body ?? payload,
    }),
  );
  return { status: res.status, body: await res.json() };
}

async function eventRecorded(eventId: string): Promise<boolean> {
  const [{ n }] =
    await sql`select count(*)::int as n from private.payment_events where provider = 'stripe' and event_id = ${eventId}`;
  return n === 1;
}

// ---------------------------------------------------------------------------------------------------------
// Payment
// ---------------------------------------------------------------------------------------------------------

test("checkout.session.completed (paid): the order is paid and its stock deducted", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 5, reserved: 2 });
  const res = await deliver(sessionEvent("checkout.session.completed", f));
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { received: true, result: "paid", status: "paid" });
  const row = await orderRow(sql, f.order.id);
  assert.equal(row.status, "paid");
  assert.equal(row.provider_payment_ref, f.paymentIntent);
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
  const history = await historyOf(sql, f.order.id);
  assert.equal(history.at(-1)?.actor, "stripe");
});

test("a duplicate delivery answers duplicate and deducts nothing more", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  const event = sessionEvent("checkout.session.completed", f);
  assert.equal((await deliver(event)).status, 200);
  const again = await deliver(event);
  assert.equal(again.status, 200);
  assert.deepEqual(again.body, { received: true, duplicate: true });
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
});

test("a second, different paid event for the same order changes nothing (already_paid)", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  assert.equal((await deliver(sessionEvent("checkout.session.completed", f))).status, 200);
  const late = await deliver(sessionEvent("checkout.session.async_payment_succeeded", f));
  assert.equal(late.body.result, "already_paid");
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
});

test("completed but unpaid (delayed method) waits; async_payment_succeeded then pays", async () => {
  const f = await stripeOrder();
  const pending = await deliver(sessionEvent("checkout.session.completed", f, { payment_status: "unpaid" }));
  assert.deepEqual(pending.body, { received: true, ignored: "payment_pending" });
  assert.equal((await orderRow(sql, f.order.id)).status, "awaiting_payment");
  const paid = await deliver(sessionEvent("checkout.session.async_payment_succeeded", f));
  assert.equal(paid.body.result, "paid");
  assert.equal((await orderRow(sql, f.order.id)).status, "paid");
});

test("an amount that differs from the order's total does not pay it", async () => {
  const f = await stripeOrder();
  const res = await deliver(sessionEvent("checkout.session.completed", f, { amount_total: f.order.total - 1 }));
  assert.equal(res.status, 200);
  assert.equal(res.body.result, "amount_mismatch");
  assert.equal((await orderRow(sql, f.order.id)).status, "awaiting_payment");
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 5, reserved: 2 });
});

// ---------------------------------------------------------------------------------------------------------
// Cancellation and out-of-order delivery
// ---------------------------------------------------------------------------------------------------------

test("checkout.session.async_payment_failed cancels the order and releases its stock", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  const res = await deliver(sessionEvent("checkout.session.async_payment_failed", f, { payment_status: "unpaid" }));
  assert.equal(res.status, 200);
  assert.equal(res.body.result, "cancelled");
  assert.equal((await orderRow(sql, f.order.id)).status, "cancelled");
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 5, reserved: 0 });
});

test("checkout.session.expired cancels the order and releases its stock", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  const res = await deliver(
    sessionEvent("checkout.session.expired", f, { payment_status: "unpaid", status: "expired" }),
  );
  assert.equal(res.body.result, "cancelled");
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 5, reserved: 0 });
});

test("a cancelling event delivered twice cancels once; the second answers duplicate", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  const expired = sessionEvent("checkout.session.expired", f, { payment_status: "unpaid", status: "expired" });
  assert.equal((await deliver(expired)).body.result, "cancelled");
  assert.deepEqual(await deliver(expired), { status: 200, body: { received: true, duplicate: true } });
  const cancels = (await historyOf(sql, f.order.id)).filter((h) => h.to_status === "cancelled");
  assert.equal(cancels.length, 1);
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 5, reserved: 0 });
});

test("out of order: expired after paid is recorded and ignored, the order stays paid", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  assert.equal((await deliver(sessionEvent("checkout.session.completed", f))).status, 200);
  const expired = sessionEvent("checkout.session.expired", f, { payment_status: "unpaid", status: "expired" });
  const res = await deliver(expired);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { received: true, ignored: "invalid_transition" });
  assert.ok(await eventRecorded(expired.id), "the event is recorded so Stripe's retries change nothing");
  assert.equal((await orderRow(sql, f.order.id)).status, "paid");
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
});

test("out of order: a payment arriving after the expiry still pays when stock allows", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  assert.equal((await deliver(sessionEvent("checkout.session.expired", f, { payment_status: "unpaid" }))).status, 200);
  assert.equal((await orderRow(sql, f.order.id)).status, "cancelled");
  const paid = await deliver(sessionEvent("checkout.session.completed", f));
  assert.equal(paid.status, 200);
  assert.equal(paid.body.result, "paid");
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
});

// ---------------------------------------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------------------------------------

test("charge.refunded records the refund; a later partial-then-full sequence adds only what is new", async () => {
  const f = await stripeOrder();
  await deliver(sessionEvent("checkout.session.completed", f));
  const partial = refundEvent(f, 500);
  const res = await deliver(partial);
  assert.equal(res.status, 200);
  assert.equal(res.body.result, "refund_recorded");
  assert.equal((await orderRow(sql, f.order.id)).refunded_amount, "500");

  const full = await deliver(refundEvent(f, f.order.total));
  assert.equal(full.body.refunded_amount, f.order.total);
  // The partial event delivered again late (as a new event id, as Stripe's retries of another event would be)
  const stale = await deliver(refundEvent(f, 500));
  assert.deepEqual(stale.body, { received: true, ignored: "refund_already_recorded" });
  assert.equal(Number((await orderRow(sql, f.order.id)).refunded_amount), f.order.total);
  // Stock is untouched by refunds (returned goods come back through restock).
  assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
});

test("charge.refunded delivered twice records the refund once; the second answers duplicate", async () => {
  const f = await stripeOrder();
  await deliver(sessionEvent("checkout.session.completed", f));
  const event = refundEvent(f, 700);
  assert.equal((await deliver(event)).body.result, "refund_recorded");
  assert.deepEqual((await deliver(event)).body, { received: true, duplicate: true });
  assert.equal(Number((await orderRow(sql, f.order.id)).refunded_amount), 700);
});

test("charge.refunded for a payment no order was paid with, or for an unpaid order, is recorded and ignored", async () => {
  const f = await stripeOrder();
  // no metadata and a PaymentIntent nobody paid with: the engine finds no order (SH402)
  const stranger = refundEvent({ ...f, paymentIntent: "pi_nobody_paid_with_this" }, 100, { metadata: false });
  assert.deepEqual((await deliver(stranger)).body, { received: true, ignored: "order_not_found" });
  assert.ok(await eventRecorded(stranger.id), "recorded, so Stripe's redeliveries stop there");
  assert.deepEqual((await deliver(stranger)).body, { received: true, duplicate: true });
  // the order of the metadata is not paid: the engine refuses a refund (SH410), no retry can change that
  const unpaid = refundEvent(f, 100);
  assert.deepEqual((await deliver(unpaid)).body, { received: true, ignored: "invalid_transition" });
  assert.equal(Number((await orderRow(sql, f.order.id)).refunded_amount), 0);
});

test("charge.refunded without metadata finds the order by its payment intent", async () => {
  const f = await stripeOrder();
  await deliver(sessionEvent("checkout.session.completed", f));
  const res = await deliver(refundEvent(f, 300, { metadata: false }));
  assert.equal(res.body.result, "refund_recorded");
  assert.equal(Number((await orderRow(sql, f.order.id)).refunded_amount), 300);
});

// ---------------------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------------------

test("400 invalid_signature for a wrong secret, a tampered body or no header; nothing changes", async () => {
  const f = await stripeOrder();
  const event = sessionEvent("checkout.session.completed", f);
  const wrong = await deliver(event, { secret: "whsec_someone_else" });
  assert.equal(wrong.status, 400);
  assert.equal(wrong.body.error.code, "invalid_signature");

  const signed = await Stripe.webhooks.generateTestHeaderStringAsync({
    payload: JSON.stringify(event),
    secret: SECRET,
    cryptoProvider: Stripe.createSubtleCryptoProvider(),
  });
  const tampered = { ...event, data: { object: { ...event.data.object, amount_total: 1 } } };
  assert.equal((await deliver(tampered, { signature: signed })).status, 400);
  assert.equal((await deliver(event, { signature: null })).status, 400);

  assert.equal(await eventRecorded(event.id), false);
  assert.equal((await orderRow(sql, f.order.id)).status, "awaiting_payment");
});

test("400 for a signature older than the 300 s tolerance (a replayed capture)", async () => {
  const f = await stripeOrder();
  const event = sessionEvent("checkout.session.completed", f);
  const old = await deliver(event, { timestamp: Math.floor(Date.now() / 1000) - 301 });
  assert.equal(old.status, 400);
  assert.equal(old.body.error.code, "invalid_signature");
  assert.equal(await eventRecorded(event.id), false);
  assert.equal((await orderRow(sql, f.order.id)).status, "awaiting_payment");
  // Within the tolerance it is accepted.
  const recent = await deliver(event, { timestamp: Math.floor(Date.now() / 1000) - 200 });
  assert.equal(recent.status, 200);
});

// ---------------------------------------------------------------------------------------------------------
// Other events
// ---------------------------------------------------------------------------------------------------------

test("an unknown event type answers 200, recorded and ignored", async () => {
  const event = {
    id: `evt_${crypto.randomUUID().replaceAll("-", "")}`,
    object: "event",
    type: "customer.created",
    created: Math.floor(Date.now() / 1000),
    data: { object: { id: "cus_123", object: "customer" } },
  };
  const res = await deliver(event);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { received: true, ignored: "unhandled_type" });
  assert.ok(await eventRecorded(event.id));
});

test("a session that is not one of ours (no order id) is acknowledged and ignored", async () => {
  const f = await stripeOrder();
  const res = await deliver(sessionEvent("checkout.session.completed", f, { metadata: {}, client_reference_id: null }));
  assert.deepEqual(res.body, { received: true, ignored: "not_our_session" });
  assert.equal((await orderRow(sql, f.order.id)).status, "awaiting_payment");
});

test("an event naming an unknown order is acknowledged (Stripe would retry it for days otherwise)", async () => {
  const f = await stripeOrder();
  const ghost = crypto.randomUUID();
  const res = await deliver(
    sessionEvent("checkout.session.completed", f, { metadata: { order_id: ghost }, client_reference_id: ghost }),
  );
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { received: true, ignored: "order_not_found" });
});

test("a refused payment event is recorded once and ignored; a redelivery answers duplicate", async () => {
  // An in-store order named by a Stripe session: mark_paid refuses it (invalid_request), and no retry can change that.
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 5 });
  const till = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }], { method: "sumup" });
  const f = { ...(await stripeOrder()), order: till };
  const event = sessionEvent("checkout.session.completed", f);
  const first = await deliver(event);
  assert.deepEqual(first, { status: 200, body: { received: true, ignored: "invalid_request" } });
  assert.ok(await eventRecorded(event.id), "the refused event is recorded, so Stripe's redeliveries stop there");
  const again = await deliver(event);
  assert.deepEqual(again, { status: 200, body: { received: true, duplicate: true } });
  const [row] = await sql`select status from public.orders where id = ${till.id}::uuid`;
  assert.equal(row.status, "awaiting_instore_payment");
});

test("405 for GET", async () => {
  const res = await handler(new Request("http://functions.local/functions/v1/stripe-webhook"));
  assert.equal(res.status, 405);
  await res.body?.cancel();
});

test("gateway: Stripe's call without a JWT reaches the function (verify_jwt = false) and pays the order", async () => {
  const f = await stripeOrder({ stock: 5, quantity: 2 });
  const payload = JSON.stringify(sessionEvent("checkout.session.completed", f));
  const signature = await Stripe.webhooks.generateTestHeaderStringAsync({
    payload,
    secret: SECRET,
    cryptoProvider: Stripe.createSubtleCryptoProvider(),
  });
  const gw = await startGateway();
  try {
    const res = await contractFetch(`${gw.url}/functions/v1/stripe-webhook`, {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": signature },
      body: payload,
    });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).result, "paid");
    assert.deepEqual(await stockOf(sql, f.product.id), { onHand: 3, reserved: 0 });
  } finally {
    await gw.shutdown();
  }
});

test("teardown", async () => {
  await sql.end();
  await closeDb();
});

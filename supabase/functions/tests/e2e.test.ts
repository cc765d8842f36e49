/**
 * End to end, as a shop's front end and its payment providers drive stockhold: supabase-js
 * `functions.invoke` through the functions gateway (JWT check included) with the anon key, Stripe played by the
 * fake API server the real SDK is pointed at, Stripe's webhook signed with the SDK's test helper, staff acting
 * with a staff JWT (or a back office with the secret API key, the shop with the publishable one), and the stock read
 * back from the database. The invariant checker closes every flow.
 */
import assert from "node:assert/strict";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import type postgres from "postgres";
import { startFakeStripe } from "./fakes/stripe-server.ts";
import { ANON_KEY, PUBLISHABLE_KEY, SECRET_KEY } from "./support/keys.ts";
import { makeProduct, movementsOf, orderRow, stockOf, testSql, userJwt } from "./support/shop.ts";
import {
  assertInvariants,
  deliverStripe,
  signStripe,
  STRIPE_WEBHOOK_SECRET,
  stripeEvent,
  withGateway,
} from "./concurrency/support.ts";

const SHOP = "https://shop.example.test";

/** A supabase-js client created with `key` (the anon key unless given), signed in as `token` if given. */
function client(url: string, token?: string, key = ANON_KEY): SupabaseClient {
  return createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    ...(token ? { global: { headers: { Authorization: `Bearer ${token}` } } } : {}),
  });
}

/** The HTTP status behind a supabase-js FunctionsHttpError (or null when the call succeeded). */
function statusOf(error: unknown): number | null {
  return error ? (error as { context: Response }).context.status : null;
}

type World = { sql: postgres.Sql; url: string; stripe: ReturnType<typeof startFakeStripe> };

function e2e(name: string, fn: (w: World) => Promise<void>) {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = testSql();
      const stripe = startFakeStripe();
      try {
        await withGateway({
          STRIPE_SECRET_KEY: "sk_test_e2e",
          STRIPE_API_BASE: stripe.url,
          STRIPE_WEBHOOK_SECRET,
          ALLOWED_RETURN_ORIGINS: SHOP,
          ALLOWED_ORIGINS: SHOP,
          ORDER_RATE_LIMIT_PER_ADDRESS: "100000",
          ORDER_RATE_LIMIT_PER_USER: "100000",
          PROVIDER_TIMEOUT_MS: "3000",
          PROVIDER_RETRIES: "1",
          SUMUP_API_KEY: undefined,
          SUMUP_MERCHANT_CODE: undefined,
        }, (gw) => fn({ sql, url: gw.url, stripe }));
        await assertInvariants(sql);
      } finally {
        await stripe.close();
        await sql.end();
      }
    },
  });
}

e2e(
  "e2e online: invoke orders-create -> Stripe Checkout URL -> signed checkout.session.completed -> paid, stock deducted",
  async ({ sql, url, stripe }) => {
    const mug = await makeProduct(sql, { stock: 3, price: 1250, taxBp: 1900 });
    const shopper = client(url);

    // 1. The shop's front end asks for an order, guest checkout with the anon key.
    const key = crypto.randomUUID();
    const body = {
      items: [{ product_id: mug.id, quantity: 2 }],
      payment_method: "stripe",
      customer: { email: "ada@example.test", name: "Ada" },
      success_url: `${SHOP}/thanks`,
      cancel_url: `${SHOP}/basket`,
    };
    const { data, error } = await shopper.functions.invoke("orders-create", {
      body,
      headers: { "Idempotency-Key": key },
    });
    assert.equal(error, null, `orders-create failed: ${statusOf(error)}`);
    const order = data.order;
    assert.equal(order.status, "awaiting_payment");
    assert.equal(order.total, 2975); // 2 x 12.50 + 19 % tax
    assert.deepEqual(await stockOf(sql, mug.id), { onHand: 3, reserved: 2 });

    // 2. It was sent to Stripe Checkout: a session for exactly the order's total, which names the order.
    const [sessionId] = [...stripe.sessions.keys()];
    const session = stripe.sessions.get(sessionId)!;
    assert.equal(data.checkout_url, session.url);
    assert.equal(session.amount_total, order.total);
    assert.deepEqual(session.metadata, { order_id: order.id });
    assert.equal((await orderRow(sql, order.id)).provider_checkout_id, sessionId);

    // A retry with the same key is the same order and the same checkout.
    const again = await shopper.functions.invoke("orders-create", { body, headers: { "Idempotency-Key": key } });
    assert.equal(again.error, null);
    assert.equal(again.data.order.id, order.id);
    assert.equal(again.data.checkout_url, data.checkout_url);

    // 3. The buyer pays; Stripe calls the webhook, signed with the endpoint secret.
    const completed = stripeEvent("checkout.session.completed", {
      ...session,
      status: "complete",
      payment_status: "paid",
      payment_intent: "pi_test_e2e_online",
    });
    const signed = await signStripe(completed);
    const delivered = await deliverStripe(url, signed);
    assert.equal(delivered.status, 200, JSON.stringify(delivered.body));
    assert.equal(delivered.body.result, "paid");
    // A redelivery changes nothing.
    const redelivered = await deliverStripe(url, signed);
    assert.equal(redelivered.status, 200);
    assert.equal(redelivered.body.duplicate, true);
    // A forged one is refused.
    const forged = await deliverStripe(url, await signStripe(completed, "whsec_not_the_endpoint_secret"));
    assert.equal(forged.status, 400);

    // 4. Paid, stock deducted once, as staff see it through orders-get.
    const staff = client(url, (await userJwt({ staffRole: "staff" })).token);
    const seen = await staff.functions.invoke("orders-get", { body: { id: order.id } });
    assert.equal(seen.error, null);
    assert.equal(seen.data.order.status, "paid");
    assert.equal(seen.data.order.provider_payment_ref, "pi_test_e2e_online");
    assert.deepEqual(await stockOf(sql, mug.id), { onHand: 1, reserved: 0 });
    const ledger = (await movementsOf(sql, mug.id)).map((m) => [m.reason, m.delta_on_hand, m.delta_reserved]);
    assert.deepEqual(ledger, [["restock", 3, 0], ["reserve", 0, 2], ["fulfil", -2, -2]]);
    await assertInvariants(sql, { productIds: [mug.id] });
  },
);

e2e("e2e in store, unpaid: the sweep expires the reservation and the stock is back on sale", async ({ sql, url }) => {
  // A SKU that sorts first, so the shop window's first page shows it whatever else the database holds.
  const scarf = await makeProduct(sql, { stock: 2, price: 3000, sku: `0E2E-${crypto.randomUUID().slice(0, 12)}` });
  const shopper = client(url);
  const { data, error } = await shopper.functions.invoke("orders-create", {
    body: { items: [{ product_id: scarf.id, quantity: 2 }], payment_method: "sumup" },
    headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  assert.equal(error, null, `orders-create failed: ${statusOf(error)}`);
  assert.equal(data.order.status, "awaiting_instore_payment");
  assert.deepEqual(await stockOf(sql, scarf.id), { onHand: 2, reserved: 2 });

  // Sold out while held.
  const other = await shopper.functions.invoke("orders-create", {
    body: { items: [{ product_id: scarf.id, quantity: 1 }], payment_method: "sumup" },
    headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  assert.equal(statusOf(other.error), 409);

  // Nobody pays. The sweep runs after the reservation's end (its clock argument, not a sleep).
  const expiresAt = new Date(data.reservation_expires_at);
  const [{ released }] = await sql`select public.expire_reservations(${
    new Date(expiresAt.getTime() + 1000).toISOString()
  }::timestamptz) as released`;
  assert.ok(released >= 1);
  assert.equal((await orderRow(sql, data.order.id)).status, "expired");
  assert.deepEqual(await stockOf(sql, scarf.id), { onHand: 2, reserved: 0 });
  const ledger = (await movementsOf(sql, scarf.id)).map((m) => [m.reason, m.delta_reserved]);
  assert.deepEqual(ledger, [["restock", 0], ["reserve", 2], ["expire", -2]]);

  // The shop window shows it again, and the next buyer gets it.
  const list = await shopper.functions.invoke(`products-list?limit=100`, { method: "GET" });
  assert.equal(list.error, null);
  const items = list.data.items as { id: string; available: number }[];
  let shown = items.find((i) => i.id === scarf.id);
  let cursor = list.data.next_cursor;
  while (!shown && cursor) {
    const page = await shopper.functions.invoke(`products-list?limit=100&cursor=${encodeURIComponent(cursor)}`, {
      method: "GET",
    });
    shown = (page.data.items as { id: string; available: number }[]).find((i) => i.id === scarf.id);
    cursor = page.data.next_cursor;
  }
  assert.equal(shown?.available, 2);
  const next = await shopper.functions.invoke("orders-create", {
    body: { items: [{ product_id: scarf.id, quantity: 2 }], payment_method: "sumup" },
    headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  assert.equal(next.error, null);
  assert.deepEqual(await stockOf(sql, scarf.id), { onHand: 2, reserved: 2 });
  await assertInvariants(sql, { productIds: [scarf.id] });
});

e2e("e2e in store, paid: staff confirm the card payment with orders-instore, stock deducted", async ({ sql, url }) => {
  const lamp = await makeProduct(sql, { stock: 4, price: 8900, taxBp: 700 });
  const shopper = client(url);
  const { data, error } = await shopper.functions.invoke("orders-create", {
    body: { items: [{ product_id: lamp.id, quantity: 3 }], payment_method: "sumup" },
    headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  assert.equal(error, null, `orders-create failed: ${statusOf(error)}`);
  const orderId = data.order.id;
  assert.deepEqual(await stockOf(sql, lamp.id), { onHand: 4, reserved: 3 });

  // A customer (or the anon key) cannot confirm payments.
  const denied = await shopper.functions.invoke("orders-instore", {
    body: { action: "confirm", order_id: orderId, transaction_code: "TXFAKE" },
  });
  assert.equal(statusOf(denied.error), 403);
  const customer = client(url, (await userJwt()).token);
  assert.equal(
    statusOf(
      (await customer.functions.invoke("orders-instore", {
        body: { action: "confirm", order_id: orderId, transaction_code: "TXFAKE" },
      })).error,
    ),
    403,
  );
  assert.deepEqual(await stockOf(sql, lamp.id), { onHand: 4, reserved: 3 });

  // Staff saw the terminal accept the card and confirm it with the receipt's transaction code.
  const staffJwt = await userJwt({ staffRole: "staff" });
  const staff = client(url, staffJwt.token);
  // A code of its own: a transaction code pays one order only, and the database may hold earlier runs' orders.
  const code = `TX-${crypto.randomUUID().slice(0, 8).toUpperCase()}`;
  const confirmed = await staff.functions.invoke("orders-instore", {
    body: { action: "confirm", order_id: orderId, transaction_code: code },
  });
  assert.equal(confirmed.error, null, `orders-instore failed: ${statusOf(confirmed.error)}`);
  assert.equal(confirmed.data.result, "paid");
  assert.equal(confirmed.data.order.status, "paid");
  // A second tap of the button changes nothing.
  const twice = await staff.functions.invoke("orders-instore", {
    body: { action: "confirm", order_id: orderId, transaction_code: code },
  });
  assert.equal(twice.data.result, "already_paid");

  const row = await orderRow(sql, orderId);
  assert.equal(row.status, "paid");
  assert.equal(row.provider_payment_ref, code);
  assert.deepEqual(await stockOf(sql, lamp.id), { onHand: 1, reserved: 0 });
  const [{ actor }] = await sql`select actor from private.order_status_history
                                where order_id = ${orderId}::uuid and to_status = 'paid'`;
  assert.equal(actor, `staff:${staffJwt.sub}`);
  await assertInvariants(sql, { productIds: [lamp.id] });
});

e2e(
  "e2e with Supabase's API keys: a publishable-key client orders, a signed-in user on it reads, a secret-key back office confirms",
  async ({ sql, url }) => {
    const kettle = await makeProduct(sql, { stock: 5, price: 3900, taxBp: 1900 });
    // The shop's front end created with the publishable key (`supabase status`: Publishable key), guest checkout.
    const shopper = client(url, undefined, PUBLISHABLE_KEY);
    const { data: page, error: listError } = await shopper.functions.invoke(`products-list?limit=1`, { method: "GET" });
    assert.equal(listError, null, `products-list failed: ${statusOf(listError)}`);
    assert.ok(Array.isArray(page.items));
    const { data, error } = await shopper.functions.invoke("orders-create", {
      body: { items: [{ product_id: kettle.id, quantity: 2 }], payment_method: "sumup" },
      headers: { "Idempotency-Key": crypto.randomUUID() },
    });
    assert.equal(error, null, `orders-create failed: ${statusOf(error)}`);
    const orderId = data.order.id;
    assert.equal(data.order.total, 2 * 3900 + Math.round(2 * 3900 * 0.19));
    assert.deepEqual(await stockOf(sql, kettle.id), { onHand: 5, reserved: 2 });
    const [{ actor: creator }] = await sql`select actor from private.order_status_history
                                         where order_id = ${orderId}::uuid and to_status = 'awaiting_instore_payment'`;
    assert.equal(creator, "anon");

    // The publishable key is the anon role: it cannot confirm payments, nor can a key that is not this project's.
    const denied = await shopper.functions.invoke("orders-instore", {
      body: { action: "confirm", order_id: orderId, transaction_code: "TXFAKE" },
    });
    assert.equal(statusOf(denied.error), 403);
    const stranger = await client(url, undefined, "sb_secret_not-this-projects-key").functions.invoke(
      "orders-instore",
      {
        body: { action: "confirm", order_id: orderId, transaction_code: "TXFAKE" },
      },
    );
    assert.equal(statusOf(stranger.error), 401);

    // Staff signed in on the same publishable-key client: their session JWT is who they are.
    const staffJwt = await userJwt({ staffRole: "staff" });
    const read = await client(url, staffJwt.token, PUBLISHABLE_KEY).functions.invoke("orders-get", {
      body: { id: orderId },
    });
    assert.equal(read.error, null, `orders-get failed: ${statusOf(read.error)}`);
    assert.equal(read.data.order.id, orderId);

    // A back-office job holding the secret key confirms the payment, recorded as the service.
    const code = `TX-${crypto.randomUUID().slice(0, 8).toUpperCase()}`;
    const confirmed = await client(url, undefined, SECRET_KEY).functions.invoke("orders-instore", {
      body: { action: "confirm", order_id: orderId, transaction_code: code },
    });
    assert.equal(confirmed.error, null, `orders-instore failed: ${statusOf(confirmed.error)}`);
    assert.equal(confirmed.data.result, "paid");
    assert.deepEqual(await stockOf(sql, kettle.id), { onHand: 3, reserved: 0 });
    const [{ actor }] = await sql`select actor from private.order_status_history
                                where order_id = ${orderId}::uuid and to_status = 'paid'`;
    assert.equal(actor, "service");
    await assertInvariants(sql, { productIds: [kettle.id] });
  },
);

/**
 * Invariant 4 under concurrency: the same Idempotency-Key and body, sent many times at once through the HTTP
 * path, is one order (one reservation, one Stripe session); the same key with another body is refused.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { startFakeStripe } from "../fakes/stripe-server.ts";
import { ANON_KEY } from "../support/keys.ts";
import { makeProduct, stockOf, testSql } from "../support/shop.ts";
import { assertInvariants, race, withGateway } from "./support.ts";

const SHOP = "https://shop.example.test";

// deno-lint-ignore no-explicit-any
type Answer = { status: number; body: Record<string, any> };

async function post(url: string, key: string, body: unknown): Promise<Answer> {
  const res = await fetch(`${url}/functions/v1/orders-create`, {
    method: "POST",
    headers: { authorization: `Bearer ${ANON_KEY}`, "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

function test(
  name: string,
  fn: (sql: postgres.Sql, url: string, stripe: ReturnType<typeof startFakeStripe>) => Promise<void>,
) {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = testSql();
      const stripe = startFakeStripe();
      try {
        await withGateway({
          STRIPE_SECRET_KEY: "sk_test_idempotency",
          STRIPE_API_BASE: stripe.url,
          ALLOWED_RETURN_ORIGINS: SHOP,
          ORDER_RATE_LIMIT_PER_ADDRESS: "100000",
          ORDER_RATE_LIMIT_PER_USER: "100000",
          PROVIDER_TIMEOUT_MS: "5000",
          PROVIDER_RETRIES: "1",
          DB_POOL_MAX: "10",
          SUMUP_API_KEY: undefined,
        }, (gw) => fn(sql, gw.url, stripe));
        await assertInvariants(sql);
      } finally {
        await stripe.close();
        await sql.end();
      }
    },
  });
}

function answers(results: PromiseSettledResult<Answer>[]): Answer[] {
  return results.map((r) => {
    assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
    return (r as PromiseFulfilledResult<Answer>).value;
  });
}

test(
  "idempotency: 10 identical Stripe requests at once are one order, one reservation, one Checkout Session",
  async (sql, url, stripe) => {
    const product = await makeProduct(sql, { stock: 5 });
    const key = crypto.randomUUID();
    const body = {
      items: [{ product_id: product.id, quantity: 2 }],
      payment_method: "stripe",
      success_url: `${SHOP}/ok`,
      cancel_url: `${SHOP}/back`,
    };
    const got = answers(await race(Array.from({ length: 10 }, () => () => post(url, key, body))));
    assert.deepEqual(
      got.map((a) => a.status),
      Array(10).fill(201),
      JSON.stringify(got.filter((a) => a.status !== 201)),
    );
    assert.equal(new Set(got.map((a) => a.body.order.id)).size, 1, "one order");
    assert.equal(new Set(got.map((a) => a.body.checkout_url)).size, 1, "one checkout URL");
    assert.equal(got.filter((a) => a.body.checkout_url === undefined).length, 0);
    assert.equal(stripe.sessions.size, 1, "one Checkout Session at Stripe");
    assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
    await assertInvariants(sql, { productIds: [product.id] });
  },
);

test(
  "idempotency: one key, two different bodies at once: one order; the other body is refused with 422",
  async (sql, url) => {
    const product = await makeProduct(sql, { stock: 10 });
    const key = crypto.randomUUID();
    const one = { items: [{ product_id: product.id, quantity: 1 }], payment_method: "sumup" };
    const two = { items: [{ product_id: product.id, quantity: 3 }], payment_method: "sumup" };
    const bodies = Array.from({ length: 12 }, (_, i) => (i % 2 ? one : two));
    const got = answers(await race(bodies.map((b) => () => post(url, key, b))));
    const created = got.filter((a) => a.status === 201);
    const refused = got.filter((a) => a.status === 422);
    assert.equal(
      created.length + refused.length,
      12,
      JSON.stringify(got.filter((a) => a.status !== 201 && a.status !== 422)),
    );
    assert.equal(new Set(created.map((a) => a.body.order.id)).size, 1, "one order");
    const winner = created[0].body.order.items[0].quantity;
    // Every request with the winning body got the order, every other one the refusal.
    got.forEach((a, i) => {
      const quantity = bodies[i].items[0].quantity;
      if (quantity === winner) assert.equal(a.status, 201);
      else assert.equal(a.body.error.code, "idempotency_key_reused");
    });
    assert.deepEqual(await stockOf(sql, product.id), { onHand: 10, reserved: winner });
  },
);

test("idempotency: 20 retries of the order that took the last unit all get that order, not 409", async (sql, url) => {
  const product = await makeProduct(sql, { stock: 1 });
  const key = crypto.randomUUID();
  const body = { items: [{ product_id: product.id, quantity: 1 }], payment_method: "sumup" };
  const got = answers(await race(Array.from({ length: 20 }, () => () => post(url, key, body))));
  assert.deepEqual(got.map((a) => a.status), Array(20).fill(201), JSON.stringify(got.find((a) => a.status !== 201)));
  assert.equal(new Set(got.map((a) => a.body.order.id)).size, 1);
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 1, reserved: 1 });
});

/**
 * Flash sale through the real HTTP path: many buyers race for the last units of one product via the functions
 * gateway (JWT check, rate limit, orders-create, the engine). Nothing oversold, nothing lost, every invariant
 * holding afterwards.
 */
import assert from "node:assert/strict";
import { ANON_KEY } from "../support/keys.ts";
import { makeProduct, stockOf, testSql } from "../support/shop.ts";
import { assertInvariants, race, withGateway } from "./support.ts";

const BUYERS = 200;
const UNITS = 10;

/** Rate limits out of the way (every buyer comes from 127.0.0.1), and enough connections to really contend. */
const FLASH_ENV = {
  ORDER_RATE_LIMIT_PER_ADDRESS: "100000",
  ORDER_RATE_LIMIT_PER_USER: "100000",
  DB_POOL_MAX: "20",
  // In-store orders: no payment provider involved, the race is the engine's alone.
  SUMUP_API_KEY: undefined,
};

async function buy(url: string, productId: string, quantity: number) {
  const res = await fetch(`${url}/functions/v1/orders-create`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${ANON_KEY}`,
      apikey: ANON_KEY,
      "content-type": "application/json",
      "idempotency-key": crypto.randomUUID(),
    },
    body: JSON.stringify({ items: [{ product_id: productId, quantity }], payment_method: "sumup" }),
  });
  return { status: res.status, body: await res.json(), quantity };
}

Deno.test({
  name:
    `flash sale: ${BUYERS} concurrent buyers for ${UNITS} units get exactly ${UNITS} orders, the rest 409 insufficient_stock`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const sql = testSql();
    try {
      const product = await makeProduct(sql, { stock: UNITS, price: 4990 });
      const results = await withGateway(
        FLASH_ENV,
        (gw) => race(Array.from({ length: BUYERS }, () => () => buy(gw.url, product.id, 1))),
      );

      const answers = results.map((r) => {
        assert.equal(r.status, "fulfilled", `a request failed outright: ${(r as PromiseRejectedResult).reason}`);
        return (r as PromiseFulfilledResult<Awaited<ReturnType<typeof buy>>>).value;
      });
      const byStatus = Map.groupBy(answers, (a) => a.status);
      const summary = [...byStatus].map(([s, list]) => `${s}x${list.length}`).join(" ");
      assert.equal(
        byStatus.get(201)?.length,
        UNITS,
        `statuses: ${summary}; e.g. ${JSON.stringify(answers.find((a) => a.status !== 201 && a.status !== 409)?.body)}`,
      );
      assert.equal(byStatus.get(409)?.length, BUYERS - UNITS, `statuses: ${summary}`);
      for (const a of byStatus.get(409)!) {
        assert.equal(a.body.error.code, "insufficient_stock");
        assert.deepEqual(
          a.body.error.details.items.map((i: { sku: string; available: number }) => [i.sku, i.available]),
          [[product.sku, 0]],
        );
      }
      const orderIds = new Set(byStatus.get(201)!.map((a) => a.body.order.id));
      assert.equal(orderIds.size, UNITS, "each winner has an order of its own");

      assert.deepEqual(await stockOf(sql, product.id), { onHand: UNITS, reserved: UNITS });
      const [{ orders }] = await sql`
        select count(*)::int as orders from public.order_items where product_id = ${product.id}::uuid`;
      assert.equal(orders, UNITS, "no order was written for a buyer who got a 409");
      await assertInvariants(sql, { productIds: [product.id] });
      await assertInvariants(sql);
    } finally {
      await sql.end();
    }
  },
});

Deno.test({
  name: "flash sale with mixed quantities: nothing oversold, and no buyer refused while enough was left for them",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const sql = testSql();
    try {
      const units = 25;
      // Stock on both locations, so allocation across locations races too.
      const product = await makeProduct(sql, { stock: 15 });
      await sql`select public.restock(${product.id}::uuid, 'warehouse', 10, 'flash sale')`;
      const quantities = Array.from({ length: 120 }, (_, i) => 1 + (i % 4));
      const results = await withGateway(
        FLASH_ENV,
        (gw) => race(quantities.map((q) => () => buy(gw.url, product.id, q))),
      );
      const answers = results.map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof buy>>>).value);
      assert.ok(results.every((r) => r.status === "fulfilled"));
      const won = answers.filter((a) => a.status === 201);
      const lost = answers.filter((a) => a.status === 409);
      assert.equal(
        won.length + lost.length,
        answers.length,
        `unexpected statuses: ${
          JSON.stringify(answers.filter((a) => a.status !== 201 && a.status !== 409).slice(0, 3))
        }`,
      );
      const sold = won.reduce((s, a) => s + a.quantity, 0);
      assert.ok(sold <= units, `oversold: ${sold} of ${units}`);
      const { onHand, reserved } = await stockOf(sql, product.id);
      assert.deepEqual({ onHand, reserved }, { onHand: units, reserved: sold });
      // Stock only went down during the race, so a refused buyer saw at least what is left now.
      for (const a of lost) {
        assert.equal(a.body.error.code, "insufficient_stock");
        assert.ok(a.quantity > units - sold, `refused ${a.quantity} while ${units - sold} were left at the end`);
      }
      await assertInvariants(sql, { productIds: [product.id] });
    } finally {
      await sql.end();
    }
  },
});

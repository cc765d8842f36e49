/**
 * Lock ordering under contention: multi-item orders that name the same products in opposite orders, created
 * through the HTTP path while payments, cancellations, restocks and the expiry sweep (in small batches, so it
 * holds stock rows across batches) run on the same stock rows. Postgres would abort one side of a lock cycle
 * with 40P01 (deadlock_detected); none may reach a client, nothing may be oversold.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { ANON_KEY } from "../support/keys.ts";
import { makeOrder, makeProduct, stockOf, testSql } from "../support/shop.ts";
import { assertInvariants, pgCode, pool, race, withGateway } from "./support.ts";

const ENV = {
  ORDER_RATE_LIMIT_PER_ADDRESS: "100000",
  ORDER_RATE_LIMIT_PER_USER: "100000",
  DB_POOL_MAX: "16",
  SUMUP_API_KEY: undefined,
};

type Item = { product_id: string; quantity: number };

async function create(url: string, items: Item[]) {
  const res = await fetch(`${url}/functions/v1/orders-create`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${ANON_KEY}`,
      "content-type": "application/json",
      "idempotency-key": crypto.randomUUID(),
    },
    body: JSON.stringify({ items, payment_method: "sumup" }),
  });
  return { status: res.status, body: await res.json() };
}

/** A deterministic shuffle (the test must fail the same way twice). */
function shuffled<T>(list: T[], seed: number): T[] {
  const out = [...list];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function describeFailures(results: PromiseSettledResult<unknown>[], what: string[]): string {
  return results
    .map((r, i) =>
      r.status === "rejected" ? `${what[i]}: ${pgCode(r.reason) ?? ""} ${String(r.reason).slice(0, 200)}` : null
    )
    .filter((x) => x !== null)
    .slice(0, 10)
    .join("\n");
}

async function scenario(sql: postgres.Sql, rounds: number) {
  const products = await Promise.all([1, 2, 3, 4].map(() => makeProduct(sql, { stock: 30 })));
  for (const p of products) await sql`select public.restock(${p.id}::uuid, 'warehouse', 30, 'lock-order')`;
  const ids = products.map((p) => p.id);
  const forward = (q: number): Item[] => ids.map((id) => ({ product_id: id, quantity: q }));
  const backward = (q: number): Item[] => [...ids].reverse().map((id) => ({ product_id: id, quantity: q }));

  const db = pool(24);
  try {
    for (let round = 0; round < rounds; round++) {
      // Fresh units each round (the last one sold some): enough for the held orders, too few for every buyer.
      if (round > 0) {
        for (const id of ids) {
          await sql`select public.restock(${id}::uuid, 'shop', 30, 'next round'),
                           public.restock(${id}::uuid, 'warehouse', 20, 'next round')`;
        }
      }
      // Orders already holding stock, in both item orders and both channels (different location priorities).
      const held: { id: string; payment_method: string; total: number; currency: string }[] = [];
      for (let i = 0; i < 24; i++) {
        const items = i % 2 === 0 ? forward(1) : backward(1);
        held.push(
          await makeOrder(sql, i % 3 === 0 ? shuffled(items, i) : items, { method: i % 4 < 2 ? "sumup" : "stripe" }),
        );
      }
      const later = new Date(Date.now() + 40 * 60_000).toISOString();

      const tasks: (() => Promise<unknown>)[] = [];
      const what: string[] = [];
      const add = (name: string, task: () => Promise<unknown>) => {
        what.push(name);
        tasks.push(task);
      };
      const httpResults: { status: number; body: { error?: { code: string } } }[] = [];
      await withGateway(ENV, async (gw) => {
        for (let i = 0; i < 60; i++) {
          const q = 1 + (i % 2);
          const items = i % 3 === 0 ? forward(q) : i % 3 === 1 ? backward(q) : shuffled(forward(q), i + round * 100);
          add(`http create ${i}`, async () => httpResults.push(await create(gw.url, items)));
        }
        held.forEach((order, i) => {
          const pay = (now: string | null) =>
            db`select public.mark_paid(${order.id}::uuid, ${order.payment_method}, ${"ref-" + i},
                                        ${order.total}::bigint, ${order.currency}, coalesce(${now}::timestamptz, now()))`;
          if (i % 3 === 0) add(`pay ${i}`, () => pay(null));
          else if (i % 3 === 1) add(`cancel ${i}`, () => db`select public.cancel_order(${order.id}::uuid, 'race')`);
          // Paid after its reservation lapsed: the payment re-reserves on rows the sweep is working on.
          else add(`late pay ${i}`, () => pay(later));
        });
        for (let i = 0; i < 3; i++) {
          add(`sweep ${i}`, () => db`select public.expire_reservations(${later}::timestamptz, 2)`);
        }
        for (const id of [ids[1], ids[2]]) {
          add(`restock ${id}`, () => db`select public.restock(${id}::uuid, 'shop', 3, 'race')`);
        }
        // One list of tasks, shuffled so that no kind of work always starts first.
        const order = shuffled(tasks.map((_, i) => i), round + 7);
        const results = await race(order.map((i) => tasks[i]));
        const names = order.map((i) => what[i]);
        assert.equal(
          results.filter((r) => r.status === "rejected").length,
          0,
          `engine calls failed (a deadlock is 40P01):\n${describeFailures(results, names)}`,
        );
      });
      const statuses = Map.groupBy(httpResults, (r) => r.status);
      if (Deno.env.get("RACE_DEBUG")) {
        const outcomes = await sql`select status, count(*)::int as n from public.orders
          where id = any (${held.map((o) => o.id)}::uuid[]) group by 1 order by 1`;
        console.log(
          `round ${round}: http ${[...statuses].map(([s, l]) => `${s}x${l.length}`).join(" ")}; held ${
            outcomes.map((o) => `${o.status}x${o.n}`).join(" ")
          }`,
        );
      }
      const odd = httpResults.filter((r) => r.status !== 201 && r.status !== 409);
      assert.equal(
        odd.length,
        0,
        `clients saw: ${[...statuses].map(([s, l]) => `${s}x${l.length}`).join(" ")}; ` +
          JSON.stringify(odd.slice(0, 3).map((r) => r.body)),
      );
      for (const r of statuses.get(409) ?? []) assert.equal(r.body.error?.code, "insufficient_stock");
      for (const p of products) {
        const { onHand, reserved } = await stockOf(sql, p.id);
        assert.ok(reserved <= onHand && onHand >= 0, `${p.sku}: on_hand ${onHand}, reserved ${reserved}`);
      }
      await assertInvariants(sql, { productIds: ids });
    }
  } finally {
    await db.end();
  }
}

Deno.test({
  name: "multi-item orders in opposite product order, racing payments, cancels, restocks and a batched sweep: " +
    "no deadlock reaches a client, nothing oversold",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const sql = testSql();
    try {
      await scenario(sql, 3);
      await assertInvariants(sql);
    } finally {
      await sql.end();
    }
  },
});

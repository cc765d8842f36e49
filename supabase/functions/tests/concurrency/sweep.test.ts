/**
 * The expiry sweep while buyers are buying. ARCHITECTURE.md promises two things here:
 *   - invariant 5: "A reservation past expires_at never blocks a sale, even before the sweep has run";
 *   - Performance: the sweep "works in batches ... with skip locked, so it never blocks buyers".
 * Each test builds a long sweep (thousands of lapsed reservations, swept one per batch, about 1-2 s here) so that
 * "while the sweep runs" is a wide, deterministic window rather than a lucky interleaving.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { makeProduct, stockOf, testSql } from "../support/shop.ts";
import { assertInvariants, pool } from "./support.ts";

const FILLER_PRODUCTS = 100;
const FILLER_ORDERS = 20; // x 100 lines = 2000 lapsed reservations for the sweep to walk

function test(name: string, fn: (sql: postgres.Sql, db: postgres.Sql) => Promise<void>) {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = testSql();
      const db = pool(6);
      try {
        await fn(sql, db);
        await assertInvariants(sql);
      } finally {
        await db.end();
        await sql.end();
      }
    },
  });
}

/** Thousands of reservations that lapsed 20 minutes ago, on products of their own: work for a long sweep. */
async function lapsedFiller(sql: postgres.Sql) {
  const ids: string[] = [];
  for (let i = 0; i < FILLER_PRODUCTS; i++) ids.push((await makeProduct(sql, { stock: FILLER_ORDERS })).id);
  const items = ids.map((id) => ({ product_id: id, quantity: 1 }));
  for (let k = 0; k < FILLER_ORDERS; k++) {
    await sql`select public.create_order(${sql.json(items)}::jsonb, 'sumup', ${crypto.randomUUID()}, null, '{}'::jsonb,
                                         null, now() - interval '20 minutes')`;
  }
}

/** The only unit of a product, held by an order whose reservation lapsed 15 minutes ago (first in sweep order). */
async function lapsedLastUnit(sql: postgres.Sql, productId: string) {
  await sql`select public.create_order(${sql.json([{ product_id: productId, quantity: 1 }])}::jsonb, 'sumup',
                                       ${crypto.randomUUID()}, null, '{}'::jsonb, null, now() - interval '30 minutes')`;
}

async function waitUntil(what: string, fn: () => Promise<boolean>, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("sweep: a lapsed reservation does not block a sale while the sweep is running (invariant 5)", async (sql, db) => {
  await lapsedFiller(sql);
  // P: one unit, held by a lapsed reservation. Q: plenty. The buyer wants both; stock rows lock in id order.
  const [p, q] = [await makeProduct(sql, { stock: 1 }), await makeProduct(sql, { stock: 1 })]
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  await sql`select public.restock(${q.id}::uuid, 'shop', 9, 'plenty')`;
  await lapsedLastUnit(sql, p.id);

  // Q's stock row is busy (here: a back-office transaction; in a flash sale: the queue of buyers on a hot row).
  const busy = await db.reserve();
  try {
    await busy`begin`;
    await busy`select public.restock(${q.id}::uuid, 'shop', 1, 'held open by the test')`;

    // The buyer locks P's row, then queues for Q's.
    const buyer = db`select public.create_order(${
      sql.json([{ product_id: p.id, quantity: 1 }, { product_id: q.id, quantity: 1 }])
    }::jsonb, 'sumup', ${crypto.randomUUID()}, null) as r`.then(
      () => "created",
      (err) => `${err.code}: ${err.message}`,
    );
    await waitUntil(
      "the buyer waits for Q's stock row",
      async () =>
        (await sql`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%create_order%'
                 and pid <> pg_backend_pid()`).length > 0,
    );

    // The sweep starts; its first batch is P's lapsed reservation.
    const started = performance.now();
    const sweep = db`select public.expire_reservations(now(), 1) as n`.then((r) => ({
      released: r[0].n,
      ms: performance.now() - started,
    }));
    await sleep(300);
    await busy`commit`;

    // P's only unit lapsed 15 minutes ago: the buyer must get it.
    const outcome = await buyer;
    const swept = await sweep;
    assert.ok(swept.ms > 600, `the sweep took only ${Math.round(swept.ms)} ms: too short to test anything`);
    assert.equal(
      outcome,
      "created",
      `the buyer was refused the unit of a reservation that lapsed 15 minutes earlier, because the sweep held ` +
        `that reservation (locked in its first batch, then skipped as P's stock row was busy): ${outcome}`,
    );
  } finally {
    busy.release();
  }
  await assertInvariants(sql, { productIds: [p.id, q.id] });
});

test("sweep: a buyer does not wait for the whole sweep (it never blocks buyers)", async (sql, db) => {
  await lapsedFiller(sql);
  const p = await makeProduct(sql, { stock: 1 });
  await sql`select public.restock(${p.id}::uuid, 'shop', 5, 'more')`;
  await lapsedLastUnit(sql, p.id);

  const started = performance.now();
  let sweepDone = 0;
  const sweep = db`select public.expire_reservations(now(), 1) as n`.then((r) => {
    sweepDone = performance.now() - started;
    return r[0].n as number;
  });
  // P's lapsed reservation is among the first the sweep closes (one per batch, oldest first); a buyer of P
  // arrives while the sweep goes on through the rest.
  await sleep(300);
  const buyerStart = performance.now() - started;
  await db`select public.create_order(${sql.json([{ product_id: p.id, quantity: 1 }])}::jsonb, 'sumup',
                                      ${crypto.randomUUID()}, null)`;
  const buyerDone = performance.now() - started;
  const released = await sweep;
  assert.ok(released >= FILLER_PRODUCTS * FILLER_ORDERS);
  assert.ok(sweepDone - buyerStart > 600, `the sweep had only ${Math.round(sweepDone - buyerStart)} ms left`);
  assert.ok(
    buyerDone < sweepDone,
    `the buyer (started at ${Math.round(buyerStart)} ms) finished at ${Math.round(buyerDone)} ms, after the sweep ` +
      `(${Math.round(sweepDone)} ms): it waited for the whole sweep, which holds every stock row it touched until ` +
      `its single transaction commits`,
  );
  const { onHand, reserved } = await stockOf(sql, p.id);
  assert.deepEqual({ onHand, reserved }, { onHand: 6, reserved: 1 });
});

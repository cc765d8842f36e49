/**
 * The expiry sweep while buyers are buying. ARCHITECTURE.md promises two things here:
 *   - invariant 5: "A reservation past expires_at never blocks a sale, even before the sweep has run";
 *   - Performance: the sweep "works in batches ... with skip locked, so it never blocks buyers".
 * "While the sweep runs" must be a wide window on any machine, not a lucky interleaving: how long a sweep of N
 * reservations takes differs threefold between the VMs this suite has run on (a 2000-row sweep took 417 ms on one
 * and over 1 s on others). So each sweep ends on a slow tail: the last reservation it releases belongs to a
 * product whose 'expire' ledger insert sleeps (a trigger the test adds and drops), which keeps the sweep's
 * transaction open for SLOW_TAIL_MS after it has dealt with everything before it.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { makeProduct, stockOf, testSql } from "../support/shop.ts";
import { assertInvariants, pool } from "./support.ts";

const FILLER_PRODUCTS = 100;
const FILLER_ORDERS = 5; // x 100 lines = 500 lapsed reservations: many batches before the slow tail
const CRON_BACKLOG_ORDERS = 60; // 6000 lapsed reservations: the cron sweep's batches of 5000 take two
const SLOW_TAIL_MS = 1000;

function test(name: string, fn: (sql: postgres.Sql, db: postgres.Sql) => Promise<void>) {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = testSql();
      const db = pool(6);
      try {
        await clearOfCron();
        await fn(sql, db);
        await assertInvariants(sql);
      } finally {
        await dropSlowTail(sql);
        await db.end();
        await sql.end();
      }
    },
  });
}

/** Thousands of reservations that lapsed 20 minutes ago, on products of their own: work for a long sweep. */
async function lapsedFiller(sql: postgres.Sql, orders = FILLER_ORDERS) {
  const ids: string[] = [];
  for (let i = 0; i < FILLER_PRODUCTS; i++) ids.push((await makeProduct(sql, { stock: orders })).id);
  const items = ids.map((id) => ({ product_id: id, quantity: 1 }));
  for (let k = 0; k < orders; k++) {
    await sql`select public.create_order(${sql.json(items)}::jsonb, 'sumup', ${crypto.randomUUID()}, null, '{}'::jsonb,
                                         null, now() - interval '20 minutes')`;
  }
}

/**
 * The sweep's slow tail: one reservation that lapsed after all the others (so it is released last), whose
 * product's 'expire' ledger row sleeps SLOW_TAIL_MS in an after-insert trigger, inside the sweep's transaction.
 */
async function slowTail(sql: postgres.Sql) {
  const last = await makeProduct(sql, { stock: 1 });
  await lapsedLastUnit(sql, last.id, "16 minutes"); // lapsed 1 minute ago, after the fillers (5 minutes ago)
  await sql`create schema if not exists test_faults`;
  await sql`create or replace function test_faults.sleep() returns trigger language plpgsql as $$
            begin perform pg_sleep(tg_argv[0]::float8); return null; end $$`;
  await sql.unsafe(`create or replace trigger test_slow_tail after insert on private.stock_movements for each row
                    when (new.product_id = '${last.id}'::uuid and new.reason = 'expire')
                    execute function test_faults.sleep('${SLOW_TAIL_MS / 1000}')`);
}

async function dropSlowTail(sql: postgres.Sql) {
  await sql`drop trigger if exists test_slow_tail on private.stock_movements`;
  await sql`drop schema if exists test_faults cascade`;
}

/**
 * The only unit of a product, held by an order placed `placedAgo` ago (the TTL is 15 minutes): by default its
 * reservation lapsed 15 minutes ago, before the fillers', so it is first in sweep order.
 */
async function lapsedLastUnit(sql: postgres.Sql, productId: string, placedAgo = "30 minutes") {
  await sql`select public.create_order(${sql.json([{ product_id: productId, quantity: 1 }])}::jsonb, 'sumup',
                                       ${crypto.randomUUID()}, null, '{}'::jsonb, null, now() - ${placedAgo}::interval)`;
}

async function waitUntil(what: string, fn: () => Promise<boolean>, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * pg_cron sweeps this database at the top of every minute, with the real clock, and would take the backlog a
 * test has just built: start a scenario only when the next run is at least `seconds` away.
 */
async function clearOfCron(seconds = 12) {
  const s = new Date().getSeconds();
  if (s > 60 - seconds) await sleep((62 - s) * 1000);
}

test("sweep: a lapsed reservation does not block a sale while the sweep is running (invariant 5)", async (sql, db) => {
  await lapsedFiller(sql);
  await slowTail(sql);
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
    assert.ok(swept.ms > SLOW_TAIL_MS, `the sweep took only ${Math.round(swept.ms)} ms: too short to test anything`);
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

/**
 * Runs `sweepSql` (a statement on its own connection) over the filler backlog plus P's lapsed reservation (the
 * oldest, so among the first swept); once the sweep has dealt with P (P's stock row locked or updated by it, or
 * the reservation already closed and committed), a buyer of P arrives. Returns when the buyer and the sweep
 * finished, in ms from the sweep's start.
 */
async function buyerDuringSweep(sql: postgres.Sql, db: postgres.Sql, sweepSql: string, fillerOrders: number) {
  await lapsedFiller(sql, fillerOrders);
  await slowTail(sql);
  const p = await makeProduct(sql, { stock: 1 });
  await sql`select public.restock(${p.id}::uuid, 'shop', 5, 'more')`;
  await lapsedLastUnit(sql, p.id);
  // P's one reservation, still open (lapsed but not yet swept); once closed it would be gone from open_reservations.
  const [res] = await sql`select id from private.open_reservations where product_id = ${p.id}::uuid`;
  assert.ok(res, "pg_cron swept the backlog before the test's own sweep started (setup slower than expected)");

  const conn = await db.reserve();
  try {
    const [{ pid }] = await conn`select pg_backend_pid() as pid`;
    const started = performance.now();
    let sweepDone = 0;
    const sweep = conn.unsafe(sweepSql).then(() => (sweepDone = performance.now() - started));
    // Looking takes no lock: P's stock row carries the sweep's transaction id in xmax once the sweep has locked
    // it; or P's reservation is already closed and committed (a sweep that commits per batch).
    await waitUntil("the sweep has reached P", async () => {
      const [row] = await sql`
        select coalesce((select s.xmax::text from private.stock_levels s
                         where s.product_id = ${p.id}::uuid and s.location_id = 1)
                        = (select a.backend_xid::text from pg_stat_activity a where a.pid = ${pid}), false)
               or not exists (select 1 from private.open_reservations r where r.id = ${res.id}) as reached`;
      return row.reached || sweepDone > 0;
    }, 30_000);
    const buyerStart = performance.now() - started;
    await db`select public.create_order(${sql.json([{ product_id: p.id, quantity: 1 }])}::jsonb, 'sumup',
                                        ${crypto.randomUUID()}, null)`;
    const buyerDone = performance.now() - started;
    await sweep;
    assert.ok(
      sweepDone - buyerStart > SLOW_TAIL_MS / 2,
      `the sweep had only ${Math.round(sweepDone - buyerStart)} ms left`,
    );
    assert.ok(
      buyerDone < sweepDone,
      `the buyer of a product the sweep had reached (at ${Math.round(buyerStart)} ms) finished at ` +
        `${Math.round(buyerDone)} ms, after the sweep (${Math.round(sweepDone)} ms): it waited for the whole sweep, ` +
        `whose one transaction holds every stock row it touched until it commits`,
    );
    const { onHand, reserved } = await stockOf(sql, p.id);
    assert.deepEqual({ onHand, reserved }, { onHand: 6, reserved: 1 });
  } finally {
    conn.release();
  }
}

test(
  "sweep: sweep_reservations (one batch per transaction) does not make a buyer wait for the whole sweep",
  (sql, db) => buyerDuringSweep(sql, db, "call public.sweep_reservations(10)", FILLER_ORDERS),
);

test(
  "sweep: the pg_cron job's sweep over a backlog does not make a buyer wait for the whole sweep",
  async (sql, db) => {
    // What pg_cron runs every minute; after downtime or a flash sale it meets a backlog of several batches.
    const [job] = await sql`select command from cron.job where jobname = 'stockhold-expire-reservations'`;
    assert.ok(job, "the sweep is scheduled");
    await buyerDuringSweep(sql, db, job.command, CRON_BACKLOG_ORDERS);
  },
);

test(
  "sweep: buyers and the sweep racing over one product's lapsed reservations expire each exactly once",
  async (sql, db) => {
    // 60 lapsed reservations on one stock row: buyers who draw their units from that row expire them themselves once
    // they hold it (the fast path's exact expiry), while the sweep takes them in batches of 5 with SKIP LOCKED.
    const p = await makeProduct(sql, { stock: 200 });
    const lapsed: string[] = [];
    for (let i = 0; i < 60; i++) {
      const [{ id }] = await sql`
        select public.create_order(${sql.json([{ product_id: p.id, quantity: 1 }])}::jsonb, 'sumup',
                                   ${crypto.randomUUID()}, null, '{}'::jsonb, null, now() - interval '20 minutes')
                 #>> '{order,id}' as id`;
      lapsed.push(id);
    }
    const sweep = db`call public.sweep_reservations(5)`;
    const buyers = Array.from(
      { length: 30 },
      () =>
        db`select public.create_order(${sql.json([{ product_id: p.id, quantity: 1 }])}::jsonb, 'sumup',
                                  ${crypto.randomUUID()}, null) as r`.then(() => "created", (err) => `${err.code}`),
    );
    const outcomes = await Promise.all(buyers);
    await sweep;
    assert.deepEqual(
      outcomes.filter((o) => o !== "created"),
      [],
      "every buyer got a unit",
    );
    // The lapsed orders' reservations, each expired (the view rebuilds a closed one from its ledger rows; read by
    // order, through the ledger's index of 'reserve' rows), none left open, and one 'expire' row each.
    const [counts] = await sql`
    select (select count(*)::int from private.reservations r
             where r.order_id = any (${lapsed}::uuid[]) and r.status = 'expired') as expired,
           (select count(*)::int from private.open_reservations r
             where r.product_id = ${p.id}::uuid and r.expires_at <= now()) as lapsed_left,
           (select count(*)::int from private.open_reservations r where r.product_id = ${p.id}::uuid) as open,
           (select count(*)::int from private.stock_movements m
             where m.product_id = ${p.id}::uuid and m.reason = 'expire') as expire_rows`;
    assert.deepEqual(counts, { expired: 60, lapsed_left: 0, open: 30, expire_rows: 60 });
    const { onHand, reserved } = await stockOf(sql, p.id);
    assert.deepEqual({ onHand, reserved }, { onHand: 200, reserved: 30 });
    await assertInvariants(sql, { productIds: [p.id] });
  },
);

test(
  "sweep: a sweep that would have to wait for a lock gives way at once, rolls its batch back and leaves it due",
  async (sql, db) => {
    // SKIP LOCKED can still wait (when a row's updater commits at the moment the sweep looks at it), and a payment
    // that the sweep waits for may be queued for a stock row the sweep holds: a deadlock, with the payment as the
    // victim (lock-order.test.ts met it once). The sweep's answer is to never wait: under its lock_timeout a batch
    // that meets a lock rolls back and stays due. Here the lock is a whole table's, held by a back-office
    // transaction: the one wait the test can cause at will. The sweep's ledger insert would queue behind it.
    const p = await makeProduct(sql, { stock: 1 });
    await lapsedLastUnit(sql, p.id);
    const [res] = await sql`select id from private.open_reservations where product_id = ${p.id}::uuid`;
    assert.ok(res, "the lapsed reservation is open");

    const busy = await db.reserve();
    try {
      await busy`begin`;
      await busy`lock table private.stock_movements in share mode`;
      const started = performance.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const released = await Promise.race([
        db`select public.expire_reservations(now()) as n`.then((r) => r[0].n as number),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("the sweep waited for the lock (5 s and counting)")), 5000);
        }),
      ]).finally(() => clearTimeout(timer));
      const ms = performance.now() - started;
      assert.equal(released, 0, "every batch gave way");
      assert.ok(ms < 2000, `the sweep took ${Math.round(ms)} ms to give way`);

      // Nothing half-done, and nothing still held: the stock row it had locked is free for the back office now.
      const [left] = await sql`select count(*)::int as n from private.open_reservations where id = ${res.id}`;
      assert.equal(left.n, 1, "the reservation is still open");
      await busy`set local lock_timeout = '2s'`;
      await busy`select public.restock(${p.id}::uuid, 'shop', 1, 'while the sweep gave way')`;
      await busy`commit`;
    } finally {
      busy.release();
    }

    // The next run takes what the first left.
    await db`select public.expire_reservations(now())`;
    const [after] = await sql`
      select (select count(*)::int from private.open_reservations where id = ${res.id}) as open,
             (select count(*)::int from private.stock_movements
               where reservation_id = ${res.id} and reason = 'expire') as expired`;
    assert.deepEqual(after, { open: 0, expired: 1 });
    const { onHand, reserved } = await stockOf(sql, p.id);
    assert.deepEqual({ onHand, reserved }, { onHand: 2, reserved: 0 });
  },
);

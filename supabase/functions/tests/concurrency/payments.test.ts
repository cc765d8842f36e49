/**
 * Payments under concurrency: the same paid webhook delivered five times at once, several events for one
 * session at once, and a payment racing the expiry sweep (and a new buyer) for the same reserved unit.
 * One deduction or one release, never both, never twice.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { startFakeSumUp } from "../fakes/sumup-server.ts";
import { ANON_KEY } from "../support/keys.ts";
import { dbTest, makeOrder, makeProduct, orderRow, stockOf, userJwt } from "../support/shop.ts";
import {
  assertInvariants,
  deliverStripe,
  paidSession,
  pool,
  race,
  signStripe,
  STRIPE_WEBHOOK_SECRET,
  stripeEvent,
  withGateway,
} from "./support.ts";

const ENV = {
  STRIPE_WEBHOOK_SECRET,
  STRIPE_SECRET_KEY: "sk_test_reliability",
  ORDER_RATE_LIMIT_PER_ADDRESS: "100000",
  ORDER_RATE_LIMIT_PER_USER: "100000",
  DB_POOL_MAX: "10",
  SUMUP_API_KEY: undefined,
};

/** Every test ends with the invariant checker over the whole database. */
function test(name: string, fn: (sql: postgres.Sql) => Promise<void>) {
  dbTest(name, async (sql) => {
    await fn(sql);
    await assertInvariants(sql);
  });
}

/** The order's 'fulfil' ledger rows (its deductions). */
async function deductions(sql: postgres.Sql, orderId: string) {
  return await sql`select product_id, delta_on_hand, reservation_id from private.stock_movements
                   where order_id = ${orderId}::uuid and reason = 'fulfil' order by id`;
}

/** Ledger rows of one reservation, oldest first, by reason. */
async function reasonsOf(sql: postgres.Sql, reservationId: string | number): Promise<string[]> {
  const rows =
    await sql`select reason from private.stock_movements where reservation_id = ${reservationId} order by id`;
  return rows.map((r) => r.reason as string);
}

test("the same checkout.session.completed delivered 5 times at once: one payment, one deduction, 4 duplicates", async (sql) => {
  const product = await makeProduct(sql, { stock: 5 });
  const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }], { method: "stripe" });
  const signed = await signStripe(stripeEvent("checkout.session.completed", paidSession(order)));

  const results = await withGateway(
    ENV,
    (gw) => race(Array.from({ length: 5 }, () => () => deliverStripe(gw.url, signed))),
  );
  const answers = results.map((r) => {
    assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
    return (r as PromiseFulfilledResult<{ status: number; body: Record<string, unknown> }>).value;
  });
  assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200, 200], JSON.stringify(answers));
  const acted = answers.filter((a) => !a.body.duplicate);
  assert.equal(acted.length, 1, JSON.stringify(answers.map((a) => a.body)));
  assert.equal(acted[0].body.result, "paid");

  assert.equal((await orderRow(sql, order.id)).status, "paid");
  const deducted = await deductions(sql, order.id);
  assert.equal(deducted.length, 1);
  assert.equal(deducted[0].delta_on_hand, -2);
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
  const [{ events }] =
    await sql`select count(*)::int as events from private.payment_events where order_id = ${order.id}::uuid`;
  assert.equal(events, 1);
  await assertInvariants(sql, { productIds: [product.id] });
});

test("five different paid events for one order at once (completed, async succeeded, redeliveries): paid once", async (sql) => {
  const a = await makeProduct(sql, { stock: 4 });
  const b = await makeProduct(sql, { stock: 4 });
  const order = await makeOrder(sql, [{ product_id: b.id, quantity: 1 }, { product_id: a.id, quantity: 3 }], {
    method: "stripe",
  });
  const session = paidSession(order);
  const completed = stripeEvent("checkout.session.completed", session);
  const events = [
    completed,
    completed,
    stripeEvent("checkout.session.async_payment_succeeded", session),
    stripeEvent("checkout.session.completed", session), // a second event id for the same session
    stripeEvent("checkout.session.async_payment_succeeded", session),
  ];
  const signed = await Promise.all(events.map((e) => signStripe(e)));
  const results = await withGateway(ENV, (gw) => race(signed.map((s) => () => deliverStripe(gw.url, s))));
  const bodies = results.map((r) => {
    assert.equal(r.status, "fulfilled");
    const v = (r as PromiseFulfilledResult<{ status: number; body: Record<string, unknown> }>).value;
    assert.equal(v.status, 200, JSON.stringify(v.body));
    return v.body;
  });
  assert.equal(bodies.filter((b) => b.result === "paid").length, 1, JSON.stringify(bodies));
  assert.equal(bodies.filter((b) => b.duplicate).length, 1, "the one redelivered event id is a duplicate");
  assert.equal(bodies.filter((b) => b.result === "already_paid").length, 3, JSON.stringify(bodies));

  const deducted = await deductions(sql, order.id);
  assert.deepEqual(deducted.map((d) => [d.product_id, d.delta_on_hand]).sort(), [[a.id, -3], [b.id, -1]].sort());
  assert.deepEqual(await stockOf(sql, a.id), { onHand: 1, reserved: 0 });
  assert.deepEqual(await stockOf(sql, b.id), { onHand: 3, reserved: 0 });
  await assertInvariants(sql, { productIds: [a.id, b.id] });
});

/**
 * One unit; order A holds it and its reservation has lapsed. At the same moment: A's payment, the sweep, and a
 * new buyer B. Either A is paid (B refused) or the unit went back and on to B (A paid_out_of_stock) — and A's
 * reservation was closed exactly once: consumed or expired, never both, and the unit was deducted at most once.
 */
async function assertOneOutcome(sql: postgres.Sql, productId: string, orderId: string, bCreated: boolean) {
  const a = await orderRow(sql, orderId);
  // (the view, by order: its closed part is found through the ledger's index of 'reserve' rows by order)
  const [res] =
    await sql`select id, status from private.reservations where order_id = ${orderId}::uuid order by id limit 1`;
  const closes = (await reasonsOf(sql, res.id)).filter((r) => r !== "reserve");
  assert.equal(closes.length, 1, `A's reservation closed ${closes.length} times: ${closes}`);
  assert.equal(res.status, closes[0] === "fulfil" ? "consumed" : "expired", `A's reservation is ${res.status}`);
  const deducted = await deductions(sql, orderId);
  const stock = await stockOf(sql, productId);
  if (a.status === "paid") {
    assert.equal(bCreated, false, "A paid and B got the same unit: oversold");
    assert.equal(deducted.length, 1);
    assert.equal(deducted[0].delta_on_hand, -1);
    assert.deepEqual(stock, { onHand: 0, reserved: 0 });
  } else {
    assert.equal(a.status, "paid_out_of_stock", `A is ${a.status}`);
    assert.equal(bCreated, true, "A was refused its unit but nobody got it: lost sale");
    assert.equal(deducted.length, 0);
    assert.equal(closes[0], "expire");
    assert.deepEqual(stock, { onHand: 1, reserved: 1 });
  }
  return a.status as string;
}

test("a late payment racing the sweep and a new buyer for the last unit (engine calls, 20 rounds)", async (sql) => {
  const db = pool(6);
  const seen = new Map<string, number>();
  try {
    for (let i = 0; i < 20; i++) {
      const product = await makeProduct(sql, { stock: 1 });
      const items = [{ product_id: product.id, quantity: 1 }];
      const [{ result }] = await sql`select public.create_order(${sql.json(items)}::jsonb, 'sumup',
                                       ${crypto.randomUUID()}, null, '{}'::jsonb, null, now()) as result`;
      const order = result.order;
      const later = new Date(Date.now() + 16 * 60_000).toISOString();
      let bCreated = false;
      const tasks: (() => Promise<unknown>)[] = [
        () =>
          db`select public.mark_paid(${order.id}::uuid, 'sumup', 'TX-LATE', ${order.total}::bigint, 'EUR', ${later}::timestamptz)`,
        () => db`select public.expire_reservations(${later}::timestamptz)`,
        async () => {
          try {
            await db`select public.create_order(${sql.json(items)}::jsonb, 'sumup', ${crypto.randomUUID()}, null,
                                                '{}'::jsonb, null, ${later}::timestamptz)`;
            bCreated = true;
          } catch (err) {
            if ((err as { code?: string }).code !== "SH409") throw err;
          }
        },
      ];
      // Vary who starts first.
      const results = await race(
        i % 3 === 0 ? tasks : i % 3 === 1 ? [tasks[1], tasks[2], tasks[0]] : [tasks[2], tasks[0], tasks[1]],
      );
      for (const r of results) assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
      const outcome = await assertOneOutcome(sql, product.id, order.id, bCreated);
      seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
      await assertInvariants(sql, { productIds: [product.id] });
    }
  } finally {
    await db.end();
  }
  if (Deno.env.get("RACE_DEBUG")) console.log("outcomes:", Object.fromEntries(seen));
});

test("a paid webhook racing the sweep and a new buyer for the last unit, through the gateway (10 rounds)", async (sql) => {
  const db = pool(4);
  const seen = new Map<string, number>();
  try {
    await withGateway(ENV, async (gw) => {
      for (let i = 0; i < 10; i++) {
        const product = await makeProduct(sql, { stock: 1 });
        const items = [{ product_id: product.id, quantity: 1 }];
        // Created 40 minutes ago: the 35-minute Stripe reservation has lapsed in real time, so the webhook
        // (which pays "now") and the sweep (and pg_cron's) see the same clock.
        const [{ result }] = await sql`select public.create_order(${sql.json(items)}::jsonb, 'stripe',
            ${crypto.randomUUID()}, null, '{}'::jsonb, null, now() - interval '40 minutes') as result`;
        const order = result.order;
        const signed = await signStripe(stripeEvent("checkout.session.completed", paidSession(order)));
        let bCreated = false;
        const tasks: (() => Promise<unknown>)[] = [
          async () => {
            const r = await deliverStripe(gw.url, signed);
            assert.equal(r.status, 200, JSON.stringify(r.body));
          },
          () => db`select public.expire_reservations()`,
          async () => {
            const res = await fetch(`${gw.url}/functions/v1/orders-create`, {
              method: "POST",
              headers: {
                authorization: `Bearer ${ANON_KEY}`,
                "content-type": "application/json",
                "idempotency-key": crypto.randomUUID(),
              },
              body: JSON.stringify({ items, payment_method: "sumup" }),
            });
            const body = await res.json();
            assert.ok(
              res.status === 201 || (res.status === 409 && body.error.code === "insufficient_stock"),
              `${res.status} ${JSON.stringify(body)}`,
            );
            bCreated = res.status === 201;
          },
        ];
        const results = await race(i % 2 === 0 ? tasks : [...tasks].reverse());
        for (const r of results) assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
        const outcome = await assertOneOutcome(sql, product.id, order.id, bCreated);
        seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
        await assertInvariants(sql, { productIds: [product.id] });
      }
    });
  } finally {
    await db.end();
  }
  if (Deno.env.get("RACE_DEBUG")) console.log("outcomes:", Object.fromEntries(seen));
});

test("cancel racing payment on the same order (10 rounds): paid either way, deducted once", async (sql) => {
  const db = pool(4);
  try {
    for (let i = 0; i < 10; i++) {
      const product = await makeProduct(sql, { stock: 3 });
      const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
      const results = await race([
        () => db`select public.mark_paid(${order.id}::uuid, 'sumup', 'TX', ${order.total}::bigint, 'EUR') as r`,
        () => db`select public.cancel_order(${order.id}::uuid, 'race') as r`,
      ]);
      const [paid, cancelled] = results;
      assert.equal(paid.status, "fulfilled", String((paid as PromiseRejectedResult).reason));
      // Whoever goes first, the money wins: a payment after the cancel re-reserves (stock allows) and pays;
      // a cancel after the payment is refused. Either way the order is paid and deducted exactly once.
      const status = (await orderRow(sql, order.id)).status;
      assert.equal(status, "paid");
      if (cancelled.status === "rejected") assert.equal((cancelled.reason as { code?: string }).code, "SH410");
      assert.deepEqual(await stockOf(sql, product.id), { onHand: 1, reserved: 0 });
      const deducted = await deductions(sql, order.id);
      assert.deepEqual(deducted.map((d) => d.delta_on_hand), [-2]);
      await assertInvariants(sql, { productIds: [product.id] });
    }
  } finally {
    await db.end();
  }
});

test("checkout.session.completed racing checkout.session.expired for one order (10 rounds): paid, deducted once", async (sql) => {
  await withGateway(ENV, async (gw) => {
    for (let i = 0; i < 10; i++) {
      const product = await makeProduct(sql, { stock: 2 });
      const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }], { method: "stripe" });
      const session = paidSession(order);
      const completed = await signStripe(stripeEvent("checkout.session.completed", session));
      const expired = await signStripe(
        stripeEvent("checkout.session.expired", { ...session, status: "expired", payment_status: "unpaid" }),
      );
      const both = [() => deliverStripe(gw.url, completed), () => deliverStripe(gw.url, expired)];
      const results = await race(i % 2 ? both : [...both].reverse());
      for (const r of results) {
        assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
        const v = (r as PromiseFulfilledResult<{ status: number; body: unknown }>).value;
        assert.equal(v.status, 200, JSON.stringify(v.body));
      }
      // Whichever came first, the money wins: a cancel after the payment is refused (ignored), a payment after
      // the cancel re-reserves the units (still free here) and pays.
      assert.equal((await orderRow(sql, order.id)).status, "paid");
      assert.deepEqual((await deductions(sql, order.id)).map((d) => d.delta_on_hand), [-2]);
      assert.deepEqual(await stockOf(sql, product.id), { onHand: 0, reserved: 0 });
      await assertInvariants(sql, { productIds: [product.id] });
    }
  });
});

test("SumUp notifications (5 at once) racing the staff confirming the same in-store payment: paid once", async (sql) => {
  const sumup = startFakeSumUp({ merchantCode: "MRACE0001" });
  try {
    await withGateway({
      ...ENV,
      SUMUP_API_KEY: sumup.apiKey,
      SUMUP_MERCHANT_CODE: "MRACE0001",
      SUMUP_API_BASE: sumup.url,
      PROVIDER_TIMEOUT_MS: "3000",
      PROVIDER_RETRIES: "1",
    }, async (gw) => {
      const staff = (await userJwt({ staffRole: "staff" })).token;
      for (let i = 0; i < 5; i++) {
        const product = await makeProduct(sql, { stock: 3 });
        // The till creates the order; orders-create opens the SumUp checkout for the terminal.
        const created = await fetch(`${gw.url}/functions/v1/orders-create`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${ANON_KEY}`,
            "content-type": "application/json",
            "idempotency-key": crypto.randomUUID(),
          },
          body: JSON.stringify({ items: [{ product_id: product.id, quantity: 2 }], payment_method: "sumup" }),
        });
        const body = await created.json();
        assert.equal(created.status, 201, JSON.stringify(body));
        const checkoutId = body.sumup_checkout_id as string;
        assert.ok(checkoutId, "the order has its SumUp checkout");
        // A code of its own per order (a transaction code pays one order only; the database may hold earlier runs).
        const code = `TX${i}RACE${crypto.randomUUID().slice(0, 8).toUpperCase()}`;
        sumup.pay(checkoutId, { transactionCode: code });

        // SumUp notifies (several times, as it retries), while staff press "confirm" on the same payment.
        const notify = () =>
          fetch(`${gw.url}/functions/v1/sumup-webhook`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkoutId }),
          }).then(async (r) => ({ status: r.status, body: await r.json() }));
        const confirm = () =>
          fetch(`${gw.url}/functions/v1/orders-instore`, {
            method: "POST",
            headers: { authorization: `Bearer ${staff}`, "content-type": "application/json" },
            body: JSON.stringify({ action: "confirm", order_id: body.order.id, transaction_code: code }),
          }).then(async (r) => ({ status: r.status, body: await r.json() }));
        const results = await race([notify, notify, confirm, notify, notify, notify]);
        const outcomes = results.map((r) => {
          assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
          const v = (r as PromiseFulfilledResult<{ status: number; body: Record<string, unknown> }>).value;
          assert.equal(v.status, 200, JSON.stringify(v.body));
          return (v.body.outcome ?? v.body.result) as string;
        });
        assert.equal(outcomes.filter((o) => o === "paid").length, 1, JSON.stringify(outcomes));
        assert.ok(outcomes.every((o) => ["paid", "already_paid", "duplicate"].includes(o)), JSON.stringify(outcomes));
        assert.equal((await orderRow(sql, body.order.id)).status, "paid");
        assert.deepEqual((await deductions(sql, body.order.id)).map((d) => d.delta_on_hand), [-2]);
        assert.deepEqual(await stockOf(sql, product.id), { onHand: 1, reserved: 0 });
        await assertInvariants(sql, { productIds: [product.id] });
      }
    });
  } finally {
    await sumup.close();
  }
});

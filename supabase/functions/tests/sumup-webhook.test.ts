/**
 * sumup-webhook against the real database, with SumUp played by a local server the real @sumup/sdk is pointed
 * at. The notification is never believed: only what SumUp's API says about the checkout counts.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import type postgres from "postgres";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { closeDb } from "../_shared/db.ts";
import { resetProviderPolicies } from "../_shared/resilience.ts";
import { createCheckout, currencyExponent, getCheckout, toMajorUnits, toMinorUnits } from "../_shared/sumup.ts";
import { handler as rawHandler } from "../sumup-webhook/handler.ts";
import { type FakeSumUp, startFakeSumUp } from "./fakes/sumup-server.ts";
import { ANON_KEY } from "./support/keys.ts";
import { historyOf, makeOrder, makeProduct, movementsOf, orderRow, stockOf, testSql, withEnv } from "./support/shop.ts";
import { contractFetch, withContract } from "./support/contract.ts";

// Every answer these tests receive is checked against docs/openapi.json (a mismatch throws).
const handler = withContract("sumup-webhook", rawHandler);

const MERCHANT = "MTEST0001";

interface World {
  sql: postgres.Sql;
  sumup: FakeSumUp;
}

/** One test: a fresh fake SumUp and breaker, the functions configured to use it, everything closed after. */
function test(name: string, fn: (w: World) => Promise<void>): void {
  Deno.test({
    name,
    // postgres.js and cockatiel keep timers between calls; everything is closed explicitly in `finally`.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = testSql();
      const sumup = startFakeSumUp({ merchantCode: MERCHANT });
      resetProviderPolicies();
      try {
        await withEnv({
          SUMUP_API_KEY: sumup.apiKey,
          SUMUP_MERCHANT_CODE: MERCHANT,
          SUMUP_API_BASE: sumup.url,
          PROVIDER_TIMEOUT_MS: "1000",
          PROVIDER_RETRIES: "1",
          LOG_LEVEL: "silent",
        }, () => fn({ sql, sumup }));
      } finally {
        resetProviderPolicies();
        await sumup.close();
        await sql.end();
        await closeDb();
      }
    },
  });
}

function notify(body: unknown): Promise<Response> {
  return handler(
    new Request("http://local/functions/v1/sumup-webhook", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }),
  );
}

/** A product with 5 units and an in-store order for 2 of them (2 x 10.00 net + 19 % = 23.80). */
async function inStoreOrder(sql: postgres.Sql) {
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 5 });
  const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }], { method: "sumup" });
  assert.equal(order.total, 2380);
  return { product, order };
}

async function paymentEvents(sql: postgres.Sql, checkoutId: string) {
  return await sql`select * from private.payment_events where provider = 'sumup' and event_id like ${checkoutId + "%"}`;
}

// ---------------------------------------------------------------------------------------------------------------
// amounts
// ---------------------------------------------------------------------------------------------------------------

Deno.test("sumup amounts: minor units convert to SumUp's major units and back exactly", () => {
  assert.equal(currencyExponent("EUR"), 2);
  assert.equal(currencyExponent("CLP"), 0);
  assert.equal(toMajorUnits(2380, "EUR"), 23.8);
  assert.equal(toMajorUnits(5, "EUR"), 0.05);
  assert.equal(toMajorUnits(0, "EUR"), 0);
  assert.equal(toMajorUnits(123456789, "EUR"), 1234567.89);
  assert.equal(toMajorUnits(1500, "CLP"), 1500);
  assert.equal(toMinorUnits(23.8, "EUR"), 2380);
  assert.equal(toMinorUnits(0.05, "EUR"), 5);
  assert.equal(toMinorUnits(1234567.89, "EUR"), 123456789);
  // Every cent amount up to 100 000.00 survives the round trip (the float artefacts of *100 do not).
  for (let minor = 0; minor <= 10_000_000; minor += 997) {
    assert.equal(toMinorUnits(toMajorUnits(minor, "EUR"), "EUR"), minor);
  }
  assert.equal(JSON.stringify({ amount: toMajorUnits(1999, "EUR") }), '{"amount":19.99}');
});

Deno.test("sumup amounts: a figure that is not a whole number of minor units is refused, never rounded", () => {
  assert.equal(toMinorUnits(23.805, "EUR"), null);
  assert.equal(toMinorUnits(0.1 + 0.2, "EUR"), null);
  assert.equal(toMinorUnits(-1, "EUR"), null);
  assert.equal(toMinorUnits(Number.NaN, "EUR"), null);
  assert.equal(toMinorUnits(10.5, "CLP"), null);
  assert.throws(() => toMajorUnits(1.5, "EUR"), RangeError);
  assert.throws(() => toMajorUnits(-1, "EUR"), RangeError);
});

// ---------------------------------------------------------------------------------------------------------------
// the client (_shared/sumup.ts) against the fake API
// ---------------------------------------------------------------------------------------------------------------

test("sumup_client: createCheckout sends the total in major units with our reference, merchant and return_url", async ({ sumup }) => {
  const orderId = crypto.randomUUID();
  const created = await withEnv(
    { SUMUP_WEBHOOK_URL: "https://example.supabase.co/functions/v1/sumup-webhook" },
    () => createCheckout({ orderId, amount: 2380, currency: "EUR", description: "Order test" }),
  );
  assert.equal(created.status, "PENDING");
  assert.equal(created.checkoutReference, orderId);
  assert.equal(created.amount, 2380);
  const post = sumup.requests.find((r) => r.method === "POST");
  assert.deepEqual(post?.body, {
    checkout_reference: orderId,
    amount: 23.8,
    currency: "EUR",
    merchant_code: MERCHANT,
    description: "Order test",
    return_url: "https://example.supabase.co/functions/v1/sumup-webhook",
  });
  assert.equal(post?.headers.authorization, `Bearer ${sumup.apiKey}`);

  // A second create for the same order (a retried request) finds the first checkout instead of failing.
  const again = await createCheckout({ orderId, amount: 2380, currency: "EUR" });
  assert.equal(again.id, created.id);
  assert.equal(sumup.checkouts.size, 1);

  const fetched = await getCheckout(created.id);
  assert.equal(fetched?.id, created.id);
  assert.equal(await getCheckout("no/such/../path"), null, "ids that could escape the path are never sent");
});

// ---------------------------------------------------------------------------------------------------------------
// the happy path, twice
// ---------------------------------------------------------------------------------------------------------------

test("sumup_paid_checkout: a PAID checkout of the order's total marks it paid and deducts stock once, sent twice", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id, { transactionCode: "TPAID0001" });
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });

  const first = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.equal(first.status, 200);
  assert.deepEqual(await first.json(), { received: true, outcome: "paid" });

  const row = await orderRow(sql, order.id);
  assert.equal(row.status, "paid");
  assert.equal(row.provider_payment_ref, "TPAID0001");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
  const paidHistory = (await historyOf(sql, order.id)).filter((h) => h.to_status === "paid");
  assert.equal(paidHistory.length, 1);
  assert.equal(paidHistory[0].actor, "sumup");
  assert.ok(first.headers.get("x-correlation-id"));
  assert.equal(paidHistory[0].correlation_id, first.headers.get("x-correlation-id"));

  // SumUp retries and duplicates: the same notification again changes nothing.
  const second = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.equal(second.status, 200);
  assert.deepEqual(await second.json(), { received: true, outcome: "duplicate" });
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
  assert.equal((await historyOf(sql, order.id)).filter((h) => h.to_status === "paid").length, 1);
  const fulfils = (await movementsOf(sql, product.id)).filter((m) => m.reason === "fulfil");
  assert.equal(fulfils.length, 1);
  assert.equal(Number(fulfils[0].delta_on_hand), -2);
  assert.equal((await paymentEvents(sql, checkout.id)).length, 1);

  // Every call re-asked SumUp (GET /v0.1/checkouts/{id}) with our key: the notification itself proves nothing.
  const gets = sumup.requests.filter((r) => r.method === "GET" && r.path === `/v0.1/checkouts/${checkout.id}`);
  assert.equal(gets.length, 2);
  assert.equal(gets[0].headers.authorization, `Bearer ${sumup.apiKey}`);
});

test("sumup_paid_checkout: SumUp's newer event format (checkout id in payload) is handled the same way", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id);
  const res = await notify({
    id: "c56dc7d23e1dad876cb1e2954854db9e",
    event_type: "checkout.status.updated",
    // The claimed status and reference are lies on purpose: they must not matter.
    payload: { checkout_id: checkout.id, reference: crypto.randomUUID(), status: "FAILED" },
    timestamp: new Date().toISOString(),
  });
  assert.deepEqual(await res.json(), { received: true, outcome: "paid" });
  assert.equal((await orderRow(sql, order.id)).status, "paid");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
  // The legacy notification for the same checkout afterwards is a duplicate.
  const again = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.deepEqual(await again.json(), { received: true, outcome: "duplicate" });
});

// ---------------------------------------------------------------------------------------------------------------
// nothing to do
// ---------------------------------------------------------------------------------------------------------------

test("sumup_not_paid: a PENDING or FAILED checkout changes nothing", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  for (const status of ["PENDING", "FAILED", "EXPIRED"] as const) {
    checkout.status = status;
    const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { received: true, outcome: "not_paid" });
  }
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
  assert.equal((await paymentEvents(sql, checkout.id)).length, 0);
});

test("sumup_amount_mismatch: a PAID checkout for another amount or currency does not pay the order", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  const less = sumup.addCheckout({ checkout_reference: order.id, amount: 2.38 });
  sumup.pay(less.id);
  const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: less.id });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, outcome: "amount_mismatch" });

  const otherCurrency = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8, currency: "GBP" });
  sumup.pay(otherCurrency.id);
  const res2 = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: otherCurrency.id });
  assert.deepEqual(await res2.json(), { received: true, outcome: "amount_mismatch" });

  // Not even a whole number of cents: refused before the database is asked.
  const odd = sumup.addCheckout({ checkout_reference: order.id, amount: 23.805 });
  sumup.pay(odd.id);
  const res3 = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: odd.id });
  assert.deepEqual(await res3.json(), { received: true, outcome: "amount_mismatch" });

  const row = await orderRow(sql, order.id);
  assert.equal(row.status, "awaiting_instore_payment");
  assert.equal(row.paid_at, null);
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
});

test("sumup_unknown_reference: a PAID checkout whose reference is no order of ours changes nothing", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  for (const reference of [crypto.randomUUID(), "not-an-order-id"]) {
    const checkout = sumup.addCheckout({ checkout_reference: reference, amount: 23.8 });
    sumup.pay(checkout.id);
    const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { received: true, outcome: "unknown_reference" });
    assert.equal((await paymentEvents(sql, checkout.id)).length, 0);
  }
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
});

test("sumup_unknown_checkout: a checkout SumUp does not know is acknowledged and ignored", async ({ sumup }) => {
  const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: crypto.randomUUID() });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, outcome: "unknown_checkout" });
  assert.equal(sumup.requests.length, 1);
});

test("sumup_irrelevant_event: another event type is acknowledged at once, without asking SumUp", async ({ sumup }) => {
  const res = await notify({ event_type: "solo.transaction.updated", id: crypto.randomUUID(), payload: {} });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, outcome: "ignored_event" });
  assert.equal(sumup.requests.length, 0);
});

test("sumup_foreign_merchant: a PAID checkout of another merchant does not pay our order", async ({ sql, sumup }) => {
  const { order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8, merchant_code: "MOTHER0001" });
  sumup.pay(checkout.id);
  const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.deepEqual(await res.json(), { received: true, outcome: "foreign_merchant" });
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
});

test("sumup_refused: a PAID checkout naming an order paid another way is refused by the engine, 200, unchanged", async ({ sql, sumup }) => {
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 5 });
  const online = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }], { method: "stripe" });
  const checkout = sumup.addCheckout({ checkout_reference: online.id, amount: 23.8 });
  sumup.pay(checkout.id);
  const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  // Retrying cannot change the engine's answer, so SumUp is told to stop; the log carries it for a person.
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, outcome: "refused" });
  assert.equal((await orderRow(sql, online.id)).status, "awaiting_payment");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
  assert.equal((await paymentEvents(sql, checkout.id)).length, 0);
});

test("sumup_late_payment: a PAID checkout after the stock was sold elsewhere is paid_out_of_stock, no stock moves", async ({ sql, sumup }) => {
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 2 });
  const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  await sql`select public.cancel_order(${order.id}::uuid, 'test: lapsed')`;
  await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id);
  const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.deepEqual(await res.json(), { received: true, outcome: "paid_out_of_stock" });
  assert.equal((await orderRow(sql, order.id)).status, "paid_out_of_stock");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 2, reserved: 2 });
});

// ---------------------------------------------------------------------------------------------------------------
// failures
// ---------------------------------------------------------------------------------------------------------------

test("sumup_unavailable: SumUp answering 503 gives 502 (SumUp retries later) and changes nothing", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id);
  sumup.mode = "error";
  const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.equal(res.status, 502);
  assert.equal((await res.json()).error.code, "payment_provider_unavailable");
  // A read is safe to repeat: the policy retried once (PROVIDER_RETRIES=1) before giving up.
  assert.equal(sumup.requests.length, 2);
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
  assert.equal((await paymentEvents(sql, checkout.id)).length, 0);

  // SumUp's retry once it is back pays the order.
  sumup.mode = "up";
  const retried = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.deepEqual(await retried.json(), { received: true, outcome: "paid" });
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
});

test("sumup_unavailable: SumUp unreachable (connection refused) or too slow gives 502 and changes nothing", async ({ sql, sumup }) => {
  const { order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id);

  sumup.mode = "slow";
  sumup.delayMs = 1500; // beyond PROVIDER_TIMEOUT_MS=1000
  const slow = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.equal(slow.status, 502);
  assert.equal((await slow.json()).error.code, "payment_provider_unavailable");

  await sumup.close();
  const refused = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
  assert.equal(refused.status, 502);
  assert.equal((await refused.json()).error.code, "payment_provider_unavailable");
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
});

test("sumup_breaker: after repeated failures the circuit opens and calls fail fast without reaching SumUp", async ({ sql, sumup }) => {
  const { order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id);
  sumup.mode = "error";
  await withEnv(
    { PROVIDER_BREAKER_THRESHOLD: "2", PROVIDER_RETRIES: "0", PROVIDER_BREAKER_HALF_OPEN_MS: "60000" },
    async () => {
      resetProviderPolicies(); // so the policies are rebuilt with the settings above
      for (let i = 0; i < 2; i++) {
        const res = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
        assert.equal(res.status, 502);
        await res.body?.cancel();
      }
      assert.equal(sumup.requests.length, 2);
      sumup.mode = "up";
      const open = await notify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id });
      assert.equal(open.status, 502);
      assert.equal((await open.json()).error.code, "payment_provider_unavailable");
      assert.equal(sumup.requests.length, 2, "the open circuit kept the call from SumUp");
    },
  );
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
});

test("sumup_malformed: a body that is not a notification is 400 invalid_request, and SumUp is not asked", async ({ sumup }) => {
  for (
    const body of ["not json", "[]", "{}", { event_type: "CHECKOUT_STATUS_CHANGED" }, { id: "abc" }, {
      event_type: "CHECKOUT_STATUS_CHANGED",
      id: 42,
    }, { event_type: "CHECKOUT_STATUS_CHANGED", id: "../../v0.1/me" }]
  ) {
    const res = await notify(body);
    assert.equal(res.status, 400, `status for ${JSON.stringify(body)}`);
    assert.equal((await res.json()).error.code, "invalid_request");
  }
  assert.equal(sumup.requests.length, 0);
});

test("sumup_method: only POST is answered", async () => {
  const res = await handler(new Request("http://local/functions/v1/sumup-webhook", { method: "GET" }));
  assert.equal(res.status, 405);
  await res.body?.cancel();
});

// ---------------------------------------------------------------------------------------------------------------
// through the gateway (verify_jwt = false: SumUp sends no JWT)
// ---------------------------------------------------------------------------------------------------------------

test("sumup_gateway: the notification needs no JWT through the gateway; supabase-js reaches it too", async ({ sql, sumup }) => {
  const { product, order } = await inStoreOrder(sql);
  const checkout = sumup.addCheckout({ checkout_reference: order.id, amount: 23.8 });
  sumup.pay(checkout.id);
  const gw = await startGateway();
  try {
    const res = await contractFetch(`${gw.url}/functions/v1/sumup-webhook`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { received: true, outcome: "paid" });
    assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });

    const supabase = createClient(gw.url, ANON_KEY, {
      auth: { persistSession: false },
      global: { fetch: contractFetch },
    });
    const { data, error } = await supabase.functions.invoke("sumup-webhook", {
      body: { event_type: "CHECKOUT_STATUS_CHANGED", id: checkout.id },
    });
    assert.equal(error, null);
    assert.deepEqual(data, { received: true, outcome: "duplicate" });
  } finally {
    await gw.shutdown();
  }
});

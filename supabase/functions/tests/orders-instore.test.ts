/** orders-instore against the real database: staff confirm, cancel or allocate orders, audited with their id. */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import type postgres from "postgres";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { handler as rawHandler } from "../orders-instore/handler.ts";
import { ANON_KEY, SERVICE_ROLE_KEY } from "./support/keys.ts";
import { dbTest, historyOf, makeOrder, makeProduct, orderRow, stockOf, userJwt } from "./support/shop.ts";
import { contractFetch, withContract } from "./support/contract.ts";

// Every answer these tests receive is checked against docs/openapi.json (a mismatch throws).
const handler = withContract("orders-instore", rawHandler);

const test = dbTest;

function call(token: string | null, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return handler(
    new Request("http://local/functions/v1/orders-instore", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }),
  );
}

async function inStoreOrder(sql: postgres.Sql) {
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 5 });
  const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }], { method: "sumup" });
  return { product, order };
}

// ---------------------------------------------------------------------------------------------------------------
// staff
// ---------------------------------------------------------------------------------------------------------------

test("instore_confirm: staff confirm with the transaction code; paid, stock deducted, actor staff:<uid>", async (sql) => {
  const { product, order } = await inStoreOrder(sql);
  const staff = await userJwt({ staffRole: "staff" });
  const code = freshCode();
  const res = await call(staff.token, { action: "confirm", order_id: order.id, transaction_code: code }, {
    "x-correlation-id": "test-confirm-1",
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-correlation-id"), "test-confirm-1");
  const body = await res.json();
  assert.equal(body.result, "paid");
  assert.equal(body.order.id, order.id);
  assert.equal(body.order.status, "paid");
  assert.equal(body.order.provider_payment_ref, code);

  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
  const paid = (await historyOf(sql, order.id)).filter((h) => h.to_status === "paid");
  assert.equal(paid.length, 1);
  assert.equal(paid[0].actor, `staff:${staff.sub}`);
  assert.equal(paid[0].correlation_id, "test-confirm-1");

  // Pressing the button twice changes nothing.
  const again = await call(staff.token, { action: "confirm", order_id: order.id, transaction_code: code });
  assert.equal(again.status, 200);
  assert.equal((await again.json()).result, "already_paid");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });
});

/** A transaction code no other test uses. */
function freshCode(): string {
  return `TX${crypto.randomUUID().replaceAll("-", "").slice(0, 12).toUpperCase()}`;
}

async function confirm(token: string, orderId: string, code: string) {
  const res = await call(token, { action: "confirm", order_id: orderId, transaction_code: code });
  return { status: res.status, body: await res.json() };
}

test("instore_code_reused: a transaction code that paid one order is refused for another (409), nothing changes", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const { product, order: first } = await inStoreOrder(sql);
  const second = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }]);
  const code = freshCode();
  assert.equal((await confirm(staff.token, first.id, code)).body.result, "paid");
  const stockAfterFirst = await stockOf(sql, product.id);

  // The same code typed again for another order, as it is or in lower case.
  for (const typed of [code, code.toLowerCase()]) {
    const reused = await confirm(staff.token, second.id, typed);
    assert.equal(reused.status, 409);
    assert.equal(reused.body.error.code, "transaction_code_reused");
    assert.deepEqual(reused.body.error.details, { transaction_code: code, order_id: first.id });
  }
  assert.equal((await orderRow(sql, second.id)).status, "awaiting_instore_payment");
  assert.equal((await historyOf(sql, second.id)).filter((h) => h.to_status === "paid").length, 0);
  assert.deepEqual(await stockOf(sql, product.id), stockAfterFirst);

  // The first order confirmed again with its code stays idempotent; the second one pays with its own code.
  assert.equal((await confirm(staff.token, first.id, code)).body.result, "already_paid");
  assert.equal((await confirm(staff.token, first.id, code.toLowerCase())).body.result, "already_paid");
  assert.equal((await confirm(staff.token, second.id, freshCode())).body.result, "paid");
  const events = await sql`
    select order_id from private.payment_events where provider = 'sumup' and event_id = ${`txn:${code}`}`;
  assert.deepEqual(events.map((e) => e.order_id), [first.id]);
});

test("instore_code_reused: a code SumUp reported through the webhook cannot confirm another order", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const { order: paidByWebhook, product } = await inStoreOrder(sql);
  const code = freshCode();
  // What sumup-webhook does with a PAID checkout: the transaction code becomes the order's payment reference.
  await sql`select public.mark_paid(${paidByWebhook.id}::uuid, 'sumup', ${code}, ${paidByWebhook.total}::bigint, 'EUR')`;
  const other = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }]);
  const reused = await confirm(staff.token, other.id, code);
  assert.equal(reused.status, 409);
  assert.equal(reused.body.error.code, "transaction_code_reused");
  assert.equal(reused.body.error.details.order_id, paidByWebhook.id);
  assert.equal((await orderRow(sql, other.id)).status, "awaiting_instore_payment");
});

test("instore_code_reused: two orders confirmed at once with one code: one is paid, the other refused", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 10 });
  const orders = await Promise.all([1, 2, 3].map(() => makeOrder(sql, [{ product_id: product.id, quantity: 1 }])));
  const code = freshCode();
  const answers = await Promise.all(orders.map((o) => confirm(staff.token, o.id, code)));
  const paid = answers.filter((a) => a.status === 200);
  const refused = answers.filter((a) => a.status === 409);
  assert.equal(paid.length, 1, JSON.stringify(answers.map((a) => a.status)));
  assert.equal(paid[0].body.result, "paid");
  assert.equal(refused.length, 2);
  for (const r of refused) assert.equal(r.body.error.code, "transaction_code_reused");
  const statuses = await Promise.all(orders.map(async (o) => (await orderRow(sql, o.id)).status));
  assert.deepEqual(statuses.filter((s) => s === "paid"), ["paid"]);
  // One unit sold, two still reserved for the unpaid orders.
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 9, reserved: 2 });
});

test("instore_code_reused: confirming a paid order with another code changes nothing and claims no code", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const { product, order } = await inStoreOrder(sql);
  const [code, stray] = [freshCode(), freshCode()];
  assert.equal((await confirm(staff.token, order.id, code)).body.result, "paid");
  const again = await confirm(staff.token, order.id, stray);
  assert.equal(again.body.result, "already_paid");
  assert.equal(again.body.order.provider_payment_ref, code);
  // The stray code was not used for a payment, so it stays free for the order it belongs to.
  const other = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }]);
  assert.equal((await confirm(staff.token, other.id, stray)).body.result, "paid");
});

test("instore_cancel: an admin cancels; stock released, reason and actor in the history", async (sql) => {
  const { product, order } = await inStoreOrder(sql);
  const admin = await userJwt({ staffRole: "admin" });
  const res = await call(admin.token, { action: "cancel", order_id: order.id, reason: "customer left" });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.result, "cancelled");
  assert.equal(body.order.status, "cancelled");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 0 });
  const cancelled = (await historyOf(sql, order.id)).filter((h) => h.to_status === "cancelled");
  assert.equal(cancelled.length, 1);
  assert.equal(cancelled[0].actor, `staff:${admin.sub}`);
  assert.equal(cancelled[0].reason, "customer left");
  assert.equal(cancelled[0].correlation_id, res.headers.get("x-correlation-id"));

  const again = await call(admin.token, { action: "cancel", order_id: order.id });
  assert.equal(again.status, 200);
  assert.equal((await again.json()).result, "already_cancelled");
});

test("instore_transitions: the engine's rules hold: a paid order cannot be cancelled (409)", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const { order } = await inStoreOrder(sql);
  assert.equal(
    (await call(staff.token, { action: "confirm", order_id: order.id, transaction_code: freshCode() })).status,
    200,
  );
  const cancelPaid = await call(staff.token, { action: "cancel", order_id: order.id });
  assert.equal(cancelPaid.status, 409);
  const err = (await cancelPaid.json()).error;
  assert.equal(err.code, "invalid_transition");
  assert.deepEqual(err.details, { status: "paid" });
  assert.equal((await orderRow(sql, order.id)).status, "paid");
});

test("instore_paid_out_of_stock: a payment confirmed after cancel, with the stock sold since, is flagged", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const product = await makeProduct(sql, { price: 500, taxBp: 0, stock: 2 });
  const first = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  assert.equal((await call(staff.token, { action: "cancel", order_id: first.id })).status, 200);
  // The released units are sold to someone else before the first customer's card payment is confirmed.
  await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  const res = await call(staff.token, { action: "confirm", order_id: first.id, transaction_code: freshCode() });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.result, "paid_out_of_stock");
  assert.equal(body.order.status, "paid_out_of_stock");
  // Never negative stock: the other order keeps its reservation, nothing was deducted.
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 2, reserved: 2 });
});

test("instore_allocate: after a restock, staff give a paid_out_of_stock order its goods; 409 while still short", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const product = await makeProduct(sql, { price: 500, taxBp: 0, stock: 2 });
  const first = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  assert.equal((await call(staff.token, { action: "cancel", order_id: first.id })).status, 200);
  await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  const paid = await call(staff.token, { action: "confirm", order_id: first.id, transaction_code: freshCode() });
  assert.equal((await paid.json()).result, "paid_out_of_stock");

  // One unit back is not enough: 409 insufficient_stock naming the line, nothing changes.
  await sql`select public.restock(${product.id}::uuid, 'shop', 1, 'partial delivery')`;
  const short = await call(staff.token, { action: "allocate", order_id: first.id });
  assert.equal(short.status, 409);
  const err = (await short.json()).error;
  assert.equal(err.code, "insufficient_stock");
  assert.deepEqual(err.details.items.map((i: { requested: number; available: number }) => [i.requested, i.available]), [
    [2, 1],
  ]);
  assert.equal((await orderRow(sql, first.id)).status, "paid_out_of_stock");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 2 });

  // Enough now: deducted, paid, audited with the staff user and the note.
  await sql`select public.restock(${product.id}::uuid, 'shop', 1, 'rest of the delivery')`;
  const res = await call(staff.token, { action: "allocate", order_id: first.id, note: "delivery arrived" });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.result, "allocated");
  assert.equal(body.order.status, "paid");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 2, reserved: 2 });
  const last = (await historyOf(sql, first.id)).at(-1)!;
  assert.deepEqual([last.from_status, last.to_status, last.reason, last.actor], [
    "paid_out_of_stock",
    "paid",
    "delivery arrived",
    `staff:${staff.sub}`,
  ]);
  // Pressing the button twice changes nothing.
  const again = await call(staff.token, { action: "allocate", order_id: first.id });
  assert.equal((await again.json()).result, "already_allocated");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 2, reserved: 2 });
});

test("instore_wrong_channel: confirming an online (Stripe) order as a SumUp payment is refused, 400", async (sql) => {
  const staff = await userJwt({ staffRole: "staff" });
  const product = await makeProduct(sql, { stock: 2 });
  const online = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }], { method: "stripe" });
  const res = await call(staff.token, { action: "confirm", order_id: online.id, transaction_code: freshCode() });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_request");
  assert.equal((await orderRow(sql, online.id)).status, "awaiting_payment");
});

test("instore_unknown_order: 404 order_not_found for confirm and cancel", async () => {
  const staff = await userJwt({ staffRole: "staff" });
  for (
    const body of [
      { action: "confirm", order_id: crypto.randomUUID(), transaction_code: "T1" },
      { action: "cancel", order_id: crypto.randomUUID() },
    ]
  ) {
    const res = await call(staff.token, body);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "order_not_found");
  }
});

test("instore_service_key: the service key may act too, recorded as actor service", async (sql) => {
  const { order } = await inStoreOrder(sql);
  const res = await call(SERVICE_ROLE_KEY, { action: "cancel", order_id: order.id });
  assert.equal(res.status, 200);
  const cancelled = (await historyOf(sql, order.id)).filter((h) => h.to_status === "cancelled");
  assert.equal(cancelled[0].actor, "service");
});

// ---------------------------------------------------------------------------------------------------------------
// not staff
// ---------------------------------------------------------------------------------------------------------------

test("instore_forbidden: a customer JWT or the anon key gets 403 and nothing changes", async (sql) => {
  const { product, order } = await inStoreOrder(sql);
  const customer = await userJwt();
  for (const token of [customer.token, ANON_KEY]) {
    for (
      const body of [
        { action: "confirm", order_id: order.id, transaction_code: "T1" },
        { action: "cancel", order_id: order.id },
        { nonsense: true },
      ]
    ) {
      const res = await call(token, body);
      assert.equal(res.status, 403);
      assert.equal((await res.json()).error.code, "forbidden");
    }
  }
  assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
  assert.deepEqual(await stockOf(sql, product.id), { onHand: 5, reserved: 2 });
});

test("instore_unauthorized: no JWT, a bad signature or an expired token is 401", async () => {
  const expired = await userJwt({ staffRole: "staff", expiresIn: "-1m" });
  const forged = (await userJwt({ staffRole: "admin" })).token.replace(/.{4}$/, "AAAA");
  for (const token of [null, expired.token, forged]) {
    const res = await call(token, { action: "cancel", order_id: crypto.randomUUID() });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, "unauthorized");
  }
});

test("instore_invalid: missing or malformed fields are 400 invalid_request, each named", async () => {
  const staff = await userJwt({ staffRole: "staff" });
  const cases: [unknown, string[]][] = [
    [{ action: "confirm", order_id: crypto.randomUUID() }, ["transaction_code"]],
    [{ action: "confirm", transaction_code: "T1" }, ["order_id"]],
    [{ action: "confirm", order_id: "42", transaction_code: "" }, ["order_id", "transaction_code"]],
    [{ action: "cancel" }, ["order_id"]],
    [{ action: "allocate", order_id: crypto.randomUUID(), note: "" }, ["note"]],
    [{ action: "refund", order_id: crypto.randomUUID() }, ["action"]],
    [{ order_id: crypto.randomUUID() }, ["action"]],
    [{ action: "cancel", order_id: crypto.randomUUID(), extra: 1 }, ["(body)"]],
  ];
  for (const [body, paths] of cases) {
    const res = await call(staff.token, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    const err = (await res.json()).error;
    assert.equal(err.code, "invalid_request");
    const named = err.details.errors.map((e: { path: string }) => e.path);
    for (const p of paths) assert.ok(named.includes(p), `${JSON.stringify(body)}: ${p} not in ${named}`);
  }
  const notJson = await call(staff.token, "{");
  assert.equal(notJson.status, 400);
  assert.equal((await notJson.json()).error.code, "invalid_request");
});

// ---------------------------------------------------------------------------------------------------------------
// through the gateway
// ---------------------------------------------------------------------------------------------------------------

test("instore_gateway: staff confirm through supabase-js; a customer gets 403 there too", async (sql) => {
  const { product, order } = await inStoreOrder(sql);
  const gw = await startGateway();
  try {
    const staff = await userJwt({ staffRole: "staff" });
    const asStaff = createClient(gw.url, ANON_KEY, {
      auth: { persistSession: false },
      global: { fetch: contractFetch, headers: { Authorization: `Bearer ${staff.token}` } },
    });
    const { data, error } = await asStaff.functions.invoke("orders-instore", {
      body: { action: "confirm", order_id: order.id, transaction_code: freshCode() },
    });
    assert.equal(error, null);
    assert.equal(data.result, "paid");
    assert.deepEqual(await stockOf(sql, product.id), { onHand: 3, reserved: 0 });

    const customer = await userJwt();
    const asCustomer = createClient(gw.url, ANON_KEY, {
      auth: { persistSession: false },
      global: { fetch: contractFetch, headers: { Authorization: `Bearer ${customer.token}` } },
    });
    const denied = await asCustomer.functions.invoke("orders-instore", {
      body: { action: "cancel", order_id: order.id },
    });
    const response = (denied.error as { context: Response }).context;
    assert.equal(response.status, 403);
    assert.equal((await response.json()).error.code, "forbidden");
  } finally {
    await gw.shutdown();
  }
});

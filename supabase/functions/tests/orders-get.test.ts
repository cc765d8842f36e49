/**
 * orders-get against the real database: row-level security decides who sees an order; everything the caller
 * may not see is the same 404 as an order that does not exist.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import type postgres from "postgres";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { handler as rawHandler } from "../orders-get/handler.ts";
import { ANON_KEY, SERVICE_ROLE_KEY } from "./support/keys.ts";
import { dbTest, makeOrder, makeProduct, userJwt } from "./support/shop.ts";
import { contractFetch, withContract } from "./support/contract.ts";

// Every answer these tests receive is checked against docs/openapi.json (a mismatch throws).
const handler = withContract("orders-get", rawHandler);

const test = dbTest;

function get(token: string | null, id: string): Promise<Response> {
  return handler(
    new Request(`http://local/functions/v1/orders-get?id=${encodeURIComponent(id)}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    }),
  );
}

function post(token: string | null, body: unknown): Promise<Response> {
  return handler(
    new Request("http://local/functions/v1/orders-get", {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    }),
  );
}

/** A customer and an order of theirs (2 x 10.00 + 19 %). */
async function customerOrder(sql: postgres.Sql) {
  const customer = await userJwt();
  const product = await makeProduct(sql, { price: 1000, taxBp: 1900, stock: 5 });
  const order = await makeOrder(sql, [{ product_id: product.id, quantity: 2 }], {
    method: "stripe",
    customerId: customer.sub,
  });
  return { customer, product, order };
}

async function assertNotFound(res: Response): Promise<void> {
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), { error: { code: "order_not_found", message: "The order does not exist." } });
}

test("orders_get_own: a signed-in customer reads their own order (GET ?id= and POST {id})", async (sql) => {
  const { customer, product, order } = await customerOrder(sql);
  const res = await get(customer.token, order.id);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const body = await res.json();
  assert.equal(body.order.id, order.id);
  assert.equal(body.order.status, "awaiting_payment");
  assert.equal(body.order.total, 2380);
  assert.equal(body.order.customer_id, customer.sub);
  assert.equal(body.order.items.length, 1);
  assert.equal(body.order.items[0].product_id, product.id);
  assert.equal(body.order.items[0].line_total, 2380);

  const viaPost = await post(customer.token, { id: order.id });
  assert.equal(viaPost.status, 200);
  assert.deepEqual(await viaPost.json(), body);
});

test("orders_get_other: someone else's order is 404, exactly like a missing one", async (sql) => {
  const { order } = await customerOrder(sql);
  const stranger = await userJwt();
  await assertNotFound(await get(stranger.token, order.id));
  await assertNotFound(await get(stranger.token, crypto.randomUUID()));
  // A guest order (no customer) is nobody's to read but staff's.
  const product = await makeProduct(sql, { stock: 1 });
  const guest = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }]);
  await assertNotFound(await get(stranger.token, guest.id));
});

test("orders_get_anon: the anon key reads no order", async (sql) => {
  const { order } = await customerOrder(sql);
  await assertNotFound(await get(ANON_KEY, order.id));
});

test("orders_get_staff: staff and admin read any order; so does the service key", async (sql) => {
  const { order } = await customerOrder(sql);
  for (
    const token of [
      (await userJwt({ staffRole: "staff" })).token,
      (await userJwt({ staffRole: "admin" })).token,
      SERVICE_ROLE_KEY,
    ]
  ) {
    const res = await get(token, order.id);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).order.id, order.id);
  }
});

test("orders_get_forged_role: a token claiming staff but signed with another secret is 401", async (sql) => {
  const { order } = await customerOrder(sql);
  const forged = (await userJwt({ staffRole: "admin" })).token.replace(/.{4}$/, "AAAA");
  const res = await get(forged, order.id);
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, "unauthorized");
  const none = await get(null, order.id);
  assert.equal(none.status, 401);
});

test("orders_get_invalid: a missing or malformed id is 400 invalid_request", async () => {
  const customer = await userJwt();
  const missing = await handler(
    new Request("http://local/functions/v1/orders-get", { headers: { authorization: `Bearer ${customer.token}` } }),
  );
  assert.equal(missing.status, 400);
  const err = (await missing.json()).error;
  assert.equal(err.code, "invalid_request");
  assert.deepEqual(err.details.errors.map((e: { path: string }) => e.path), ["id"]);

  const malformed = await get(customer.token, "42");
  assert.equal(malformed.status, 400);
  assert.equal((await malformed.json()).error.code, "invalid_request");
  const notJson = await handler(
    new Request("http://local/functions/v1/orders-get", {
      method: "POST",
      headers: { authorization: `Bearer ${customer.token}` },
      body: "{",
    }),
  );
  assert.equal(notJson.status, 400);
});

test("orders_get_gateway: supabase-js invoke (POST) with the customer's session reads their order", async (sql) => {
  const { customer, order } = await customerOrder(sql);
  const gw = await startGateway();
  try {
    const supabase = createClient(gw.url, ANON_KEY, {
      auth: { persistSession: false },
      global: { fetch: contractFetch, headers: { Authorization: `Bearer ${customer.token}` } },
    });
    const { data, error } = await supabase.functions.invoke("orders-get", { body: { id: order.id } });
    assert.equal(error, null);
    assert.equal(data.order.id, order.id);

    const { data: viaGet, error: getError } = await supabase.functions.invoke(`orders-get?id=${order.id}`, {
      method: "GET",
    });
    assert.equal(getError, null);
    assert.equal(viaGet.order.id, order.id);

    const anon = createClient(gw.url, ANON_KEY, { auth: { persistSession: false }, global: { fetch: contractFetch } });
    const denied = await anon.functions.invoke("orders-get", { body: { id: order.id } });
    assert.equal((denied.error as { context: Response }).context.status, 404);
  } finally {
    await gw.shutdown();
  }
});
